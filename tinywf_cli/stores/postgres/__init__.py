"""The PostgreSQL store: ``--store postgresql://user@host:port/dbname[?schema=NAME]``.

- ``connection``  the URL, the schema, connecting with tinywf's settings, error mapping;
- ``schema``      the tables, their migrations, every statement;
- ``store``       ``PostgresStore`` and its sessions (claims with a lease and a fencing epoch);
- ``keeper``      the background thread: heartbeats of held claims, LISTEN for wake-ups.

Importing this package needs psycopg 3 (``pip install "tinywf[postgres]"``); without it the
import fails with a one-line ``BadInput`` that says so.
"""

from tinywf_cli.stores.postgres.connection import require_psycopg

require_psycopg()

from tinywf_cli.stores.postgres.store import DEFAULT_LEASE, PostgresStore  # noqa: E402

__all__ = ["DEFAULT_LEASE", "PostgresStore"]
