"""The dashboard's HTML, rendered on the server from :mod:`outlast.ui.data` dicts.

Every value that came from the store goes through :func:`e` (``html.escape`` with quotes), so a
step result holding ``<script>`` or an ``onerror=`` attribute is text. Pages load one script
and one stylesheet from ``/static`` and contain no inline script (the CSP forbids it).
"""

from __future__ import annotations

import html
import json
import time
from typing import Any
from urllib.parse import urlencode

from ..store.base import STATUSES
from .data import SHOW_MAX, STEP_PAGE, Filters


def e(value: Any) -> str:
    """``value`` as HTML text (a lone surrogate, which UTF-8 cannot carry, shown escaped)."""
    text = "" if value is None else str(value)
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(text, quote=True)


def when(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def pretty(value: Any) -> str:
    """A value already in the JSON view, pretty-printed and escaped (cut at SHOW_MAX
    characters on pages)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
    if len(text) > SHOW_MAX:
        text = text[:SHOW_MAX] + f"\n\u2026 ({len(text) - SHOW_MAX} more characters: see the JSON API)"
    return e(text)


def chip(status: str) -> str:
    return f'<span class="chip s-{e(status)}">{e(status)}</span>'


def layout(title: str, body: str, *, root: str, csrf: str, live: str = "", state: str = "") -> str:
    """The page shell: header, one script, one stylesheet, and ``body``."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} \u00b7 outlast</title>"
        f'<link rel=stylesheet href="{e(root)}/static/ui.css">'
        f'<script src="{e(root)}/static/ui.js" defer></script></head>'
        f'<body data-csrf="{e(csrf)}" data-live="{e(live)}" data-state="{e(state)}">'
        f'<header><a class=brand href="{e(root)}/runs">outlast</a><span class=sub>runs dashboard</span>'
        '<span id=flash role=status></span></header>'
        f"<main>{body}</main></body></html>"
    )


# --- runs ----------------------------------------------------------------------------------------


