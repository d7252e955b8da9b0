"""One durable model call: its identity, replay or a budget check, the request, the record.

Shared by the sync and async wrappers (:mod:`outlast.llm.wrap`); only the sending and the
waiting between retries differ. A call inside a workflow (not inside a step) is a journal
entry of kind ``"llm"``:

* ``output``: ``{"request": <the request, encoded with content-addressed blobs>, "class":
  <SDK class>, "response": <the response as JSON>}``, or ``"classes"`` and ``"events"`` for
  a stream (a stream that broke mid-way is a ``"failed"`` entry holding the error, with the
  events read before the break in ``meta["partial"]``). The request is kept as encoded
  text, so a replay reads the response without reassembling the (possibly long) conversation; it is decoded only to show a difference.
  The record is written inline in the entry (:func:`encode`): only long strings and bytes
  in it go to blobs, as they may be shared (a reply's text is the next request's message);
  entries written before 0.2.0 hold the whole record as one blob, and read the same.
* ``meta``: provider, api, model, input/output/total tokens, cost, latency, stream flag and
  ``fp``, the request's fingerprint (the hash of its encoding; blob hashes stand for their
  content, so it is exact).

What a run has spent (tokens, dollars) is the sum over its recorded calls: read from the
journal once per execution (:func:`ledger`), it survives crashes and drives budgets.
"""

from __future__ import annotations

import json
import re
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import serde, serde_append, serde_errors
from ..context import RunState
from ..durable import DurableCall
from ..errors import BudgetExceeded, NonDeterminismError
from ..retry import NO_RETRY, Retry
from ..serde_tags import _TAG as TAG
from ..store.base import Entry, entry_meta
from .pricing import Price, cost_of
from .shapes import (
    API,
    TRANSPORT_OPTIONS,
    class_path,
    describe_diff,
    dump,
    estimate_tokens,
    plain,
    rebuild,
    usage,
)

KIND = "llm"
ON_CHANGE = ("error", "call")


@dataclass(frozen=True, slots=True)
class Options:
    """How a wrapped client journals its calls (see :func:`outlast.llm.wrap`)."""

    on_change: str = "error"
    retry: Retry = NO_RETRY
    name: str | None = None
    prices: Mapping[str, Price] | None = None


@dataclass(slots=True)
class Ledger:
    """What the run has spent on model calls, across every execution so far."""

    tokens: float = 0.0
    cost: float = 0.0
    #: blob hashes this execution already stored, so a growing conversation is not re-sent
    stored: set[str] = field(default_factory=set)


_ledgers: weakref.WeakKeyDictionary[RunState, Ledger] = weakref.WeakKeyDictionary()


def ledger(state: RunState) -> Ledger:
    """The run's spending, read from its journal the first time this execution asks."""
    found = _ledgers.get(state)
    if found is not None:
        return found
    found = Ledger()
    for entry in state.store.load_journal(state.run_id):
        if entry.kind == KIND and entry.meta:
            meta = entry_meta(entry)
            found.tokens += float(meta.get("tokens") or 0)
            found.cost += float(meta.get("cost") or 0)
    # The run's stats are written when an execution ends; one that was SIGKILLed never wrote
    # what it spent, but its calls are in the journal. Add the difference, once.
    old = json.loads(state.run.stats) if state.run.stats else {}
    for name in ("tokens", "cost"):
        journaled = getattr(found, name)
        written = float(old.get(name) or 0)
        if journaled > written + 1e-12:
            state.add_stat(name, journaled - written)
        # Calls made again under on_change="call" are spent but not journaled.
        setattr(found, name, max(journaled, written))
    _ledgers[state] = found
    return found


@dataclass(slots=True)
class Prepared:
    """A model call about to be answered from the journal or sent."""

    state: RunState
    api: API
    name: str
    call: DurableCall
    request: dict[str, Any]
    encoded: bytes
    blobs: dict[str, bytes]
    fp: str
    stream: bool
    options: Options
    #: the span of the attempt being sent (outlast.telemetry), the no-op until one starts
    span: Any = None


def prepare(state: RunState, api: API, kwargs: dict[str, Any], options: Options) -> Prepared:
    """Give the call its identity (synchronously, so concurrent calls number in call order)."""
    name = options.name or api.label
    request = plain({k: v for k, v in kwargs.items() if k not in TRANSPORT_OPTIONS})
    blobs: dict[str, bytes] = {}
    encoded = serde.dumps(request, what=f"request of model call {name!r}", blobs=blobs)
    call = state.begin(KIND, name)
    return Prepared(
        state, api, name, call, request, encoded, blobs, serde.fingerprint(encoded),
        request.get("stream") is True, options,
    )


