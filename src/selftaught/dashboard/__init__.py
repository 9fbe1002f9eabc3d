"""The read-only web dashboard `selftaught ui` serves over a store: needs the `ui` extra (Starlette, Jinja2, uvicorn)."""
