"""The storage contract (``outlast/store/base.py``), checked on every backend.

Each test runs unchanged on SQLite and on PostgreSQL (``store``/``store_url`` are
parametrized in conftest). Leases are short (``SHORT``) where expiry is the point and long
(``LONG``) where it must not interfere. A final section holds PostgreSQL-only checks:
connection faults and URL handling.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest

from outlast.errors import (
    ConfigurationError,
    LeaseLost,
    NotFailed,
    NotPaused,
    RunConflict,
    RunNotFound,
    StoreError,
)
from outlast.serde import fingerprint
from outlast.store import Entry, NewRun, Page, QueueSpec, RunRecord, Store, open_store
from outlast.store.base import RunQuery
from outlast.store.checkpoints import SavedCheckpoint, SavedWrite

SHORT = 0.2
LONG = 30.0


# -- helpers ------------------------------------------------------------------------------------


def h(name: str) -> str:
    """A blob address as a store is given them (32 hex digits: serde.fingerprint) for ``name``."""
    return fingerprint(name.encode())


def new_run(run_id: str | None = None, **fields: object) -> NewRun:
    """A run with a unique id unless one is given."""
    values: dict[str, object] = {
        "run_id": run_id or f"run-{uuid.uuid4().hex[:10]}",
        "workflow": "wf",
        "input": b"input",
        "input_hash": "ih",
    }
    values.update(fields)
    return NewRun(**values)  # type: ignore[arg-type]


def entry(
    key: str,
    position: int = 0,
    status: str = "completed",
    output: bytes | None = b"out",
    **fields: object,
) -> Entry:
    values: dict[str, object] = {
        "key": key,
        "position": position,
        "kind": "step",
        "name": key.split(":")[0],
        "status": status,
        "output": output,
        "started_at": 1000.5,
        "ended_at": 1001.25,
    }
    values.update(fields)
    return Entry(**values)  # type: ignore[arg-type]


def running(store: Store, owner: str = "w1", lease: float = LONG, **fields: object) -> RunRecord:
    """A new run created pending and claimed by ``owner``."""
    run, _ = store.create_run(new_run(**fields))
    [claimed] = store.claim(owner, lease, run_id=run.run_id)
    return claimed


def taken_over(store: Store) -> tuple[RunRecord, RunRecord]:
    """A run claimed by w1 (the stale executor) and then stolen by w2; returns both views."""
    old = running(store, "w1")
    [new] = store.claim("w2", LONG, run_id=old.run_id, steal_from="w1")
    return old, new


def ids(runs: list[RunRecord]) -> list[str]:
    return [r.run_id for r in runs]


def raw_sql(url: str, sql: str) -> list[tuple[object, ...]]:
    """Run ``sql`` on the store's database directly (for schema bookkeeping only)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    import psycopg

    parts = urlsplit(url)
    schema = parse_qs(parts.query)["schema"][0]
    with psycopg.connect(url.split("?", 1)[0], autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def version_table(url: str) -> str:
    return "outlast_schema" if url.startswith("sqlite") else "schema_version"


def user_table(url: str) -> str:
    """A table for user work inside ``transaction()``, kept inside the test's database."""
    if url.startswith("sqlite"):
        return "user_things"
    return parse_qs(urlsplit(url).query)["schema"][0] + ".user_things"


def wait_until(check: Callable[[], object], timeout: float = 3.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


# -- create_run, get_run, list_runs -------------------------------------------------------------


def test_create_run_stores_a_pending_run(store: Store) -> None:
    before = time.time()
    run, created = store.create_run(
        new_run("r1", queue="q", priority=3, concurrency_key="k", parent_id="p")
    )
    assert created
    assert (run.run_id, run.status, run.epoch, run.owner, run.recoveries) == (
        "r1",
        "pending",
        0,
        None,
        0,
    )
    assert (run.queue, run.priority, run.concurrency_key, run.parent_id) == ("q", 3, "k", "p")
    assert (run.input, run.input_hash, run.started_at, run.ended_at) == (b"input", "ih", None, None)
    assert before - 5 < run.created_at < time.time() + 5
    assert store.get_run("r1") == run
    assert store.get_run("nope") is None


def test_create_run_stores_its_stats_from_the_start(store: Store) -> None:
    stats = '{"forked_from": {"checkpoint": "2", "run": "src"}}'
    run, _ = store.create_run(new_run("r1", stats=stats))
    claimed, _ = store.create_run(new_run("r2", stats=stats), owner="w1", lease=LONG)
    assert run.stats == claimed.stats == stats
    assert [store.get_run(r).stats for r in ("r1", "r2")] == [stats, stats]  # type: ignore[union-attr]
    assert store.create_run(new_run("r3"))[0].stats is None


def test_create_run_leaves_an_existing_run_untouched(store: Store) -> None:
    first, _ = store.create_run(new_run("r1"))
    again, created = store.create_run(
        new_run("r1", input=b"other", workflow="x"), owner="w1", lease=LONG
    )
    assert not created
    assert again == first == store.get_run("r1")


def test_create_run_with_owner_is_claimed_at_once(store: Store) -> None:
    run, created = store.create_run(new_run("r1"), owner="w1", lease=LONG)
    assert created
    assert (run.status, run.owner, run.epoch) == ("running", "w1", 1)
    assert run.lease_expires_at is not None and run.lease_expires_at > run.created_at + LONG / 2
    assert run.started_at is not None
    assert store.claim("w2", LONG) == []


def test_create_run_with_a_first_entry_writes_both_or_neither(store: Store) -> None:
    first = entry("s:1", meta='{"tokens": 3}')
    run, created = store.create_run(
        new_run("r1"), owner="w1", lease=LONG, first=first, blobs={h("hf"): b"blob"}
    )
    assert created and (run.status, run.owner, run.epoch) == ("running", "w1", 1)
    assert run == store.get_run("r1")
    assert store.load_journal("r1") == [first]
    assert store.get_blobs([h("hf")]) == {h("hf"): b"blob"}
    store.record("r1", 1, entry("s:2", position=1))  # the run goes on as any claimed run
    # an existing id: the run is returned untouched and nothing of the new one is written
    for blobs in (None, {h("hx"): b"orphan"}):
        again, created = store.create_run(
            new_run("r1", input=b"other"), owner="w2", lease=LONG,
            first=entry("x:1", position=5), blobs=blobs,
        )
        assert not created and again == store.get_run("r1") and again.owner == "w1"
    assert [(e.key, e.epoch) for e in store.load_journal("r1")] == [("s:1", 1), ("s:2", 1)]
    assert store.get_blobs([h("hx")]) == {}
    with pytest.raises(ValueError, match="owner"):
        store.create_run(new_run("r2"), first=entry("s:1"))
    assert store.get_run("r2") is None


def test_concurrent_creators_of_one_id_get_one_created(store_factory: Callable[..., Store]) -> None:
    stores = [store_factory(), store_factory()]
    barrier = threading.Barrier(8)

    def create(i: int) -> tuple[RunRecord, bool]:
        barrier.wait()
        return stores[i % 2].create_run(new_run("same", input=f"{i}".encode()))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(8)))
    assert sum(created for _, created in results) == 1
    assert len({run for run, _ in results}) == 1