class _Again:
    """Marker: no usable recording, send the request."""


AGAIN = _Again()


@dataclass(frozen=True, slots=True)
class BrokenStream:
    """A recorded stream that failed after ``events``: replayed, it yields them, then raises."""

    events: list[Any]
    error: BaseException


def replay(prep: Prepared) -> Any:
    """The recorded answer (object, events list, or raises the recorded error), or AGAIN."""
    entry = prep.call.entry
    if entry is None or entry.status == "intent":
        return AGAIN
    meta = entry_meta(entry)
    fetch = prep.state.store.get_blobs
    if meta.get("fp") != prep.fp:
        if prep.options.on_change == "call":
            # Not served from the journal after all: it must not count as saved by recovery.
            if entry in prep.state.journal.replayed:
                prep.state.journal.replayed.remove(entry)
            return AGAIN
        raise changed(prep, entry, fetch)
    if entry.status == "failed":
        error = serde_errors.load_error(entry.output or b"null", step=prep.name)
        partial = meta.get("partial")
        if prep.stream and isinstance(partial, dict):
            return BrokenStream(_events(partial), error)
        raise error
    data = serde.loads(entry.output or b"null", what=_what(prep), blobs=fetch)
    if "events" in data:
        return _events(data)
    return rebuild(data["class"], data["response"])


def _events(data: Mapping[str, Any]) -> list[Any]:
    classes = data["classes"]
    return [rebuild(classes[i], event) for i, event in data["events"]]


def _dump_events(events: list[Any]) -> dict[str, Any]:
    """Stream events as ``{"classes": [class paths], "events": [[class index, data]...]}``."""
    classes: list[str] = []
    dumped = []
    for event in events:
        path = class_path(event)
        if path not in classes:
            classes.append(path)
        dumped.append([classes.index(path), dump(event)])
    return {"classes": classes, "events": dumped}


def _what(prep: Prepared) -> str:
    return f"recorded model call {prep.call.key!r} of run {prep.state.run_id!r}"


_ON_CHANGE = (
    "The prompt or parameters changed since the run started. Restore them to finish this run "
    "from its journal, cancel it and start a new one, or let changed calls go to the model "
    "again with wrap(client, on_change='call') (or client.with_options(on_change='call'))"
)


def changed(
    prep: Prepared,
    entry: Entry,
    fetch: Callable[[list[str]], Any],
    *,
    what: str = "model call",
    advice: str = _ON_CHANGE,
) -> NonDeterminismError:
    """The divergence of a model call whose request differs from the recorded one, with the
    difference spelled out (``what`` names the call; ``advice`` says the ways out)."""
    try:
        data = serde.loads(entry.output or b"null", what=_what(prep), blobs=fetch)
        recorded = serde.loads(data["request"].encode(), what=_what(prep), blobs=fetch)
        lines = describe_diff(recorded, prep.request)
    except Exception as exc:  # a failed call recorded its error, not its request
        lines = [f"(the recorded request cannot be shown: {exc})"]
    diff = "\n  ".join(lines) or "(the requests differ in encoding only)"
    run_id = prep.state.run_id
    return NonDeterminismError(
        f"run {run_id!r}: {what} {prep.call.key!r} (position {prep.call.position}) was "
        f"recorded with another request than the code sends now:\n  {diff}\n{advice}",
        run_id=run_id,
        position=prep.call.position,
        recorded=f"llm {prep.name!r} fp#{entry_meta(entry).get('fp')}",
        called=f"llm {prep.name!r} fp#{prep.fp}",
    )


def check_budget(prep: Prepared) -> None:
    """Raise BudgetExceeded when sending this request could take the run past its budget."""
    state = prep.state
    spent = ledger(state)
    wf = state.app.workflows.get(state.run.workflow)
    budget = getattr(wf, "budget", None)
    if budget is None:
        return
    est_in, est_out = estimate_tokens(prep.request)
    model = str(prep.request.get("model") or "")
    checks = (
        ("tokens", budget.tokens, spent.tokens, est_in + est_out, "{:.0f} tokens"),
        ("cost", budget.cost, spent.cost, cost_of(model, est_in, est_out, prep.options.prices),
         "${:.6f}"),
    )
    for what, limit, used, estimate, fmt in checks:
        if limit is not None and used + estimate > limit:
            raise BudgetExceeded(
                f"run {state.run_id!r}: model call {prep.call.key!r} was not sent: the run has "
                f"spent {fmt.format(used)} of its budget of {fmt.format(limit)} and this request "
                f"is estimated at {fmt.format(estimate)}. Raise the workflow's "
                "budget=Budget(...) and resume the run, or catch BudgetExceeded in the workflow "
                "to wrap up",
                run_id=state.run_id, key=prep.call.key, what=what, limit=limit, spent=used,
                estimate=estimate,
            )


