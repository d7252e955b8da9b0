"""A local OpenAI- and Anthropic-compatible model server for tests, benchmarks and demos.

Standard library only, so importing it needs nothing installed. The real `openai` and
`anthropic` SDKs work against it unchanged::

    with FakeLLMServer() as server:
        openai.OpenAI(base_url=server.openai_base_url, api_key="test")
        anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test")

Replies are deterministic (derived from the request) unless scripted with a responder or a
list of `Reply` objects. Faults (`Fault.rate_limit`, `Fault.server_error`, `Fault.slow`,
`Fault.disconnect`, ...) are injected one per request, and every request is recorded.

From a shell, `python -m outlast.testing.llm_server --port 0` serves in the foreground and
prints its URL as the first line of stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import socketserver
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from outlast.testing.llm_render import (
    SSEEvent,
    error_body,
    render_body,
    render_stream,
    response_id,
)
from outlast.testing.llm_wire import (
    ROUTES,
    Fault,
    LLMRequest,
    Message,
    Provider,
    Reply,
    RequestError,
    Tool,
    ToolCall,
    default_reply,
    parse_request,
)

__all__ = [
    "FakeLLMServer",
    "Fault",
    "LLMRequest",
    "Message",
    "RecordedRequest",
    "Reply",
    "Responder",
    "Tool",
    "ToolCall",
    "main",
]

log = logging.getLogger(__name__)

#: A function from the parsed request to the reply; a plain string means `Reply(text=...)`.
Responder = Callable[[LLMRequest], Reply | str]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    `body` is the decoded JSON (None if absent or not JSON), `headers` have lower-case
    names, `received_at` is `time.monotonic()` on arrival, and `fault` is the injected fault
    the request took, if any.
    """

    method: str
    path: str
    body: Any
    headers: Mapping[str, str]
    received_at: float
    fault: Fault | None = None

    @property
    def idempotency_key(self) -> str | None:
        """The `Idempotency-Key` header, if sent."""
        return self.headers.get("idempotency-key")


class _ScriptError(RuntimeError):
    """The responder failed or ran out of replies: a bug in the test, not a transient fault."""


