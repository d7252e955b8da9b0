"""Queue admission on PostgreSQL, as one server-side function: no claim holds a lock across a
client round trip.

A claim under queue limits must count each limited queue's running runs and take slots
without another claimer taking the same slots in between, so it serializes on one advisory
lock per limited queue. Held by a client across round trips, such a lock stops the whole
fleet when that client freezes (SIGSTOP, a GC pause, a VM migration) or is cut off by a
partition: every other claimer waits for it, for as long as the server takes to notice the
dead peer. ``claim_limited`` does the locking, counting, candidate scan and claim inside one
statement, so the locks are released when the statement commits, whatever the client does
after sending it.

Inside the function each statement takes a new snapshot (a VOLATILE function in READ
COMMITTED), so the counts read after the locks are granted see every claim that committed
before. Locks are taken in queue-name order (the caller sorts ``p_names``), so two claimers
cannot deadlock.

Runs owned by ``p_steal_from`` (a process on this host that has died) do not count against
the limits: the dead run would otherwise hold its own slot until its lease expired.
"""

from __future__ import annotations

#: migration 4 creates it; a later change to the function is a new ``CREATE OR REPLACE``
#: migration (old workers keep calling it with the same signature)
CLAIM_LIMITED = """CREATE OR REPLACE FUNCTION {s}.claim_limited(
    p_schema text, p_owner text, p_lease float8, p_limit integer,
    p_workflows text[], p_run_id text, p_steal_from text,
    p_names text[], p_conc integer[], p_worker integer[], p_rate integer[],
    p_period float8[], p_keyc integer[]
) RETURNS SETOF {s}.runs LANGUAGE plpgsql AS $fn$
DECLARE
    v_n integer := coalesce(cardinality(p_names), 0);
    v_running integer[] := array_fill(0, ARRAY[v_n]);
    v_mine integer[] := array_fill(0, ARRAY[v_n]);
    v_starts integer[] := array_fill(0, ARRAY[v_n]);
    v_keys jsonb := '{}';  -- {queue: {concurrency_key: running}}
    v_picked text[] := '{}';
    v_seen text[] := '{}';
    v_started text[] := '{}';
    v_blocked text[];
    v_bq text[];
    v_bk text[];
    v_i integer;
    v_held integer;
    v_more boolean;
    v_now float8;
    r record;
BEGIN
    FOR v_i IN 1..v_n LOOP
        PERFORM pg_advisory_xact_lock(hashtext(p_schema), hashtext('queue:' || p_names[v_i]));
    END LOOP;
    v_now := extract(epoch from clock_timestamp());
    -- an expired lease does not count: that run is claimable, and counts once claimed
    FOR r IN
        SELECT queue, concurrency_key AS ckey, count(*)::integer AS total,
               (count(*) FILTER (WHERE owner = p_owner))::integer AS own
        FROM {s}.runs
        WHERE queue = ANY(p_names) AND status = 'running' AND lease_expires_at >= v_now
          AND owner IS DISTINCT FROM p_steal_from
        GROUP BY queue, concurrency_key
    LOOP
        v_i := array_position(p_names, r.queue);
        v_running[v_i] := v_running[v_i] + r.total;
        v_mine[v_i] := v_mine[v_i] + r.own;
        IF r.ckey IS NOT NULL THEN
            v_keys := jsonb_set(v_keys, ARRAY[r.queue],
                coalesce(v_keys -> r.queue, '{}') || jsonb_build_object(r.ckey, r.total));
        END IF;
    END LOOP;
    FOR v_i IN 1..v_n LOOP
        IF p_rate[v_i] IS NOT NULL THEN
            v_starts[v_i] := (SELECT count(*) FROM {s}.queue_starts AS s
                              WHERE s.queue = p_names[v_i]
                                AND s.started_at > v_now - p_period[v_i]);
        END IF;
    END LOOP;
    -- Each batch leaves out what the limits already block; a batch row refused because an
    -- earlier row of the same batch filled its slot is left out of the next batch.
    WHILE cardinality(v_picked) < p_limit LOOP
        v_blocked := '{}';
        v_bq := '{}';
        v_bk := '{}';
        FOR v_i IN 1..v_n LOOP
            IF v_running[v_i] >= coalesce(p_conc[v_i], v_running[v_i] + 1)
               OR v_mine[v_i] >= coalesce(p_worker[v_i], v_mine[v_i] + 1)
               OR v_starts[v_i] >= coalesce(p_rate[v_i], v_starts[v_i] + 1) THEN
                v_blocked := v_blocked || p_names[v_i];
            ELSIF p_keyc[v_i] IS NOT NULL THEN
                FOR r IN SELECT key AS ckey, value::integer AS total
                         FROM jsonb_each_text(coalesce(v_keys -> p_names[v_i], '{}'))
                LOOP
                    IF r.total >= p_keyc[v_i] THEN
                        v_bq := v_bq || p_names[v_i];
                        v_bk := v_bk || r.ckey;
                    END IF;
                END LOOP;
            END IF;
        END LOOP;
        v_more := false;
        -- EXECUTE: planned with the actual values (a run_id lookup uses the primary key)
        FOR r IN EXECUTE $q$SELECT run_id, queue, concurrency_key AS ckey FROM {s}.runs
            WHERE (status = 'pending'
                   OR (status = 'running' AND lease_expires_at < $1)
                   OR (status = 'suspended' AND wake_at <= $1)
                   OR (status = 'running' AND owner = $2))
              AND ($3::text IS NULL OR run_id = $3)
              AND ($4::text[] IS NULL OR workflow = ANY($4))
              AND run_id <> ALL($5) AND queue <> ALL($6)
              AND NOT EXISTS (SELECT 1 FROM unnest($7::text[], $8::text[]) AS b(q, k)
                              WHERE b.q = runs.queue AND b.k = runs.concurrency_key)
            ORDER BY priority DESC, created_at, run_id
            LIMIT $9
            FOR UPDATE SKIP LOCKED$q$
            USING v_now, p_steal_from, p_run_id, p_workflows, v_seen, v_blocked, v_bq, v_bk,
                  p_limit - cardinality(v_picked)
        LOOP
            v_more := true;
            v_seen := v_seen || r.run_id;
            v_i := array_position(p_names, r.queue);
            IF v_i IS NULL THEN
                v_picked := v_picked || r.run_id;
                CONTINUE;
            END IF;
            v_held := coalesce((v_keys -> r.queue ->> r.ckey)::integer, 0);
            IF v_running[v_i] >= coalesce(p_conc[v_i], v_running[v_i] + 1)
               OR v_mine[v_i] >= coalesce(p_worker[v_i], v_mine[v_i] + 1)
               OR v_starts[v_i] >= coalesce(p_rate[v_i], v_starts[v_i] + 1)
               OR (r.ckey IS NOT NULL AND v_held >= coalesce(p_keyc[v_i], v_held + 1)) THEN
                CONTINUE;
            END IF;
            v_picked := v_picked || r.run_id;
            v_running[v_i] := v_running[v_i] + 1;
            v_mine[v_i] := v_mine[v_i] + 1;
            v_starts[v_i] := v_starts[v_i] + 1;
            IF r.ckey IS NOT NULL THEN
                v_keys := jsonb_set(v_keys, ARRAY[r.queue],
                    coalesce(v_keys -> r.queue, '{}') || jsonb_build_object(r.ckey, v_held + 1));
            END IF;
            IF p_rate[v_i] IS NOT NULL THEN
                v_started := v_started || r.queue;
            END IF;
        END LOOP;
        EXIT WHEN NOT v_more;
    END LOOP;
    IF cardinality(v_started) > 0 THEN
        INSERT INTO {s}.queue_starts (queue, started_at)
            SELECT q, v_now FROM unnest(v_started) AS q;
        -- kept for two periods: the window slides
        DELETE FROM {s}.queue_starts AS s
            USING unnest(p_names, p_period) AS q(name, period)
            WHERE s.queue = q.name AND s.started_at < v_now - 2 * q.period;
    END IF;
    RETURN QUERY UPDATE {s}.runs AS t SET status = 'running', owner = p_owner,
            epoch = t.epoch + 1, lease_expires_at = v_now + p_lease,
            started_at = coalesce(t.started_at, v_now),
            recoveries = t.recoveries + CASE WHEN t.status = 'running' THEN 1 ELSE 0 END,
            wake_at = NULL, wait_event = NULL
        WHERE t.run_id = ANY(v_picked)
        RETURNING t.*;
END
$fn$"""