def start_span(prep: Prepared) -> None:
    """Start the span of one attempt to send the call (a no-op unless someone observes)."""
    prep.span = prep.state.telemetry.model_span(
        prep.api.provider, str(prep.request.get("model") or ""), request=prep.request
    )


def end_span(prep: Prepared, error: BaseException) -> None:
    """End the attempt's span with the error it raised."""
    if prep.span is not None:
        prep.span.end(error)


def record_ok(prep: Prepared, response: Any, started: float, attempts: int) -> None:
    """Journal a completed call (``response`` is an SDK object, or a list of stream events)."""
    payload: dict[str, Any] = {"request": prep.encoded.decode("utf-8", "surrogatepass")}
    if isinstance(response, list):
        payload.update(_dump_events(response))
        events = payload["events"]
        tokens_in, tokens_out = usage(prep.api, None, [e for _, e in events])
        model = next(
            (m for _, e in events if isinstance(m := _model_of(e), str)), prep.request.get("model")
        )
    else:
        payload.update({"class": class_path(response), "response": dump(response)})
        tokens_in, tokens_out = usage(prep.api, payload["response"], None)
        model = payload["response"].get("model") or prep.request.get("model")
    answer = [e for _, e in payload["events"]] if "events" in payload else payload["response"]
    journal_completed(
        prep, payload, model=str(model or ""), tokens=(tokens_in, tokens_out), started=started,
        attempts=attempts, answer=answer,
    )


