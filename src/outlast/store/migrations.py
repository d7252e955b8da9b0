"""Ordered schema migrations with a version table, shared by every backend.

Each backend lists its migrations as ``Migration(version, description, statements)`` in
ascending order. :func:`apply` runs the ones newer than the stored version, each in its own
transaction together with the version bump, under a lock the backend provides, so several
processes opening one database at once migrate it exactly once. A database newer than this
code is refused rather than used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: ``statements`` run in order in one transaction."""

    version: int
    description: str
    statements: tuple[str, ...]


class MigrationTarget(Protocol):
    """What a backend gives :func:`apply`: a locked transaction and statement execution."""

    def current_version(self) -> int:
        """The applied version (0 for an empty database); called inside the lock."""

    def execute(self, sql: str) -> None:
        """Run one statement inside the current transaction."""

    def set_version(self, version: int, description: str) -> None:
        """Record that ``version`` is applied, inside the current transaction."""


def apply(
    target: MigrationTarget,
    migrations: Sequence[Migration],
    locked_transaction: Callable[[], object],
    url: str,
) -> int:
    """Bring the schema up to the newest migration; return the resulting version.

    ``locked_transaction()`` must return a context manager that begins a transaction holding
    a lock that excludes other migrators, and commits on success.
    """
    versions = [m.version for m in migrations]
    if versions != sorted(versions) or len(set(versions)) != len(versions):
        raise ConfigurationError("migrations must have distinct, ascending versions")
    newest = versions[-1] if versions else 0
    for migration in migrations:
        with locked_transaction():  # type: ignore[attr-defined]
            current = target.current_version()
            if current > newest:
                raise ConfigurationError(
                    f"the database at {url} has schema version {current}, newer than this "
                    f"outlast supports ({newest}); upgrade outlast"
                )
            if migration.version <= current:
                continue
            for sql in migration.statements:
                target.execute(sql)
            target.set_version(migration.version, migration.description)
    return newest
