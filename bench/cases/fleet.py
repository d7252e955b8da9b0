"""Case 6: fleet (see bench/cases/scripts.py)."""

from .scripts import fleet as run

NAME, TITLE = "fleet", "Fleet"
__all__ = ["NAME", "TITLE", "run"]