class FakeLLMServer:
    """An HTTP model server on a daemon thread; use it as a context manager.

    Options:

    - `responder`: a callable `LLMRequest -> Reply | str` (called on the server's threads,
      possibly at the same time), or an iterable of replies given in order (the server
      answers 500, which the SDKs do not retry, once they run out). Default: a deterministic
      `Reply to: <last user text> [<hash>]`.
    - `host`, `port`: where to listen; port 0 picks a free one.
    - `latency`: seconds before every answer; `chunk_delay`: seconds between streamed events.
    - `reply_tokens`: the length of default replies, in estimated tokens.
    - `keep_bodies`: record each request's body (default). A long conversation resends its
      history every turn, so the bodies of 300 turns of 2 KB messages hold ~180 MB; give
      False to a server that serves such a run in a process whose memory is measured
      (`RecordedRequest.body` is then None).
    """

    def __init__(
        self,
        responder: Responder | Iterable[Reply | str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        reply_tokens: int | None = None,
        keep_bodies: bool = True,
    ) -> None:
        self.latency = latency
        self.keep_bodies = keep_bodies
        self.chunk_delay = chunk_delay
        self.reply_tokens = reply_tokens
        self._responder: Responder | None = None
        self._script: Iterator[Reply | str] | None = None
        if isinstance(responder, str | Reply):
            raise TypeError("FakeLLMServer(responder=...) takes a callable or a list of replies")
        if callable(responder):
            self._responder = responder
        elif responder is not None:
            self._script = iter(list(responder))
        self._address = (host, port)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._served = 0
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve on a daemon thread; return self."""
        if self._httpd is not None:
            raise RuntimeError("FakeLLMServer is already running")
        self._stopping.clear()
        self._httpd = _HTTPServer(self._address, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"FakeLLMServer:{self.port}",
        )
        self._thread.start()
        # Also stopped at interpreter exit; the finalizer holds the server, not self.
        self._finalizer = weakref.finalize(
            self, _shut_down, self._httpd, self._thread, self._stopping
        )
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and free the port. Safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()  # runs _shut_down once
        self._finalizer = None
        self._httpd = self._thread = None

    def close(self) -> None:
        """The same as :meth:`stop`, for symmetry with the rest of outlast."""
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._httpd is None:
            raise RuntimeError("FakeLLMServer is not running: call start() or use `with`")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, the base URL for the Anthropic SDK."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`, the `base_url` for the OpenAI SDK."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The `base_url` for the Anthropic SDK (it adds `/v1/messages` itself)."""
        return self.url

    # -- faults and the request log ----------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each later request takes the first queued fault that matches its path."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, path: str | None = None) -> int:
        """How many requests arrived, in all or to `path` (e.g. `/v1/chat/completions`)."""
        with self._lock:
            return sum(1 for r in self._requests if path is None or r.path == path.rstrip("/"))

    def reset(self) -> None:
        """Forget recorded requests and queued faults (scripted replies are left as they are)."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()

    # -- serving (called on the handler's thread) --------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        path = urlsplit(handler.path).path.rstrip("/") or "/"
        headers = {name.lower(): value for name, value in handler.headers.items()}
        raw = handler.rfile.read(int(headers.get("content-length") or 0))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            fault = next((f for f in self._faults if f.matches(path)), None)
            if fault is not None:
                self._faults.remove(fault)
            kept = body if self.keep_bodies else None
            arrival = RecordedRequest(handler.command, path, kept, headers, time.monotonic(), fault)
            self._requests.append(arrival)
        log.debug("%s %s%s", handler.command, path, f" ({fault})" if fault else "")
        provider: Provider
        if path in ROUTES:
            provider = ROUTES[path][0]
        else:
            provider = "anthropic" if "anthropic-version" in headers else "openai"
        cut_after: int | None = None
        if fault is not None and fault.kind == "disconnect":
            if fault.after_events == 0 or not (isinstance(body, dict) and body.get("stream")):
                handler.drop()
                return
            cut_after = fault.after_events
        elif fault is not None and fault.kind == "slow":
            self._sleep(fault.seconds)
        elif fault is not None:
            error = error_body(provider, fault.status, fault.message)
            handler.send_json(fault.status, error, _retry_headers(fault.retry_after))
            return
        if handler.command != "POST" or path not in ROUTES:
            message = f"No endpoint {handler.command} {path}; FakeLLMServer serves POST {', '.join(ROUTES)}"
            handler.send_json(404, error_body(provider, 404, message))
            return
        self._answer(handler, path, body, headers, cut_after)

    def _answer(
        self,
        handler: _Handler,
        path: str,
        body: Any,
        headers: Mapping[str, str],
        cut_after: int | None,
    ) -> None:
        provider = ROUTES[path][0]
        if not isinstance(body, dict):
            handler.send_json(400, error_body(provider, 400, "The body must be a JSON object."))
            return
        try:
            request = parse_request(path, body, headers)
            reply = self._reply(request)
        except RequestError as exc:
            handler.send_json(400, error_body(provider, 400, str(exc)))
            return
        except _ScriptError as exc:
            # Not retried by the SDKs, so the test fails on the first call with this message.
            handler.send_json(500, error_body(provider, 500, str(exc)), {"x-should-retry": "false"})
            return
        with self._lock:
            self._served += 1
            rid = response_id(request, self._served)
        self._sleep(self.latency)
        if request.stream:
            events = render_stream(request, reply, rid=rid, created=int(time.time()))
            handler.send_stream(events, self.chunk_delay, cut_after, self._sleep)
        else:
            handler.send_json(200, render_body(request, reply, rid=rid, created=int(time.time())))

    def _reply(self, request: LLMRequest) -> Reply:
        reply: object
        if self._script is not None:
            with self._lock:
                reply = next(self._script, None)
            if reply is None:
                raise _ScriptError(
                    "FakeLLMServer: the scripted replies ran out; script more Replies"
                )
        elif self._responder is not None:
            try:
                reply = self._responder(request)
            except Exception as exc:
                raise _ScriptError(f"FakeLLMServer: the responder raised {exc!r}") from exc
        else:
            reply = default_reply(request, self.reply_tokens)
        if isinstance(reply, str):
            return Reply(text=reply)
        if not isinstance(reply, Reply):
            raise _ScriptError(
                f"FakeLLMServer: the responder returned {reply!r}, not a Reply or str"
            )
        return reply

    def _sleep(self, seconds: float) -> None:
        # An Event wait rather than time.sleep, so stop() cuts delays short.
        if seconds > 0:
            self._stopping.wait(seconds)


def _retry_headers(retry_after: float | None) -> dict[str, str]:
    if retry_after is None:
        return {}
    seconds = f"{retry_after:g}"
    return {"retry-after": seconds, "retry-after-ms": str(round(retry_after * 1000))}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: FakeLLMServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on a bad resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = (
            str(self.server_address[0]),
            int(self.server_address[1]),
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (an SDK closing its pool, a test cancelling) is routine.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        log.exception("FakeLLMServer: error while serving %s", client_address)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def drop_connections(self) -> None:
        """Shut idle keep-alive connections, whose handler threads would otherwise linger."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _shut_down(httpd: _HTTPServer, thread: threading.Thread, stopping: threading.Event) -> None:
    stopping.set()
    httpd.shutdown()
    httpd.server_close()
    httpd.drop_connections()
    thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_POST(self) -> None:
        try:
            self.server.owner._serve(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_stream(
        self,
        events: Iterable[SSEEvent],
        delay: float,
        cut_after: int | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, (event, data) in enumerate(events):
            if cut_after is not None and index >= cut_after:
                self.wfile.flush()
                self.drop()
                return
            if index:
                sleep(delay)
            text = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
            payload = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def drop(self) -> None:
        """Close the connection at once, without (the rest of) an answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def main(argv: list[str] | None = None) -> int:
    """Serve in the foreground until interrupted; the first line of stdout is the URL."""
    parser = argparse.ArgumentParser(
        prog="python -m outlast.testing.llm_server",
        description="A local OpenAI- and Anthropic-compatible model server for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds between streamed events"
    )
    parser.add_argument("--reply-tokens", type=int, default=None, help="length of default replies")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(message)s")

    def exit_cleanly(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_cleanly)
    server = FakeLLMServer(
        host=args.host,
        port=args.port,
        latency=args.latency,
        chunk_delay=args.chunk_delay,
        reply_tokens=args.reply_tokens,
        keep_bodies=False,  # nobody can read them from outside the process
    )
    with server:
        print(server.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
