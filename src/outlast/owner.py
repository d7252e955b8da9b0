"""Who executes a run: owner ids, and telling a dead local owner from a live one.

An owner id is ``host:pid:start:nonce``. ``start`` is the process start time as the kernel
reports it, so a recycled pid is not mistaken for the original process. A run whose owner ran
on this host and is gone can be taken over at once instead of waiting for its lease to expire.
"""

from __future__ import annotations

import os

# os.uname() is the hostname without importing socket (import time counts at every resume).
_HOST = os.uname().nodename.replace(":", "_")


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "?"
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode()


def new_owner_id() -> str:
    """A fresh owner id for this process (one per App instance)."""
    pid = os.getpid()
    return f"{_HOST}:{pid}:{_start_time(pid)}:{os.urandom(4).hex()}"


def is_dead_local(owner: str | None) -> bool:
    """True when ``owner`` names a process on this host that no longer exists."""
    if not owner:
        return False
    parts = owner.split(":")
    if len(parts) != 4 or parts[0] != _HOST:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    start = _start_time(pid)
    if start == "?":
        return False
    if parts[2] != "?" and start != parts[2]:
        return True
    # A zombie (killed, not yet reaped by its parent) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"Z"
    except OSError:
        return True