def test_list_runs_filters_newest_first(store: Store) -> None:
    store.create_run(new_run("a", workflow="x"))
    store.create_run(new_run("b", workflow="y", parent_id="a"))
    store.create_run(new_run("c", workflow="x", parent_id="a"))
    store.claim("w1", LONG, run_id="c")
    assert ids(store.list_runs(Page())) == ["c", "b", "a"]
    assert ids(store.list_runs(Page(workflow="x"))) == ["c", "a"]
    assert ids(store.list_runs(Page(status="pending"))) == ["b", "a"]
    assert ids(store.list_runs(Page(parent_id="a", status="running"))) == ["c"]
    assert ids(store.list_runs(Page(limit=1, offset=1))) == ["b"]


def test_browse_runs_pages_by_keyset_and_counts_by_status(store: Store) -> None:
    table = "outlast_runs" if store.url.startswith("sqlite") else "runs"
    for i, rid in enumerate(["r-a", "r-b", "r-c", "s-d", "r-e"]):
        store.create_run(new_run(rid, workflow="x" if rid != "r-b" else "y"))
        # r-b and r-c share a created_at: the run id breaks the tie, and no row is lost or repeated.
        raw_sql(store.url, f"UPDATE {table} SET created_at = {100 + min(i, 1 if i == 2 else i)} WHERE run_id = '{rid}'")
    store.claim("w1", LONG, run_id="r-e")
    pages, after = [], None
    while True:
        page = store.browse_runs(RunQuery(limit=2, after=after))
        if not page:
            break
        pages.append(ids(page))
        after = (page[-1].created_at, page[-1].run_id)
    assert pages == [["r-e", "s-d"], ["r-c", "r-b"], ["r-a"]]
    assert ids(store.browse_runs(RunQuery(workflow="x", text="r-"))) == ["r-e", "r-c", "r-a"]
    assert ids(store.browse_runs(RunQuery(status="pending", since=101, until=103))) == ["r-c", "r-b"]
    assert ids(store.browse_runs(RunQuery(text="R-"))) == []  # case-sensitive
    assert ids(store.browse_runs(RunQuery(text="%"))) == []  # no LIKE wildcards
    assert store.count_runs(RunQuery()) == {"pending": 4, "running": 1}
    assert store.count_runs(RunQuery(workflow="x", text="r-", status="running")) == {"pending": 2, "running": 1}


def test_count_entries_per_run(store: Store) -> None:
    a = running(store, run_id="ca")
    b = running(store, run_id="cb")
    for i in range(3):
        store.record("ca", a.epoch, entry(f"s:{i}", i))
    store.record("cb", b.epoch, entry("s:0", 0))
    counts = store.count_entries(["ca", "cb", "nothing"])
    assert counts == {"ca": 3, "cb": 1}
    assert store.count_entries([]) == {}


# -- claim ----------------------------------------------------------------------------------------


def test_claim_takes_a_pending_run(store: Store) -> None:
    created, _ = store.create_run(new_run())
    [run] = store.claim("w1", LONG)
    assert run.run_id == created.run_id
    assert (run.status, run.owner, run.epoch, run.recoveries) == ("running", "w1", 1, 0)
    assert run.started_at is not None and run.lease_expires_at is not None
    assert run.lease_expires_at > run.started_at + LONG / 2
    assert store.get_run(run.run_id) == run
    assert store.claim("w2", LONG) == []


def test_claim_orders_by_priority_then_age(store: Store) -> None:
    for run_id, priority in [("low", 0), ("high", 5), ("mid", 1), ("low2", 0)]:
        store.create_run(new_run(run_id, priority=priority))
    assert ids(store.claim("w1", LONG, limit=2)) == ["high", "mid"]
    assert ids(store.claim("w1", LONG, limit=5)) == ["low", "low2"]


def test_claim_filters_by_run_id_and_workflow(store: Store) -> None:
    store.create_run(new_run("a", workflow="x"))
    store.create_run(new_run("b", workflow="y"))
    store.create_run(new_run("c", workflow="y"))
    assert store.claim("w1", LONG, workflows=[]) == []
    assert store.claim("w1", LONG, run_id="zzz") == []
    assert ids(store.claim("w1", LONG, run_id="c")) == ["c"]
    assert ids(store.claim("w1", LONG, workflows=["x", "z"], limit=5)) == ["a"]
    assert ids(store.claim("w1", LONG, limit=5)) == ["b"]


def test_claim_filters_by_queue_with_and_without_limits(store: Store) -> None:
    store.create_run(new_run("a", queue="fast"))
    store.create_run(new_run("b", queue="slow"))
    store.create_run(new_run("c", queue="fast"))
    store.create_run(new_run("d"))
    limited = {"slow": QueueSpec("slow", concurrency=1)}
    assert store.claim("w1", LONG, in_queues=[], limit=5) == []
    assert ids(store.claim("w1", LONG, in_queues=["slow"], queues=limited, limit=5)) == ["b"]
    assert ids(store.claim("w1", LONG, in_queues=["fast", "none"], limit=5)) == ["a", "c"]
    assert ids(store.claim("w1", LONG, in_queues=["slow", "fast"], queues=limited)) == []
    assert ids(store.claim("w1", LONG, queues=limited, limit=5)) == ["d"]


def test_claim_is_exclusive_under_concurrent_claimers(store_factory: Callable[..., Store]) -> None:
    stores = [store_factory(), store_factory()]
    for i in range(30):
        stores[0].create_run(new_run(f"r{i:02}"))
    barrier = threading.Barrier(6)

    def claimer(i: int) -> list[str]:
        barrier.wait()
        taken: list[str] = []
        while batch := stores[i % 2].claim(f"w{i}", LONG, limit=1 + i % 3):
            taken += ids(batch)
        return taken

    with ThreadPoolExecutor(6) as pool:
        taken = [run_id for batch in pool.map(claimer, range(6)) for run_id in batch]
    assert sorted(taken) == [f"r{i:02}" for i in range(30)]


def test_expired_lease_makes_a_run_claimable_again(store: Store) -> None:
    first = running(store, "w1", SHORT)
    assert store.claim("w2", LONG) == []
    time.sleep(SHORT + 0.1)
    [second] = store.claim("w2", LONG)
    assert second.run_id == first.run_id
    assert (second.owner, second.epoch, second.recoveries) == ("w2", first.epoch + 1, 1)
    assert second.started_at == first.started_at


def test_a_grace_leaves_recently_expired_leases_alone(store: Store) -> None:
    # After a store outage a worker claims with a grace: a lease that ran out within it may
    # belong to an executor about to renew it. Other runnable runs are claimed as usual.
    first = running(store, "w1", SHORT)
    time.sleep(SHORT + 0.1)
    store.create_run(new_run("fresh"))
    assert ids(store.claim("w2", LONG, grace=30.0, limit=5)) == ["fresh"]
    [second] = store.claim("w2", LONG, grace=0.05, limit=5)  # expired longer ago than that
    assert (second.run_id, second.owner) == (first.run_id, "w2")


def test_a_grace_keeps_recently_expired_leases_in_their_queue_slots(store: Store) -> None:
    old, newer = queued(store, "q", 2)
    specs = {"q": QueueSpec("q", concurrency=1)}
    assert ids(store.claim("w1", SHORT, queues=specs, limit=2)) == [old]
    time.sleep(SHORT + 0.1)
    # within the grace the expired run still holds the queue's one slot, and is not taken
    assert store.claim("w2", LONG, queues=specs, limit=2, grace=30.0) == []
    [taken] = store.claim("w2", LONG, queues=specs, limit=2)
    assert taken.run_id == old


