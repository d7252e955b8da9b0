"""``wrap(client)``: an openai or anthropic client whose model calls are journaled steps.

The wrapper is a thin proxy: the methods that call a model (``chat.completions.create``,
``responses.create``, ``messages.create``, ``messages.stream``) go through
:mod:`outlast.llm.record`; every other SDK method is refused inside a workflow
(:mod:`outlast.llm.escape`), and other attributes are the client's own. Sync and async
clients share that core; here only the sending, the streaming and the waiting differ.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from ..context import current_run, current_step
from ..errors import ConfigurationError
from ..retry import NO_RETRY, Retry
from . import escape, record
from .pricing import Price
from .record import AGAIN, Options, Prepared
from .shapes import API, APIS, dump, usage

__all__ = ["wrap"]

C = TypeVar("C")

# The journaled calls.
_METHODS: Mapping[str, API] = {
    "chat.completions.create": APIS["chat.completions"],
    "responses.create": APIS["responses"],
    "messages.create": APIS["messages"],
}
_OUR_OPTIONS = frozenset({"on_change", "retry", "name", "prices"})


def wrap(
    client: C,
    *,
    on_change: str = "error",
    retry: Retry | None = None,
    name: str | None = None,
    prices: Mapping[str, Price] | None = None,
) -> C:
    """Return ``client`` (``openai.OpenAI``/``AsyncOpenAI``, ``anthropic.Anthropic``/
    ``AsyncAnthropic``) with its model calls journaled.

    Inside a workflow (and not inside a step), each call is a durable call: on replay it
    returns the recorded response (or stream) without contacting the model. Outside a
    workflow, or inside a step, it is a plain call. Other SDK methods that send a request
    raise :class:`~outlast.ConfigurationError` inside a workflow (see
    :func:`outlast.llm.unrecorded`).

    ``on_change``: what a replayed call does when the request differs from the recorded one:
    ``"error"`` (raise :class:`~outlast.NonDeterminismError` showing the difference) or
    ``"call"`` (send it to the model again; the new answer is returned, not journaled).
    ``retry``: a :class:`~outlast.Retry` for failed calls (honours Retry-After); give the
    SDK client ``max_retries=0`` so retries are not made twice. ``name``: the journal name of
    the calls (default ``openai.chat.completions`` and the like). ``prices``: extra model
    prices for this client. ``wrapped.with_options(on_change=..., ...)`` changes these per
    call (SDK options given to it go to the client's own ``with_options``).
    """
    if on_change not in record.ON_CHANGE:
        raise ConfigurationError(f"on_change must be one of {record.ON_CHANGE}, got {on_change!r}")
    module = type(client).__module__.split(".")[0]
    if module not in ("openai", "anthropic"):
        raise ConfigurationError(
            f"outlast.llm.wrap takes an openai or anthropic client, got {type(client).__name__}"
        )
    options = Options(on_change, retry or NO_RETRY, name, dict(prices) if prices else None)
    return Wrapped(client, options)  # type: ignore[return-value]


class Wrapped:
    """A client with journaled model calls (see :func:`wrap`); its other request-sending
    methods refuse to run inside a workflow (:mod:`outlast.llm.escape`)."""

    def __init__(self, client: Any, options: Options) -> None:
        self._client = client
        self._options = options
        self._async = type(client).__name__.startswith("Async")

    @property
    def unwrapped(self) -> Any:
        """The SDK client itself."""
        return self._client

    def with_options(self, **kwargs: Any) -> Wrapped:
        """A copy with other options: outlast's (``on_change``, ``retry``, ``name``,
        ``prices``) and the SDK client's own (``timeout``, ``max_retries``...)."""
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in _OUR_OPTIONS}
        if "on_change" in ours and ours["on_change"] not in record.ON_CHANGE:
            raise ConfigurationError(f"on_change must be one of {record.ON_CHANGE}")
        if "retry" in ours:
            ours["retry"] = ours["retry"] or NO_RETRY
        client = self._client.with_options(**kwargs) if kwargs else self._client
        return Wrapped(client, replace(self._options, **ours))

    copy = with_options

    def __getattr__(self, attr: str) -> Any:
        return _resolve(self, self._client, attr, attr)

    def __repr__(self) -> str:
        return f"<outlast.llm wrapped {type(self._client).__name__}>"


class _Path:
    """An attribute on the way to a model call (``client.chat``, ``client.chat.completions``)."""

    def __init__(self, root: Wrapped, target: Any, path: str) -> None:
        self._root = root
        self._target = target
        self._path = path

    def __getattr__(self, attr: str) -> Any:
        return _resolve(self._root, self._target, attr, f"{self._path}.{attr}")


