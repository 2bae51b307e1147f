"""The PostgreSQL store: ``--store postgresql://user@host:port/dbname[?schema=NAME]``.

- ``connection``  the URL, the schema, connecting with tinywf's settings, error mapping;
- ``schema``      the tables, their migrations, every statement;
- ``store``       ``PostgresStore`` and its sessions (claims with a lease and a fencing epoch);
- ``keeper``      the background thread: heartbeats of held claims, LISTEN for wake-ups;
- ``libpq``       a small read-only client straight over libpq, for the read commands;
- ``reader``      what the read commands ask of the tables: a run, or every head, in one query.

``PostgresStore`` needs psycopg 3 (``pip install "tinywf[postgres]"``); without it, taking
it from this package fails with a one-line ``BadInput`` that says so. The package itself
imports neither psycopg nor pydantic, so that ``reader`` can do without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinywf_cli.stores.postgres.store import DEFAULT_LEASE, PostgresStore


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'tinywf_cli.stores.postgres' has no attribute {name!r}")
    from tinywf_cli.stores.postgres.connection import require_psycopg

    require_psycopg()
    from tinywf_cli.stores.postgres import store

    value = getattr(store, name)
    globals()[name] = value
    return value


__all__ = ["DEFAULT_LEASE", "PostgresStore"]
