"""The request rules every outlast web surface applies (``outlast serve``, ``outlast ui``).

Standard library only, and framework-neutral: a surface builds one :class:`WebPolicy` from the
address it binds and calls :meth:`WebPolicy.check` with each request's method and headers
(any case-insensitive mapping, such as Starlette's ``request.headers``). A refusal is a
:class:`Refused` carrying the HTTP status and a message that says what to change.

What is defended (see docs/security.md, "Web surfaces: serve and ui"):

* **Other machines.** :func:`check_binding` refuses to listen on a non-loopback address
  without a token; with a token, every request must carry it (``Authorization: Bearer``, or
  the dashboard's cookie), compared in constant time.
* **DNS rebinding.** The ``Host`` header must name the bound address and port, a loopback
  alias of it (``localhost``, ``127.0.0.1``, ``[::1]``), or a name in ``allowed_hosts``.
* **Cross-site requests from a browser** (any web page the developer has open can send
  requests to 127.0.0.1). A state-changing request whose ``Origin`` is not one of ours, or
  whose ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site`` (another port of localhost is
  "same-site"), is refused; a cross-site read other than a top-level navigation too. Bodies
  must be ``application/json`` (which a page cannot send cross-origin without a CORS
  preflight that we never answer) or, where the surface allows forms, the form encoding with
  a CSRF token (:meth:`WebPolicy.check_csrf`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["Guard", "Refused", "WebPolicy", "check_binding", "is_loopback"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"


class Refused(Exception):
    """A request the rules refuse: ``status`` (400, 401, 403, 415) and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def check_binding(host: str, token: str | None, *, what: str = "outlast serve") -> None:
    """Refuse to listen beyond this machine without a bearer token (ValueError)."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"{what} on {host!r} is reachable from other machines: give --token, or bind 127.0.0.1"
        )


def _split_host(value: str) -> tuple[str, int | None]:
    """``Host`` header value -> (lower-cased name, port or None); ValueError when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(value)
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
    if not name or (port and not port.isdigit()):
        raise ValueError(value)
    return name, int(port) if port else None


