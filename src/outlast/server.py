"""The HTTP endpoint (``outlast serve module:app``): webhook callbacks, starting runs, status.

Routes (JSON in and out):

- ``POST /runs/{run_id}/events/{name}``: the body is the event's payload (any JSON value);
  ``202 {"run_id", "event"}``. For webhooks from CI systems, renderers, humans approving.
- ``POST /runs``: ``{"workflow": name, "args": [...], "kwargs": {...}, "run_id": optional}``;
  the run is recorded for the workers (``201 {"run_id", "status"}``).
- ``GET /runs/{run_id}``: ``{"run_id", "workflow", "status", "result"?, "error"?}``.

Errors are 4xx with ``{"error": message}``: 400 bad JSON or fields, 401 missing or wrong
bearer token, 404 unknown run or workflow, 409 a finished run or a run id reused, 413 a body
over ``max_body`` bytes. Requires the ``serve`` extra (Starlette); uvicorn serves it.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

from . import jsonview
from .errors import ConfigurationError, OutlastError, RunConflict, RunNotFound

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from .app import App

#: largest request body accepted, in bytes
MAX_BODY = 1 << 20
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(app: App, *, token: str | None = None, max_body: int = MAX_BODY) -> Starlette:
    """The ASGI application for ``app``. With ``token``, every request must carry
    ``Authorization: Bearer <token>``."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "outlast serve needs Starlette and uvicorn: pip install 'outlast[serve]'"
        ) from exc

    def check_token(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise _Reject(401, "missing or wrong bearer token (Authorization: Bearer <token>)")

    async def body_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise _Reject(413, f"request body over {max_body} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_body:  # no or false Content-Length: stop reading at the limit
                raise _Reject(413, f"request body over {max_body} bytes")
        try:
            return json.loads(bytes(data) or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Reject(400, f"body is not valid JSON: {exc}") from None

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            try:
                check_token(request)
                return await handler(request)  # type: ignore[no-any-return]
            except _Reject as r:
                return JSONResponse({"error": r.message}, status_code=r.status)
            except RunNotFound as exc:
                return JSONResponse({"error": str(exc)}, status_code=404)
            except RunConflict as exc:
                return JSONResponse({"error": str(exc)}, status_code=409)
            except OutlastError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)

        return endpoint

    async def send_event(request: Request) -> JSONResponse:
        run_id, name = request.path_params["run_id"], request.path_params["name"]
        payload = await body_json(request)
        record = await run_in_threadpool(app.store.get_run, run_id)
        if record is None:
            raise RunNotFound(run_id, "events can only be sent to an existing run")
        if record.status in ("completed", "failed", "cancelled"):
            raise _Reject(409, f"run {run_id!r} is {record.status}; it will never read event {name!r}")
        await run_in_threadpool(app.send, run_id, name, payload)
        return JSONResponse({"run_id": run_id, "event": name}, status_code=202)

    async def start_run(request: Request) -> JSONResponse:
        doc = await body_json(request)
        if not isinstance(doc, dict) or not isinstance(doc.get("workflow"), str):
            raise _Reject(400, 'expected {"workflow": name, "args": [...], "kwargs": {...}}')
        args, kwargs = doc.get("args", []), doc.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise _Reject(400, '"args" must be a list and "kwargs" an object')
        if doc["workflow"] not in app.workflows:
            raise _Reject(404, f"unknown workflow {doc['workflow']!r}; known: {sorted(app.workflows)}")
        run_id = doc.get("run_id")
        if run_id is not None and not isinstance(run_id, str):
            raise _Reject(400, '"run_id" must be a string')
        handle = await run_in_threadpool(
            lambda: app.enqueue(doc["workflow"], *args, run_id=run_id, **kwargs)
        )
        return JSONResponse({"run_id": handle.run_id, "status": handle.status}, status_code=201)

    async def show_run(request: Request) -> JSONResponse:
        info = await run_in_threadpool(app.get_run, request.path_params["run_id"], steps=False)
        data: dict[str, Any] = {"run_id": info.run_id, "workflow": info.workflow, "status": info.status}
        if info.status == "completed":
            data["result"] = jsonview.to_json(info.result)
        elif info.status == "failed":
            err = info.error
            data["error"] = None if err is None else f"{type(err).__name__}: {err}"
        elif info.reason:
            data["reason"] = info.reason
        return JSONResponse(data)

    return Starlette(routes=[
        Route("/runs/{run_id}/events/{name}", guarded(send_event), methods=["POST"]),
        Route("/runs", guarded(start_run), methods=["POST"]),
        Route("/runs/{run_id}", guarded(show_run), methods=["GET"]),
    ])


def check_binding(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a bearer token."""
    if host not in LOCAL_HOSTS and not token:
        raise ConfigurationError(
            f"outlast serve on {host!r} is reachable from other machines: give --token "
            "(or $OUTLAST_SERVE_TOKEN), or bind 127.0.0.1"
        )