def runs_page(data: dict[str, Any], filters: Filters, *, root: str, csrf: str) -> str:
    counts = data["counts"]
    base = f"{root}/runs"
    chips = "".join(
        f'<a class="count{" on" if filters.status == s else ""}" href="{e(base)}?'
        f'{e(urlencode(filters.params(status=None if filters.status == s else s, cursor=None)))}">'
        f"{chip(s)} {counts.get(s, 0)}</a>"
        for s in STATUSES
    )
    options = "".join(
        f'<option value="{s}"{" selected" if filters.status == s else ""}>{s}</option>' for s in STATUSES
    )
    form = (
        f'<form class=filters method=get action="{e(base)}">'
        f'<label>Status <select name=status><option value="">any</option>{options}</select></label>'
        f'<label>Workflow <input name=workflow value="{e(filters.workflow)}"></label>'
        f'<label>Run id contains <input name=q value="{e(filters.q)}"></label>'
        f'<label>Since <input name=since placeholder="2026-01-31" value="{e(filters.since)}"></label>'
        f'<label>Until <input name=until value="{e(filters.until)}"></label>'
        '<button type=submit>Filter</button></form>'
    )
    rows = "".join(_run_row(r, root) for r in data["runs"]) or (
        '<tr><td colspan=9 class=empty>No runs match these filters.</td></tr>'
    )
    table = (
        "<table class=runs><thead><tr><th>Run id</th><th>Workflow</th><th>Status</th><th>Created</th>"
        "<th>Duration</th><th>Steps</th><th>Tokens</th><th>Cost</th><th>Error</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    pager = ""
    if filters.cursor:
        pager += f'<a href="{e(base)}?{e(urlencode(filters.params(cursor=None)))}">First page</a> '
    if data["next"]:
        pager += f'<a class=next href="{e(base)}?{e(urlencode(filters.params(cursor=data["next"])))}">Next page</a>'
    body = f'<div class=counts>{chips}</div>{form}<div id=live>{table}<nav class=pager>{pager}</nav></div>'
    # Only the first page refreshes itself: later pages are a fixed slice the reader is reading.
    live = "" if filters.cursor else "runs"
    return layout("Runs", body, root=root, csrf=csrf, live=live)


def _run_row(r: dict[str, Any], root: str) -> str:
    link = f'{root}/runs/{_path(r["run_id"])}'
    tokens = "-" if not r.get("tokens") else f'{int(r["tokens"])}'
    cost = "-" if not r.get("cost") else f'${float(r["cost"]):.4f}'
    return (
        f'<tr><td class=id><a href="{e(link)}">{e(r["run_id"])}</a></td><td>{e(r["workflow"])}</td>'
        f'<td>{chip(r["status"])}</td><td>{when(r["created_at"])}</td><td>{secs(r["duration"])}</td>'
        f'<td>{e(r.get("steps") if r.get("steps") is not None else "-")}</td><td>{tokens}</td><td>{cost}</td>'
        f'<td class=err>{e(r.get("error") or r.get("reason") or "")}</td></tr>'
    )


def _path(run_id: str) -> str:
    from urllib.parse import quote

    return quote(run_id, safe="")


# --- one run -------------------------------------------------------------------------------------


def run_page(run: dict[str, Any], *, root: str, csrf: str, actions: bool, page: int, message: str = "",
             chosen: dict[str, str | None] | None = None) -> str:
    """The run page (``actions``: with the action forms and the fork buttons)."""
    rid = run["run_id"]
    head = (
        f'<h1 data-status="{e(run["status"])}" data-epoch="{e(run["epoch"])}">'
        f'<span class=id>{e(rid)}</span> {chip(run["status"])}</h1>'
        f'<p class=facts>workflow <b>{e(run["workflow"])}</b> \u00b7 queue {e(run["queue"])} \u00b7 '
        f'created {when(run["created_at"])} \u00b7 started {when(run["started_at"])} \u00b7 '
        f'ended {when(run["ended_at"])} \u00b7 duration {secs(run["duration"])} \u00b7 '
        f'recoveries {e(run["recoveries"])}</p>'
    )
    stats = run.get("stats") or {}
    if stats.get("tokens") or stats.get("cost"):
        head += (f'<p class=facts>model calls: {int(stats.get("tokens") or 0)} tokens, '
                 f'${float(stats.get("cost") or 0):.4f}</p>')
    if run.get("replayed_steps"):
        head += (f'<p class="facts saved">{int(run["replayed_steps"])} of {int(run["steps_total"])} steps '
                 "were answered from the journal by a later execution instead of running again</p>")
    if run.get("reason"):
        head += f'<p class=reason>{e(run["reason"])}</p>'
    if run.get("wait_event"):
        head += f'<p class=facts>waiting for event <b class=wait>{e(run["wait_event"])}</b></p>'
    links = ""
    if run.get("parent_id"):
        links += f'parent <a href="{e(root)}/runs/{e(_path(run["parent_id"]))}">{e(run["parent_id"])}</a> '
    origin = run.get("fork_origin")
    if origin:
        at = f' at checkpoint {e(origin["checkpoint"])}' if origin.get("checkpoint") is not None else ""
        links += (f'forked from <a class=origin href="{e(root)}/runs/{e(_path(origin["run"]))}">'
                  f'{e(origin["run"])}</a>{at} ')
    if run.get("children"):
        links += "children " + ", ".join(
            f'<a href="{e(root)}/runs/{e(_path(c))}">{e(c)}</a>' for c in run["children"])
    if links:
        head += f"<p class=facts>{links}</p>"
    outcome = f"<details class=io><summary>Input</summary><pre>{pretty(run.get('input'))}</pre></details>"
    if "result" in run:
        outcome += f"<details class=io open><summary>Result</summary><pre class=result>{pretty(run['result'])}</pre></details>"
    if run.get("error_detail"):
        outcome += f"<details class=io open><summary>Error</summary><pre class=error>{pretty(run['error_detail'])}</pre></details>"
    outcome += _panels(run, root, csrf if actions else None)
    body = (f'<div id=live>{head}{outcome}{_steps(run, root, page, chosen or {})}</div>'
            + (_actions(run, root, csrf) if actions else ""))
    if message:
        body = f'<p class=message>{e(message)}</p>' + body
    return layout(rid, body, root=root, csrf=csrf, live="run", state=f"{root}/api/runs/{_path(rid)}/state")


def _step_filters(run: dict[str, Any], chosen: dict[str, str | None]) -> str:
    """Links that show only the steps of one kind, or only failed ones (kept in the URL)."""
    options: list[tuple[str, dict[str, str]]] = [("All", {})] + [(k, {"kind": k}) for k in run["kinds"]] + [("failed", {"status": "failed"})]
    links = []
    for label, params in options:
        on = {k: v for k, v in chosen.items() if v} == params
        links.append(f'<a href="?{e(urlencode(params))}"{" class=on" if on else ""}>{e(label)}</a>')
    return "<nav class=stepfilter>Show: " + " ".join(links) + "</nav>"


def _steps(run: dict[str, Any], root: str, page: int, chosen: dict[str, str | None]) -> str:
    total, t0, t1 = run["steps_matching"], run["t0"], run["t1"]
    span = max(t1 - t0, 1e-6)
    rows = []
    for s in run["steps"]:
        start = s["started_at"] or t0
        end = s["ended_at"] or start
        left = max(0.0, min(100.0, (start - t0) / span * 100))
        width = max(0.4, min(100.0 - left, (end - start) / span * 100))
        meta = s.get("meta") or {}
        model = ""
        if s["kind"] == "llm":
            model = (f'<span class=model>{e(meta.get("model"))} \u00b7 {e(meta.get("tokens", 0))} tokens'
                     f' \u00b7 ${float(meta.get("cost") or 0):.4f}</span>')
        retry = f'<span class=retry>{s["attempts"]} attempts</span>' if s["attempts"] > 1 else ""
        retry += _mark(s) if run.get("replayed_steps") else ""  # one execution: nothing to tell
        parts = []
        if "input" in s:
            parts.append(f"<h4>Input</h4><pre>{pretty(s['input'])}</pre>")
        if s["error"] is not None:
            parts.append(f"<h4>Error</h4><pre class=error>{pretty(s['error'])}</pre>")
        if s["status"] == "completed":
            parts.append(f"<h4>Output</h4><pre class=result>{pretty(s['result'])}</pre>")
        if meta:
            parts.append(f"<h4>Meta</h4><pre>{pretty(meta)}</pre>")
        dur = None if s["ended_at"] is None else s["ended_at"] - start
        rows.append(
            f'<details class="step k-{e(s["kind"])}" id="step-{s["position"]}" data-key="{e(s["key"])}">'
            f'<summary><span class=pos>{s["position"]}</span><span class=name>{e(s["name"])}</span>'
            f'<span class=kind>{e(s["kind"])}</span>{chip(s["status"])}<span class=info>{retry}{model}</span>'
            f'<span class=dur>{secs(dur)}</span>'
            f'<span class=track><span class="bar s-{e(s["status"])}" data-left="{left:.3f}" data-width="{width:.3f}"></span></span>'
            f"</summary><div class=detail>{''.join(parts)}</div></details>"
        )
    pages = (total + STEP_PAGE - 1) // STEP_PAGE
    pager = ""
    if pages > 1:
        pager = "<nav class=pager>Steps page " + " ".join(
            f'<a href="?{e(urlencode({**{k: v for k, v in chosen.items() if v}, "page": i}))}"'
            f'{" class=on" if i == page else ""}>{i + 1}</a>' for i in range(pages)
        ) + "</nav>"
    first = run["offset"] + 1 if total else 0
    of = f"{total} of {run['steps_total']}" if total != run["steps_total"] else f"{total}"
    return (f'<h2>Steps <small>{first}\u2013{run["offset"] + len(run["steps"])} of {of}</small></h2>'
            f'{_step_filters(run, chosen)}{pager}<div class=waterfall>{"".join(rows)}</div>{pager}')


def actions_key(status: str) -> str:
    """Which action forms a run of ``status`` gets: the live update replaces the forms when
    this changes (a retried run loses its retry button), and keeps them, with whatever is
    being typed in, while it does not."""
    if status in ("completed", "failed", "cancelled"):
        return "ended-retry" if status == "failed" else "ended"
    return "open-paused" if status == "paused" else "open"


def _actions(run: dict[str, Any], root: str, csrf: str) -> str:
    """The action forms, outside the live part of the page (a refresh replaces them only when
    the run's :func:`actions_key` changed). Retry: failed runs only (``app.retry`` refuses the
    others)."""
    api = f'{root}/api/runs/{_path(run["run_id"])}'
    hidden = f'<input type=hidden name=csrf value="{e(csrf)}">'
    status = run["status"]
    key = actions_key(status)
    head = f'<section class=actions id=actions data-actions="{key}"><h2>Actions</h2>'
    if key.startswith("ended"):
        retry = ""
        if status == "failed":
            retry = (f'<form class=action method=post action="{e(api)}/retry" '
                     f'data-confirm="Retry this run from its failure (the calls before it are kept)?">{hidden}'
                     '<button type=submit>Retry run</button></form>')
        return (f'{head}<p>This run has ended.</p>{retry}'
                f'{_fork_form(run, api, hidden)}</section>')
    out = [head]
    out.append(
        f'<form class=action method=post action="{e(api)}/events" data-confirm="Send this event to the run?">{hidden}'
        f'<label for=ev-name>Event name</label><input id=ev-name name=name required value="{e(run.get("wait_event") or "")}">'
        f'<label for=ev-payload>Payload</label><textarea id=ev-payload name=payload rows=3>null</textarea>'
        '<button type=submit>Send event</button></form>'
    )
    if status == "paused":
        out.append(
            f'<form class=action method=post action="{e(api)}/resolve" data-confirm="Record this result and resume the run?">{hidden}'
            '<input type=hidden name=decision value=done><label for=done-result>Result</label>'
            '<textarea id=done-result name=result rows=2>null</textarea><button type=submit>Mark done</button></form>'
            f'<form class=action method=post action="{e(api)}/resolve" data-confirm="Run the step again?">{hidden}'
            '<input type=hidden name=decision value=redo><button type=submit>Run again</button></form>'
        )
    out.append(_fork_form(run, api, hidden))
    out.append(
        f'<form class=action method=post action="{e(api)}/cancel" data-confirm="Cancel this run and its children?">{hidden}'
        '<button type=submit class=danger>Cancel run</button></form></section>'
    )
    return "".join(out)


def _fork_form(run: dict[str, Any], api: str, hidden: str) -> str:
    """One form forking from any checkpoint by its number (a big run lists a page of them)."""
    total = int(run.get("checkpoints_total") or 0)
    hint = ("a graph run's checkpoints are its nodes" if run.get("graph")
            else "checkpoint N keeps the first N calls; 0 keeps none")
    return (f'<form class="action fork" method=post action="{e(api)}/fork" '
            f'data-confirm="Fork a new run from this checkpoint?">{hidden}'
            f'<label for=fork-checkpoint>Checkpoint</label><input id=fork-checkpoint name=checkpoint '
            f'type=number min=0 step=1 required placeholder="{e(f"0 to {total - 1}" if total else "0")}">'
            '<label for=fork-id>New run id (optional)</label><input id=fork-id name=run_id maxlength=200>'
            f'<small>{e(hint)}</small><button type=submit>Fork from checkpoint</button></form>')


def _mark(step: dict[str, Any]) -> str:
    """Replayed or executed (see outlast.ui.steps), with the execution's epoch as a tooltip."""
    mark = step.get("mark")
    if mark is None:
        return ""
    why = ("recorded by an earlier execution (epoch {}); later ones answered it from the journal"
           if mark == "replayed" else "executed by the run's last execution (epoch {})")
    return f'<span class="mark m-{e(mark)}" title="{e(why.format(step.get("epoch")))}">{e(mark)}</span>'


def _panels(run: dict[str, Any], root: str, fork_csrf: str | None) -> str:
    """Snapshot, events received and the run's checkpoints (with fork buttons)."""
    out = ""
    snap = run.get("snapshot")
    if snap:
        out += (f'<details class="io snapshot"><summary>Snapshot (taken at step {e(snap.get("position"))}, '
                f'generation {e(snap.get("generation"))})</summary><pre>{pretty(snap)}</pre></details>')
    received = run.get("events") or []
    if received:
        rows = "".join(
            f'<tr><td><a href="#step-{int(ev["position"])}">{int(ev["position"])}</a></td><td>{e(ev["name"])}</td>'
            f'<td>{when(ev["at"])}</td><td><pre>{pretty(ev["payload"])}</pre></td></tr>' for ev in received)
        out += ('<details class="io events" open><summary>Events received</summary><table class=panel>'
                f'<thead><tr><th>Step</th><th>Event</th><th>Received</th><th>Payload</th></tr></thead>'
                f'<tbody>{rows}</tbody></table></details>')
    cps = run.get("checkpoints")
    if cps:
        out += _checkpoints(run, cps, root, fork_csrf)
    return out


def _checkpoints(run: dict[str, Any], cps: list[dict[str, Any]], root: str, fork_csrf: str | None) -> str:
    """A graph run's checkpoints (node, recording run, update, next node), or any other run's
    after the steps on this page (the call each one follows), each with "Fork from here"."""
    if cps[0].get("error"):
        return f'<p class="error">checkpoints: {e(cps[0]["error"])}</p>'
    api = f'{root}/api/runs/{_path(run["run_id"])}/fork'
    graph = bool(run.get("graph"))
    rows = []
    for c in cps:
        button = ""
        if fork_csrf is not None:
            button = (f'<form class=action method=post action="{e(api)}" data-confirm="Fork a new run from '
                      f'checkpoint {e(c["id"])}?"><input type=hidden name=csrf value="{e(fork_csrf)}">'
                      f'<input type=hidden name=checkpoint value="{e(c["id"])}">'
                      '<button type=submit>Fork from here</button></form>')
        if graph:
            origin = (f'<a href="{e(root)}/runs/{e(_path(c["run_id"]))}">{e(c["run_id"])}</a>'
                      if c["inherited"] else "")
            cells = (f'<td>{e(c["node"])}</td><td>{origin}</td><td>{when(c["at"])}</td>'
                     f'<td>{e(c["summary"])}</td><td>{e(c["next"])}</td>')
        else:
            after = ("the input" if c["kind"] == "start" else
                     f'<a href="#step-{int(c["position"])}">{e(c["node"])}</a>')
            cells = (f'<td>{after}</td><td>{e(c["kind"])}</td><td>{when(c["at"])}</td>'
                     f'<td>{e(c["summary"])}</td>')
        rows.append(f'<tr data-checkpoint="{e(c["id"])}"><td>{e(c["id"])}</td>{cells}<td>{button}</td></tr>')
    if graph:
        heads, title, opened = "<th>Node</th><th>Recorded by</th><th>At</th><th>Update</th><th>Next</th>", "", " open"
    else:
        heads, opened = "<th>After</th><th>Kind</th><th>At</th><th>Outcome</th>", ""
        total = int(run.get("checkpoints_total") or 0)
        shown = f"{total}, one after each call" if len(cps) == total else f"{len(cps)} of {total}, after the steps shown"
        title = f" <small>{shown} (a fork keeps the calls up to its checkpoint)</small>"
    return (f'<details class="io checkpoints"{opened}><summary>Checkpoints{title}</summary><table class=panel>'
            f'<thead><tr><th>Id</th>{heads}<th></th></tr></thead><tbody>{"".join(rows)}</tbody></table></details>')


def error_page(status: int, message: str, *, root: str, csrf: str) -> str:
    return layout(f"{status}", f'<h1>{status}</h1><p class=error>{e(message)}</p>'
                  f'<p><a href="{e(root)}/runs">All runs</a></p>', root=root, csrf=csrf)
