"""The public surface: __all__ honest and sorted, stdlib-only import, typed package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import outlast


def test_all_is_sorted_and_complete() -> None:
    assert list(outlast.__all__) == sorted(outlast.__all__)
    for name in outlast.__all__:
        assert hasattr(outlast, name), name
    public = {
        n for n, v in vars(outlast).items()
        if not n.startswith("_") and not isinstance(v, type(outlast)) and n not in {"annotations"}
    }
    assert public <= set(outlast.__all__) | {"__version__"}, public - set(outlast.__all__)


def test_import_loads_only_the_standard_library() -> None:
    # Third-party means: loaded from site-packages (outlast itself aside).
    code = (
        "import sys; before = set(sys.modules); import outlast; "
        "new = [sys.modules[m] for m in set(sys.modules) - before]; "
        "print(sorted(m.__name__ for m in new if 'site-packages' in (getattr(m, '__file__', '') or '') "
        "and not m.__name__.startswith('outlast')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_package_ships_py_typed() -> None:
    assert (Path(outlast.__file__).parent / "py.typed").exists()


def test_public_objects_have_docstrings() -> None:
    for name in outlast.__all__:
        obj = getattr(outlast, name)
        if callable(obj):
            assert obj.__doc__, f"outlast.{name} has no docstring"
