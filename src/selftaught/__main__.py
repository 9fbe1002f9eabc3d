from selftaught.cli.main import main

main()
