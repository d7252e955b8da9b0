"""The PostgreSQL store's schema and statements, as plain SQL strings, and the pure helpers
that prepare their parameters (URL options).

Every table lives in one schema (``?schema=`` in the URL, default ``outlast``); ``{s}`` in the
strings below stands for its quoted name and is filled in once by :class:`Queries`. Times are
double precision seconds since the epoch from the server's clock (:data:`NOW`), so leases and
wake times mean the same thing to every worker whatever its own clock says.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import ConfigurationError
from .base import Entry, RunRecord
from .migrations import Migration
from .postgres_admission import CLAIM_LIMITED, CLAIM_LIMITED_GRACE, CLAIM_LIMITED_QUEUES

#: the server's clock, in seconds; clock_timestamp() (not now()) so a long transaction does not
#: stamp rows with the time it began
NOW = "extract(epoch from clock_timestamp())::float8"

#: a blob address column (uuid) as the 32 hex digits outlast names blobs by
HASH_OUT = "replace(hash::text, '-', '')"
#: what a blob address looks like; anything else is not looked up (a uuid cast would fail)
HASH_FORM = re.compile(r"[0-9a-f]{32}")



def check_addresses(addresses: list[str]) -> list[str]:
    """``addresses``, after checking each can be stored in a uuid column (else ValueError)."""
    for address in addresses:
        if not HASH_FORM.fullmatch(address):
            raise ValueError(
                f"blob address {address!r} is not 32 lowercase hex digits: blobs are named by "
                "outlast.serde.fingerprint of their bytes (the PostgreSQL store keeps the "
                "address as a uuid)"
            )
    return addresses


RUN_COLUMNS = ", ".join(f.name for f in fields(RunRecord))
ENTRY_COLUMNS = ", ".join(f.name for f in fields(Entry))

# A run is runnable when nobody may be executing it: pending, its owner's lease ran out, or
# its sleep is over.
RUNNABLE = f"""(status = 'pending'
    OR (status = 'running' AND lease_expires_at < {NOW} - %(grace)s)
    OR (status = 'suspended' AND wake_at <= {NOW}))"""

POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, journal, events, blobs",
        (
            """CREATE TABLE {s}.runs (
                run_id text PRIMARY KEY,
                workflow text NOT NULL,
                status text NOT NULL CHECK (status IN
                    ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled', 'paused')),
                input bytea NOT NULL,
                input_hash text NOT NULL,
                output bytea,
                error bytea,
                queue text NOT NULL DEFAULT 'default',
                priority integer NOT NULL DEFAULT 0,
                concurrency_key text,
                parent_id text,
                owner text,
                epoch bigint NOT NULL DEFAULT 0,
                lease_expires_at double precision,
                wake_at double precision,
                wait_event text,
                reason text,
                snapshot bytea,
                snapshot_position integer,
                stats text,
                recoveries integer NOT NULL DEFAULT 0,
                created_at double precision NOT NULL,
                started_at double precision,
                ended_at double precision
            )""",
            # claim's scan: only live runs, in claim order
            """CREATE INDEX runs_runnable ON {s}.runs (priority DESC, created_at, run_id)
                WHERE status IN ('pending', 'running', 'suspended')""",
            "CREATE INDEX runs_parent ON {s}.runs (parent_id) WHERE parent_id IS NOT NULL",
            # queue limits count running runs per queue
            "CREATE INDEX runs_queue_status ON {s}.runs (queue, status)",
            "CREATE INDEX runs_created ON {s}.runs (created_at DESC)",
            """CREATE INDEX runs_ended ON {s}.runs (ended_at)
                WHERE status IN ('completed', 'failed', 'cancelled')""",
            """CREATE TABLE {s}.journal (
                run_id text NOT NULL,
                key text NOT NULL,
                position integer NOT NULL,
                kind text NOT NULL,
                name text NOT NULL,
                status text NOT NULL CHECK (status IN ('completed', 'failed', 'intent')),
                output bytea,
                args_hash text,
                attempts integer NOT NULL DEFAULT 1,
                started_at double precision NOT NULL,
                ended_at double precision,
                meta text,
                PRIMARY KEY (run_id, key)
            )""",
            "CREATE INDEX journal_position ON {s}.journal (run_id, position)",
            """CREATE TABLE {s}.events (
                id bigserial PRIMARY KEY,
                run_id text NOT NULL,
                name text NOT NULL,
                payload bytea NOT NULL,
                created_at double precision NOT NULL,
                consumed_at double precision
            )""",
            """CREATE INDEX events_waiting ON {s}.events (run_id, name, id)
                WHERE consumed_at IS NULL""",
            "CREATE INDEX events_run ON {s}.events (run_id)",
            "CREATE TABLE {s}.blobs (hash text PRIMARY KEY, data bytea NOT NULL)",
            """CREATE TABLE {s}.blob_refs (
                run_id text NOT NULL,
                hash text NOT NULL,
                PRIMARY KEY (run_id, hash)
            )""",
            "CREATE INDEX blob_refs_hash ON {s}.blob_refs (hash)",
            # one row per claim from a rate-limited queue, kept for two rate periods
            """CREATE TABLE {s}.queue_starts (
                queue text NOT NULL,
                started_at double precision NOT NULL
            )""",
            "CREATE INDEX queue_starts_queue ON {s}.queue_starts (queue, started_at)",
        ),
    ),
    Migration(
        2,
        "checkpointer checkpoints and writes (LangGraph saver)",
        (
            """CREATE TABLE {s}.lg_checkpoints (
                thread_id text NOT NULL,
                ns text NOT NULL,
                checkpoint_id text NOT NULL,
                parent_id text,
                run_id text,
                checkpoint bytea NOT NULL,
                metadata bytea NOT NULL,
                PRIMARY KEY (thread_id, ns, checkpoint_id)
            )""",
            "CREATE INDEX lg_checkpoints_run ON {s}.lg_checkpoints (run_id)",
            """CREATE TABLE {s}.lg_writes (
                thread_id text NOT NULL,
                ns text NOT NULL,
                checkpoint_id text NOT NULL,
                task_id text NOT NULL,
                idx integer NOT NULL,
                channel text NOT NULL,
                value bytea NOT NULL,
                task_path text NOT NULL DEFAULT '',
                PRIMARY KEY (thread_id, ns, checkpoint_id, task_id, idx)
            )""",
        ),
    ),
    Migration(
        3,
        "journal: no position index (one index write less per step; load_journal sorts)",
        ("DROP INDEX IF EXISTS {s}.journal_position",),
    ),
    Migration(
        4,
        "claim_limited(): queue admission and claim in one statement (no lock across round trips)",
        (CLAIM_LIMITED,),
    ),
    Migration(
        5,
        "runs: trace_context, the W3C traceparent of a run's first traced execution",
        ("ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS trace_context text",),
    ),
    Migration(
        6,
        "journal: the epoch each entry was written in (replayed vs executed, in outlast ui)",
        ("ALTER TABLE {s}.journal ADD COLUMN IF NOT EXISTS epoch integer",),
    ),
    Migration(
        7,
        "claim_limited() with a queue filter (workers started with --queue)",
        (CLAIM_LIMITED_QUEUES,),
    ),
    Migration(
        8,
        "runs at scale: list indexes by status and by workflow; live-only queue index",
        (
            # `outlast runs --status/--workflow` and the dashboard's filters, in page order,
            # so a rare status among millions of finished runs is read, not searched for
            """CREATE INDEX IF NOT EXISTS runs_status_created
                ON {s}.runs (status, created_at DESC, run_id DESC)""",
            """CREATE INDEX IF NOT EXISTS runs_workflow_created
                ON {s}.runs (workflow, created_at DESC, run_id DESC)""",
            # queue limits and `outlast queues` count live runs only: finished runs (almost
            # all rows) leave the index, and a finishing run's update writes one entry less
            """CREATE INDEX IF NOT EXISTS runs_queue_live ON {s}.runs (queue, status)
                WHERE status IN ('pending', 'running', 'suspended')""",
            "DROP INDEX IF EXISTS {s}.runs_queue_status",
        ),
    ),
    Migration(
        9,
        "blobs, blob_refs: hashes as uuid (16 bytes); blob_refs keyed by (hash, run_id) with "
        "a run_id index",
        # A blob's address is 128 bits written as 32 hex digits; as uuid it takes 16 bytes in
        # the heaps and the B-trees instead of 33 (the store converts at its boundary). And two
        # B-trees of random hashes on blob_refs become one: (hash, run_id) serves the lookups
        # by hash (prune, rekey) and ON CONFLICT; lookups by run (prune, fork, the savers) use
        # an index on run_id alone, whose duplicates PostgreSQL keeps as one key and a list of
        # row pointers (~6 bytes a reference).
        (
            "ALTER TABLE {s}.blob_refs DROP CONSTRAINT blob_refs_pkey",
            "DROP INDEX {s}.blob_refs_hash",
            "ALTER TABLE {s}.blobs ALTER COLUMN hash TYPE uuid USING hash::uuid",
            "ALTER TABLE {s}.blob_refs ALTER COLUMN hash TYPE uuid USING hash::uuid",
            "ALTER TABLE {s}.blob_refs ADD CONSTRAINT blob_refs_pkey PRIMARY KEY (hash, run_id)",
            "CREATE INDEX blob_refs_run ON {s}.blob_refs (run_id)",
        ),
    ),
    Migration(
        10,
        "claim_limited() with a grace for leases that ran out during a store outage",
        (CLAIM_LIMITED_GRACE,),
    ),
)


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (the caller has checked it is a plain name)."""
    return '"' + name.replace('"', '""') + '"'


class Queries:
    """Every statement of the store, with the schema name filled in.

    Named parameters (``%(run_id)s``) so a statement reads on its own. Parameters in a SELECT
    list carry casts because PostgreSQL would otherwise type a NULL there as text.
    """

    # -- schema and migrations -----------------------------------------------------------------

    schema_exists = "SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s"
    create_schema = "CREATE SCHEMA {s}"
    create_version_table = """CREATE TABLE IF NOT EXISTS {s}.schema_version (
        version integer PRIMARY KEY,
        description text NOT NULL,
        applied_at double precision NOT NULL)"""
    current_version = "SELECT coalesce(max(version), 0) FROM {s}.schema_version"
    set_version = f"""INSERT INTO {{s}}.schema_version (version, description, applied_at)
        VALUES (%(version)s, %(description)s, {NOW})"""
    # two-int advisory key: (schema, purpose), so stores in different schemas never contend
    xact_lock = "SELECT pg_advisory_xact_lock(hashtext(%(schema)s), hashtext(%(purpose)s))"
    xact_lock_shared = (
        "SELECT pg_advisory_xact_lock_shared(hashtext(%(schema)s), hashtext(%(purpose)s))"
    )
    notify = "SELECT pg_notify(%(channel)s, '')"
    notify_run = "SELECT pg_notify(%(channel)s, %(run_id)s)"
    # Owners that held a liveness lock (marked ids, see postgres_session) and hold it no more:
    # their sessions ended, so their processes died or lost the database.
    dead_owners = """SELECT DISTINCT r.owner FROM {s}.runs AS r
        WHERE r.status = 'running' AND r.owner LIKE %(mark)s
          AND NOT EXISTS (SELECT 1 FROM pg_locks AS l
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = (hashtext(%(namespace)s)::bigint & 4294967295)::oid
              AND l.objid = (hashtext(r.owner)::bigint & 4294967295)::oid)
        LIMIT 100"""

    # -- runs ------------------------------------------------------------------------------------

    create_run = f"""INSERT INTO {{s}}.runs (run_id, workflow, status, input, input_hash, queue,
            priority, concurrency_key, parent_id, owner, epoch, lease_expires_at, created_at,
            started_at, stats)
        VALUES (%(run_id)s, %(workflow)s, %(status)s, %(input)s, %(input_hash)s, %(queue)s,
            %(priority)s, %(concurrency_key)s, %(parent_id)s, %(owner)s, %(epoch)s,
            CASE WHEN %(claimed)s THEN {NOW} + %(lease)s END, {NOW},
            CASE WHEN %(claimed)s THEN {NOW} END, %(stats)s)
        ON CONFLICT (run_id) DO NOTHING
        RETURNING {RUN_COLUMNS}"""
    get_run = f"SELECT {RUN_COLUMNS} FROM {{s}}.runs WHERE run_id = %(run_id)s"
    list_runs = f"SELECT {RUN_COLUMNS} FROM {{s}}.runs"

    # Claims with no queue limits: one statement. The filters (RUNNABLE and the caller's) are
    # filled in by the store; SKIP LOCKED lets concurrent claimers pass each other.
    claim_simple = f"""UPDATE {{s}}.runs AS r SET status = 'running', owner = %(owner)s,
            epoch = r.epoch + 1, lease_expires_at = {NOW} + %(lease)s,
            started_at = coalesce(r.started_at, {NOW}),
            recoveries = r.recoveries + CASE WHEN r.status = 'running' THEN 1 ELSE 0 END,
            wake_at = NULL, wait_event = NULL
        FROM (SELECT run_id FROM {{s}}.runs
              WHERE {{where}}
              ORDER BY priority DESC, created_at, run_id
              LIMIT %(limit)s
              FOR UPDATE SKIP LOCKED) AS c
        WHERE r.run_id = c.run_id
        RETURNING {", ".join("r." + c for c in RUN_COLUMNS.split(", "))}"""
    # Claims under queue limits: one statement too (see postgres_admission), so no claim holds
    # a lock across a round trip. ``names`` sorted; the limit arrays follow ``names``.
    claim_limited = f"""SELECT {RUN_COLUMNS} FROM {{s}}.claim_limited(%(schema)s, %(owner)s,
        %(lease)s::float8, %(limit)s::integer, %(workflows)s::text[], %(run_id)s::text,
        %(steal_from)s::text, %(names)s::text[], %(conc)s::integer[], %(worker)s::integer[],
        %(rate)s::integer[], %(period)s::float8[], %(keyc)s::integer[], %(in_queues)s::text[],
        %(grace)s::float8)"""
    heartbeat = f"""UPDATE {{s}}.runs SET lease_expires_at = {NOW} + %(lease)s
        WHERE run_id = ANY(%(run_ids)s) AND owner = %(owner)s AND status = 'running'
        RETURNING run_id"""
    finish = f"""UPDATE {{s}}.runs SET status = %(status)s, output = %(output)s, error = %(error)s,
            stats = coalesce(%(stats)s, stats), owner = NULL, lease_expires_at = NULL,
            ended_at = {NOW}
        WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND status = 'running'"""
    release = f"""UPDATE {{s}}.runs SET status = %(status)s, wake_at = %(wake_at)s,
            wait_event = %(wait_event)s, reason = %(reason)s, stats = coalesce(%(stats)s, stats),
            owner = NULL, lease_expires_at = NULL, epoch = epoch + 1
        WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND status = 'running'
        RETURNING status = 'pending' OR (status = 'suspended' AND wake_at <= {NOW})"""
    # A separate statement after release's row lock, so that its snapshot sees an event whose
    # sender committed while release waited for that lock.
    release_if_event = f"""UPDATE {{s}}.runs SET wake_at = {NOW}
        WHERE run_id = %(run_id)s AND EXISTS (
            SELECT 1 FROM {{s}}.events
            WHERE run_id = %(run_id)s AND name = %(wait_event)s AND consumed_at IS NULL)
        RETURNING 1"""
    fence_state = "SELECT epoch, status FROM {s}.runs WHERE run_id = %(run_id)s"
    cancel = f"""WITH RECURSIVE tree(run_id) AS (
            SELECT run_id FROM {{s}}.runs WHERE run_id = %(run_id)s
            UNION
            SELECT child.run_id FROM {{s}}.runs AS child JOIN tree ON child.parent_id = tree.run_id
        )
        UPDATE {{s}}.runs AS r SET status = 'cancelled', epoch = r.epoch + 1, owner = NULL,
            lease_expires_at = NULL, wake_at = NULL, ended_at = {NOW}
        FROM tree
        WHERE r.run_id = tree.run_id AND r.status NOT IN ('completed', 'failed', 'cancelled')
        RETURNING r.run_id, r.run_id = %(run_id)s, r.created_at"""
    lock_run = "SELECT epoch, status FROM {s}.runs WHERE run_id = %(run_id)s FOR UPDATE"
    drop_intent = """DELETE FROM {s}.journal
        WHERE run_id = %(run_id)s AND key = %(key)s AND status = 'intent'"""
    make_pending = f"""UPDATE {{s}}.runs SET status = 'pending', reason = NULL, epoch = epoch + 1
        WHERE run_id = %(run_id)s
        RETURNING {RUN_COLUMNS}"""

    # -- journal ---------------------------------------------------------------------------------

    _ENTRY_VALUES = """%(run_id)s, %(key)s, %(position)s::integer, %(kind)s, %(name)s,
            %(status)s, %(output)s::bytea, %(args_hash)s::text, %(attempts)s::integer,
            %(started_at)s::float8, %(ended_at)s::float8, %(meta)s::text, %(epoch)s::integer"""
    _ENTRY_REPLACE = ", ".join(
        f"{c} = excluded.{c}" for c in ENTRY_COLUMNS.split(", ") if c != "key"
    )

    # The hot path, one statement: the fence (FOR SHARE, so a concurrent takeover waits for
    # this entry to commit and then sees it) and the insert that replaces only an intent.
    record = f"""INSERT INTO {{s}}.journal AS j (run_id, {ENTRY_COLUMNS})
        SELECT {_ENTRY_VALUES}
        WHERE EXISTS (SELECT 1 FROM {{s}}.runs WHERE run_id = %(run_id)s AND epoch = %(epoch)s
                      AND status = 'running' FOR SHARE)
        ON CONFLICT (run_id, key) DO UPDATE SET {_ENTRY_REPLACE}
        WHERE j.status = 'intent'"""
    # A new claimed run and its first journal entry in one statement (one commit): the entry
    # is written only when the run is (its status parameter is renamed: the run has one too).
    _FIRST_VALUES = _ENTRY_VALUES.replace("%(status)s", "%(entry_status)s")
    create_run_first = f"""WITH run AS ({create_run}),
        first AS (INSERT INTO {{s}}.journal (run_id, {ENTRY_COLUMNS})
            SELECT {_FIRST_VALUES} FROM run)
        SELECT {RUN_COLUMNS} FROM run"""
    # an operator's entry (resolve) replaces whatever the key held
    put_entry = f"""INSERT INTO {{s}}.journal AS j (run_id, {ENTRY_COLUMNS})
        SELECT {_ENTRY_VALUES}
        ON CONFLICT (run_id, key) DO UPDATE SET {_ENTRY_REPLACE}"""
    # Why a record wrote nothing: the run's fence, and the entry already under that key.
    record_refused = f"""SELECT r.epoch, r.status, j.key IS NOT NULL,
            {", ".join("j." + c for c in ENTRY_COLUMNS.split(", "))}
        FROM (SELECT 1) AS one
        LEFT JOIN {{s}}.runs AS r ON r.run_id = %(run_id)s
        LEFT JOIN {{s}}.journal AS j ON j.run_id = %(run_id)s AND j.key = %(key)s"""
    # blob addresses are uuid columns (migration 9), 32 hex digits in Python: HASH_OUT
    insert_blobs = """INSERT INTO {s}.blobs (hash, data)
        SELECT * FROM unnest(%(hashes)s::uuid[], %(datas)s::bytea[])
        ON CONFLICT (hash) DO NOTHING"""
    insert_blob_refs = """INSERT INTO {s}.blob_refs (run_id, hash)
        SELECT %(run_id)s, h FROM unnest(%(hashes)s::uuid[]) AS h
        ON CONFLICT DO NOTHING"""
    get_blobs = f"""SELECT {HASH_OUT}, data FROM {{s}}.blobs
        WHERE hash = ANY(%(hashes)s::uuid[])"""
    load_journal = f"""SELECT {ENTRY_COLUMNS} FROM {{s}}.journal WHERE run_id = %(run_id)s
        ORDER BY position, started_at, key"""
    get_entry = f"""SELECT {ENTRY_COLUMNS} FROM {{s}}.journal
        WHERE run_id = %(run_id)s AND key = %(key)s"""
    # snapshot and compaction in one statement; the DELETE reads the UPDATE's result, so it
    # removes nothing when the fence refused the snapshot
    stash = """WITH run AS (
            UPDATE {s}.runs SET snapshot = %(snapshot)s, snapshot_position = %(position)s
            WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND status = 'running'
            RETURNING run_id
        ), compacted AS (
            DELETE FROM {s}.journal
            WHERE run_id IN (SELECT run_id FROM run) AND position < %(position)s
        )
        SELECT count(*) FROM run"""
    set_trace_context = """UPDATE {s}.runs SET trace_context = %(context)s
        WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND trace_context IS NULL"""
    stash_applied = """SELECT 1 FROM {s}.runs WHERE run_id = %(run_id)s AND epoch = %(epoch)s
        AND status = 'running' AND snapshot_position = %(position)s
        AND snapshot = %(snapshot)s"""

    # -- events ----------------------------------------------------------------------------------

    # The run row is locked (as release locks it) so an event and a suspension for it cannot
    # pass each other unseen.
    send_event = f"""WITH run AS (
            SELECT run_id FROM {{s}}.runs WHERE run_id = %(run_id)s FOR NO KEY UPDATE
        )
        INSERT INTO {{s}}.events (run_id, name, payload, created_at)
        SELECT run_id, %(name)s, %(payload)s, {NOW} FROM run
        RETURNING id"""
    wake_for_event = f"""UPDATE {{s}}.runs SET wake_at = least(coalesce(wake_at, {NOW}), {NOW})
        WHERE run_id = %(run_id)s AND status = 'suspended' AND wait_event = %(name)s
        RETURNING 1"""
    fence_share = """SELECT 1 FROM {s}.runs
        WHERE run_id = %(run_id)s AND epoch = %(epoch)s AND status = 'running' FOR SHARE"""
    consume_event = f"""UPDATE {{s}}.events SET consumed_at = {NOW}
        WHERE id = (SELECT id FROM {{s}}.events
                    WHERE run_id = %(run_id)s AND name = %(name)s AND consumed_at IS NULL
                    ORDER BY id LIMIT 1 FOR UPDATE)
        RETURNING payload"""

    # -- maintenance -----------------------------------------------------------------------------

    queue_stats = """SELECT queue,
            count(*) FILTER (WHERE status = 'pending'),
            count(*) FILTER (WHERE status = 'running'),
            count(*) FILTER (WHERE status = 'suspended')
        FROM {s}.runs WHERE status IN ('pending', 'running', 'suspended')
        GROUP BY queue ORDER BY queue"""
    # One batch: the oldest-ended ``limit`` runs (NULL: all), read from the partial index
    # runs_ended; rows someone else holds (a retry turning a failed run pending) are skipped.
    prune_runs = """WITH doomed AS (
            DELETE FROM {s}.runs AS r
            WHERE r.run_id IN (
                SELECT c.run_id FROM {s}.runs AS c
                WHERE c.status IN ('completed', 'failed', 'cancelled')
                  AND c.ended_at < %(older_than)s
                  -- a live parent has not necessarily collected its finished child's result;
                  -- a scalar subquery (one primary-key lookup per candidate), not NOT EXISTS,
                  -- which the planner turns into an anti join over every live run
                  AND (c.parent_id IS NULL OR coalesce((SELECT p.status IN
                      ('completed', 'failed', 'cancelled') FROM {s}.runs AS p
                      WHERE p.run_id = c.parent_id), true))
                ORDER BY c.ended_at
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED)
              AND r.status IN ('completed', 'failed', 'cancelled')
            RETURNING run_id
        ), journal AS (
            DELETE FROM {s}.journal WHERE run_id IN (SELECT run_id FROM doomed)
        ), events AS (
            DELETE FROM {s}.events WHERE run_id IN (SELECT run_id FROM doomed)
        ), refs AS (
            DELETE FROM {s}.blob_refs WHERE run_id IN (SELECT run_id FROM doomed) RETURNING hash
        )
        SELECT (SELECT count(*) FROM doomed), ARRAY(SELECT DISTINCT hash FROM refs)"""
    prune_blobs = """DELETE FROM {s}.blobs AS b
        WHERE b.hash = ANY(%(hashes)s)
          AND NOT EXISTS (SELECT 1 FROM {s}.blob_refs AS r WHERE r.hash = b.hash)"""

    def __init__(self, schema: str) -> None:
        quoted = quote_ident(schema)
        for name, value in vars(Queries).items():
            if isinstance(value, str) and not name.startswith("_"):
                setattr(self, name, value.replace("{s}", quoted))


_OPTIONS = ("schema", "pool_min", "pool_max", "retry_for", "pooler")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def parse_url(url: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``url`` into (libpq conninfo, URL without password, outlast options)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in _OPTIONS}
    rest = [(k, v) for k, v in query if k not in _OPTIONS]
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = user.split(":", 1)[0] + "@" + host
    public = urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            urlencode([(k, v) for k, v in query if k != "password"]),
            "",
        )
    )
    schema = options.get("schema", "outlast")
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigurationError(
            f"bad schema={schema!r} in {public}: use letters, digits and _ (at most 63, "
            "not starting with a digit)"
        )
    try:
        pool_min = int(options.get("pool_min", "1"))
        pool_max = int(options.get("pool_max", str(max(10, pool_min))))
    except ValueError:
        raise ConfigurationError(
            f"pool_min and pool_max must be whole numbers in {public}"
        ) from None
    if pool_min < 0 or pool_max < max(pool_min, 1):
        raise ConfigurationError(
            f"bad pool size in {public}: need 0 <= pool_min <= pool_max and pool_max >= 1"
        )
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise ConfigurationError(
            f"bad PostgreSQL URL {public}: {exc}; expected "
            "postgresql://user:password@host:5432/dbname?schema=outlast"
        ) from exc
    # libpq waits forever by default; a store that cannot connect should say so soon
    params.setdefault("connect_timeout", "10")
    params.setdefault("application_name", "outlast")
    try:
        retry_for = float(options.get("retry_for", "30"))
    except ValueError:
        retry_for = -1.0
    if not 0 <= retry_for <= 3600:
        raise ConfigurationError(
            f"bad retry_for={options.get('retry_for')!r} in {public}: seconds from 0 to 3600"
        )
    pooler = options.get("pooler", "session")
    if pooler not in ("session", "transaction"):
        raise ConfigurationError(
            f"bad pooler={pooler!r} in {public}: session (the default: a direct connection or "
            "a session-mode pooler) or transaction (a transaction-mode pooler)"
        )
    store_options = {
        "schema": schema, "pool_min": pool_min, "pool_max": pool_max, "retry_for": retry_for,
        "pooler": pooler,
    }
    return make_conninfo("", **params), public, store_options
