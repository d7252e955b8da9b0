"""A process's own PostgreSQL sessions: liveness, wake-ups and the idle worker's wake token.

**Liveness.** An executor (an App that runs workflows) holds a session-level advisory lock,
``(hashtext('outlast-live:' || schema), hashtext(owner))``, on a dedicated connection for as
long as it lives, and marks its owner id with :data:`LIVE_MARK`. When the process dies, or
its connection is cut, the server ends the session and frees the lock at once: another
worker (:meth:`~outlast.store.postgres.PostgresStore.dead_owners`) sees a marked owner whose
lock is free and takes its runs over, on any host, without waiting for the lease. Fencing
(the epoch) still guards every write: a process whose connection was cut but that lives on
finds its runs taken and its writes refused.

A scanner whose own session is younger than :data:`LIVENESS_GRACE` seconds does not judge
others: after an outage every process reconnects at about the same time, and the first one
back must not take over the runs of those a moment behind it.

Through a pooler in transaction mode a session lock is not held across transactions. The
lock is checked from a second statement after it is taken; when it is not held (another
backend answered, or the pooler reset the session) liveness is off for this process, the
owner id is left unmarked, and its runs are taken over by the lease alone (logged once).

**Wake-ups.** The same connection LISTENs to the schema's work channel and its cancel channel;
a cancel's NOTIFY names the run, and :attr:`on_cancel` interrupts its local executor at once
(an in-memory ``ctx.sleep`` or ``wait_for`` ends within a quarter second).

**The wake token.** Of the idle workers, only the holder of the token (a session advisory lock
on a second connection, taken with a blocking ``pg_advisory_lock``: waiting costs the
database nothing) acts on work NOTIFYs and polls for due timers and expired leases. On a
NOTIFY it hands the token on and claims; the next idle worker in the lock's queue takes the
token and claims once to catch up (after :data:`SETTLE`). One enqueue wakes one worker, and an idle fleet costs
what one idle worker costs, whatever its size.

Workers that claim different runs (``outlast worker --queue``) wait in separate groups, one
token each (the group is the lock's second key): a holder woken for a run it may not claim
would otherwise hand the token to another worker that may not claim it either, and leave the
worker that may asleep. Each group's holder acts on every NOTIFY and judges dead owners (two
judges at once are safe: a takeover is one atomic claim); an idle fleet costs what one idle
worker per group costs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

log = logging.getLogger("outlast.store")

#: suffix of an owner id whose process holds a liveness lock
LIVE_MARK = "+live"
T = TypeVar("T")
#: seconds a scanner's own session must have been up before it judges other sessions
LIVENESS_GRACE = 2.0
#: seconds a new wake-token holder ignores NOTIFYs before its catch-up claim
SETTLE = 0.2
#: longest pause between reconnection attempts
MAX_BACKOFF = 1.0

Conn = psycopg.Connection[tuple[Any, ...]]

LOCK = "SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))"
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))"
UNLOCK = "SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))"
# the lock is held by this very backend: false through a transaction-mode pooler
HELD = """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
    AND pid = pg_backend_pid() AND granted AND objsubid = 2
    AND classid = (hashtext(%s)::bigint & 4294967295)::oid
    AND objid = (hashtext(%s)::bigint & 4294967295)::oid)"""


def live_namespace(schema: str) -> str:
    return f"outlast-live:{schema}"


class Session:
    """The dedicated connections of one store (see the module docstring)."""

    def __init__(self, conninfo: str, schema: str, work_channel: str, cancel_channel: str) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.channels = (work_channel, cancel_channel)
        self.owner: str | None = None  # marked owner id once liveness holds
        self.on_cancel: Callable[[str], None] = lambda run_id: None
        #: called when the session's connection is lost (the store notes a fault: an idle
        #: process learns of an outage when it begins, not at its next operation)
        self.on_lost: Callable[[], None] = lambda: None
        #: monotonic time the current listening session started (None: not connected)
        self.since: float | None = None
        self._conn: Conn | None = None
        self._closed = False
        self._wake = threading.Event()  # a reason for the worker to claim now
        self._token = _Token(conninfo, schema, self)
        self._thread: threading.Thread | None = None

    # -- start-up ---------------------------------------------------------------------------

    def start(self, owner: str) -> str:
        """Connect, take the liveness lock for ``owner``, and start listening. Returns the
        owner id to use: ``owner`` + :data:`LIVE_MARK` when liveness holds, else ``owner``."""
        marked = owner + LIVE_MARK
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            log.warning(
                "no liveness session (%s); runs of this process are taken over by "
                "their lease alone",
                str(exc).strip(),
            )
            self._spawn()
            return owner
        key = (live_namespace(self.schema), marked)
        try:
            conn.execute(LOCK, key)
            row = conn.execute(HELD, key).fetchone()
            held = bool(row and row[0])
        except psycopg.Error:
            held = False
        if held:
            self.owner = marked
        else:
            log.warning(
                "the liveness lock is not held across transactions (a pooler in transaction "
                "mode?): runs of this process are taken over by their lease alone"
            )
        try:
            self._listen(conn)
        except psycopg.Error:
            conn.close()  # the thread reconnects
        self._spawn()
        return self.owner or owner

    def start_listening(self) -> None:
        """Listen only (no executor id: nothing to keep alive)."""
        with contextlib.suppress(psycopg.Error):
            self._listen(psycopg.connect(self.conninfo, autocommit=True))
        self._spawn()

    def _listen(self, conn: Conn) -> None:
        for channel in self.channels:
            conn.execute(f'LISTEN "{channel}"')
        if self._closed:  # closed meanwhile: nobody would close this one
            conn.close()
            return
        self._conn = conn
        self.since = time.monotonic()

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="outlast-session", daemon=True)
        self._thread.start()

    # -- the listening thread ---------------------------------------------------------------

    def _loop(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                if self._conn is None:
                    self._reconnect()
                    delay = 0.1
                conn = self._conn  # ``close`` may drop it from another thread at any time
                if conn is None:
                    continue
                for note in conn.notifies(timeout=1.0):
                    self._dispatch(note.channel, note.payload)
                    if self._closed:
                        return
            except psycopg.Error as exc:
                self._drop()
                if self._closed:
                    return
                self.on_lost()
                log.debug("session connection lost (%s); reconnecting", exc)
                self._wake.set()  # meanwhile the worker polls
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _reconnect(self) -> None:
        conn = psycopg.connect(self.conninfo, autocommit=True)
        try:
            if self.owner is not None:
                # try, not wait: our old session may linger until the server notices it died
                key = (live_namespace(self.schema), self.owner)
                while not conn.execute(TRY_LOCK, key).fetchone()[0]:  # type: ignore[index]
                    if self._closed:
                        conn.close()
                        return
                    time.sleep(MAX_BACKOFF)
            self._listen(conn)
        except BaseException:
            conn.close()
            raise

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == self.channels[1]:
            if payload:
                try:
                    self.on_cancel(payload)
                except Exception:
                    log.exception("cancel of run %s: local interrupt failed", payload)
            return
        if self._token.holding and self._token.hand_on():
            self._wake.set()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.since = None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    # -- what the store asks ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def judges(self) -> bool:
        """True when this process may declare other owners dead: liveness holds, it holds
        the wake token (one scanner at a time) and its session is older than the grace."""
        since = self.since
        return (
            self.owner is not None
            and self._token.holding
            and since is not None
            and time.monotonic() - since >= LIVENESS_GRACE
        )

    def wait(self, timeout: float, poll: float, group: str = "") -> bool:
        """Wait up to ``timeout`` for a reason to claim (see ``Store.wait_for_work``)."""
        if not self.connected:
            time.sleep(max(0.0, min(timeout, 0.2)))
            return True
        self._token.want(timeout + 1.0, poll, group)
        woken = self._wake.wait(max(0.0, timeout))
        self._wake.clear()
        return woken

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._token.close()
        self._wake.set()
        self._drop()


class _Token:
    """The wake token's connection and thread (see the module docstring)."""

    def __init__(self, conninfo: str, schema: str, session: Session) -> None:
        self.conninfo = conninfo
        self.key = (f"outlast-token:{schema}", "")  # its second part names the group
        self.session = session
        self.holding = False
        self._want_until = 0.0
        self._poll = 0.5
        self._handed = False
        self._settling = False
        self._cond = threading.Condition()
        self._conn: Conn | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def want(self, seconds: float, poll: float, group: str = "") -> None:
        with self._cond:
            self._want_until = time.monotonic() + seconds
            self._poll = poll
            if self._thread is None:
                self.key = (self.key[0], group)
                self._thread = threading.Thread(
                    target=self._loop, name="outlast-token", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def hand_on(self) -> bool:
        """A NOTIFY while held: hand the token on, and say whether this holder should claim.
        In the first moment of holding a NOTIFY is ignored (see :meth:`_hold`): the catch-up
        claim that follows covers it, and a second wake-up would be a wasted claim."""
        with self._cond:
            if self._settling:
                return False
            self._handed = True
            self._cond.notify_all()
            return True

    def _wanted(self) -> bool:
        return time.monotonic() < self._want_until

    def _loop(self) -> None:
        """The thread owns the connection: only it opens, uses and drops it (``close`` asks it
        to stop and cancels a blocking query; it never pulls the connection from under it)."""
        delay = 0.1
        while not self._closed:
            try:
                conn = self._conn
                if conn is None:
                    conn = self._conn = psycopg.connect(self.conninfo, autocommit=True)
                    delay = 0.1
                with self._cond:
                    while not self._closed and not self._wanted():
                        self._cond.wait(1.0)
                if self._closed:
                    break
                conn.execute(LOCK, self.key)  # blocks while another worker holds it
                with self._cond:
                    self.holding, self._handed, self._settling = True, False, True
                self._hold()
                with self._cond:
                    self.holding = False
                conn.execute(UNLOCK, self.key)
            except psycopg.Error:
                with self._cond:
                    self.holding = False
                self._drop()
                if self._closed:
                    break
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        self._drop()

    def _hold(self) -> None:
        """While held: a poll tick wakes the worker (timers, expired leases, dead owners);
        a NOTIFY (``hand_on``) or nobody waiting any more hands the token on.

        First the catch-up claim, after a moment in which NOTIFYs are ignored: the NOTIFY that
        made the previous holder hand the token on may reach this session after the token
        did, and the claim covers everything committed before it anyway."""
        with self._cond:
            self._settling = True
            settled = time.monotonic() + SETTLE
            while not self._closed and (left := settled - time.monotonic()) > 0:
                self._cond.wait(left)
            self._handed = self._settling = False
        self.session.wake()
        last = time.monotonic()
        with self._cond:
            while not self._closed and not self._handed and self._wanted():
                left = last + self._poll - time.monotonic()
                if left <= 0:
                    last = time.monotonic()
                    self.session.wake()
                    continue
                self._cond.wait(left)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        self._closed = True
        with self._cond:
            self._cond.notify_all()
            thread = self._thread
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=1.0)
        if thread is None:
            self._drop()
        elif thread is not threading.current_thread():
            thread.join(timeout=2.0)  # it drops its connection on its way out