def _resolve(root: Wrapped, target: Any, attr: str, path: str) -> Any:
    value = getattr(target, attr)
    api = _METHODS.get(path)
    if api is not None:
        return _bind(root, api, value)
    if path == "messages.stream":
        return _stream_helper(root, target.create)
    if attr.startswith("_"):
        return value
    if escape.is_resource(value):
        return _Path(root, value, path)
    if not (inspect.ismethod(value) or inspect.isfunction(value)) or path in escape.HARMLESS:
        return value
    if path == "with_middleware":  # a new client: wrapped like this one
        return lambda *a, **k: Wrapped(value(*a, **k), root._options)
    return escape.guard(value, path)


def _bind(root: Wrapped, api: API, method: Callable[..., Any]) -> Callable[..., Any]:
    if root._async:
        def call_async(**kwargs: Any) -> Awaitable[Any]:
            return _call_async(root._options, api, method, kwargs)

        return call_async

    def call(**kwargs: Any) -> Any:
        return _call(root._options, api, method, kwargs)

    return call


def _begin(options: Options, api: API, kwargs: dict[str, Any]) -> Prepared | None:
    state = current_run()
    if state is None or current_step() is not None:
        return None
    return record.prepare(state, api, kwargs, options)


def _call(options: Options, api: API, method: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    prep = _begin(options, api, kwargs)
    if prep is None:
        return method(**kwargs)
    got = record.replay(prep)
    if isinstance(got, record.BrokenStream):
        return ReplayStream(got.events, got.error)
    if got is not AGAIN:
        return ReplayStream(got) if prep.stream else got
    record.check_budget(prep)
    started = time.time()
    attempt = 0
    while True:
        attempt += 1
        record.start_span(prep)
        try:
            response = method(**kwargs)
        except Exception as exc:
            delay = record.retry_delay(prep, attempt, exc)
            if delay is None:
                record.record_failed(prep, exc, started, attempt)
                raise
            record.end_span(prep, exc)
            prep.state.app._pause(delay, prep.state)
            continue
        if prep.stream:
            return RecordingStream(response, _Outcome(prep, started, attempt))
        record.record_ok(prep, response, started, attempt)
        return response


def _call_async(
    options: Options, api: API, method: Callable[..., Any], kwargs: dict[str, Any]
) -> Awaitable[Any]:
    # The identity is taken now, not when awaited, so gathered calls number in call order.
    prep = _begin(options, api, kwargs)
    if prep is None:
        return method(**kwargs)  # type: ignore[no-any-return]
    return _send_async(prep, method, kwargs)


async def _send_async(prep: Prepared, method: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    got = record.replay(prep)
    if isinstance(got, record.BrokenStream):
        return AsyncReplayStream(got.events, got.error)
    if got is not AGAIN:
        return AsyncReplayStream(got) if prep.stream else got
    record.check_budget(prep)
    started = time.time()
    attempt = 0
    while True:
        attempt += 1
        record.start_span(prep)
        try:
            response = await method(**kwargs)
        except Exception as exc:
            delay = record.retry_delay(prep, attempt, exc)
            if delay is None:
                record.record_failed(prep, exc, started, attempt)
                raise
            record.end_span(prep, exc)
            await asyncio.sleep(delay)
            prep.state.check()
            continue
        if prep.stream:
            return AsyncRecordingStream(response, _Outcome(prep, started, attempt))
        record.record_ok(prep, response, started, attempt)
        return response


class _Outcome:
    """Records a live stream once, when it ends or breaks."""

    def __init__(self, prep: Prepared, started: float, attempts: int) -> None:
        self._args: tuple[Prepared, float, int] | None = (prep, started, attempts)

    def ended(self, events: list[Any]) -> None:
        args, self._args = self._args, None
        if args is not None:
            record.record_ok(args[0], events, args[1], args[2])

    def broke(self, events: list[Any], exc: Exception) -> None:
        # Recorded like a failed call, so the workflow's own retry replays on the same path
        # instead of the first attempt being sent again (and succeeding) on resume.
        args, self._args = self._args, None
        if args is not None:
            record.record_failed(args[0], exc, args[1], args[2], partial=events)

    def abandoned(self, events: list[Any]) -> None:
        """The stream was closed or dropped before its end: nothing is journaled (the call
        is sent again on resume), but its span ends now, with what was seen."""
        args, self._args = self._args, None
        if args is not None and args[0].span is not None:
            _end_abandoned(args[0], events)


def _end_abandoned(prep: Prepared, events: list[Any]) -> None:
    seen = [dump(e) if hasattr(e, "model_dump") else e for e in events]
    meta: dict[str, Any] = {}
    model = next((m for e in seen if isinstance(m := record._model_of(e), str)), None)
    if model:
        meta["model"] = model
    tokens_in, tokens_out = usage(prep.api, None, seen)
    if tokens_in or tokens_out:  # usage comes last, if at all: absent, not zero
        meta.update(input_tokens=tokens_in, output_tokens=tokens_out)
    prep.span.abandoned(meta, seen, len(seen))


def _on_drop(stream: Any, outcome: _Outcome) -> None:
    """End the span when the stream object is collected unfinished (not at interpreter exit,
    when the application's exporter may be gone)."""
    weakref.finalize(stream, outcome.abandoned, stream._events).atexit = False


# -- streams -----------------------------------------------------------------------------------


class RecordingStream:
    """The SDK's stream, passed through; recorded once it has been read to the end, or once
    it broke (the events read so far and the error: a replay yields those, then raises it).

    A stream abandoned before its end is not recorded: the call is made again on resume.
    Its span (if traced) ends when it is closed or collected, with what was seen.
    """

    def __init__(self, inner: Any, outcome: _Outcome) -> None:
        self._inner = inner
        self._iter: Iterator[Any] = iter(inner)
        self._events: list[Any] = []
        self._outcome = outcome
        _on_drop(self, outcome)

    def __iter__(self) -> RecordingStream:
        return self

    def __next__(self) -> Any:
        try:
            event = next(self._iter)
        except StopIteration:
            self._outcome.ended(self._events)
            raise
        except Exception as exc:
            self._outcome.broke(self._events, exc)
            raise
        self._events.append(event)
        return event

    def __enter__(self) -> RecordingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying HTTP response (before the end: the call is not recorded)."""
        self._outcome.abandoned(self._events)
        self._inner.close()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


class AsyncRecordingStream:
    """:class:`RecordingStream` for async clients."""

    def __init__(self, inner: Any, outcome: _Outcome) -> None:
        self._inner = inner
        self._iter: AsyncIterator[Any] = inner.__aiter__()
        self._events: list[Any] = []
        self._outcome = outcome
        _on_drop(self, outcome)

    def __aiter__(self) -> AsyncRecordingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            event = await self._iter.__anext__()
        except StopAsyncIteration:
            self._outcome.ended(self._events)
            raise
        except Exception as exc:
            self._outcome.broke(self._events, exc)
            raise
        self._events.append(event)
        return event

    async def __aenter__(self) -> AsyncRecordingStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the underlying HTTP response (before the end: the call is not recorded)."""
        self._outcome.abandoned(self._events)
        await self._inner.close()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


class ReplayStream:
    """A recorded stream played back: the same events, as the same SDK types (and, for a
    stream that broke, the same error after them)."""

    #: no HTTP response stands behind a replayed stream
    response = None

    def __init__(self, events: list[Any], error: BaseException | None = None) -> None:
        self._iter = iter(events)
        self._error = error

    def __iter__(self) -> ReplayStream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._iter)
        except StopIteration:
            error, self._error = self._error, None
            if error is not None:
                raise error from None
            raise

    def __enter__(self) -> ReplayStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release."""


class AsyncReplayStream:
    """:class:`ReplayStream` for async clients."""

    response = None

    def __init__(self, events: list[Any], error: BaseException | None = None) -> None:
        self._iter = iter(events)
        self._error = error

    def __aiter__(self) -> AsyncReplayStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._iter)
        except StopIteration:
            error, self._error = self._error, None
            if error is not None:
                raise error from None
            raise StopAsyncIteration from None

    async def __aenter__(self) -> AsyncReplayStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release."""


def _stream_helper(root: Wrapped, create: Callable[..., Any]) -> Callable[..., Any]:
    """Anthropic's ``messages.stream(...)`` helper, on top of the journaled ``create(stream=True)``."""
    from anthropic import not_given
    from anthropic.lib.streaming import AsyncMessageStreamManager, MessageStreamManager

    api = APIS["messages"]

    def stream(**kwargs: Any) -> Any:
        if "output_format" in kwargs:
            raise ConfigurationError(
                "outlast.llm: messages.stream(output_format=...) is not journaled; use "
                "messages.create(stream=True), or the unwrapped client inside a step"
            )
        kwargs = {**kwargs, "stream": True}
        if root._async:
            request = _call_async(root._options, api, create, kwargs)
            return AsyncMessageStreamManager(request, output_format=not_given)
        return MessageStreamManager(
            lambda: _call(root._options, api, create, kwargs), output_format=not_given
        )

    return stream