def _with_queue_filter(sql: str) -> str:
    """``claim_limited`` with one more argument, ``p_queues``: only runs of those queues (NULL:
    any), for workers started with ``--queue``. A new overload (migration 7), so workers of
    an older version keep calling the function they know."""
    edits = (
        ("p_period float8[], p_keyc integer[]\n)", "p_period float8[], p_keyc integer[],\n"
         "    p_queues text[]\n)"),
        ("AND ($4::text[] IS NULL OR workflow = ANY($4))",
         "AND ($4::text[] IS NULL OR workflow = ANY($4))\n"
         "              AND ($10::text[] IS NULL OR queue = ANY($10))"),
        ("p_limit - cardinality(v_picked)\n", "p_limit - cardinality(v_picked), p_queues\n"),
    )
    for old, new in edits:
        assert sql.count(old) == 1, old
        sql = sql.replace(old, new)
    return sql


CLAIM_LIMITED_QUEUES = _with_queue_filter(CLAIM_LIMITED)


def _with_grace(sql: str) -> str:
    """``claim_limited`` with one more argument, ``p_grace`` (seconds): a running run whose
    lease ran out less than that long ago is neither claimable nor free (it still counts
    against its queue's limits). A worker passes it right after a store outage, so it does
    not take over runs whose owners could not renew their leases meanwhile and are about to
    (see outlast.worker). A new overload (migration 10), as :func:`_with_queue_filter`."""
    edits = (
        ("p_queues text[]\n)", "p_queues text[], p_grace float8\n)"),
        ("AND status = 'running' AND lease_expires_at >= v_now\n",
         "AND status = 'running' AND lease_expires_at >= v_now - p_grace\n"),
        ("OR (status = 'running' AND lease_expires_at < $1)",
         "OR (status = 'running' AND lease_expires_at < $1 - $11)"),
        ("p_limit - cardinality(v_picked), p_queues\n",
         "p_limit - cardinality(v_picked), p_queues, p_grace\n"),
    )
    for old, new in edits:
        assert sql.count(old) == 1, old
        sql = sql.replace(old, new)
    return sql


CLAIM_LIMITED_GRACE = _with_grace(CLAIM_LIMITED_QUEUES)
