"""outlast: durable execution for AI agents, as a library.

Decorate a workflow and its steps; each step's outcome is journaled in a database (SQLite by
default, PostgreSQL for fleets). When the process dies, running the workflow again resumes
it: completed steps return their recorded results instead of running again.

    import outlast

    app = outlast.App()                     # sqlite:///outlast.db, or $OUTLAST_DATABASE_URL

    @app.step
    def search(topic: str) -> list[str]: ...

    @app.workflow
    def research(ctx: outlast.Context, topics: list[str]) -> str:
        return "\\n".join(n for t in topics for n in search(t))

    app.run(research, ["acme", "globex"], run_id="research-42")

Importing this package loads the standard library only.
"""

from __future__ import annotations

from .app import App
from .budget import Budget
from .context import Context, current_idempotency_key, idempotency_key
from .encryption import Encryption
from .errors import (
    BudgetExceeded,
    Cancelled,
    ConfigurationError,
    NonDeterminismError,
    NotFailed,
    NotPaused,
    OutlastError,
    RetryableError,
    RunCancelled,
    RunConflict,
    RunFailed,
    RunNotFound,
    RunPaused,
    SerializationError,
    StepFailed,
    StoreError,
    TerminalError,
    Timeout,
    UnreadableValue,
)
from .graph import END, START, Graph, append, interrupt
from .retry import Retry
from .run import Run, RunInfo, StepInfo
from .step import Step
from .store.base import QueueSpec
from .timetravel import Checkpoint
from .workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "App",
    "Budget",
    "BudgetExceeded",
    "Cancelled",
    "Checkpoint",
    "ConfigurationError",
    "Context",
    "END",
    "Encryption",
    "Graph",
    "NonDeterminismError",
    "NotFailed",
    "NotPaused",
    "OutlastError",
    "QueueSpec",
    "Retry",
    "RetryableError",
    "Run",
    "RunCancelled",
    "RunConflict",
    "RunFailed",
    "RunInfo",
    "RunNotFound",
    "RunPaused",
    "START",
    "SerializationError",
    "Step",
    "StepFailed",
    "StepInfo",
    "StoreError",
    "TerminalError",
    "Timeout",
    "UnreadableValue",
    "Workflow",
    "append",
    "current_idempotency_key",
    "idempotency_key",
    "interrupt",
]


def __getattr__(name: str) -> object:
    # outlast.llm is loaded on first use, so `import outlast` stays standard-library only.
    if name == "llm":
        import importlib

        return importlib.import_module(f"{__name__}.llm")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
