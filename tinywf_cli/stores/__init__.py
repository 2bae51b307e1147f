"""Where runs live: the ``Store`` a runtime talks to (``base``), and the stores that keep runs.

- ``base``: the ``Store`` and ``RunSession`` protocols and what every store shares;
  ``journal``: the typed entries every store appends.
- ``memory``: ``MemoryStore``, for tests and embedding.
- ``files``: ``FileStore``, a run per JSON record in a state directory.
- ``postgres``: ``PostgresStore``, runs shared by many processes and hosts.

``open_store(target)`` here picks the store a target names; it imports only the store it
opens (a command on a state directory never imports psycopg). ``shown_target(target)`` is
the target as messages show it (never a password).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from tinywf_cli.errors import StoreNotFound

if TYPE_CHECKING:
    from tinywf_cli.stores.base import Store

#: The URL schemes of stores: ``postgresql://`` (and its alias) and ``memory://`` (a MemoryStore of
#: this process, by the target it gave).
STORE_SCHEMES = ("postgresql", "postgres", "memory")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(//)?")


def open_store(target: str | Path | Store, *, lease: float | None = None) -> Store:
    """The store a target names: a ``postgresql://`` URL, a ``memory://`` target of a
    ``MemoryStore`` of this process, a directory, or a store object as it is.

    ``lease`` (seconds) is how long a PostgreSQL claim outlives a process that stopped
    renewing it; a directory's locks are the OS's and need none. A string that looks like a
    URL but names no kind of store (``postgresq://…``, ``postgresql:/…``) is refused
    (StoreNotFound), never taken for a directory to make.
    """
    if not isinstance(target, str | Path):
        return target
    text = str(target)
    scheme = _SCHEME.match(text) if isinstance(target, str) else None
    if scheme is not None and (scheme.group(2) or scheme.group(1).lower() in STORE_SCHEMES):
        kind = scheme.group(1).lower()
        if scheme.group(2) is None or kind not in STORE_SCHEMES:
            shown = re.sub(r"^([^/]*//[^:/@]*):[^@/]*@", r"\1:***@", text)  # never a password
            raise StoreNotFound(shown, "not a store: name a directory or a postgresql://user@host:port/dbname URL")
        if kind == "memory":
            from tinywf_cli.stores.memory import MemoryStore

            return MemoryStore.named(text)
        from tinywf_cli.stores.postgres import DEFAULT_LEASE, PostgresStore

        store: Store = PostgresStore(text, DEFAULT_LEASE if lease is None else lease)
        return store
    from tinywf_cli.stores.files.store import FileStore

    return FileStore(Path(text))


def shown_target(target: str) -> str:
    """A store target as messages show it: a PostgreSQL URL without its password (as
    ``PostgresStore.target``), anything else as it is."""
    if target[:13].lower().startswith(("postgresql://", "postgres://")):
        from tinywf_cli.stores.postgres.connection import parse_target

        return parse_target(target).shown
    return target