def test_steal_from_takes_a_live_run_of_that_owner(store: Store) -> None:
    first = running(store, "w1", LONG)
    assert store.claim("w2", LONG, run_id=first.run_id) == []
    assert store.claim("w2", LONG, run_id=first.run_id, steal_from="someone-else") == []
    [stolen] = store.claim("w2", LONG, run_id=first.run_id, steal_from="w1")
    assert (stolen.owner, stolen.epoch, stolen.recoveries) == ("w2", first.epoch + 1, 1)


def test_steal_from_without_run_id_takes_all_of_that_owners_runs(store: Store) -> None:
    mine = {running(store, "dead").run_id, running(store, "dead").run_id}
    running(store, "alive")
    assert set(ids(store.claim("w2", LONG, steal_from="dead", limit=10))) == mine


# -- fencing --------------------------------------------------------------------------------------


def _record(s: Store, r: RunRecord) -> None:
    s.record(r.run_id, r.epoch, entry("a:1"))


def _record_blobs(s: Store, r: RunRecord) -> None:
    s.record(r.run_id, r.epoch, entry("a:1"), blobs={h("h-fenced"): b"blob"})


def _finish(s: Store, r: RunRecord) -> None:
    s.finish(r.run_id, r.epoch, "completed", output=b"o")


def _release(s: Store, r: RunRecord) -> None:
    s.release(r.run_id, r.epoch, "pending")


def _take_event(s: Store, r: RunRecord) -> None:
    s.send_event(r.run_id, "ev", b"payload")
    s.take_event(r.run_id, r.epoch, "ev", entry("ev:1"))


def _stash(s: Store, r: RunRecord) -> None:
    s.stash(r.run_id, r.epoch, b"snapshot", 5)


def _transaction(s: Store, r: RunRecord) -> None:
    s.transaction(r.run_id, r.epoch, lambda conn: entry("tx:1"))


FENCED = [_record, _record_blobs, _finish, _release, _take_event, _stash, _transaction]


@pytest.mark.parametrize("write", FENCED, ids=lambda f: f.__name__.strip("_"))
def test_fenced_writes_refuse_a_stale_epoch(
    store: Store, write: Callable[[Store, RunRecord], None]
) -> None:
    store.create_run(new_run("other"))
    old, new = taken_over(store)
    new_owner_journal = [entry("kept:1", 0)]
    store.record(new.run_id, new.epoch, new_owner_journal[0])
    with pytest.raises(LeaseLost):
        write(store, old)
    after = store.get_run(old.run_id)
    assert after is not None
    assert (after.status, after.owner, after.epoch, after.snapshot) == (
        "running",
        "w2",
        new.epoch,
        None,
    )
    assert store.load_journal(old.run_id) == new_owner_journal
    assert store.get_blobs([h("h-fenced")]) == {}


def test_cancel_fences_out_the_executor(store: Store) -> None:
    run = running(store)
    assert store.cancel(run.run_id) == [run.run_id]
    with pytest.raises(LeaseLost):
        store.record(run.run_id, run.epoch, entry("a:1"))
    with pytest.raises(LeaseLost):
        store.finish(run.run_id, run.epoch, "completed")
    assert store.load_journal(run.run_id) == []


def test_transaction_work_does_not_run_when_fenced(store: Store) -> None:
    old, _ = taken_over(store)
    calls: list[object] = []
    with pytest.raises(LeaseLost):
        store.transaction(old.run_id, old.epoch, lambda conn: calls.append(conn) or entry("t:1"))
    assert calls == []


def test_finished_run_refuses_more_writes(store: Store) -> None:
    run = running(store)
    store.finish(run.run_id, run.epoch, "completed", output=b"o")
    with pytest.raises(LeaseLost):
        store.finish(run.run_id, run.epoch, "failed", error=b"e")
    with pytest.raises(LeaseLost):
        store.record(run.run_id, run.epoch, entry("a:1"))


# -- journal ---------------------------------------------------------------------------------------


def test_record_and_load_journal_in_position_order(store: Store) -> None:
    run = running(store)
    written = [
        entry("c:1", 2, meta='{"tokens": 3}'),
        entry("a:1", 0, args_hash="ah", attempts=2),
        entry("b:1", 1, status="failed", output=b"err", ended_at=None),
    ]
    for e in written:
        store.record(run.run_id, run.epoch, e)
    assert store.load_journal(run.run_id) == sorted(written, key=lambda e: e.position)
    assert store.load_journal("nope") == []


def test_record_replaces_an_intent_but_not_an_outcome(store: Store) -> None:
    run = running(store)
    store.record(run.run_id, run.epoch, entry("mail:1", 0, status="intent", output=None))
    done = entry("mail:1", 0, output=b"sent")
    store.record(run.run_id, run.epoch, done)
    assert store.load_journal(run.run_id) == [done]
    with pytest.raises(RunConflict):
        store.record(run.run_id, run.epoch, entry("mail:1", 0, output=b"sent twice"))
    failed = entry("f:1", 1, status="failed", output=b"boom")
    store.record(run.run_id, run.epoch, failed)
    with pytest.raises(RunConflict):
        store.record(run.run_id, run.epoch, entry("f:1", 1, status="intent", output=None))
    assert store.load_journal(run.run_id) == [done, failed]


def test_entries_carry_the_epoch_they_were_written_in(store: Store) -> None:
    # the fence's epoch, whatever the caller put in the entry: which execution recorded a step
    run = running(store)
    store.record(run.run_id, run.epoch, entry("a:1", 0, epoch=999))
    store.release(run.run_id, run.epoch, "pending")
    [again] = store.claim("w2", LONG, run_id=run.run_id)
    store.record(again.run_id, again.epoch, entry("b:1", 1, status="intent", output=None))
    store.transaction(again.run_id, again.epoch, lambda _: entry("c:1", 2))
    store.send_event(run.run_id, "go", b"payload")
    store.take_event(again.run_id, again.epoch, "go", entry("go:1", 3, kind="event"))
    store.release(again.run_id, again.epoch, "paused")
    paused = store.get_run(run.run_id)
    assert paused is not None
    store.resolve(run.run_id, entry("b:1", 1, output=b"operator"))
    epochs = {e.key: e.epoch for e in store.load_journal(run.run_id)}
    assert epochs == {"a:1": run.epoch, "b:1": paused.epoch, "c:1": again.epoch, "go:1": again.epoch}
    assert run.epoch < again.epoch < paused.epoch


def test_blobs_are_stored_once_and_readable(store: Store) -> None:
    a, b = running(store), running(store)
    store.record(a.run_id, a.epoch, entry("s:1"), blobs={h("h1"): b"one", h("h2"): b"two"})
    store.record(b.run_id, b.epoch, entry("s:1"), blobs={h("h1"): b"one"})
    assert store.get_blobs([h("h1"), h("h2"), h("h3"), h("h1")]) == {h("h1"): b"one", h("h2"): b"two"}
    assert store.get_blobs([]) == {}
    assert [e.key for e in store.load_journal(b.run_id)] == ["s:1"]


