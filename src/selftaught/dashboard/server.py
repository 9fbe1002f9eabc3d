"""Serving the dashboard: its listening socket, its token when it is reachable from elsewhere, and uvicorn."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from selftaught.dashboard.app import create_app
from selftaught.dashboard.security import Access, is_loopback
from selftaught.errors import SelftaughtError

#: Seconds a server started in a thread may take to accept connections.
START_SECONDS = 10.0


class DashboardServer:
    """The dashboard over `store`, listening on `host`:`port` (0: a free port) as soon as it is made.

    Off loopback it requires a token and serves under a secret path prefix, both made here and part of
    `url`. `serve_forever` runs it in the foreground (Ctrl-C stops it); as a context manager it runs in
    a thread, for tests and benchmarks.
    """

    def __init__(self, store: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.socket = _listening_socket(host, port)
        self.port = int(self.socket.getsockname()[1])
        self.token = None if is_loopback(host) else secrets.token_urlsafe(32)
        # Its own secret, not the token's: the prefix is in every address the browser keeps in its history.
        self.prefix = "" if self.token is None else "/" + secrets.token_urlsafe(12)
        app = create_app(store, Access(self.port, self.token, self.prefix))
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The address to open: a loopback address this server answers to, or its host, with the token if any."""
        shown = self.host
        if self.host in ("0.0.0.0", "::", ""):
            shown = socket.gethostname()
        elif self.host == "localhost":  # the address it resolved to, which may be IPv6's
            shown = str(self.socket.getsockname()[0])
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}{self.prefix}/" + (f"?token={self.token}" if self.token else "")

    def serve_forever(self) -> None:
        self._server.run(sockets=[self.socket])

    def __enter__(self) -> DashboardServer:
        self._thread = threading.Thread(target=self.serve_forever, name="dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise SelftaughtError("the dashboard did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=START_SECONDS)
        self.socket.close()


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port`, so that the port (when 0 was asked) is known before serving."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, protocol)
    except OSError as error:
        raise SelftaughtError(f"cannot listen on {host}:{port}: {error}") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as error:
        listener.close()
        hint = "; choose another --port (0 picks a free one)" if port else ""
        raise SelftaughtError(f"cannot listen on {host}:{port}: {error.strerror or error}{hint}") from None
    listener.set_inheritable(False)
    return listener
