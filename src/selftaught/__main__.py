"""`python -m selftaught`: the command line, as the `selftaught` command runs it."""

from selftaught.cli.main import main

main()
