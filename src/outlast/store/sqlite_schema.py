"""The SQLite schema, as ordered migrations. Never edit a released migration: add one."""

from __future__ import annotations

from .migrations import Migration

#: Column order of ``outlast_runs`` as read into :class:`~outlast.store.base.RunRecord`.
RUN_COLUMNS = (
    "run_id",
    "workflow",
    "status",
    "input",
    "input_hash",
    "output",
    "error",
    "queue",
    "priority",
    "concurrency_key",
    "parent_id",
    "owner",
    "epoch",
    "lease_expires_at",
    "wake_at",
    "wait_event",
    "reason",
    "snapshot",
    "snapshot_position",
    "stats",
    "recoveries",
    "created_at",
    "started_at",
    "ended_at",
    "trace_context",
)

#: the condition of the partial indexes, repeated in the queries that use them. Spelled as
#: ORs, not ``status IN (...)``: SQLite evaluates a partial index's condition for every row
#: written (twice for an update) and compiles an IN list of more than two constants into a
#: temporary table each time: ~170,000 instructions per run created and finished, a tenth of
#: a 10-step run's (docs/benchmarks.md, "Step overhead against 0.1.0")
LIVE = "(status = 'pending' OR status = 'running' OR status = 'suspended')"
FINISHED = "(status = 'completed' OR status = 'failed' OR status = 'cancelled')"
#: the conditions as migration 6 wrote them (replaced by migration 7)
_LIVE_6 = "status IN ('pending', 'running', 'suspended')"
_FINISHED_6 = "status IN ('completed', 'failed', 'cancelled')"

