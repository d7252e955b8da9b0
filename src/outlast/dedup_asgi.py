"""ASGI middleware that makes a service's unsafe requests idempotent by their Idempotency-Key.

Pure ASGI: works under Starlette and FastAPI (``app.add_middleware(IdempotencyMiddleware,
dedup=Deduplicator(...))``) or wrapping any ASGI app, with no web framework imported here. The
guarantee is :class:`~outlast.dedup.Deduplicator`'s: see :mod:`outlast.dedup`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from .dedup import Deduplicator, IdempotencyKeyInFlight, IdempotencyKeyReused

__all__ = ["IdempotencyMiddleware", "authorization_digest"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
CallerOf = Callable[[Scope], "str | Awaitable[str]"]

REPLAYED_HEADER = (b"idempotent-replayed", b"true")
# A cookie belongs to the client it was set for: it is sent to the first caller, never stored.
_NEVER_STORED = frozenset({"set-cookie", "set-cookie2"})


class _NotStored(Exception):  # noqa: N818 - internal signal, never escapes the middleware
    """Carries a response that must reach the client but not be stored (5xx, 429)."""

    def __init__(self, response: bytes) -> None:
        super().__init__("response not stored")
        self.response = response


class IdempotencyMiddleware:
    """Run each request with an ``Idempotency-Key`` header once; replay its response to repeats.

    Requests whose method is not in ``methods``, and requests without the header, pass through
    untouched. Otherwise the key is scoped by method, path and caller (the same key may be sent
    to two endpoints, and by two callers) and the request's fingerprint is a hash of its query
    string and body:

    - the first request runs the app; its status, headers and body are stored, then sent;
    - a repeat by the same caller gets the stored response plus an ``Idempotent-Replayed: true``
      header, without running the app;
    - a concurrent repeat waits for the first one and replays it, or gets 409 after
      ``dedup.in_flight_timeout`` seconds;
    - the same key with another body gets 422 and runs nothing;
    - an empty key, or one longer than ``max_key_length`` characters (default 1024), gets 400;
    - a 5xx or 429 response, or an exception from the app, is not stored: the key is released so
      the client may retry, and the response (or exception) goes on as usual.

    The caller is ``scope(asgi_scope)``, a string (or an awaitable of one) such as a tenant or
    user id; by default a SHA-256 digest of the ``Authorization`` header, so callers with other
    credentials never share a key, and all callers without one share one space. Give ``scope``
    when credentials rotate between retries (short-lived tokens) or callers authenticate another
    way (cookies, mTLS, an API-key header); it sees the ASGI scope as the middleware in front of
    this one left it (``scope["user"]`` after Starlette's ``AuthenticationMiddleware``).
    ``Set-Cookie`` headers reach the first caller but are never stored, so never replayed.

    The response is buffered until stored, so streamed responses reach the client whole.
    """

    def __init__(
        self,
        app: ASGIApp,
        dedup: Deduplicator,
        header: str = "Idempotency-Key",
        methods: Sequence[str] = ("POST", "PUT", "PATCH", "DELETE"),
        *,
        scope: CallerOf | None = None,
        max_key_length: int = 1024,
    ) -> None:
        if isinstance(max_key_length, bool) or not isinstance(max_key_length, int):
            raise TypeError(f"max_key_length must be an int, got {max_key_length!r}")
        if max_key_length < 1:
            raise ValueError(f"max_key_length must be 1 or more, got {max_key_length}")
        self.app = app
        self.dedup = dedup
        self.header = header.lower().encode("latin-1")
        self.methods = frozenset(m.upper() for m in methods)
        self.caller: CallerOf = scope or authorization_digest
        self.max_key_length = max_key_length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        # The body is read before any answer: a server that answers (or fails) with a body
        # left unread closes the connection on it, and the client may see a reset instead.
        body = await _read_body(receive)
        if body is None:
            return  # the client disconnected before sending its whole body
        if not key:
            await _send_json(send, 400, "idempotency_key_empty", "the idempotency key is empty")
            return
        if len(key) > self.max_key_length:
            detail = (
                f"the idempotency key is {len(key)} characters long, more than the "
                f"{self.max_key_length} this service accepts; send a shorter key"
            )
            await _send_json(send, 400, "idempotency_key_too_long", detail)
            return
        caller = await self._caller(scope)
        fingerprint = hashlib.sha256(scope.get("query_string", b"") + b"?" + body).hexdigest()
        # Streaming shortcuts would bypass the capture; the app falls back to body messages.
        extensions = {
            k: v
            for k, v in (scope.get("extensions") or {}).items()
            if k not in ("http.response.pathsend", "http.response.zerocopy")
        }
        inner_scope = {**scope, "extensions": extensions}
        ran = False
        cookies: list[tuple[bytes, bytes]] = []

        async def run_app() -> bytes:
            nonlocal ran
            ran = True
            receive_body = _replay_body(body, receive)
            status, response, set_cookies = await _capture(self.app, inner_scope, receive_body)
            cookies.extend(set_cookies)
            if status >= 500 or status == 429:
                raise _NotStored(response)
            return response

        parts = ("http", scope["method"].upper(), scope["path"], caller)
        try:
            stored = await self.dedup.aexecute(key, fingerprint, run_app, scope=parts)
        except _NotStored as not_stored:
            await _send_stored(send, not_stored.response, replayed=False, extra=cookies)
        except IdempotencyKeyReused as exc:
            await _send_json(send, 422, "idempotency_key_reused", str(exc))
        except IdempotencyKeyInFlight as exc:
            await _send_json(send, 409, "idempotency_key_in_flight", str(exc))
        else:
            await _send_stored(send, stored, replayed=not ran, extra=cookies if ran else [])

    def _key(self, scope: Scope) -> str | None:
        if scope["type"] != "http" or scope["method"].upper() not in self.methods:
            return None
        for name, value in scope["headers"]:
            if name.lower() == self.header:
                return bytes(value).decode("latin-1").strip()
        return None

    async def _caller(self, scope: Scope) -> str:
        caller = self.caller(scope)
        if inspect.isawaitable(caller):
            caller = await caller
        if not isinstance(caller, str):
            raise TypeError(
                f"IdempotencyMiddleware(scope={self.caller!r}) returned {caller!r}: it must "
                "return the caller's id as a string (a tenant or user id)"
            )
        return caller


def authorization_digest(scope: Scope) -> str:
    """The default caller id: a SHA-256 digest of the request's ``Authorization`` header(s).

    Requests without the header all get the digest of nothing, so they share one space.
    """
    values = [bytes(v) for k, v in scope["headers"] if bytes(k).lower() == b"authorization"]
    return hashlib.sha256(b"\n".join(values)).hexdigest()


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay_body(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the already-read body once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _capture(
    app: ASGIApp, scope: Scope, receive: Receive
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Run ``app``; return its status, its response (a JSON head line, newline, body) without
    cookies, and the cookie headers apart."""
    status: int | None = None
    headers: list[list[str]] = []
    cookies: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers.clear()
            cookies.clear()
            for k, v in message.get("headers", []):
                if bytes(k).decode("latin-1").lower() in _NEVER_STORED:
                    cookies.append((bytes(k), bytes(v)))
                else:
                    headers.append([bytes(k).decode("latin-1"), bytes(v).decode("latin-1")])
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    await app(scope, receive, send)
    if status is None:
        raise RuntimeError("the application returned without sending a response")
    head = json.dumps({"status": status, "headers": headers}, separators=(",", ":"))
    return status, head.encode() + b"\n" + b"".join(chunks), cookies


async def _send_stored(
    send: Send, stored: bytes, *, replayed: bool, extra: list[tuple[bytes, bytes]]
) -> None:
    head_line, body = stored.split(b"\n", 1)
    head = json.loads(head_line)
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head["headers"]]
    headers += extra
    if replayed:
        headers.append(REPLAYED_HEADER)
    await send({"type": "http.response.start", "status": head["status"], "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
