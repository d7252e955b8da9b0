"""httpx integration: requests made inside a step carry the step's ``Idempotency-Key``.

::

    from outlast.integrations.httpx import Client      # or AsyncClient, or instrument(client)

    http = Client(base_url="https://payments.example")

    @app.step
    def charge(order: str, cents: int) -> dict:
        return http.post("/charges", json={"order": order, "cents": cents}).json()

Inside a journaled step every request whose method is unsafe (POST, PUT, PATCH, DELETE by
default) gets the header ``Idempotency-Key: {run_id}:{step_name}:{n}``, the same value across
retries, crashes and workers, so a deduplicating receiver (:mod:`outlast.dedup`, Stripe and the
like) applies the effect once. Outside a step, or when the request already has the header, the
request is sent unchanged. Several requests made by one step share its key: give each effect
its own step (or ``step.call(..., key=...)``) when the receiver deduplicates per key.

The header is added by a request event hook, which httpx runs in the caller's thread or task, so
the step in progress is the one that sent the request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import httpx

from ..context import current_idempotency_key

__all__ = ["AsyncClient", "Client", "instrument"]

HEADER = "Idempotency-Key"
UNSAFE_METHODS: frozenset[str] = frozenset({"POST", "PUT", "PATCH", "DELETE"})

C = TypeVar("C", httpx.Client, httpx.AsyncClient)


def _stamper(header: str, methods: frozenset[str]) -> Callable[[httpx.Request], None]:
    def stamp(request: httpx.Request) -> None:
        if request.method.upper() not in methods or header in request.headers:
            return
        key = current_idempotency_key()
        if key is not None:
            request.headers[header] = key

    return stamp


def instrument(
    client: C, *, header: str = HEADER, methods: Iterable[str] = UNSAFE_METHODS
) -> C:
    """Make ``client`` (sync or async) stamp requests sent inside a step; returns ``client``."""
    stamp = _stamper(header, frozenset(m.upper() for m in methods))
    hook: Callable[[httpx.Request], Any]
    if isinstance(client, httpx.AsyncClient):

        async def stamp_async(request: httpx.Request) -> None:  # async clients await hooks
            stamp(request)

        hook = stamp_async
    elif isinstance(client, httpx.Client):
        hook = stamp
    else:
        raise TypeError(f"instrument() takes an httpx.Client or httpx.AsyncClient, not {client!r}")
    hooks: dict[str, list[Callable[..., Any]]] = dict(client.event_hooks)
    hooks["request"] = [*hooks.get("request", []), hook]
    client.event_hooks = hooks
    return client


def Client(  # noqa: N802 - reads like the class it builds
    *, header: str = HEADER, methods: Iterable[str] = UNSAFE_METHODS, **kwargs: Any
) -> httpx.Client:
    """An ``httpx.Client(**kwargs)`` whose requests inside a step carry the idempotency key."""
    return instrument(httpx.Client(**kwargs), header=header, methods=methods)


def AsyncClient(  # noqa: N802 - reads like the class it builds
    *, header: str = HEADER, methods: Iterable[str] = UNSAFE_METHODS, **kwargs: Any
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient(**kwargs)`` whose requests inside a step carry the idempotency key."""
    return instrument(httpx.AsyncClient(**kwargs), header=header, methods=methods)