class SessionMethods:
    """The store methods backed by the process's own session (a mixin of
    :class:`~outlast.store.postgres.PostgresStore`): liveness, wake-ups, cancel notices."""

    schema: str
    _q: Any
    _closed: bool
    _conninfo: str
    _channel: str
    _cancel_channel: str
    _pooled_sessions: bool
    _session: Session | None
    _session_lock: threading.Lock

    if TYPE_CHECKING:

        def _run(self, op: Callable[[Any, bool], T]) -> T: ...

        def note_fault(self) -> None: ...

    def _own_session(self) -> Session | None:
        """The dedicated session (see postgres_session); None through a transaction pooler."""
        if self._pooled_sessions or self._closed:
            return None
        with self._session_lock:
            if self._session is None:
                self._session = Session(
                    self._conninfo, self.schema, self._channel, self._cancel_channel
                )
                self._session.on_lost = self.note_fault
                self._session.start_listening()
            return self._session

    def attach(self, owner: str, on_cancel: Callable[[str], None]) -> str:
        if self._pooled_sessions or self._closed:
            return owner
        with self._session_lock:
            if self._session is not None:  # listening already: a second executor id
                self._session.close()
            session = Session(self._conninfo, self.schema, self._channel, self._cancel_channel)
            session.on_cancel = on_cancel
            session.on_lost = self.note_fault
            self._session = session
            return session.start(owner)

    def wait_for_work(self, timeout: float, group: str = "") -> bool:
        session = self._own_session()
        if session is None:
            time.sleep(max(0.0, timeout))
            return True
        return session.wait(timeout, poll=max(timeout, 0.05), group=group)

    def wake_waiters(self) -> None:
        session = self._session
        if session is not None:
            session.wake()

    def dead_owners(self) -> list[str] | None:
        session = self._own_session()
        if session is None or session.owner is None:
            return None
        if not session.judges:
            return []
        params = {"namespace": live_namespace(self.schema), "mark": "%" + LIVE_MARK}
        rows = self._run(lambda c, _: c.execute(self._q.dead_owners, params).fetchall())
        return [row[0] for row in rows if row[0] != session.owner]