def test_refused_record_stores_no_blob(store: Store) -> None:
    run = running(store)
    store.record(run.run_id, run.epoch, entry("s:1"))
    with pytest.raises(RunConflict):
        store.record(run.run_id, run.epoch, entry("s:1"), blobs={h("orphan"): b"x"})
    assert store.get_blobs([h("orphan")]) == {}


def test_stash_replaces_the_snapshot_and_compacts(store: Store) -> None:
    run = running(store)
    for position in range(5):
        store.record(run.run_id, run.epoch, entry(f"s:{position}", position))
    store.stash(run.run_id, run.epoch, b"first", 2)
    store.stash(run.run_id, run.epoch, b"second", 3)
    after = store.get_run(run.run_id)
    assert after is not None and (after.snapshot, after.snapshot_position) == (b"second", 3)
    assert [e.position for e in store.load_journal(run.run_id)] == [3, 4]


def test_transaction_commits_user_work_with_the_entry(store: Store, store_url: str) -> None:
    table = user_table(store_url)
    run = running(store)

    def work(conn: object) -> Entry:
        cur = conn.cursor()  # type: ignore[attr-defined]
        cur.execute(f"CREATE TABLE {table} (v TEXT)")
        cur.execute(f"INSERT INTO {table} VALUES ('written')")
        return entry("tx:1", output=b"done")

    assert store.transaction(run.run_id, run.epoch, work) == entry("tx:1", output=b"done")
    assert store.load_journal(run.run_id) == [entry("tx:1", output=b"done")]
    assert raw_sql(store_url, f"SELECT v FROM {table}") == [("written",)]


@pytest.mark.parametrize("failure", ["error", "conflict"])
def test_transaction_rolls_back_user_work_and_entry(
    store: Store, store_url: str, failure: str
) -> None:
    table = user_table(store_url)
    raw_sql(store_url, f"CREATE TABLE {table} (v TEXT)")
    run = running(store)
    store.record(run.run_id, run.epoch, entry("done:1"))

    def work(conn: object) -> Entry:
        conn.cursor().execute(f"INSERT INTO {table} VALUES ('lost')")  # type: ignore[attr-defined]
        if failure == "error":
            raise ValueError("user code failed")
        return entry("done:1", output=b"again")

    with pytest.raises(ValueError if failure == "error" else RunConflict):
        store.transaction(run.run_id, run.epoch, work)
    assert store.load_journal(run.run_id) == [entry("done:1")]
    assert raw_sql(store_url, f"SELECT v FROM {table}") == []


# -- heartbeat, finish, release ----------------------------------------------------------------------


def test_heartbeat_extends_held_leases_and_names_lost_runs(store: Store) -> None:
    a, b, c = running(store, "w1", SHORT), running(store, "w1", SHORT), running(store, "w1", LONG)
    assert store.heartbeat("w1", [], LONG) == set()
    assert store.heartbeat("w1", [a.run_id, b.run_id, "missing"], LONG) == {"missing"}
    time.sleep(SHORT + 0.1)
    assert store.claim("w2", LONG, limit=5) == []  # the heartbeat outlived the first lease
    store.claim("w2", LONG, run_id=b.run_id, steal_from="w1")
    store.cancel(c.run_id)
    assert store.heartbeat("w1", [a.run_id, b.run_id, c.run_id], LONG) == {b.run_id, c.run_id}
    assert store.heartbeat("w2", [a.run_id, b.run_id], LONG) == {a.run_id}


def test_finish_ends_the_run(store: Store) -> None:
    run = running(store)
    with pytest.raises(ValueError):
        store.finish(run.run_id, run.epoch, "paused")
    store.finish(run.run_id, run.epoch, "failed", error=b"err", stats='{"steps": 1}')
    done = store.get_run(run.run_id)
    assert done is not None
    assert (done.status, done.error, done.output, done.stats) == (
        "failed",
        b"err",
        None,
        '{"steps": 1}',
    )
    assert (done.owner, done.lease_expires_at, done.epoch) == (None, None, run.epoch)
    assert done.ended_at is not None and done.ended_at >= done.created_at
    assert store.claim("w2", LONG) == []


def test_release_pending_gives_the_run_up(store: Store) -> None:
    run = running(store)
    with pytest.raises(ValueError):
        store.release(run.run_id, run.epoch, "completed")
    store.release(run.run_id, run.epoch, "pending", stats='{"n": 1}')
    released = store.get_run(run.run_id)
    assert released is not None
    assert (released.status, released.owner, released.lease_expires_at) == ("pending", None, None)
    assert (released.epoch, released.stats) == (run.epoch + 1, '{"n": 1}')
    [again] = store.claim("w2", LONG)
    assert (again.epoch, again.recoveries) == (run.epoch + 2, 0)


def test_suspended_run_is_due_at_wake_at(store: Store) -> None:
    run = running(store)
    store.release(run.run_id, run.epoch, "suspended", wake_at=time.time() + 0.4)
    assert store.claim("w1", LONG) == []
    time.sleep(0.5)
    assert ids(store.claim("w1", LONG)) == [run.run_id]


def test_suspended_run_is_due_when_its_event_is_sent(store: Store) -> None:
    run = running(store)
    store.release(run.run_id, run.epoch, "suspended", wait_event="go", wake_at=time.time() + LONG)
    store.send_event(run.run_id, "other", b"")
    assert store.claim("w1", LONG) == []
    store.send_event(run.run_id, "go", b"")
    assert ids(store.claim("w1", LONG)) == [run.run_id]


def test_event_sent_before_release_makes_the_run_due(store: Store) -> None:
    run = running(store)
    store.send_event(run.run_id, "go", b"early")
    store.release(run.run_id, run.epoch, "suspended", wait_event="go", wake_at=time.time() + LONG)
    assert ids(store.claim("w1", LONG)) == [run.run_id]


def test_paused_run_waits_for_resolve(store: Store) -> None:
    run = running(store)
    store.release(run.run_id, run.epoch, "paused", reason="mail:1 has no outcome")
    paused = store.get_run(run.run_id)
    assert paused is not None and (paused.status, paused.reason) == (
        "paused",
        "mail:1 has no outcome",
    )
    assert store.claim("w1", LONG) == []
    resolved = store.resolve(run.run_id, None)
    assert resolved.status == "pending" and resolved == store.get_run(run.run_id)
    assert ids(store.claim("w1", LONG)) == [run.run_id]


# -- resolve, cancel ----------------------------------------------------------------------------------


def test_resolve_records_or_drops_the_intent(store: Store) -> None:
    a, b = running(store), running(store)
    for run in (a, b):
        store.record(run.run_id, run.epoch, entry("mail:1", 0, status="intent", output=None))
        store.release(run.run_id, run.epoch, "paused", reason="unknown outcome")
    decided = entry("mail:1", 0, output=b"operator says sent")
    assert store.resolve(a.run_id, decided).status == "pending"
    assert store.load_journal(a.run_id) == [decided]
    assert store.resolve(b.run_id, None, drop_key="mail:1").status == "pending"
    assert store.load_journal(b.run_id) == []


