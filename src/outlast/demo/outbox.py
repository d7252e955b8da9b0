"""A stand-in for the calendar and mail services: a local HTTP server that deduplicates by
``Idempotency-Key`` and counts what it really delivered."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Outbox:
    """POST /calendar and /email; a repeated Idempotency-Key replays the stored answer."""

    def __init__(self) -> None:
        self.delivered: dict[str, int] = {}
        self.duplicates = 0
        self._answers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        outbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                json.loads(self.rfile.read(length) or b"{}")
                key = self.headers.get("Idempotency-Key") or ""
                with outbox._lock:
                    if key and key in outbox._answers:
                        outbox.duplicates += 1
                    else:
                        outbox.delivered[self.path] = outbox.delivered.get(self.path, 0) + 1
                        outbox._answers[key] = {"id": f"{self.path.strip('/')}-{len(outbox._answers) + 1}"}
                    body = json.dumps(outbox._answers[key]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Outbox:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
