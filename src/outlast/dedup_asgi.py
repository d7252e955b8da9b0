"""ASGI middleware that makes a service's unsafe requests idempotent by their Idempotency-Key.

Pure ASGI: works under Starlette and FastAPI (``app.add_middleware(IdempotencyMiddleware,
dedup=Deduplicator(...))``) or wrapping any ASGI app, with no web framework imported here. The
guarantee is :class:`~outlast.dedup.Deduplicator`'s: see :mod:`outlast.dedup`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from .dedup import Deduplicator, IdempotencyKeyInFlight, IdempotencyKeyReused

__all__ = ["IdempotencyMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REPLAYED_HEADER = (b"idempotent-replayed", b"true")


class _NotStored(Exception):  # noqa: N818 - internal signal, never escapes the middleware
    """Carries a response that must reach the client but not be stored (5xx, 429)."""

    def __init__(self, response: bytes) -> None:
        super().__init__("response not stored")
        self.response = response


class IdempotencyMiddleware:
    """Run each request with an ``Idempotency-Key`` header once; replay its response to repeats.

    Requests whose method is not in ``methods``, and requests without the header, pass through
    untouched. Otherwise the key is scoped by method and path (the same key may be sent to two
    endpoints) and the request's fingerprint is a hash of its query string and body:

    - the first request runs the app; its status, headers and body are stored, then sent;
    - a repeat gets the stored response plus an ``Idempotent-Replayed: true`` header, without
      running the app;
    - a concurrent repeat waits for the first one and replays it, or gets 409 after
      ``dedup.in_flight_timeout`` seconds;
    - the same key with another body gets 422 and runs nothing;
    - a 5xx or 429 response, or an exception from the app, is not stored: the key is released so
      the client may retry, and the response (or exception) goes on as usual.

    The response is buffered until stored, so streamed responses reach the client whole.
    """

    def __init__(
        self,
        app: ASGIApp,
        dedup: Deduplicator,
        header: str = "Idempotency-Key",
        methods: Sequence[str] = ("POST", "PUT", "PATCH", "DELETE"),
    ) -> None:
        self.app = app
        self.dedup = dedup
        self.header = header.lower().encode("latin-1")
        self.methods = frozenset(m.upper() for m in methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        if not key:
            await _send_json(send, 400, "idempotency_key_empty", "the idempotency key is empty")
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client disconnected before sending its whole body
        fingerprint = hashlib.sha256(scope.get("query_string", b"") + b"?" + body).hexdigest()
        # Streaming shortcuts would bypass the capture; the app falls back to body messages.
        extensions = {
            k: v
            for k, v in (scope.get("extensions") or {}).items()
            if k not in ("http.response.pathsend", "http.response.zerocopy")
        }
        inner_scope = {**scope, "extensions": extensions}
        ran = False

        async def run_app() -> bytes:
            nonlocal ran
            ran = True
            status, response = await _capture(self.app, inner_scope, _replay_body(body, receive))
            if status >= 500 or status == 429:
                raise _NotStored(response)
            return response

        scoped = f"{scope['method']} {scope['path']}:{key}"
        try:
            stored = await self.dedup.aexecute(scoped, fingerprint, run_app)
        except _NotStored as not_stored:
            await _send_stored(send, not_stored.response, replayed=False)
        except IdempotencyKeyReused as exc:
            await _send_json(send, 422, "idempotency_key_reused", str(exc))
        except IdempotencyKeyInFlight as exc:
            await _send_json(send, 409, "idempotency_key_in_flight", str(exc))
        else:
            await _send_stored(send, stored, replayed=not ran)

    def _key(self, scope: Scope) -> str | None:
        if scope["type"] != "http" or scope["method"].upper() not in self.methods:
            return None
        for name, value in scope["headers"]:
            if name.lower() == self.header:
                return bytes(value).decode("latin-1").strip()
        return None


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


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """Run ``app``; return its status and its response as a JSON head line, newline, body."""
    status: int | None = None
    headers: list[list[str]] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers[:] = [
                [bytes(k).decode("latin-1"), bytes(v).decode("latin-1")]
                for k, v in message.get("headers", [])
            ]
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    await app(scope, receive, send)
    if status is None:
        raise RuntimeError("the application returned without sending a response")
    head = json.dumps({"status": status, "headers": headers}, separators=(",", ":"))
    return status, head.encode() + b"\n" + b"".join(chunks)


async def _send_stored(send: Send, stored: bytes, *, replayed: bool) -> None:
    head_line, body = stored.split(b"\n", 1)
    head = json.loads(head_line)
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head["headers"]]
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