def test_resolve_overrides_an_outcome_but_drop_key_keeps_it(store: Store) -> None:
    run = running(store)
    store.record(run.run_id, run.epoch, entry("a:1", 0, output=b"recorded"))
    store.record(run.run_id, run.epoch, entry("b:1", 1, output=b"kept"))
    store.release(run.run_id, run.epoch, "paused")
    resolved = store.resolve(run.run_id, entry("a:1", 0, output=b"operator"), drop_key="b:1")
    assert resolved.epoch == run.epoch + 2  # release and resolve each bump it
    assert store.load_journal(run.run_id) == [
        entry("a:1", 0, output=b"operator"),
        entry("b:1", 1, output=b"kept"),
    ]


def test_resolve_refuses_runs_that_are_not_paused(store: Store) -> None:
    run = running(store)
    with pytest.raises(NotPaused) as info:
        store.resolve(run.run_id, None)
    assert info.value.status == "running"  # type: ignore[attr-defined]
    with pytest.raises(RunNotFound):
        store.resolve("nope", None)
    assert store.get_run(run.run_id) == run


def test_cancel_recurses_through_children(store: Store) -> None:
    parent = running(store, run_id="parent")
    child = running(store, run_id="child", parent_id="parent")
    store.create_run(new_run("grandchild", parent_id="child"))
    done = running(store, run_id="done", parent_id="parent")
    store.finish(done.run_id, done.epoch, "completed")
    store.create_run(new_run("orphan", parent_id="done"))  # reached through a finished child
    store.create_run(new_run("stranger"))
    assert sorted(store.cancel("parent")) == ["child", "grandchild", "orphan", "parent"]
    for run_id, before in [("parent", parent), ("child", child)]:
        after = store.get_run(run_id)
        assert after is not None
        assert (after.status, after.owner, after.epoch) == ("cancelled", None, before.epoch + 1)
        assert after.ended_at is not None
    assert [store.get_run(r).status for r in ("grandchild", "done", "stranger")] == [  # type: ignore[union-attr]
        "cancelled",
        "completed",
        "pending",
    ]
    assert store.cancel("parent") == []
    with pytest.raises(RunNotFound):
        store.cancel("nope")


# -- events ----------------------------------------------------------------------------------------------


def test_events_are_delivered_in_order_once(store: Store) -> None:
    run = running(store)
    seqs = [
        store.send_event(run.run_id, name, payload)
        for name, payload in [("a", b"a1"), ("b", b"b1"), ("a", b"a2")]
    ]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    taken = [
        store.take_event(run.run_id, run.epoch, "a", entry(f"wait:{i}", i, output=None))
        for i in range(3)
    ]
    assert [t.output if t else None for t in taken] == [b"a1", b"a2", None]
    assert store.load_journal(run.run_id) == [
        entry("wait:0", 0, output=b"a1"),
        entry("wait:1", 1, output=b"a2"),
    ]
    assert store.take_event(run.run_id, run.epoch, "b", entry("b:1", 5)) == entry(
        "b:1", 5, output=b"b1"
    )
    with pytest.raises(RunNotFound):
        store.send_event("nope", "a", b"")


def test_concurrent_takers_consume_each_event_once(store: Store) -> None:
    run = running(store)
    for i in range(20):
        store.send_event(run.run_id, "ev", f"{i}".encode())
    keys = iter(range(1000))
    lock = threading.Lock()

    def taker(_: int) -> list[bytes]:
        got: list[bytes] = []
        while True:
            with lock:
                n = next(keys)
            taken = store.take_event(run.run_id, run.epoch, "ev", entry(f"ev:{n}", n))
            if taken is None:
                return got
            assert taken.output is not None
            got.append(taken.output)

    with ThreadPoolExecutor(4) as pool:
        payloads = [p for got in pool.map(taker, range(4)) for p in got]
    assert sorted(payloads, key=int) == [f"{i}".encode() for i in range(20)]


def test_take_event_conflict_leaves_the_event(store: Store) -> None:
    run = running(store)
    store.record(run.run_id, run.epoch, entry("ev:1"))
    store.send_event(run.run_id, "ev", b"keep me")
    with pytest.raises(RunConflict):
        store.take_event(run.run_id, run.epoch, "ev", entry("ev:1"))
    assert store.take_event(run.run_id, run.epoch, "ev", entry("ev:2", 1)) == entry(
        "ev:2", 1, output=b"keep me"
    )


# -- queues ---------------------------------------------------------------------------------------------


def queued(store: Store, queue: str, n: int, **fields: object) -> list[str]:
    return [store.create_run(new_run(queue=queue, **fields))[0].run_id for _ in range(n)]


def test_queue_concurrency_is_fleet_wide(store: Store) -> None:
    queued(store, "q", 4)
    queued(store, "free", 2)
    specs = {"q": QueueSpec("q", concurrency=2)}
    first = store.claim("w1", LONG, queues=specs, limit=10)
    assert sorted(r.queue for r in first) == ["free", "free", "q", "q"]
    assert store.claim("w2", LONG, queues=specs, limit=10) == []
    done, sleeping = [r for r in first if r.queue == "q"]
    store.finish(done.run_id, done.epoch, "completed")
    assert len(store.claim("w2", LONG, queues=specs, limit=10)) == 1
    store.release(sleeping.run_id, sleeping.epoch, "suspended", wake_at=time.time() + LONG)
    assert len(store.claim("w2", LONG, queues=specs, limit=10)) == 1
    assert store.claim("w2", LONG, queues=specs, limit=10) == []


def test_queue_concurrency_holds_under_concurrent_claimers(
    store_factory: Callable[..., Store],
) -> None:
    stores = [store_factory(), store_factory()]
    queued(stores[0], "q", 12)
    specs = {"q": QueueSpec("q", concurrency=3)}
    barrier = threading.Barrier(6)

    def claimer(i: int) -> int:
        barrier.wait()
        return sum(len(stores[i % 2].claim(f"w{i}", LONG, queues=specs, limit=2)) for _ in range(3))

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(claimer, range(6))) == 3


def test_worker_concurrency_limits_each_owner(store: Store) -> None:
    queued(store, "q", 5)
    specs = {"q": QueueSpec("q", worker_concurrency=2)}
    assert len(store.claim("w1", LONG, queues=specs, limit=5)) == 2
    assert store.claim("w1", LONG, queues=specs, limit=5) == []
    assert len(store.claim("w2", LONG, queues=specs, limit=5)) == 2


def test_key_concurrency_limits_runs_sharing_a_key(store: Store) -> None:
    a1, a2 = queued(store, "q", 2, concurrency_key="A")
    [b1] = queued(store, "q", 1, concurrency_key="B")
    [none] = queued(store, "q", 1)
    specs = {"q": QueueSpec("q", key_concurrency=1)}
    assert sorted(ids(store.claim("w1", LONG, queues=specs, limit=10))) == sorted([a1, b1, none])
    assert store.claim("w2", LONG, queues=specs, limit=10) == []
    store.finish(a1, 1, "completed")
    assert ids(store.claim("w2", LONG, queues=specs, limit=10)) == [a2]


