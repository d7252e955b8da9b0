"""What an App owns is closed: at interpreter exit quietly, and with a warning when it is dropped.

:class:`~outlast.App` registers itself here when it opens its store (``App._track``). The set
holds apps weakly, so being open does not keep an app alive.
"""

from __future__ import annotations

import atexit
import contextlib
import warnings
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import App
    from .lease import Heartbeat

open_apps: weakref.WeakSet[App] = weakref.WeakSet()


@atexit.register
def close_open_apps() -> None:
    """Close apps still open at interpreter exit: their stores flush and their heartbeats stop."""
    for app in list(open_apps):
        # Exiting anyway: one app's failure must not keep the others open.
        with contextlib.suppress(Exception):
            app.close()


def dropped_open(label: str, heartbeat: Heartbeat | None) -> None:
    """An app was garbage-collected without close(): stop its heartbeat, then say so."""
    if heartbeat is not None:
        heartbeat.stop()
    warnings.warn(
        f"{label} was garbage-collected without close(); its heartbeat was stopped and its "
        "store closes once nothing uses it. Call app.close() when done, or use "
        "`with App(...) as app:`",
        ResourceWarning,
        stacklevel=2,
    )