MIGRATIONS = (
    Migration(
        1,
        "runs, journal, events, blobs",
        (
            """CREATE TABLE outlast_runs (
                run_id TEXT PRIMARY KEY,
                workflow TEXT NOT NULL,
                status TEXT NOT NULL,
                input BLOB NOT NULL,
                input_hash TEXT NOT NULL,
                output BLOB,
                error BLOB,
                queue TEXT NOT NULL DEFAULT 'default',
                priority INTEGER NOT NULL DEFAULT 0,
                concurrency_key TEXT,
                parent_id TEXT,
                owner TEXT,
                epoch INTEGER NOT NULL DEFAULT 0,
                lease_expires_at REAL,
                wake_at REAL,
                wait_event TEXT,
                reason TEXT,
                snapshot BLOB,
                snapshot_position INTEGER,
                stats TEXT,
                recoveries INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                started_at REAL,
                ended_at REAL
            )""",
            "CREATE INDEX outlast_runs_runnable ON outlast_runs (status, priority DESC, created_at)",
            "CREATE INDEX outlast_runs_wake ON outlast_runs (wake_at) WHERE status = 'suspended'",
            "CREATE INDEX outlast_runs_parent ON outlast_runs (parent_id) WHERE parent_id IS NOT NULL",
            "CREATE INDEX outlast_runs_created ON outlast_runs (created_at)",
            """CREATE TABLE outlast_journal (
                run_id TEXT NOT NULL,
                key TEXT NOT NULL,
                position INTEGER NOT NULL,
                kind TEXT NOT NULL,
                name TEXT NOT NULL,
                status TEXT NOT NULL,
                output BLOB,
                args_hash TEXT,
                attempts INTEGER NOT NULL DEFAULT 1,
                started_at REAL NOT NULL,
                ended_at REAL,
                meta TEXT,
                PRIMARY KEY (run_id, key)
            ) WITHOUT ROWID""",
            """CREATE TABLE outlast_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id TEXT NOT NULL,
                name TEXT NOT NULL,
                payload BLOB,
                created_at REAL NOT NULL,
                consumed_at REAL
            )""",
            "CREATE INDEX outlast_events_pending ON outlast_events (run_id, name, id) "
            "WHERE consumed_at IS NULL",
            "CREATE TABLE outlast_blobs (hash TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID",
            """CREATE TABLE outlast_blob_refs (
                run_id TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (run_id, hash)
            ) WITHOUT ROWID""",
            "CREATE INDEX outlast_blob_refs_hash ON outlast_blob_refs (hash)",
            """CREATE TABLE outlast_queue_starts (queue TEXT NOT NULL, started_at REAL NOT NULL)""",
            "CREATE INDEX outlast_queue_starts_q ON outlast_queue_starts (queue, started_at)",
        ),
    ),
    Migration(
        2,
        "checkpointer checkpoints and writes (LangGraph saver)",
        (
            """CREATE TABLE outlast_lg_checkpoints (
                thread_id TEXT NOT NULL,
                ns TEXT NOT NULL,
                checkpoint_id TEXT NOT NULL,
                parent_id TEXT,
                run_id TEXT,
                checkpoint BLOB NOT NULL,
                metadata BLOB NOT NULL,
                PRIMARY KEY (thread_id, ns, checkpoint_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX outlast_lg_checkpoints_run ON outlast_lg_checkpoints (run_id)",
            """CREATE TABLE outlast_lg_writes (
                thread_id TEXT NOT NULL,
                ns TEXT NOT NULL,
                checkpoint_id TEXT NOT NULL,
                task_id TEXT NOT NULL,
                idx INTEGER NOT NULL,
                channel TEXT NOT NULL,
                value BLOB NOT NULL,
                task_path TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (thread_id, ns, checkpoint_id, task_id, idx)
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        3,
        "runs: trace_context, the W3C traceparent of a run's first traced execution",
        ("ALTER TABLE outlast_runs ADD COLUMN trace_context TEXT",),
    ),
    Migration(
        4,
        "journal: the epoch each entry was written in (replayed vs executed, in outlast ui)",
        ("ALTER TABLE outlast_journal ADD COLUMN epoch INTEGER",),
    ),
    Migration(
        5,
        "blobs: a rowid table (rows in insertion order fill their pages), hash unique",
        # Keyed by hash (WITHOUT ROWID), rows of 1-2 KB landed at random places of the B-tree
        # and left its pages ~80% full; in rowid order they append. Same columns, same
        # ON CONFLICT behaviour. The copy runs once, at the first open by this version
        # (docs/benchmarks.md, on-disk size).
        (
            "CREATE TABLE outlast_blobs_v5 (hash TEXT NOT NULL UNIQUE, data BLOB NOT NULL)",
            "INSERT INTO outlast_blobs_v5 (hash, data) SELECT hash, data FROM outlast_blobs",
            "DROP TABLE outlast_blobs",
            "ALTER TABLE outlast_blobs_v5 RENAME TO outlast_blobs",
        ),
    ),
    Migration(
        6,
        "runs at scale: a live-only claim index, list indexes by status and by workflow, "
        "an index of finished runs by end (prune)",
        (
            # claim scans live runs only (its WHERE repeats this predicate word for word:
            # SQLite uses a partial index only for a query that contains its condition)
            f"""CREATE INDEX IF NOT EXISTS outlast_runs_live
                ON outlast_runs (priority DESC, created_at, run_id) WHERE {_LIVE_6}""",
            """CREATE INDEX IF NOT EXISTS outlast_runs_status
                ON outlast_runs (status, created_at DESC, run_id DESC)""",
            """CREATE INDEX IF NOT EXISTS outlast_runs_workflow
                ON outlast_runs (workflow, created_at DESC, run_id DESC)""",
            f"""CREATE INDEX IF NOT EXISTS outlast_runs_ended
                ON outlast_runs (ended_at) WHERE {_FINISHED_6}""",
            # (status, priority, created_at): served by the two above
            "DROP INDEX IF EXISTS outlast_runs_runnable",
        ),
    ),
    Migration(
        7,
        "runs: the partial indexes' conditions as ORs (an IN list cost every run write a "
        "temporary table)",
        (
            # Same columns, same rows: only the spelling of the condition changes, which the
            # queries using the indexes repeat (LIVE, FINISHED).
            "DROP INDEX IF EXISTS outlast_runs_live",
            f"""CREATE INDEX outlast_runs_live
                ON outlast_runs (priority DESC, created_at, run_id) WHERE {LIVE}""",
            "DROP INDEX IF EXISTS outlast_runs_ended",
            f"""CREATE INDEX outlast_runs_ended ON outlast_runs (ended_at) WHERE {FINISHED}""",
        ),
    ),
)
