"""What a running run needs from its surroundings: the narrow runtime.

:class:`~outlast.context.RunState` and the durable primitives (steps, waits, children,
snapshots, graphs, model calls) reach the world through this protocol only: the store, the
executor's identity and lease, waiting and waking, workflow lookup, creating and executing
runs. :class:`~outlast.App` implements it and keeps registration and the public API; the
primitives never import the App, which keeps the core's import graph free of cycles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .engine import Outcome
    from .graph import Graph
    from .store.base import QueueSpec, RunRecord, Store
    from .timetravel import Checkpoint
    from .workflow import Workflow

__all__ = ["Runtime"]


class Runtime(Protocol):
    """The runtime of a run's execution (implemented by :class:`outlast.App`)."""

    #: the store the run lives in
    @property
    def store(self) -> Store: ...

    #: this process's executor id (owner of claimed runs)
    @property
    def owner(self) -> str: ...

    #: seconds a claimed run stays owned without a heartbeat
    lease: float
    #: waits longer than this hibernate instead of holding a thread
    hibernate_after: float
    #: flow control per queue name
    queues: dict[str, QueueSpec]
    #: registered workflows by name
    workflows: dict[str, Workflow[Any, Any]]

    def _resolve(self, workflow: Workflow[Any, Any] | str) -> Workflow[Any, Any]:
        """The registered workflow for an object or a name (ConfigurationError if unknown)."""

    def _workflow_for(self, run: RunRecord) -> Workflow[Any, Any]:
        """The registered workflow of a stored run."""

    def _create(
        self,
        wf: Workflow[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str | None,
        queue: str | None,
        priority: int | None,
        concurrency_key: str | None,
        claim: bool,
        parent_id: str | None = None,
    ) -> tuple[RunRecord, bool]:
        """Record a new run (see :func:`outlast.runs.create`); ``(run, claimed here)``."""

    def _execute(self, run: RunRecord) -> Outcome:
        """Execute a run this process has claimed."""

    async def _execute_async(self, run: RunRecord) -> Outcome:
        """:meth:`_execute` on the running event loop."""

    def _fork_base(
        self, graph: Graph, run_id: str, checkpoint_id: str | int
    ) -> tuple[dict[str, Any], Checkpoint]:
        """A graph fork's starting state and checkpoint."""

    def _notify(self) -> None:
        """Wake local waiters: a run changed state."""

    def _wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early when a local run changes state."""

    def _pause(self, seconds: float, state: Any) -> None:
        """Sleep between attempts, stopping early if the run is cancelled."""