def journal_completed(
    prep: Prepared,
    payload: dict[str, Any],
    *,
    model: str,
    tokens: tuple[int, int],
    started: float,
    attempts: int = 1,
    provider: str | None = None,
    answer: Any = None,
    span_meta: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Journal a completed model call, for the client wrapper and the framework adapters
    alike: its facts (provider, model, tokens, cost, latency, request fingerprint), its
    record (``payload``, see :func:`encode`), the run's ledger and stats, and the call's span
    (``span_meta`` rewrites the facts it is given). Returns the facts."""
    state = prep.state
    tokens_in, tokens_out = tokens
    cost = cost_of(model, tokens_in, tokens_out, prep.options.prices)
    ended = time.time()
    meta = {
        "provider": provider or prep.api.provider, "api": prep.api.name, "model": model,
        "input_tokens": tokens_in, "output_tokens": tokens_out,
        "tokens": tokens_in + tokens_out, "cost": cost, "latency": round(ended - started, 6),
        "stream": prep.stream, "fp": prep.fp,
    }
    blobs: dict[str, bytes] = {}
    if "request" in payload:  # given as prep.encoded: stored appendable (see stored_request)
        payload = {**payload, "request": stored_request(prep, blobs)}
    output = encode(payload, what=f"response of model call {prep.call.key!r}", blobs=blobs)
    spent = ledger(state)
    spent.tokens += tokens_in + tokens_out
    spent.cost += cost
    state.add_stat("tokens", tokens_in + tokens_out)
    state.add_stat("cost", cost)
    state.add_stat("llm_calls", 1)
    if prep.span is not None:
        prep.span.response(meta if span_meta is None else span_meta(meta), answer)
    _write(prep, "completed", output, attempts, started, ended, meta, blobs)
    return meta


def stored_request(prep: Prepared, blobs: dict[str, bytes]) -> str:
    """The request as its record keeps it: its lists (the conversation) as mountain ranges
    (:mod:`outlast.serde_append`), so a call that adds two messages to a long conversation
    stores about what it added. The fingerprint stays that of ``prep.encoded`` (the ordinary
    encoding), so runs recorded before keep replaying; a record reads the same either way."""
    what = f"request of model call {prep.call.key!r}"
    text = serde_append.dumps_appendable(prep.request, what=what, blobs=blobs)
    return text.decode("utf-8", "surrogatepass")


def encode(payload: dict[str, Any], *, what: str, blobs: dict[str, bytes]) -> bytes:
    """A call's record as the entry's output, its own structure inline.

    ``serde.dumps(payload, blobs=...)`` would move a record of 1 KB or more, whole, into a
    blob of its own: one per call, never shared, paying a blob row, a reference and their
    index entries. Here its dicts and lists are written in place (the row is packed), and
    only the strings and bytes of 1 KB or more inside go to ``blobs``, where equal ones are
    shared. ``"request"`` (already encoded text, unique to the call) stays inline too, and
    when its encoding is a single reference to a blob, the blob's text replaces it.
    :func:`outlast.serde.loads` reads the result as it reads any payload.
    """
    request = payload.get("request")
    whole = _WHOLE_REF.fullmatch(request) if isinstance(request, str) else None
    if whole is not None and whole[1] in blobs:
        # A request of 1 KB or more is encoded as one reference to its blob: keep the blob's
        # text instead (it decodes to the same request; the fingerprint, taken of the
        # encoding, is unchanged) and leave the blob out, unless something else names it.
        payload = {**payload, "request": blobs[whole[1]].decode("utf-8", "surrogatepass")}
    try:
        parts = [
            serde.dumps(key) + b":"
            + (serde.dumps(value, what=what) if key == "request" else _inline(value, what, blobs))
            for key, value in payload.items()
        ]
    except RecursionError:  # nested past Python's limit: serde's own path reports it
        return serde.pack(serde.dumps(payload, what=what, blobs=blobs))
    text = b"{" + b",".join(parts) + b"}"
    if whole is not None and whole[1] in blobs and whole[1].encode() not in text:
        del blobs[whole[1]]
    return serde.pack(text)


_WHOLE_REF = re.compile(r'\{"__o":"ref","h":"([0-9a-f]{32})"\}')


def _inline(value: Any, what: str, blobs: dict[str, bytes]) -> bytes:
    """``value`` encoded with its plain dicts and lists in place (see :func:`encode`)."""
    t = type(value)
    if t is list or (t is dict and TAG not in value and all(type(k) is str for k in value)):
        flat = serde.dumps(value, what=what)
        if len(flat) < serde.BLOB_THRESHOLD:
            return flat  # nothing in it reaches the threshold: the same bytes either way
        if t is list:
            return b"[" + b",".join(_inline(x, what, blobs) for x in value) + b"]"
        return b"{" + b",".join(
            serde.dumps(k) + b":" + _inline(x, what, blobs) for k, x in value.items()
        ) + b"}"
    return serde.dumps(value, what=what, blobs=blobs)


def record_failed(
    prep: Prepared,
    exc: BaseException,
    started: float,
    attempts: int,
    partial: list[Any] | None = None,
) -> None:
    """Journal a call that failed for good, so a replay fails the same way.

    ``partial``: the events of a stream that broke while it was read; a replay yields them
    again before it raises, so the workflow takes the same path (its retry included)."""
    meta: dict[str, Any] = {
        "provider": prep.api.provider, "api": prep.api.name, "fp": prep.fp,
        "model": str(prep.request.get("model") or ""), "tokens": 0, "cost": 0.0,
        "stream": prep.stream,
    }
    if partial is not None:
        meta["partial"] = _dump_events(partial)
    end_span(prep, exc)
    _write(prep, "failed", serde_errors.dump_error(exc), attempts, started, time.time(), meta, {})


def _write(
    prep: Prepared,
    status: str,
    output: bytes,
    attempts: int,
    started: float,
    ended: float,
    meta: dict[str, Any],
    blobs: dict[str, bytes],
) -> None:
    spent = ledger(prep.state)
    if prep.call.entry is not None and prep.call.entry.status != "intent":
        return  # sent again under on_change="call": the slot keeps its first recording
    new = {h: b for h, b in blobs.items() if h not in spent.stored}
    prep.call.record(
        status, output, blobs=new, attempts=attempts, started=started, ended=ended,
        meta=json.dumps(meta, sort_keys=True),
    )
    spent.stored.update(new)


def retry_delay(prep: Prepared, attempt: int, exc: Exception) -> float | None:
    """Seconds before the next attempt (honouring Retry-After), or None to give up."""
    return prep.options.retry.delay(attempt, exc)


def _model_of(event: Any) -> Any:
    if not isinstance(event, Mapping):
        return None
    if isinstance(event.get("model"), str):
        return event["model"]
    inner = event.get("response") or event.get("message")
    return inner.get("model") if isinstance(inner, Mapping) else None
