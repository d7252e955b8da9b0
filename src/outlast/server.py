"""The HTTP endpoint (``outlast serve module:app``): webhook callbacks, starting runs, status.

Routes (JSON in and out; request bodies must be ``Content-Type: application/json``):

- ``POST /runs/{run_id}/events/{name}``: the body is the event's payload (any JSON value);
  ``202 {"run_id", "event"}``. For webhooks from CI systems, renderers, humans approving.
- ``POST /runs``: ``{"workflow": name, "args": [...], "kwargs": {...}, "run_id"?, "queue"?,
  "priority"?, "concurrency_key"?}``. ``args``/``kwargs`` go to the workflow only, checked
  against its signature and converted to its annotated types (dataclasses, pydantic models)
  before the run is created. ``queue`` must be a declared queue (or the workflow's own),
  ``priority`` an integer from -1000 to 1000. ``201 {"run_id", "status"}`` for a new run;
  ``200`` with the run's view (``result`` when completed) when ``run_id`` names an existing run
  with the same arguments.
- ``GET /runs/{run_id}``: the run's fields (:func:`outlast.jsonview.run_fields`: ``"run_id",
  "workflow", "status", "stats", "forked_from"``...) with ``"result"`` or ``"error"``; shown
  through :mod:`outlast.jsonview` (valid JSON always).

Every request passes :mod:`outlast.websec` first (Host, cross-site, content type, token).
Errors are 4xx with ``{"error": message}``: 400 bad JSON or fields (NaN, lone surrogates,
nesting deeper than 64, unknown arguments), 401 missing or wrong bearer token, 403 a foreign
Host or a cross-site request, 404 unknown run or workflow, 409 a finished run or a run id
reused with other arguments, 413 a body over ``max_body`` bytes, 415 a body that is not JSON.
Requires the ``serve`` extra (Starlette); uvicorn serves it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import jsonview
from .errors import ConfigurationError, OutlastError, RunConflict, RunNotFound
from .webinput import BadInput, bind_workflow_args, enqueue_options, parse_json
from .websec import Guard
from .websec import check_binding as _check_binding

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from .app import App
    from .run import RunInfo

#: largest request body accepted, in bytes
MAX_BODY = 1 << 20
_TOP_FIELDS = frozenset({"workflow", "args", "kwargs", "run_id", "queue", "priority", "concurrency_key"})


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(
    app: App,
    *,
    token: str | None = None,
    max_body: int = MAX_BODY,
    allowed_hosts: Iterable[str] = (),
    bind: tuple[str, int] | None = None,
) -> Any:
    """The ASGI application for ``app``, behind :class:`outlast.websec.Guard`.

    With ``token``, every request must carry ``Authorization: Bearer <token>``.
    ``allowed_hosts``: names besides the bound address the ``Host`` header may carry.
    ``bind``: the address and port the server listens on, as given to it (default: the one
    each connection arrived on; give it for a wildcard address such as ``0.0.0.0``).
    """
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "outlast serve needs Starlette and uvicorn: pip install 'outlast[serve]'"
        ) from exc

    async def body_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise _Reject(413, f"request body over {max_body} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_body:  # no or false Content-Length: stop reading at the limit
                raise _Reject(413, f"request body over {max_body} bytes")
        return parse_json(bytes(data))

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            try:
                return await handler(request)  # type: ignore[no-any-return]
            except _Reject as r:
                return JSONResponse({"error": r.message}, status_code=r.status)
            except BadInput as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
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
        if unknown := sorted(doc.keys() - _TOP_FIELDS):
            raise _Reject(400, f"unknown field {unknown[0]!r:.80}; the fields are {sorted(_TOP_FIELDS)} "
                               '(workflow arguments go in "kwargs")')
        args, kwargs = doc.get("args", []), doc.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise _Reject(400, '"args" must be a list and "kwargs" an object')
        wf = app.workflows.get(doc["workflow"])
        if wf is None:
            raise _Reject(404, f"unknown workflow {doc['workflow']!r:.100}; known: {sorted(app.workflows)}")
        run_id = doc.get("run_id")
        if run_id is not None and (not isinstance(run_id, str) or not 0 < len(run_id) <= 200):
            raise _Reject(400, '"run_id" must be a string of 1 to 200 characters')
        options = enqueue_options(app, wf, doc)
        call_args, call_kwargs = bind_workflow_args(wf, args, kwargs)

        def enqueue() -> tuple[bool, RunInfo]:
            existed = run_id is not None and app.store.get_run(run_id) is not None
            handle = app.enqueue(wf, *call_args, run_id=run_id, **options, **call_kwargs)
            return existed, app.get_run(handle.run_id, steps=False)

        existed, info = await run_in_threadpool(enqueue)
        if existed:  # the same run posted again: what it is now, not a new run
            return JSONResponse(_view(info))
        return JSONResponse({"run_id": info.run_id, "status": info.status}, status_code=201)

    async def show_run(request: Request) -> JSONResponse:
        info = await run_in_threadpool(app.get_run, request.path_params["run_id"], steps=False)
        return JSONResponse(await run_in_threadpool(_view, info))

    return Guard(
        Starlette(routes=[
            Route("/runs/{run_id}/events/{name}", guarded(send_event), methods=["POST"]),
            Route("/runs", guarded(start_run), methods=["POST"]),
            Route("/runs/{run_id}", guarded(show_run), methods=["GET"]),
        ]),
        token=token, allowed_hosts=frozenset(h.lower() for h in allowed_hosts),
        host=bind[0] if bind else None, port=bind[1] if bind else None,
    )


def _view(info: RunInfo) -> dict[str, Any]:
    """The run as ``GET /runs/{id}`` shows it; a result this process cannot read is reported,
    not a 500 (its class may live in a module the server did not import)."""
    data = jsonview.run_fields(info)
    try:
        if info.status == "completed":
            data["result"] = info.result
        elif info.status == "failed":
            err = info.error
            data["error"] = None if err is None else f"{type(err).__name__}: {err}"
    except OutlastError as exc:
        data["unreadable"] = str(exc)
    viewed: dict[str, Any] = jsonview.to_json(data)
    return viewed


def check_binding(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a bearer token."""
    try:
        _check_binding(host, token)
    except ValueError as exc:
        raise ConfigurationError(f"{exc} (or set $OUTLAST_SERVE_TOKEN)") from None
