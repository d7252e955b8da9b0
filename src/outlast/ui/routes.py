"""The dashboard's routes: pages, the JSON API and, with ``allow_actions``, the actions.

Pages: ``/`` (redirects to ``/runs``), ``/runs``, ``/runs/{run_id}``. API: ``GET /api/runs``,
``GET /api/runs/{id}``, ``GET /api/runs/{id}/state`` (cheap, for live updates), and
``POST /api/runs/{id}/cancel|events|resolve|retry|fork`` taking JSON (scripts) or the pages'
form encoding with their CSRF token. Starlette is imported by :func:`outlast.ui.create_app` only.

A refused action is an error, never a 500: 400 bad input (an unknown checkpoint), 403 actions
off or a cross-site request, 404 an unknown run, 409 the run's state or ids forbid it (retrying
a run that is not failed, a fork's id already taken, an event for an ended run).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from .. import jsonview
from ..errors import (
    ConfigurationError,
    NotFailed,
    NotPaused,
    OutlastError,
    RunConflict,
    RunNotFound,
)
from ..run import shown_stats
from ..webinput import BadInput, parse_json
from ..websec import FORM_TYPE, Refused, WebPolicy
from . import data, pages
from .steps import StepCache

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ..app import App

STATIC = Path(__file__).parent / "static"
MAX_BODY = 1 << 20
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


def build(app: App, *, allow_actions: bool) -> list[Any]:
    """The routes over ``app``'s store."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    cache = StepCache()  # viewed steps: a run's recorded outcomes never change

    def policy(request: Request) -> WebPolicy:
        found: WebPolicy = request.scope["state"]["outlast_policy"]
        return found

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def js(body: Any, status: int = 200, *, viewed: bool = False) -> JSONResponse:
        """``body`` as JSON (``viewed``: already in the JSON view, written as it is)."""
        return JSONResponse(body if viewed else jsonview.to_json(body), status_code=status, headers=HEADERS)

    def page(request: Request, text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status_code=status, headers=HEADERS)

    def failure(request: Request, status: int, message: str) -> Response:
        api = request.url.path.startswith(root(request) + "/api/")
        if _wants_json(request) or (api and not _a_page_form(request)):
            return js({"error": message}, status)
        return page(request, pages.error_page(status, message, root=root(request),
                                              csrf=policy(request).csrf_token()), status)

    def handled(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)  # type: ignore[no-any-return]
            except Refused as r:
                return failure(request, r.status, r.message)
            except (BadInput, data.BadFilter) as exc:
                return failure(request, 400, str(exc))
            except RunNotFound as exc:
                return failure(request, 404, str(exc))
            except (NotPaused, NotFailed, RunConflict, ConfigurationError) as exc:
                return failure(request, 409, str(exc))
            except OutlastError as exc:
                return failure(request, 400, str(exc))

        return endpoint

    async def home(request: Request) -> Response:
        return RedirectResponse(f"{root(request)}/runs", status_code=302)

    async def runs_page(request: Request) -> Response:
        filters = data.Filters.parse(request.query_params)
        listing = await run_in_threadpool(data.list_runs, app.store, filters)
        return page(request, pages.runs_page(listing, filters, root=root(request),
                                             csrf=policy(request).csrf_token()))

    async def runs_api(request: Request) -> Response:
        filters = data.Filters.parse(request.query_params)
        return js(await run_in_threadpool(data.list_runs, app.store, filters))

    def step_page(request: Request) -> int:
        raw = request.query_params.get("page", "0")
        if not raw.isdigit() or int(raw) > 1_000_000:
            raise BadInput(f"page must be a whole number, got {raw!r:.20}")
        return int(raw)

    def step_filters(request: Request) -> dict[str, str | None]:
        chosen = {k: request.query_params.get(k) or None for k in ("kind", "status")}
        if any(v is not None and len(v) > 50 for v in chosen.values()):
            raise BadInput("kind and status are at most 50 characters")
        return chosen

    async def load_run(run_id: str, offset: int, limit: int, chosen: dict[str, str | None]) -> dict[str, Any]:
        found = await run_in_threadpool(
            lambda: data.run_detail(app, run_id, offset=offset, limit=limit, cache=cache, **chosen))
        if found is None:
            raise RunNotFound(run_id)
        return found

    async def run_page(request: Request) -> Response:
        number = step_page(request)
        chosen = step_filters(request)
        run = await load_run(request.path_params["run_id"], number * data.STEP_PAGE, data.STEP_PAGE, chosen)
        text = pages.run_page(run, root=root(request), csrf=policy(request).csrf_token(), actions=allow_actions,
                              page=number, message=request.query_params.get("msg", "")[:300], chosen=chosen)
        return page(request, text)

    async def run_api(request: Request) -> Response:
        params = request.query_params
        offset, limit = params.get("offset", "0"), params.get("limit", str(data.STEP_PAGE))
        if not offset.isdigit() or not limit.isdigit() or not 1 <= int(limit) <= 10_000:
            raise BadInput("offset must be a whole number and limit one from 1 to 10000")
        found = await load_run(request.path_params["run_id"], int(offset), int(limit), step_filters(request))
        return js(found, viewed=True)

    async def run_state(request: Request) -> Response:
        record = await run_in_threadpool(app.store.get_run, request.path_params["run_id"])
        if record is None:
            raise RunNotFound(request.path_params["run_id"])
        return js({"status": record.status, "epoch": record.epoch, "ended_at": record.ended_at,
                   "wake_at": record.wake_at, "wait_event": record.wait_event,
                   "stats": shown_stats(record.stats)[0]})

    # -- actions ----------------------------------------------------------------------------

    async def action_input(request: Request) -> dict[str, Any]:
        if not allow_actions:
            raise Refused(403, "actions are off: start the dashboard with outlast ui --allow-actions")
        body = await _read(request)
        kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if kind == FORM_TYPE:
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            policy(request).check_csrf(form.pop("csrf", None))
            return {"form": True, **form}
        doc = parse_json(body)
        if not isinstance(doc, dict):
            raise BadInput("expected a JSON object")
        return {"form": False, **doc}

    def done(request: Request, doc: dict[str, Any], run_id: str, message: str) -> Response:
        if doc["form"] and not _wants_json(request):  # a page's form without JavaScript
            target = f"{root(request)}/runs/{quote(run_id, safe='')}?msg={quote(message)}"
            return RedirectResponse(target, status_code=303)
        return js({"ok": True, "run_id": run_id, "message": message})

    async def cancel(request: Request) -> Response:
        doc = await action_input(request)
        run_id = request.path_params["run_id"]
        ids = await run_in_threadpool(app.cancel, run_id)
        return done(request, doc, run_id, f"cancelled: {', '.join(ids)}" if ids else "the run had already ended")

    async def send_event(request: Request) -> Response:
        doc = await action_input(request)
        run_id, name = request.path_params["run_id"], doc.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise BadInput("the event name must be a string of 1 to 200 characters")
        payload = doc.get("payload")
        if doc["form"]:
            payload = parse_json(str(payload or "null").encode("utf-8", "surrogatepass"), what="payload")
        else:
            parse_json(jsonview.dumps(payload).encode(), what="payload")  # same limits as forms
        await run_in_threadpool(app.send, run_id, name, payload)
        return done(request, doc, run_id, f"sent event {name!r}")

    async def resolve(request: Request) -> Response:
        doc = await action_input(request)
        run_id = request.path_params["run_id"]
        if doc["form"]:
            doc["redo"] = doc.get("decision") == "redo"
            if doc.get("decision") == "done":
                doc["done"] = parse_json(str(doc.get("result") or "null").encode("utf-8", "surrogatepass"), what="result")
        if doc.get("redo") is True:
            await run_in_threadpool(lambda: app.resolve(run_id, redo=True))
            return done(request, doc, run_id, "the step runs again")
        if "done" not in doc:
            raise BadInput('give {"done": result} (the effect happened) or {"redo": true} (run it again)')
        await run_in_threadpool(lambda: app.resolve(run_id, done=doc["done"]))
        return done(request, doc, run_id, "recorded the result; the run resumes")

    async def retry(request: Request) -> Response:
        doc = await action_input(request)
        run_id = request.path_params["run_id"]
        await run_in_threadpool(lambda: app.retry(run_id))  # NotFailed (409) unless failed
        return done(request, doc, run_id, f"retrying: run {run_id} runs again from its failure")

    async def fork(request: Request) -> Response:
        doc = await action_input(request)
        run_id, checkpoint = request.path_params["run_id"], doc.get("checkpoint")
        new_id = doc.get("run_id") or None
        if isinstance(checkpoint, str):
            checkpoint = checkpoint.strip()
        if not isinstance(checkpoint, str | int) or isinstance(checkpoint, bool) or not 0 < len(str(checkpoint)) <= 200:
            raise BadInput('give the checkpoint to fork from: {"checkpoint": "3"} (see the run\'s checkpoints)')
        if new_id is not None and (not isinstance(new_id, str) or len(new_id) > 200):
            raise BadInput("run_id (the fork's id) must be a string of at most 200 characters")
        try:
            new = await run_in_threadpool(lambda: app.fork(run_id, str(checkpoint), new_run_id=new_id))
        except ConfigurationError as exc:  # no such checkpoint, a bad id: the request's fault
            raise BadInput(str(exc)) from None
        return done(request, doc, new.run_id, f"forked from checkpoint {checkpoint}: run {new.run_id}")

    return [
        Route("/", handled(home)),
        Route("/runs", handled(runs_page)),
        Route("/runs/{run_id:path}", handled(run_page)),
        Route("/api/runs", handled(runs_api)),
        Route("/api/runs/{run_id:path}/state", handled(run_state)),
        Route("/api/runs/{run_id:path}/cancel", handled(cancel), methods=["POST"]),
        Route("/api/runs/{run_id:path}/events", handled(send_event), methods=["POST"]),
        Route("/api/runs/{run_id:path}/resolve", handled(resolve), methods=["POST"]),
        Route("/api/runs/{run_id:path}/retry", handled(retry), methods=["POST"]),
        Route("/api/runs/{run_id:path}/fork", handled(fork), methods=["POST"]),
        Route("/api/runs/{run_id:path}", handled(run_api)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def _wants_json(request: Request) -> bool:
    return "application/json" in (request.headers.get("accept") or "")


def _a_page_form(request: Request) -> bool:
    """A page's form posted without JavaScript: its refusal is a page, not JSON."""
    kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    return request.method == "POST" and kind == FORM_TYPE


async def _read(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Refused(413, f"request body over {MAX_BODY} bytes")
    return bytes(body)
