"""Case 4: hibernation (see bench/cases/scripts.py)."""

from .scripts import hibernation as run

NAME, TITLE = "hibernation", "Hibernation"
__all__ = ["NAME", "TITLE", "run"]