def test_rate_limit_counts_starts_per_period(store: Store) -> None:
    queued(store, "q", 5)
    specs = {"q": QueueSpec("q", rate_limit=2, rate_period=0.5)}
    first = store.claim("w1", LONG, queues=specs, limit=5)
    assert len(first) == 2
    for run in first:  # finishing frees no slot: the limit is on starts, not on load
        store.finish(run.run_id, run.epoch, "completed")
    assert store.claim("w1", LONG, queues=specs, limit=5) == []
    time.sleep(0.6)
    second = store.claim("w1", LONG, queues=specs, limit=5)
    assert len(second) == 2
    store.release(second[0].run_id, second[0].epoch, "pending")
    assert store.claim("w1", LONG, queues=specs, limit=5) == []  # a resumption is a start too


def test_expired_leases_do_not_hold_queue_slots(store: Store) -> None:
    old, newer = queued(store, "q", 2)
    specs = {"q": QueueSpec("q", concurrency=1)}
    assert ids(store.claim("w1", SHORT, queues=specs, limit=2)) == [old]
    assert store.claim("w2", LONG, queues=specs, limit=2) == []
    time.sleep(SHORT + 0.1)
    [taken] = store.claim("w2", LONG, queues=specs, limit=2)  # the expired one, and only it
    assert (taken.run_id, taken.recoveries) == (old, 1)


def test_limited_queue_claims_by_priority(store: Store) -> None:
    store.create_run(new_run("low", queue="q"))
    store.create_run(new_run("high", queue="q", priority=9))
    specs = {"q": QueueSpec("q", concurrency=1)}
    assert ids(store.claim("w1", LONG, queues=specs, limit=2)) == ["high"]


def test_queue_stats_counts_live_runs(store: Store) -> None:
    queued(store, "a", 2)
    run = running(store, queue="a")
    sleeper = running(store, queue="b")
    store.release(sleeper.run_id, sleeper.epoch, "suspended", wake_at=time.time() + LONG)
    done = running(store, queue="b")
    store.finish(done.run_id, done.epoch, "completed")
    stats = {s.name: (s.pending, s.running, s.suspended) for s in store.queue_stats()}
    assert stats["a"] == (2, 1, 0) and stats["b"] == (0, 0, 1)
    assert run.queue == "a"


# -- prune ------------------------------------------------------------------------------------------------


def test_prune_deletes_old_terminal_runs_and_their_blobs(store: Store) -> None:
    old = running(store)
    store.record(old.run_id, old.epoch, entry("s:1"), blobs={h("shared"): b"s", h("mine"): b"m"})
    store.send_event(old.run_id, "ev", b"")
    store.finish(old.run_id, old.epoch, "completed")
    failed = running(store)
    store.finish(failed.run_id, failed.epoch, "failed")
    cancelled = running(store)
    store.cancel(cancelled.run_id)
    live = running(store)
    store.record(live.run_id, live.epoch, entry("s:1"), blobs={h("shared"): b"s"})
    pending, _ = store.create_run(new_run())
    paused = running(store)
    store.release(paused.run_id, paused.epoch, "paused")
    time.sleep(0.05)
    cutoff = time.time()
    time.sleep(0.05)
    recent = running(store)
    store.finish(recent.run_id, recent.epoch, "completed")

    assert store.prune(cutoff) == 3
    for gone in (old, failed, cancelled):
        assert store.get_run(gone.run_id) is None
        assert store.load_journal(gone.run_id) == []
    kept = (live.run_id, pending.run_id, paused.run_id, recent.run_id)
    assert all(store.get_run(run_id) is not None for run_id in kept)
    assert store.get_blobs([h("shared"), h("mine")]) == {h("shared"): b"s"}
    assert len(store.load_journal(live.run_id)) == 1
    assert store.prune(time.time() + 3600) == 1  # only `recent` is terminal
    assert all(store.get_run(run_id) is not None for run_id in kept[:3])


# -- framework checkpoints (the LangGraph saver) ------------------------------------------------------------


def saved(thread: str, cid: str, *, ns: str = "", run: str | None = None,
          data: bytes = b"cp") -> SavedCheckpoint:
    return SavedCheckpoint(thread, ns, cid, None, run, data, b"md")


def test_checkpoints_are_listed_newest_first_and_filtered(store: Store) -> None:
    for cid in ("1", "3", "2"):
        store.put_checkpoint(saved("t", cid), {})
    store.put_checkpoint(saved("t", "9", ns="child"), {})
    store.put_checkpoint(saved("u", "5"), {})
    store.put_checkpoint(saved("t", "3", data=b"replaced"), {})
    assert [c.checkpoint_id for c in store.get_checkpoints("t", ns="")] == ["3", "2", "1"]
    assert store.get_checkpoints("t", ns="", checkpoint_id="3")[0].checkpoint == b"replaced"
    assert [c.checkpoint_id for c in store.get_checkpoints("t", before="3")] == ["2", "1"]
    assert [c.checkpoint_id for c in store.get_checkpoints("t", limit=2)] == ["9", "3"]
    assert {c.thread_id for c in store.get_checkpoints(None)} == {"t", "u"}


def test_writes_keep_the_first_regular_write_and_replace_special_ones(store: Store) -> None:
    store.put_checkpoint(saved("t", "1"), {})
    store.put_writes([SavedWrite("t", "", "1", "b", 0, "ch", b"first", "p"),
                      SavedWrite("t", "", "1", "a", -1, "__error__", b"e1", "p")], {})
    store.put_writes([SavedWrite("t", "", "1", "b", 0, "ch", b"second", "p"),
                      SavedWrite("t", "", "1", "a", -1, "__error__", b"e2", "p")], {})
    writes = store.get_writes("t", "", ["1"])
    assert [(w.task_id, w.value) for w in writes] == [("a", b"e2"), ("b", b"first")]


def test_delete_checkpoints_keeps_the_newest_and_frees_unused_blobs(store: Store) -> None:
    store.put_checkpoint(saved("t", "1", run="r1"), {h("old"): b"o", h("both"): b"b"})
    store.put_checkpoint(saved("t", "2", run="r2", data=b"uses both"), {h("both"): b"b"})
    store.put_writes([SavedWrite("t", "", "1", "task", 0, "ch", b"w")], {h("w"): b"x"})
    store.put_checkpoint(saved("u", "1"), {h("old"): b"o"})  # another thread shares "old"

    def reachable(payloads: list[bytes], fetch: Callable[[list[str]], object]) -> list[str]:
        assert fetch([h("both")]) == {h("both"): b"b"}  # reads inside the transaction
        return [h("both")] if b"uses both" in payloads else []

    assert store.delete_checkpoints(thread_id="t", keep=1, reachable=reachable) == 1
    assert [c.checkpoint_id for c in store.get_checkpoints("t")] == ["2"]
    assert store.get_writes("t", "", ["1"]) == []
    # "old": u's
    assert store.get_blobs([h("old"), h("both"), h("w")]) == {h("old"): b"o", h("both"): b"b"}
    assert store.delete_checkpoints(run_ids=["r2"]) == 1
    assert store.get_blobs([h("old"), h("both")]) == {h("old"): b"o"}
    assert store.delete_checkpoints(thread_id="u") == 1
    assert store.get_blobs([h("old")]) == {}
    assert store.delete_checkpoints(run_ids=[]) == 0


