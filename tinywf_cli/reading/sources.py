"""The read commands' way in: the read path of a store target, when it has one.

``read_from(target, read)`` calls ``read(source)`` on the source the target names — a
state directory (``files``) or a PostgreSQL URL (``database``), each module imported
only for its own kind of target — and closes it; it returns None when the full path
(``Runtime``) must answer instead: another kind of store, or a record only the full path
may judge. ``read_store(store, read)`` does the same for a store object already open.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from tinywf_cli.reading.documents import Fallback, RunRows, RunView

if TYPE_CHECKING:
    from tinywf_cli.filters import RunFilter
    from tinywf_cli.stores.base import Store

T = TypeVar("T")
#: The URL schemes the read path reads (any other URL is the full path's).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class Source(Protocol):
    """Where ``show`` and ``list`` read runs on the read path."""

    def show(self, run_id: str, last: int | None) -> RunView:
        """The run ``show`` prints; Fallback when the full path must read it."""

    def list_runs(self, select: RunFilter) -> RunRows:
        """The runs ``select`` picks, newest first; Fallback when the full path must list them."""

    def close(self) -> None:
        """Release what the source holds open."""


def source_of(target: str) -> Source:
    """The read path of a store target (a directory, or a ``postgresql://`` URL); Fallback for any
    other URL."""
    if "://" not in target:
        from tinywf_cli.reading.files import StateDirectory

        return StateDirectory(Path(target))
    if target[:13].lower().startswith(POSTGRES_SCHEMES):
        from tinywf_cli.reading.database import Database

        return Database(target)
    raise Fallback


def read_from(target: str, read: Callable[[Source], T]) -> T | None:
    """``read(source)`` on the read path of ``target``, closing the source after; None when the
    full path must answer."""
    try:
        source = source_of(target)
        try:
            return read(source)
        finally:
            source.close()
    except Fallback:
        return None


def read_store(store: Store, read: Callable[[Source], T]) -> T | None:
    """``read(source)`` on the read path of a store a process holds open (``tinywf serve``'s):
    its state directory, or its database through a session of the reader's own for this call;
    None when the full path must answer."""
    from tinywf_cli.stores.files.store import FileStore
    from tinywf_cli.stores.postgres.store import PostgresStore  # psycopg is imported only to connect

    try:
        if isinstance(store, FileStore):
            from tinywf_cli.reading.files import StateDirectory

            source: Source = StateDirectory(store.root)
        elif isinstance(store, PostgresStore):
            from tinywf_cli.reading.database import Database

            source = Database(store.url, store)
        else:
            return None
        try:
            return read(source)
        finally:
            source.close()
    except Fallback:
        return None
