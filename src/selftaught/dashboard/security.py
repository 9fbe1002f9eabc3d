"""The dashboard's guard: only GET, only its own Host on loopback, a token off loopback, and strict headers.

It wraps the whole application (static files included), so no route can forget a check:
- GET (and HEAD) only: the dashboard changes nothing, so any other method is refused.
- Bound to loopback, a request must name this server in its Host header (localhost, [::1] or an
  address of 127.0.0.0/8, with its port): a page of another site whose name was rebound to
  127.0.0.1 (DNS rebinding) sends its own name, and is refused.
- Bound to anything else, everything is served under a secret path prefix, and every request must
  carry the token printed at start, as `?token=` once (it is then kept in a cookie) or the cookie
  itself; compared in constant time. Browsers send a host's cookies to all its ports: scoped to the
  secret prefix (`Path=/<prefix>/`), the cookie never reaches another server on this machine.
- A request a browser says another site started (`Sec-Fetch-Site: cross-site` or `same-site`) is
  refused: no page elsewhere can make the dashboard read the store for it.
- Every response forbids inline and foreign script (CSP `script-src 'self'`), framing, sniffing
  and referrers; generated text is escaped by the templates, and the policy is the second wall.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The cookie that keeps the token, named with the port: browsers share cookies between a host's ports.
TOKEN_COOKIE = "selftaught_token_{port}"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: What a browser says of who started a request that the dashboard answers: itself, or the person (typed, bookmark).
ALLOWED_FETCH_SITES = ("same-origin", "none")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


def is_loopback(host: str) -> bool:
    """Whether binding `host` serves this machine alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """Who may ask: on loopback, requests naming this server; elsewhere, requests carrying `token`, under `prefix`.

    `prefix` ("/" and a secret, or "" to serve at the root) is where every page is served.
    """

    port: int
    token: str | None
    prefix: str = ""

    @property
    def cookie(self) -> str:
        return TOKEN_COOKIE.format(port=self.port)

    def host_allowed(self, host_header: str) -> bool:
        """A Host header of this server on loopback: one of its names, with its port (or none on port 80)."""
        host = host_header.strip().lower()
        if host.startswith("["):  # an IPv6 address: its colons are not the port's
            address, _, rest = host.partition("]")
            name, port = address + "]", rest.removeprefix(":")
        else:
            name, _, port = host.partition(":")
        if name not in LOOPBACK_NAMES and not _loopback_address(name):
            return False
        return port == str(self.port) or (not port and self.port == 80)

    def token_given(self, query_token: str | None, cookie_token: str | None) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        return any(
            given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected)
            for given in (query_token, cookie_token)
        )


def _loopback_address(name: str) -> bool:
    """An address of 127.0.0.0/8, or IPv6's loopback in brackets: no DNS name can make a browser send one."""
    try:
        address = ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
    except ValueError:
        return False
    return address.is_loopback and (address.version == 4 or name.startswith("["))


class Guard:
    """ASGI middleware enforcing `Access` and adding the security headers to every response."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # nothing of the dashboard speaks it
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal, query_token = self._refusal(scope)
        if refusal is not None:
            status, text = refusal
            await _plain(send, status, text, allow_get=status == 405)
            return
        prefix = self.access.prefix
        if prefix and scope["path"] == prefix:  # the pages' links are relative to `prefix/`
            query = scope.get("query_string", b"").decode("latin-1")
            await _plain(send, 308, "moved", location=prefix + "/" + (f"?{query}" if query else ""))
            return
        if prefix:  # the application routes below it, and its pages link under it
            scope = {**scope, "root_path": scope.get("root_path", "") + prefix}

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _REPLACED]
                headers += SECURITY_HEADERS
                if query_token is not None and self.access.token is not None:
                    # Kept for the links and the live updates that follow, which do not carry the token; sent
                    # back only under the secret prefix, so never to another server on another port.
                    cookie = f"{self.access.cookie}={self.access.token}; HttpOnly; SameSite=Strict; Path={prefix}/"
                    headers.append((b"set-cookie", cookie.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)

    def _refusal(self, scope: Scope) -> tuple[tuple[int, str] | None, str | None]:
        """Why the request is refused (status, text), or None; and the token its query carried."""
        if scope["method"] not in ("GET", "HEAD"):
            return (405, "the dashboard only reads: GET only"), None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if headers.get("sec-fetch-site", "none") not in ALLOWED_FETCH_SITES:
            return (403, "refused: a request another site started; open the dashboard's address yourself"), None
        if self.access.token is None and not self.access.host_allowed(headers.get("host", "")):
            return (403, "refused: this server answers only to its own name (localhost or 127.0.0.1)"), None
        path, prefix = scope["path"], self.access.prefix
        if prefix and path != prefix and not path.startswith(prefix + "/"):
            return (403, _WITH_TOKEN), None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        query_token = query.get("token", [None])[-1]
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            cookie = SimpleCookie()
        cookie_token = cookie[self.access.cookie].value if self.access.cookie in cookie else None
        if not self.access.token_given(query_token, cookie_token):
            return (403, _WITH_TOKEN), None
        return None, query_token


_WITH_TOKEN = "refused: open the address printed by `selftaught ui`, with its token"
_REPLACED = {name for name, _ in SECURITY_HEADERS}


async def _plain(send: Send, status: int, text: str, allow_get: bool = False, location: str | None = None) -> None:
    body = text.encode() + b"\n"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    headers += SECURITY_HEADERS
    if allow_get:
        headers.append((b"allow", b"GET, HEAD"))
    if location is not None:
        headers.append((b"location", location.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