def test_find_checkpoints_by_framework_id_prefix_and_age(store: Store) -> None:
    store.put_checkpoint(saved("maf:a", "20260101-x", run="x"), {})
    store.put_checkpoint(saved("maf:a", "20260103-y", run="y"), {})
    store.put_checkpoint(saved("maf:b", "20260102-z", run="z"), {})
    store.put_checkpoint(saved("lg-thread", "1", run="x"), {})  # another framework's row
    assert [(c.thread_id, c.checkpoint_id) for c in store.find_checkpoints(run_id="x")] == [
        ("maf:a", "20260101-x"), ("lg-thread", "1")]
    assert [c.run_id for c in store.find_checkpoints(run_id="x", thread_prefix="maf:")] == ["x"]
    assert [c.run_id for c in store.find_checkpoints(thread_prefix="maf:")] == ["y", "z", "x"]
    assert [c.run_id for c in store.find_checkpoints(thread_prefix="maf:", before="20260103")] == [
        "z", "x"]
    assert store.find_checkpoints(run_id="missing") == []


def test_prune_in_batches_takes_the_oldest_ended_first(store: Store) -> None:
    ended = []
    for i in range(5):
        run = running(store)
        store.record(run.run_id, run.epoch, entry("s:1"), blobs={h(f"b{i}"): b"x", h("all"): b"a"})
        store.finish(run.run_id, run.epoch, "completed")
        ended.append(run.run_id)
    live = running(store)
    store.record(live.run_id, live.epoch, entry("s:1"), blobs={h("all"): b"a"})
    cutoff = time.time() + 3600

    assert store.prune(cutoff, limit=2) == 2
    assert [store.get_run(r) is None for r in ended] == [True, True, False, False, False]
    assert store.get_blobs([h("b0"), h("b1"), h("b2")]) == {h("b2"): b"x"}
    assert store.prune(cutoff, limit=2) == 2
    assert store.prune(cutoff, limit=2) == 1
    assert store.prune(cutoff, limit=2) == 0
    assert all(store.get_run(r) is None for r in ended)
    assert store.get_blobs([h("b4"), h("all")]) == {h("all"): b"a"}  # the live run still refers to it
    assert len(store.load_journal(live.run_id)) == 1


def test_core_prune_never_frees_checkpoint_blobs(store: Store) -> None:
    store.put_checkpoint(saved("t", "1"), {h("cp"): b"c"})
    store.prune(time.time() + 3600)
    assert store.get_blobs([h("cp")]) == {h("cp"): b"c"}


# -- waiting for work ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cause", ["create", "release", "event"])
def test_waiting_worker_sees_new_work_promptly(
    store_factory: Callable[..., Store], cause: str
) -> None:
    worker, client = store_factory(), store_factory()
    sleeper = running(client, "w0")
    client.release(sleeper.run_id, sleeper.epoch, "suspended", wait_event="go")
    busy = running(client, "w0")
    assert worker.claim("w1", LONG) == []
    worker.wait_for_work(0.01)  # starts listening, where the backend listens

    def make_work() -> None:
        time.sleep(0.3)
        if cause == "create":
            client.create_run(new_run())
        elif cause == "release":
            client.release(busy.run_id, busy.epoch, "pending")
        else:
            client.send_event(sleeper.run_id, "go", b"")

    thread = threading.Thread(target=make_work)
    start = time.monotonic()
    thread.start()
    claimed: list[RunRecord] = []
    while not claimed and time.monotonic() - start < 10:
        worker.wait_for_work(10)
        claimed = worker.claim("w1", LONG)
    thread.join()
    assert len(claimed) == 1 and time.monotonic() - start < 1.8


def test_wait_for_work_returns_by_its_timeout(store: Store) -> None:
    start = time.monotonic()
    store.wait_for_work(0.3)
    store.wait_for_work(0)
    assert time.monotonic() - start < 1.0


# -- migrations ----------------------------------------------------------------------------------------------


def test_stores_opening_one_database_at_once_migrate_it_once(store_url: str) -> None:
    barrier = threading.Barrier(4)

    def open_one(_: int) -> Store:
        barrier.wait()
        return open_store(store_url)

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(open_one, range(4)))
    try:
        stores[0].create_run(new_run("r1"))
        assert all(s.get_run("r1") is not None for s in stores)
    finally:
        for s in stores:
            s.close()
    rows = raw_sql(store_url, f"SELECT version FROM {version_table(store_url)}")
    assert sorted(r[0] for r in rows) == list(range(1, len(rows) + 1))  # type: ignore[misc]


def test_a_newer_schema_is_refused(store_url: str) -> None:
    open_store(store_url).close()
    table = version_table(store_url)
    raw_sql(
        store_url,
        f"UPDATE {table} SET version = 999 WHERE version = (SELECT max(version) FROM {table})",
    )
    with pytest.raises(ConfigurationError, match="newer"):
        open_store(store_url)


# -- PostgreSQL only ---------------------------------------------------------------------------------------------


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = open_store(pg_url + "&application_name=" + pg_url.rsplit("=", 1)[1])
    yield store
    store.close()


def _kill_backends(pg_url: str) -> int:
    import psycopg

    app = pg_url.rsplit("=", 1)[1]
    with psycopg.connect(pg_url.split("?", 1)[0], autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        ).fetchall()
    return len(rows)


@pytest.mark.postgres
def test_pg_operations_survive_dropped_connections(pg_store: Store, pg_url: str) -> None:
    run = running(pg_store)
    assert _kill_backends(pg_url) >= 1
    pg_store.record(run.run_id, run.epoch, entry("a:1"))
    assert _kill_backends(pg_url) >= 1
    assert pg_store.get_run(run.run_id) is not None
    _kill_backends(pg_url)
    pg_store.finish(run.run_id, run.epoch, "completed")
    assert [e.key for e in pg_store.load_journal(run.run_id)] == ["a:1"]


@pytest.mark.postgres
def test_pg_transaction_replaces_a_dead_connection_but_never_reruns_work(
    pg_store: Store, pg_url: str
) -> None:
    import psycopg

    run = running(pg_store)
    calls: list[str] = []
    _kill_backends(pg_url)  # the pooled connection is dead before work starts: retried
    pg_store.transaction(run.run_id, run.epoch, lambda conn: calls.append("a") or entry("a:1"))
    assert calls == ["a"]

    def dies(conn: psycopg.Connection[tuple[object, ...]]) -> Entry:
        calls.append("b")
        conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return entry("b:1", 1)

    with pytest.raises(StoreError) as died:  # classified at the boundary: transient
        pg_store.transaction(run.run_id, run.epoch, dies)
    assert died.value.transient and isinstance(died.value.__cause__, psycopg.OperationalError)
    assert calls == ["a", "b"]
    assert [e.key for e in pg_store.load_journal(run.run_id)] == ["a:1"]


@pytest.mark.postgres
def test_pg_listener_recovers_from_a_dropped_connection(pg_store: Store, pg_url: str) -> None:
    pg_store.wait_for_work(0.01)
    _kill_backends(pg_url)
    pg_store.wait_for_work(0.2)  # notices the dead listener
    start = time.monotonic()
    claimed: list[RunRecord] = []
    threading.Timer(0.3, lambda: pg_store.create_run(new_run())).start()
    while not claimed and time.monotonic() - start < 5:
        pg_store.wait_for_work(5)
        claimed = pg_store.claim("w1", LONG)
    assert claimed and time.monotonic() - start < 1.8


