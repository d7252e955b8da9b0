"""The pure core, table-driven, no database: the journal's replay decisions and what a caller
does next with a run. Each row is one situation and its expected answer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from outlast.decide import next_action
from outlast.engine import backoff
from outlast.errors import NonDeterminismError
from outlast.journal import Journal
from outlast.store.base import Entry, RunRecord


def entry(key: str, position: int, kind: str = "step", status: str = "completed",
          args_hash: str | None = "h") -> Entry:
    name = key.rsplit(":", 1)[0]
    return Entry(key=key, position=position, kind=kind, name=name, status=status,
                 output=b"1", args_hash=args_hash)


# (recorded entries, calls as (kind, name, args_hash, key), expected per call:
#  "new" | "replay" | "intent" | "diverge")
JOURNAL_CASES: list[tuple[str, list[Entry], list[tuple[Any, ...]], list[str]]] = [
    ("fresh run", [], [("step", "a", "h", None)] * 2, ["new", "new"]),
    ("replay in order", [entry("a:1", 0), entry("a:2", 1)],
     [("step", "a", "h", None)] * 3, ["replay", "replay", "new"]),
    ("other step at a position", [entry("a:1", 0)], [("step", "b", "h", None)], ["diverge"]),
    ("other kind, same name", [entry("a:1", 0)], [("timer", "a", None, None)], ["diverge"]),
    ("other arguments", [entry("a:1", 0)], [("step", "a", "other", None)], ["diverge"]),
    ("no fingerprint on either side", [entry("now:1", 0, kind="now", args_hash=None)],
     [("now", "now", None, None)], ["replay"]),
    ("intent is not an outcome", [entry("a:1", 0, status="intent")],
     [("step", "a", "h", None)], ["intent"]),
    ("explicit keys replay by identity, in any order",
     [entry("t:call_b", 0), entry("t:call_a", 1)],
     [("step", "t", "h", "call_a"), ("step", "t", "h", "call_b")], ["replay", "replay"]),
    ("explicit key not recorded", [entry("t:call_a", 0)],
     [("step", "t", "h", "call_z")], ["new"]),
    ("failed outcome replays", [entry("a:1", 0, status="failed")],
     [("step", "a", "h", None)], ["replay"]),
]


@pytest.mark.parametrize(("recorded", "calls", "expected"),
                         [c[1:] for c in JOURNAL_CASES], ids=[c[0] for c in JOURNAL_CASES])
def test_journal_next_call(recorded: list[Entry], calls: list[tuple[Any, ...]],
                           expected: list[str]) -> None:
    journal = Journal("r", recorded)
    got = []
    for kind, name, args_hash, key in calls:
        try:
            call = journal.next_call(kind, name, args_hash, key)
        except NonDeterminismError as exc:
            assert exc.run_id == "r" and "diverged" in str(exc)  # type: ignore[attr-defined]
            got.append("diverge")
            continue
        if call.entry is None:
            got.append("new")
        elif call.entry.status == "intent":
            got.append("intent")
        else:
            got.append("replay")
    assert got == expected


def test_journal_numbers_calls_per_name_and_counts_what_it_replayed() -> None:
    journal = Journal("r", [entry("a:1", 0), entry("b:1", 1)])
    keys = [journal.next_call("step", n, "h").key for n in ("a", "b", "a", "b")]
    assert keys == ["a:1", "b:1", "a:2", "b:2"]
    assert [e.key for e in journal.replayed] == ["a:1", "b:1"]
    assert journal.position == 4


def test_journal_resumes_numbering_from_a_snapshot() -> None:
    journal = Journal("r", [entry("a:3", 5)], start=5, counts={"a": 2})
    call = journal.next_call("step", "a", "h")
    assert (call.key, call.position, call.entry is not None) == ("a:3", 5, True)


def run(status: str, **fields: Any) -> RunRecord:
    base = RunRecord(
        run_id="r", workflow="w", status=status, input=b"", input_hash="", output=None,
        error=None, queue="default", priority=0, concurrency_key=None, parent_id=None,
        owner=None, epoch=1, lease_expires_at=None, wake_at=None, wait_event=None,
        reason=None, snapshot=None, snapshot_position=None, stats=None, recoveries=0,
        created_at=0.0, started_at=None, ended_at=None,
    )
    return replace(base, **fields)


NOW = 1000.0
ACTION_CASES: list[tuple[str, RunRecord, bool, str]] = [
    ("completed", run("completed"), False, "done"),
    ("failed", run("failed"), False, "done"),
    ("cancelled", run("cancelled"), False, "done"),
    ("paused needs an operator", run("paused"), False, "done"),
    ("pending", run("pending"), False, "claim"),
    ("timer due", run("suspended", wake_at=NOW - 1), False, "claim"),
    ("timer not due", run("suspended", wake_at=NOW + 60), False, "wait"),
    ("hibernating, caller detaches", run("suspended", wake_at=NOW + 60), True, "detach"),
    ("event wait without timer", run("suspended"), False, "wait"),
    ("lease expired", run("running", owner="x:1:host", lease_expires_at=NOW - 1), False, "claim"),
    ("owned and live elsewhere", run("running", owner="other-host:1:x",
                                     lease_expires_at=NOW + 5), False, "wait"),
]


@pytest.mark.parametrize(("record", "detach", "expected"), [c[1:] for c in ACTION_CASES],
                         ids=[c[0] for c in ACTION_CASES])
def test_next_action(record: RunRecord, detach: bool, expected: str) -> None:
    action = next_action(record, NOW, detach_on_suspend=detach)
    assert action.kind == expected
    if expected == "wait":
        assert 0 < action.seconds <= 1.0  # waiters re-check at least every second


@pytest.mark.parametrize(("faults", "lease", "expected"), [
    (1, 10.0, 0.5), (2, 10.0, 1.0), (3, 10.0, 2.0), (5, 10.0, 8.0), (6, 10.0, 10.0),
    (50, 10.0, 10.0), (1, 0.2, 0.5),
])
def test_store_fault_backoff(faults: int, lease: float, expected: float) -> None:
    assert backoff(faults, lease) == expected


@pytest.mark.parametrize(
    ("meta", "preview", "shown"),
    [
        ('{"args": "(1)"}', "(2)", "recorded with arguments (1), but the code passes (2) now"),
        # written before previews existed (0.1.0), or sealed without the key: a fingerprint only
        (None, "(2)", "other arguments than (2), which the code passes now (this entry keeps"),
        ("~sealed:AAAA", "(2)", "(this entry keeps only their fingerprint)"),
        ('{"args": "(1)"}', None, "recorded with other arguments than the code passes now"),
    ],
)
def test_changed_arguments_name_both_previews(
    meta: str | None, preview: str | None, shown: str
) -> None:
    journal = Journal("r", [replace(entry("a:1", 0), meta=meta)])
    with pytest.raises(NonDeterminismError, match=None) as caught:
        journal.next_call("step", "a", "other", None, (lambda: preview) if preview else None)
    assert shown in str(caught.value)


def test_a_run_of_store_faults_begins_at_its_first_fault() -> None:
    # What a worker reads after an outage (outlast.worker): leases that ran out since the
    # faults *began* are left to their owners, so the start must survive later faults.
    import time

    from outlast.store.postgres_conn import FaultMarks

    marks = FaultMarks()
    marks.note_fault()
    first = marks.fault_began
    assert first and marks.last_fault == first
    time.sleep(0.01)
    marks.note_fault()  # the same outage, seen again
    assert marks.fault_began == first and marks.last_fault > first
    marks.last_ok = time.monotonic()  # the store answered
    time.sleep(0.01)
    marks.note_fault()  # a new outage
    assert marks.fault_began > first and marks.fault_began == marks.last_fault
