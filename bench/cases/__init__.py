"""The benchmark cases run by ``bench/run.py``, one module each.

Every module has ``NAME``, ``TITLE`` and ``run(size) -> dict`` where size is ``"tiny"`` (the
test), ``"quick"`` or ``"full"``. The dict (see :func:`result`) holds tables, plot series and
headline figures; ``run.py`` renders them. A case whose capability or peer is missing returns
``unavailable(...)`` instead of failing.
"""

from __future__ import annotations

import importlib
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

PG = "postgresql://postgres@127.0.0.1:5432/test"
SIZES = ("tiny", "quick", "full")


def result(name: str, title: str, **fields: Any) -> dict[str, Any]:
    """A case's result: available, settings, tables [{title, columns, rows}], plots
    [{file, title, kind, xlabel, ylabel, series: {label: [[x, y], ...]}}], notes, headline."""
    out: dict[str, Any] = {"name": name, "title": title, "available": True, "reason": None,
                           "settings": "", "tables": [], "plots": [], "notes": [], "headline": {}}
    out.update(fields)
    return out


def unavailable(name: str, title: str, why: str) -> dict[str, Any]:
    """The result of a case that cannot run here, saying why."""
    return result(name, title, available=False, reason=f"not available: {why}")


def bench_module(module: str) -> ModuleType | str:
    """Import a sibling bench script, or say why it cannot be imported."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # a missing capability, a peer not installed, a half-written script
        return f"bench/{module}.py cannot be imported ({type(exc).__name__}: {exc})"


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def us(values: list[float]) -> str:
    """Seconds as 'median us (min-max)'."""
    med, lo, hi = spread(values)
    return f"{med * 1e6:,.1f} ({lo * 1e6:,.1f}-{hi * 1e6:,.1f})"