@dataclass(frozen=True)
class WebPolicy:
    """The rules for one listening surface bound to ``host``:``port``.

    ``token``: required on every request when set. ``allowed_hosts``: extra names the
    ``Host`` header may carry (for a reverse proxy or a DNS name), any port.
    ``forms``: form-encoded POSTs are accepted (with the CSRF token), for the dashboard.
    ``token_cookie``: the cookie that may carry the token instead of the header.
    """

    host: str
    port: int
    token: str | None = None
    allowed_hosts: frozenset[str] = frozenset()
    forms: bool = False
    token_cookie: str | None = None
    #: the secret of this process's CSRF tokens (random per process unless given)
    csrf_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    # -- the checks --------------------------------------------------------------------------

    def check(self, method: str, headers: Mapping[str, str], cookies: Mapping[str, str] | None = None) -> None:
        """Apply the Host, cross-site, content-type and token rules; raise :class:`Refused`."""
        self.check_host(headers.get("host"))
        self.check_site(method, headers)
        self.check_token(headers, cookies or {})
        if method.upper() not in _SAFE_METHODS:
            self.check_content_type(headers.get("content-type"))

    def check_host(self, value: str | None) -> None:
        """The ``Host`` header must name this server (DNS rebinding defence)."""
        if not value:
            raise Refused(400, "missing Host header")
        try:
            name, port = _split_host(value)
        except ValueError:
            raise Refused(400, f"malformed Host header {value[:100]!r}") from None
        if name in self.allowed_hosts:
            return
        if _wildcard(self.host) and self.token:
            return  # bound to every interface: the token, not the name, decides
        bound = self.host.strip("[]").lower()
        names = {bound, *LOOPBACK_NAMES} if is_loopback(bound) else {bound}
        if name.strip("[]") in names and (port or 80) == self.port:
            return
        raise Refused(
            403,
            f"Host {value[:100]!r} is not this server ({self._origin_host()}); to reach it under "
            "another name, add the name to the allowed hosts (--allow-host)",
        )

    def check_site(self, method: str, headers: Mapping[str, str]) -> None:
        """Refuse cross-site requests: a foreign ``Origin``, or ``Sec-Fetch-Site`` other than
        ``same-origin``/``none`` (top-level cross-site navigations may read pages)."""
        unsafe = method.upper() not in _SAFE_METHODS
        site = (headers.get("sec-fetch-site") or "").lower()
        if site in ("cross-site", "same-site"):
            navigate = (headers.get("sec-fetch-mode") or "").lower() == "navigate"
            if unsafe or not navigate:
                raise Refused(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = headers.get("origin")
        if origin is None or not (unsafe or site not in ("", "same-origin", "none")):
            return
        if not self.origin_ok(origin):
            raise Refused(403, f"cross-site request refused: Origin {origin[:100]!r} is not this server")

    def origin_ok(self, origin: str) -> bool:
        """Whether ``origin`` (``scheme://host[:port]``) is this server under an allowed name."""
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https"):
            return False
        try:
            self.check_host(rest)
        except Refused:
            return False
        return True

    def check_token(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> None:
        """With a token set, the request carries it (header or cookie), compared in constant time."""
        if not self.token:
            return
        expected = self.token.encode()
        given = headers.get("authorization", "")
        if given[:7].lower() == "bearer " and hmac.compare_digest(given[7:].strip().encode(), expected):
            return
        if self.token_cookie and hmac.compare_digest(
            cookies.get(self.token_cookie, "").encode(), self.cookie_value().encode()
        ):
            return
        raise Refused(401, "missing or wrong token (send Authorization: Bearer <token>)")

    def cookie_value(self) -> str:
        """What the token cookie holds: a hash of the token, so the cookie never shows it."""
        return hashlib.sha256(b"outlast-token:" + (self.token or "").encode()).hexdigest()

    def check_content_type(self, value: str | None) -> None:
        """A request with a body is JSON (or, where forms are allowed, form-encoded)."""
        kind = (value or "").split(";", 1)[0].strip().lower()
        if kind == JSON_TYPE or (self.forms and kind == FORM_TYPE):
            return
        wanted = JSON_TYPE + (f" or {FORM_TYPE}" if self.forms else "")
        raise Refused(415, f"Content-Type must be {wanted}, got {value!r}")

    # -- CSRF tokens for forms ------------------------------------------------------------------

    def csrf_token(self) -> str:
        """The token pages put in their forms (derived from the process secret)."""
        return hmac.new(self.csrf_secret, b"outlast-csrf", "sha256").hexdigest()

    def check_csrf(self, given: str | None) -> None:
        """Refuse a form POST without this process's CSRF token."""
        if not given or not hmac.compare_digest(given.encode(), self.csrf_token().encode()):
            raise Refused(403, "missing or stale CSRF token: reload the page and try again")

    def _origin_host(self) -> str:
        host = self.host if ":" not in self.host or self.host.startswith("[") else f"[{self.host}]"
        return f"{host}:{self.port}"


# -- ASGI ------------------------------------------------------------------------------------------

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Guard:
    """ASGI middleware applying a :class:`WebPolicy` to every HTTP request before ``app`` sees it.

    The policy's address is the one the server reports in the ASGI scope (``scope["server"]``)
    unless ``host``/``port`` are given, so a mounted or test-served app needs no configuration.
    A refusal is answered ``{"error": message}`` with its status, or plain text for pages.
    """

    def __init__(self, app: ASGIApp, *, host: str | None = None, port: int | None = None, **policy: Any) -> None:
        self.app = app
        self.host, self.port = host, port
        self.options = policy
        self._policies: dict[tuple[str, int], WebPolicy] = {}

    def policy(self, scope: Mapping[str, Any]) -> WebPolicy:
        """The policy for the address this request came in on."""
        server = scope.get("server") or ("127.0.0.1", 80)
        key = (self.host or str(server[0]), self.port or int(server[1] or 80))
        if (found := self._policies.get(key)) is None:
            found = self._policies[key] = WebPolicy(key[0], key[1], **self.options)
        return found

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        try:
            policy = self.policy(scope)
            scope.setdefault("state", {})["outlast_policy"] = policy
            if await self._token_link(policy, scope, headers, send):
                return
            policy.check(scope["method"], headers, _cookies(headers.get("cookie", "")))
        except Refused as r:
            body = json.dumps({"error": r.message}).encode()
            await send({"type": "http.response.start", "status": r.status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


    async def _token_link(self, policy: WebPolicy, scope: Mapping[str, Any], headers: Mapping[str, str],
                          send: Callable[[Any], Awaitable[None]]) -> bool:
        """A page opened as ``...?token=T`` (the link ``outlast ui`` prints): keep the token in
        an HttpOnly, SameSite=Strict cookie and redirect to the same URL without it."""
        if not (policy.token and policy.token_cookie and scope["method"] == "GET"):
            return False
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = next((v for k, v in query if k == "token"), None)
        if given is None or not hmac.compare_digest(given.encode(), policy.token.encode()):
            return False
        policy.check_host(headers.get("host"))
        policy.check_site("GET", headers)
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        path = scope.get("raw_path") or scope["path"].encode("utf-8")  # raw: the full path when mounted
        target = path.decode("latin-1") + (f"?{rest}" if rest else "")
        cookie = f"{policy.token_cookie}={policy.cookie_value()}; HttpOnly; SameSite=Strict; Path=/"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", target.encode("latin-1", "replace")),
                                (b"set-cookie", cookie.encode("latin-1")), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return True


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        key = name.decode("latin-1").lower()
        # A repeated Host/Origin is suspicious; keeping the first is what servers route by.
        out.setdefault(key, value.decode("latin-1"))
    return out


def _cookies(header: str) -> dict[str, str]:
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}
