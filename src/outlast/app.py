"""The App: where workflows and steps are registered, and runs are started and inspected."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from . import calls, effects, engine, runs, timetravel
from .background import Background
from .budget import Budget
from .context import Context
from .encryption import Encryption
from .errors import ConfigurationError
from .graph import Graph
from .lease import Heartbeat
from .lifecycle import dropped_open, open_apps
from .operate import Operations
from .owner import new_owner_id
from .retry import Retry
from .run import Run
from .step import Step
from .store import QueueSpec, RunRecord, Store, open_store
from .timetravel import Checkpoint
from .transaction import TransactionStep
from .workflow import Workflow, WorkflowDecorator

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "sqlite:///outlast.db"


MAX_LEASE = 15.0


class App(Operations):
    """A set of workflows and steps bound to one store.

    ``url``: the store; else ``$OUTLAST_DATABASE_URL``; else ``sqlite:///outlast.db``.
    ``lease``: seconds a run stays owned by an executor that stopped renewing it (default
    10, at most 15); heartbeats renew it every ``lease / 3`` seconds.
    ``hibernate_after``: waits longer than this many seconds suspend the run instead of
    holding a thread (default 5).
    ``readonly``: only read the store (never create, migrate or write it; see
    :func:`~outlast.store.open_store`); what ``outlast runs``/``show`` use.
    ``tracing``: report runs, steps and model calls to the application's OpenTelemetry
    providers when the ``otel`` extra is installed and a provider is configured (default
    True; see docs/observability.md). ``trace_content``: put model messages on spans (also
    opted in by ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        lease: float = 10.0,
        hibernate_after: float = 5.0,
        readonly: bool = False,
        tracing: bool = True,
        trace_content: bool = False,
        encryption: Encryption | None = None,
    ) -> None:
        if not 0 < lease <= MAX_LEASE:
            raise ConfigurationError(f"lease must be in (0, {MAX_LEASE}] seconds, got {lease}")
        if hibernate_after < 0:
            raise ConfigurationError(f"hibernate_after must be >= 0, got {hibernate_after}")
        self.url = url or os.environ.get("OUTLAST_DATABASE_URL") or DEFAULT_URL
        self.lease = lease
        self.hibernate_after = hibernate_after
        self.readonly = readonly
        self.tracing = tracing
        self.trace_content = trace_content
        #: the App's telemetry hub, resolved on its first execution (see outlast.telemetry)
        self._telemetry: Any = None
        #: keys that seal every stored payload (None: $OUTLAST_ENCRYPTION_KEYS, if set)
        self.encryption = encryption
        self.workflows: dict[str, Workflow[Any, Any]] = {}
        self.steps: dict[str, Step[Any, Any]] = {}
        self.queues: dict[str, QueueSpec] = {}
        self._store: Store | None = None
        self._pid = -1
        self._owner = ""
        self._hb: Heartbeat | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._background = Background(self)
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- wiring -------------------------------------------------------------------------------

    def use(self, url: str) -> None:
        """Point the app at another store (before it is first used; the CLI's ``--db``)."""
        if self._store is not None:
            self._store.close()
            self._store = None
        self.url = url

    def _ensure(self) -> None:
        # Opened lazily, and again after a fork: a SQLite connection or a pool must not be
        # shared across processes, and the owner id names the process.
        if self._store is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._store is not None and self._pid == os.getpid():
                return
            self._store = open_store(self.url, readonly=self.readonly, encryption=self.encryption)
            self._owner = new_owner_id()
            if not self.readonly:
                # PostgreSQL: a liveness session, and cancels from other processes reach here
                self._owner = self._store.attach(self._owner, self._cancelled_elsewhere)
            self._hb = Heartbeat(self._store, self._owner, self.lease)
            self._pid = os.getpid()
            self._track()

    @property
    def store(self) -> Store:
        """The store, opened (and migrated) on first use."""
        self._ensure()
        assert self._store is not None
        return self._store

    @property
    def owner(self) -> str:
        """This app's executor id in this process."""
        self._ensure()
        return self._owner

    @property
    def _heartbeat(self) -> Heartbeat:
        self._ensure()
        assert self._hb is not None
        return self._hb

    def close(self) -> None:
        """Stop the heartbeat and close the store; safe to call twice.

        Also done for you when the interpreter exits. An app that is garbage-collected open
        is closed too, with a ``ResourceWarning`` naming it. Using the app again reopens it.
        """
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        open_apps.discard(self)
        if self._hb is not None:
            self._hb.stop()
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _track(self) -> None:
        """Close the newly opened store at exit, or with a warning if the app is dropped open."""
        if self._finalizer is not None:
            # Reopened after a fork: the parent's connection is not ours to close.
            self._finalizer.detach()
        names = ", ".join(sorted(self.workflows)[:3]) or "no workflows"
        label = f"outlast App({self.url!r}; {names})"
        # The finalizer holds the heartbeat, never the app, so the app can be collected; nor
        # the store, which may outlive the app (``App(url).store.prune(...)``) and closes when
        # it is collected. Interpreter exit is handled by lifecycle.close_open_apps, quietly.
        self._finalizer = weakref.finalize(self, dropped_open, label, self._hb)
        self._finalizer.atexit = False
        open_apps.add(self)

    # -- decorators ---------------------------------------------------------------------------

    @overload
    def step(self, fn: Callable[P, R], /) -> Step[P, R]: ...

    @overload
    def step(
        self,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        at_most_once: bool = False,
        reconcile: Callable[[str], Any] | None = None,
    ) -> Callable[[Callable[P, R]], Step[P, R]]: ...

    def step(  # type: ignore[misc]  # mypy: ParamSpec only in an overload's return
        self,
        fn: Any = None,
        /,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        at_most_once: bool = False,
        reconcile: Callable[[str], Any] | None = None,
    ) -> Any:
        """Declare a journaled step: ``@app.step`` or ``@app.step(name=..., retry=Retry(...))``.

        ``at_most_once=True``: a durable intent is recorded before the step runs, and a crash
        between intent and outcome is never re-run blindly: ``reconcile(idempotency_key)``
        answers (``outlast.effects.NOT_DONE`` or the result), else the run pauses for
        :meth:`resolve`. See :mod:`outlast.effects`.
        """

        def decorate(f: Callable[P, R]) -> Step[P, R]:
            step_name = name or f.__name__
            effects.check_options(step_name, f, at_most_once, reconcile)
            step = Step(
                self, f, name=step_name, retry=retry, at_most_once=at_most_once, reconcile=reconcile
            )
            self._register(self.steps, step)
            return step

        return decorate(fn) if fn is not None else decorate

    @overload
    def transaction(self, fn: Callable[..., R], /) -> TransactionStep[R]: ...

    @overload
    def transaction(
        self, *, name: str | None = None, retry: Retry | None = None
    ) -> Callable[[Callable[..., R]], TransactionStep[R]]: ...

    def transaction(  # type: ignore[misc]  # mypy: ParamSpec only in an overload's return
        self,
        fn: Any = None,
        /,
        *,
        name: str | None = None,
        retry: Retry | None = None,
    ) -> Any:
        """Declare an exactly-once database step: ``fn(conn, *args)`` receives a DB-API
        connection to the journal's database, and its writes commit in one transaction with
        the step's journal entry. See :mod:`outlast.transaction`."""

        def decorate(f: Callable[..., R]) -> TransactionStep[R]:
            step = TransactionStep(self, f, name=name or f.__name__, retry=retry)
            self._register(self.steps, step)
            return step

        return decorate(fn) if fn is not None else decorate

    @overload
    def workflow(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, R]], /
    ) -> Workflow[P, R]: ...

    @overload
    def workflow(
        self, fn: Callable[Concatenate[Context, P], R], /
    ) -> Workflow[P, R]: ...

    @overload
    def workflow(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Workflow[P, R]: ...

    @overload
    def workflow(self, fn: Callable[P, R], /) -> Workflow[P, R]: ...

    @overload
    def workflow(
        self, *, name: str | None = None, queue: str = "default", priority: int = 0,
        budget: Budget | None = None,
    ) -> WorkflowDecorator: ...

    def workflow(  # type: ignore[misc]  # mypy: ParamSpec only in an overload's return
        self,
        fn: Any = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        budget: Budget | None = None,
    ) -> Any:
        """Declare a workflow: ``@app.workflow`` or ``@app.workflow(name=..., queue=...)``.

        The default name is the bare function name, so a run started by a script resumes
        under ``outlast worker module:app``. ``budget``: limits on what each run may spend
        on model calls made through :func:`outlast.llm.wrap` (see :class:`~outlast.Budget`).
        """

        def decorate(f: Callable[..., Any]) -> Workflow[Any, Any]:
            wf: Workflow[Any, Any] = Workflow(
                self, f, name=name or f.__name__, queue=queue, priority=priority, budget=budget
            )
            self._register(self.workflows, wf)
            return wf

        return decorate(fn) if fn is not None else decorate

    def _register(self, table: dict[str, Any], obj: Any) -> Any:
        existing = table.get(obj.name)
        if existing is not None and getattr(existing, "fn", None) is not obj.fn:
            kind = "workflow" if table is self.workflows else "step"
            raise ConfigurationError(
                f"two {kind}s are named {obj.name!r} ({existing.fn.__module__}."
                f"{existing.fn.__qualname__} and {obj.fn.__module__}.{obj.fn.__qualname__}); "
                f"give one another name with @app.{kind}(name=...)"
            )
        table[obj.name] = obj
        return obj

    def graph(
        self, name: str, *, reducers: dict[str, Callable[[Any, Any], Any]] | None = None, **options: Any
    ) -> Graph:
        """Declare a state graph (see :mod:`outlast.graph`), run as a workflow named ``name``.

        ``reducers`` maps a state key to ``f(current, update)`` (default: replace);
        ``options``: ``snapshot_every``, ``max_nodes``, ``queue``.
        """
        graph = Graph(self, name, reducers=reducers, **options)
        return self._register(self.workflows, graph)  # type: ignore[no-any-return]

    def queue(self, name: str, **limits: Any) -> QueueSpec:
        """Declare flow control for a queue (see :class:`~outlast.store.QueueSpec`)."""
        spec = QueueSpec(name, **limits)
        self.queues[name] = spec
        return spec

    # -- starting runs ------------------------------------------------------------------------

    def _resolve(self, workflow: Workflow[Any, Any] | str, verb: str = "run") -> Workflow[Any, Any]:
        if not isinstance(workflow, Workflow | str):
            raise calls.not_a_workflow(workflow, verb)
        if isinstance(workflow, Workflow):
            if workflow.app is not self:
                raise ConfigurationError(
                    f"workflow {workflow.name!r} belongs to another App; start it with that app"
                )
            if isinstance(workflow, Graph):
                workflow.validate()  # a bad graph is refused before a run is recorded
            return workflow
        wf = self.workflows.get(workflow) if isinstance(workflow, str) else None
        if wf is None:
            known = ", ".join(sorted(self.workflows)) or "none registered"
            raise ConfigurationError(
                f"unknown workflow {workflow!r}; this app has: {known}. Import the module that "
                "defines it before starting or resuming runs"
            )
        return wf

    def _workflow_for(self, run: RunRecord) -> Workflow[Any, Any]:
        return self._resolve(run.workflow)

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
        stats: str | None = None,
    ) -> tuple[RunRecord, bool]:
        record, owned, created = runs.create(
            self, wf, args, kwargs, run_id=run_id, queue=queue, priority=priority,
            concurrency_key=concurrency_key, claim=claim, parent_id=parent_id, stats=stats,
        )
        if created:
            self._notify()
        return record, owned

    def _execute(self, run: RunRecord) -> engine.Outcome:
        """Execute a claimed run here (a parent running its child inline)."""
        return engine.execute(self, self._workflow_for(run), run)

    async def _execute_async(self, run: RunRecord) -> engine.Outcome:
        return await engine.execute_async(self, self._workflow_for(run), run)

    def _fork_base(
        self, graph: Graph, run_id: str, checkpoint_id: str | int
    ) -> tuple[dict[str, Any], Checkpoint]:
        return timetravel.fork_base(self, graph, run_id, checkpoint_id)

    @overload
    def run(self, workflow: Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    def run(self, workflow: Workflow[..., R], /, *args: Any, run_id: str | None, **kwargs: Any) -> R: ...

    @overload
    def run(self, workflow: Workflow[..., R], /, *args: Any, queue: str | None, **kwargs: Any) -> R: ...

    @overload
    def run(self, workflow: Workflow[..., R], /, *args: Any, priority: int | None, **kwargs: Any) -> R: ...

    @overload
    def run(self, workflow: Workflow[..., R], /, *args: Any, concurrency_key: str | None, **kwargs: Any) -> R: ...

    @overload
    def run(self, workflow: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def run(  # type: ignore[misc]
        self,
        workflow: Workflow[Any, Any] | str,
        *args: Any,
        run_id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Start the run (or resume it, if ``run_id`` exists) and wait for its result.

        A finished run returns its stored result (or raises its stored error) without
        running again. A paused run raises RunPaused naming the reason and the fix.
        """
        wf = self._resolve(workflow, "run")
        if wf.is_async:
            try:
                import asyncio  # lazily: slow to import; sync users never need it
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                raise ConfigurationError(
                    f"workflow {wf.name!r} is async and an event loop is running: use "
                    "`await app.run_async(...)`"
                )
        record, owned, new = runs.here(self, wf, args, kwargs, run_id, queue, priority, concurrency_key)
        if owned:
            outcome = engine.execute(self, wf, record, fresh=True, unrecorded=new)
            self._notify()
            if outcome.settled():
                return outcome.value
        return engine.drive(self, wf, record.run_id)[1]

    @overload
    async def run_async(self, workflow: Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    async def run_async(self, workflow: Workflow[..., R], /, *args: Any, run_id: str | None, **kwargs: Any) -> R: ...

    @overload
    async def run_async(self, workflow: Workflow[..., R], /, *args: Any, queue: str | None, **kwargs: Any) -> R: ...

    @overload
    async def run_async(self, workflow: Workflow[..., R], /, *args: Any, priority: int | None, **kwargs: Any) -> R: ...

    @overload
    async def run_async(self, workflow: Workflow[..., R], /, *args: Any, concurrency_key: str | None, **kwargs: Any) -> R: ...

    @overload
    async def run_async(self, workflow: str, /, *args: Any, **kwargs: Any) -> Any: ...

    async def run_async(  # type: ignore[misc]
        self,
        workflow: Workflow[Any, Any] | str,
        *args: Any,
        run_id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """:meth:`run` for async callers; async workflows execute on the running loop."""
        wf = self._resolve(workflow, "run_async")
        record, owned, new = runs.here(self, wf, args, kwargs, run_id, queue, priority, concurrency_key)
        if owned:
            outcome = await engine.execute_async(self, wf, record, fresh=True, unrecorded=new)
            self._notify()
            if outcome.settled():
                return outcome.value
        return await engine.drive_async(self, wf, record.run_id)

    @overload
    def start(self, workflow: Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Run[R]: ...

    @overload
    def start(self, workflow: Workflow[..., R], /, *args: Any, run_id: str | None, **kwargs: Any) -> Run[R]: ...

    @overload
    def start(self, workflow: Workflow[..., R], /, *args: Any, queue: str | None, **kwargs: Any) -> Run[R]: ...

    @overload
    def start(self, workflow: Workflow[..., R], /, *args: Any, priority: int | None, **kwargs: Any) -> Run[R]: ...

    @overload
    def start(self, workflow: Workflow[..., R], /, *args: Any, concurrency_key: str | None, **kwargs: Any) -> Run[R]: ...

    @overload
    def start(self, workflow: str, /, *args: Any, **kwargs: Any) -> Run[Any]: ...

    def start(  # type: ignore[misc]
        self,
        workflow: Workflow[Any, Any] | str,
        *args: Any,
        run_id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        **kwargs: Any,
    ) -> Run[Any]:
        """Record the run, start executing it in a background thread here, return its handle.

        The run is stored before this returns, so events sent right after are kept. If it
        hibernates, the thread ends; ``handle.result()`` (or a worker) resumes it when due.
        If the program ends while the run is still executing here, the run is handed back as
        ``pending`` at exit (with a warning) for a worker or a later ``app.run`` to finish.
        """
        wf = self._resolve(workflow, "start")
        record, owned = self._create(
            wf, args, kwargs, run_id=run_id, queue=queue, priority=priority,
            concurrency_key=concurrency_key, claim=True,
        )
        return self._launch(wf, record, owned)

    def _launch(self, wf: Workflow[Any, Any], record: RunRecord, owned: bool) -> Run[Any]:
        """Execute the run on a background thread here (``owned``: claimed by this app)."""

        def background() -> None:
            try:
                if owned:
                    outcome = engine.execute(self, wf, record, fresh=True)
                    self._notify()
                    if outcome.status in ("completed", "failed") or self._background.exiting:
                        return
                engine.drive(self, wf, record.run_id, detach_on_suspend=True)
            except BaseException:  # the outcome is in the store; result() reports it
                pass
            finally:
                self._background.discard(record.run_id)
                self._notify()

        self._background.add(record.run_id, record.epoch if owned else None)
        threading.Thread(target=background, name=f"outlast-run-{record.run_id}", daemon=True).start()
        return Run(self, record.run_id)

    @overload
    def enqueue(self, workflow: Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Run[R]: ...

    @overload
    def enqueue(self, workflow: Workflow[..., R], /, *args: Any, run_id: str | None, **kwargs: Any) -> Run[R]: ...

    @overload
    def enqueue(self, workflow: Workflow[..., R], /, *args: Any, queue: str | None, **kwargs: Any) -> Run[R]: ...

    @overload
    def enqueue(self, workflow: Workflow[..., R], /, *args: Any, priority: int | None, **kwargs: Any) -> Run[R]: ...

    @overload
    def enqueue(self, workflow: Workflow[..., R], /, *args: Any, concurrency_key: str | None, **kwargs: Any) -> Run[R]: ...

    @overload
    def enqueue(self, workflow: str, /, *args: Any, **kwargs: Any) -> Run[Any]: ...

    def enqueue(  # type: ignore[misc]
        self,
        workflow: Workflow[Any, Any] | str,
        *args: Any,
        run_id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        **kwargs: Any,
    ) -> Run[Any]:
        """Record the run for the workers (``outlast worker``) and return its handle at once."""
        wf = self._resolve(workflow, "enqueue")
        record, _ = self._create(
            wf, args, kwargs, run_id=run_id, queue=queue, priority=priority,
            concurrency_key=concurrency_key, claim=False,
        )
        return Run(self, record.run_id)

    # -- waiting (shared by the engine) -------------------------------------------------------

    def _cancelled_elsewhere(self, run_id: str) -> None:
        """Another process cancelled ``run_id``: stop its local executor (if any) now."""
        hb = self._hb
        if hb is not None:
            hb.interrupt(run_id)
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early when a local run changes state."""
        with self._changed:
            self._changed.wait(max(0.0, seconds))

    def _pause(self, seconds: float, state: Any) -> None:
        """Sleep between step attempts, stopping early if the run is cancelled."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))
            state.check()

    def __repr__(self) -> str:
        return f"<outlast.App {self.url!r}>"
