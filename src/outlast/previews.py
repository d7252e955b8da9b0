"""A short, bounded picture of a call's arguments, kept with its journal entry.

A step's arguments are compared on replay by fingerprint only; the preview is what lets a
divergence name the arguments that were recorded beside the ones the code passes now. It is
made once, when the call is first recorded (never on replay), at most :data:`LIMIT`
characters, from ``repr`` with depth and length bounds (:mod:`reprlib`), so a large or deep
value costs little. It is stored in the entry's facts (``meta``), which are sealed when the
App encrypts its payloads.
"""

from __future__ import annotations

import reprlib
from typing import Any

#: The most characters a preview keeps.
LIMIT = 200

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6


def preview(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``(a, b, key=c)`` for a call with those arguments, cut to :data:`LIMIT` characters."""
    try:
        parts = [_REPR.repr(a) for a in args]
        parts += [f"{k}={_REPR.repr(v)}" for k, v in kwargs.items()]
    except Exception as exc:  # a __repr__ that raises must not fail the step
        return f"(<arguments whose repr() failed: {type(exc).__name__}>)"
    text = "(" + ", ".join(parts) + ")"
    return text if len(text) <= LIMIT else text[: LIMIT - 4] + "...)"
