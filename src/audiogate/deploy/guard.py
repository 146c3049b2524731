"""What protects the HTTP service: the access token, where it may listen, idle connections.

* :class:`BearerAuth` (ASGI middleware): with a token set, every request but the public ones
  (``/health`` and the web page's own files, which hold no data) needs
  ``Authorization: Bearer <token>``; the token is compared in constant time and a missing or
  wrong one gets 401 with ``WWW-Authenticate: Bearer``.
* :func:`check_listen`: a valid port, and no address beyond loopback without a token unless
  the caller says so (``--insecure``).
* :class:`LoopbackHostOnly` (ASGI middleware): a service without a token on loopback answers
  only requests addressed to a loopback name (``Host`` header), so a web page from elsewhere
  cannot reach it through DNS rebinding (its requests carry the page's own host name).
* :class:`SameOriginOnly` (ASGI middleware): a request that may change something (any method
  but GET, HEAD, OPTIONS) sent by a page of another site is refused, whatever the token: a
  browser lets any page send a "simple" form POST to any address, 127.0.0.1 included, with no
  preflight, but it says where the page came from (``Origin``, ``Sec-Fetch-Site``).
* :class:`IdleTimeoutH11`: uvicorn's h11 protocol, plus: a connection must deliver a whole
  request head within the keep-alive timeout of opening (or of its previous response), or it
  is closed. uvicorn alone keeps a connection that sends nothing, or half a request line,
  open forever. Stalled request bodies are :class:`~audiogate.deploy.serve.BodyLimit`'s job.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
from urllib.parse import urlsplit

import h11
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError

TOKEN_ENV = "AUDIOGATE_TOKEN"
"""Environment variable that holds the access token (keeps it out of the process list)."""
MIN_TOKEN_CHARS = 16
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750 ``b64token`` characters: what may follow ``Bearer`` in a header."""
PUBLIC_PATHS = frozenset({"/health", "/"})
PUBLIC_PREFIXES = ("/static/",)
"""The web page's files: the same for everyone and free of data; the page asks for the token."""
LOOPBACK_NAMES = frozenset({"localhost"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing here: a page of any site may send them."""
SAME_ORIGIN_FETCHES = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values of a request from the service's own page, or typed by the user
(``same-site`` is refused: another port of localhost is the same site, not the same origin)."""
DEFAULT_PORTS = {"http": 80, "https": 443}
PORT_RANGE = (1, 65535)


def check_token(token: str | None) -> str | None:
    """``token`` if it is usable in a ``Bearer`` header and long enough to resist guessing;
    ``None`` for no token. Raises :class:`ConfigError` otherwise."""
    if token is None or token == "":
        return None
    if len(token) < MIN_TOKEN_CHARS or not TOKEN_PATTERN.fullmatch(token):
        raise ConfigError(
            f"access token must be at least {MIN_TOKEN_CHARS} characters of A-Z a-z 0-9 "
            "- . _ ~ + / (a random one: python -c \"import secrets; "
            "print(secrets.token_urlsafe(32))\")")
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def check_listen(*, host: str, port: int, token: str | None, insecure: bool) -> None:
    """Refuse a port outside 1-65535, and an address other machines can reach without a
    token (unless ``insecure``). Raises :class:`ConfigError` with what to do instead."""
    low, high = PORT_RANGE
    if not low <= port <= high:
        raise ConfigError(f"--port must be in {low}-{high}, got {port}")
    if token is None and not insecure and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without an access token: anyone who can reach it "
            f"could use the model. Set {TOKEN_ENV} (or pass --token), or pass --insecure if "
            "something in front of the service authenticates")


def request_host(scope: Scope) -> str:
    """The host name of the request's ``Host`` header, without the port ("" when absent);
    ``[::1]:8000`` -> ``::1``."""
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1").strip()
            if host.startswith("["):  # IPv6 literal
                return host[1:host.find("]")] if "]" in host else ""
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return ""


class LoopbackHostOnly:
    """ASGI middleware: 403 for any request whose ``Host`` is not a loopback name.

    For a service without an access token, listening on loopback: only programs on this
    machine can connect, but a web page open in this machine's browser can too, through DNS
    rebinding (a name of the attacker's, resolved to 127.0.0.1). Such requests carry the
    attacker's name in ``Host``; requests addressed to ``localhost``, ``127.0.0.1`` or
    ``[::1]`` do not.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = request_host(scope)
        if scope["type"] != "http" or is_loopback(host):
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"detail": (
            f"this service has no access token, so it only answers requests addressed to "
            f"localhost, 127.0.0.1 or [::1] (got host '{host}'); to serve other names, set an "
            f"access token ({TOKEN_ENV} or --token)")}, status_code=403,
            headers={"Connection": "close"})
        await response(scope, receive, send)


def _split_host(host: str, *, default_port: int) -> tuple[str, int]:
    """``Host``-style ``name[:port]`` -> (lower-case name, port)."""
    parts = urlsplit("//" + host.strip())
    try:
        port = parts.port
    except ValueError:  # not a number
        return "", -1
    return (parts.hostname or ""), default_port if port is None else port


def same_origin(origin: str, hosts: list[str]) -> bool:
    """Whether the ``Origin`` header ``origin`` (``scheme://name[:port]``) names one of
    ``hosts`` (``Host`` and ``X-Forwarded-Host`` values), default ports filled in from the
    origin's scheme. ``null`` (a sandboxed or file page) names none."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in DEFAULT_PORTS or parts.path or parts.netloc == "":
        return False
    default = DEFAULT_PORTS[parts.scheme]
    mine = _split_host(parts.netloc, default_port=default)
    return mine[0] != "" and any(_split_host(h, default_port=default) == mine for h in hosts)


def headers_of(scope: Scope) -> list[tuple[bytes, str]]:
    """A request's headers: raw lower-case names, values as text."""
    return [(n, v.decode("latin-1")) for n, v in scope["headers"]]


def foreign_origin(headers: list[tuple[bytes, str]]) -> str | None:
    """The ``Origin`` value (at most 100 characters) that names none of the request's own
    host names (``Host``, ``X-Forwarded-Host``; :func:`same_origin`), or None."""
    hosts = [v for n, v in headers if n in (b"host", b"x-forwarded-host")]
    for name, value in headers:
        if name == b"origin" and not same_origin(value, hosts):
            return value[:100]
    return None


def cross_site(scope: Scope) -> str | None:
    """What shows that a request which may change something comes from another site's page
    (the header, as sent), or None. ``X-Forwarded-Host`` counts as the service's own name:
    a page cannot make a browser send it without a CORS preflight, which this service never
    grants."""
    if scope.get("method", "GET") in SAFE_METHODS:
        return None
    headers = headers_of(scope)
    for name, value in headers:
        if name == b"sec-fetch-site" and value.strip().lower() not in SAME_ORIGIN_FETCHES:
            return f"Sec-Fetch-Site: {value[:100]}"
    origin = foreign_origin(headers)
    return None if origin is None else f"Origin: {origin}"


class SameOriginOnly:
    """ASGI middleware: 403 for a request that may change something (any method but GET,
    HEAD, OPTIONS) sent by a page of another site, as its ``Sec-Fetch-Site`` or ``Origin``
    header shows (:func:`cross_site`); before any of its body is read.

    A token-less service on loopback trusts every program on this machine, but not every web
    page open in its browser: a page of any site can make the browser POST a form to
    ``http://127.0.0.1:PORT/enroll`` with no preflight, and its ``Host`` is a loopback name.
    Programs (curl, Python) send no ``Origin`` and pass; the service's own page sends its own.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        why = cross_site(scope) if scope["type"] == "http" else None
        if why is None:
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"detail": (
            f"cross-site request refused ({why}): this service takes {scope['method']} "
            "requests only from its own page or from programs that send no Origin")},
            status_code=403, headers={"Connection": "close"})
        await response(scope, receive, send)


def _bearer(scope: Scope) -> bytes | None:
    """The token of the request's ``Authorization: Bearer`` header, or None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return credentials.strip()
    return None


class BearerAuth:
    """ASGI middleware: 401 for any request outside the public paths without the token."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.token = token.encode("ascii")

    def allows(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
        given = _bearer(scope)
        return given is not None and hmac.compare_digest(given, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allows(scope):
            await self.app(scope, receive, send)
            return
        given = _bearer(scope)
        challenge = 'Bearer realm="audiogate"' + (
            ', error="invalid_token"' if given is not None else "")
        detail = ("wrong access token" if given is not None else
                  "this service needs an access token: send 'Authorization: Bearer <token>'")
        response = JSONResponse({"detail": detail}, status_code=401, headers={
            "WWW-Authenticate": challenge, "Connection": "close"})
        await response(scope, receive, send)


class IdleTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol; a connection that has not sent a complete request head within
    ``timeout_keep_alive`` seconds of opening, or of its previous response, is closed
    (uvicorn's own timer starts only after a response and stops at the first byte)."""

    _head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a request head arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