@pytest.mark.postgres
def test_pg_record_waits_for_an_inflight_takeover_then_is_refused(
    pg_store: Store, pg_url: str
) -> None:
    import psycopg

    run = running(pg_store)
    schema = parse_qs(urlsplit(pg_url).query)["schema"][0]
    outcome: list[BaseException | None] = []

    def record() -> None:
        try:
            pg_store.record(run.run_id, run.epoch, entry("a:1"))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with psycopg.connect(pg_url.split("?", 1)[0]) as thief:  # a claim, not yet committed
        thief.execute(
            f"UPDATE {schema}.runs SET epoch = epoch + 1, owner = 'thief' WHERE run_id = %s",
            (run.run_id,),
        )
        writer = threading.Thread(target=record)
        writer.start()
        writer.join(0.5)
        assert writer.is_alive()  # the fence waits for the takeover to decide
        thief.commit()
    writer.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLost)
    assert pg_store.load_journal(run.run_id) == []


@pytest.mark.postgres
def test_pg_record_retry_after_unknown_outcome_does_not_conflict(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    run = running(pg_store)
    backend = type(getattr(pg_store, "inner", pg_store))  # the encrypted pass wraps it
    real = backend._record_on  # type: ignore[attr-defined]
    calls = []

    def commit_then_fail(self: Store, conn: object, *args: object) -> None:
        real(self, conn, *args)
        calls.append(args)
        if len(calls) == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(backend, "_record_on", commit_then_fail)
    pg_store.record(run.run_id, run.epoch, entry("a:1"))
    assert len(calls) == 2
    assert pg_store.load_journal(run.run_id) == [entry("a:1")]
    with pytest.raises(RunConflict):  # a genuine second write is still refused
        pg_store.record(run.run_id, run.epoch, entry("a:1", output=b"different"))


@pytest.mark.postgres
def test_pg_transaction_hands_over_a_psycopg_connection(pg_store: Store) -> None:
    import psycopg

    run = running(pg_store)
    seen: list[object] = []
    pg_store.transaction(run.run_id, run.epoch, lambda conn: seen.append(conn) or entry("tx:1"))
    assert isinstance(seen[0], psycopg.Connection)


@pytest.mark.postgres
def test_pg_url_errors_name_the_url_without_password(pg_server: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store("postgresql://someone:s3cret@127.0.0.1:1/test?connect_timeout=2")
    message = str(info.value)
    assert "127.0.0.1:1" in message and "s3cret" not in message and "running" in message
    for bad in ("schema=1bad", "schema=a-b", "pool_min=x", "pool_min=5&pool_max=2", "nonsense=1"):
        with pytest.raises(ConfigurationError):
            open_store(f"{pg_server}?{bad}")


@pytest.mark.postgres
def test_pg_url_keeps_options_but_not_the_password(pg_url: str) -> None:
    store = open_store(pg_url.replace("postgres@", "postgres:pw@") + "&pool_min=0&pool_max=2")
    try:
        assert "pw" not in store.url and "pool_max=2" in store.url
        assert store.get_run("x") is None
    finally:
        store.close()


# -- evolution: fork_run, retry_run ----------------------------------------------------------------


def _table(store: Store, name: str) -> str:
    return f"outlast_{name}" if store.dialect == "sqlite" else name


def test_fork_run_copies_the_journal_prefix_and_shares_blobs(store: Store, store_url: str) -> None:
    src = running(store, priority=3, concurrency_key="k")
    store.record(src.run_id, src.epoch, entry("a:1", 0), {h("h1"): b"blob one"})
    store.record(src.run_id, src.epoch, entry("b:1", 1))
    store.record(src.run_id, src.epoch, entry("c:1", 2, status="intent", output=None))
    store.record(src.run_id, src.epoch, entry("d:1", 3))
    forked = store.fork_run(src.run_id, "fork-1", 2, '{"forked_from": 1}')
    assert (forked.run_id, forked.status, forked.epoch, forked.parent_id) == ("fork-1", "pending", 0, None)
    assert (forked.workflow, forked.input, forked.priority, forked.concurrency_key) == (
        "wf", b"input", 3, "k")
    assert forked.stats == '{"forked_from": 1}' and forked.owner is None
    assert [e.key for e in store.load_journal("fork-1")] == ["a:1", "b:1"]  # no intent, no d:1
    assert store.load_journal("fork-1")[0] == store.load_journal(src.run_id)[0]
    assert [e.key for e in store.load_journal(src.run_id)] == ["a:1", "b:1", "c:1", "d:1"]
    blobs = _table(store, "blobs")
    assert raw_sql(store_url, f"SELECT count(*) FROM {blobs}") == [(1,)]  # shared, not copied
    refs = raw_sql(store_url, f"SELECT run_id FROM {_table(store, 'blob_refs')} ORDER BY run_id")
    assert sorted(r[0] for r in refs) == sorted(["fork-1", src.run_id])
    assert store.fork_run(src.run_id, "fork-0", -1, None).status == "pending"
    assert store.load_journal("fork-0") == []
    assert store.get_run(src.run_id) == src  # untouched: still running, same epoch


def test_fork_run_refuses_a_taken_id_and_a_missing_source(store: Store) -> None:
    src = running(store)
    taken, _ = store.create_run(new_run("taken"))
    with pytest.raises(RunConflict, match="'taken' already exists"):
        store.fork_run(src.run_id, "taken", 0, None)
    with pytest.raises(RunNotFound):
        store.fork_run("nope", "fork-x", 0, None)
    assert store.get_run("fork-x") is None and store.get_run("taken") == taken


def test_fork_run_copies_a_snapshot_taken_before_the_checkpoint(store: Store) -> None:
    src = running(store)
    store.record(src.run_id, src.epoch, entry("a:1", 0))
    store.stash(src.run_id, src.epoch, b"snap", 1)
    store.record(src.run_id, src.epoch, entry("b:1", 1))
    forked = store.fork_run(src.run_id, "fork-s", 1, None)
    assert (forked.snapshot, forked.snapshot_position) == (b"snap", 1)
    assert [e.key for e in store.load_journal("fork-s")] == ["b:1"]


def test_retry_run_makes_a_failed_run_pending_without_its_failure(store: Store) -> None:
    run = running(store)
    for i, status in enumerate(["completed", "completed", "failed", "completed"]):
        store.record(run.run_id, run.epoch, entry(f"s:{i + 1}", i, status=status))
    store.finish(run.run_id, run.epoch, "failed", error=b"boom", stats='{"x": 1}')
    retried = store.retry_run(run.run_id, 2, '{"x": 2}')
    assert (retried.status, retried.error, retried.ended_at, retried.owner) == ("pending", None, None, None)
    assert retried.epoch == run.epoch + 1 and retried.stats == '{"x": 2}'
    assert [e.key for e in store.load_journal(run.run_id)] == ["s:1", "s:2"]
    with pytest.raises(NotFailed, match="is pending, not failed"):
        store.retry_run(run.run_id, None, None)
    with pytest.raises(RunNotFound):
        store.retry_run("nope", None, None)
    [claimed] = store.claim("w9", LONG, run_id=run.run_id)
    store.finish(claimed.run_id, claimed.epoch, "failed", error=b"again")
    assert store.retry_run(run.run_id, None, None).status == "pending"  # cut None: all kept
    assert len(store.load_journal(run.run_id)) == 2
