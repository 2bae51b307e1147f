"""Waking a waiter on any host when a run of a PostgreSQL store changes (``tinywf wait``).

A session that changed a run releases it with ``pg_notify(channel, run_id)`` in the same
statement (``schema.py``: ``release``). A watch has a connection of its own that ``LISTEN``s on
the store's channel from before the waiter first reads the run, so no change is missed: the
notification reaches it within the server's round trip, from whichever host the change came.
A connection that breaks is opened again at the next wait (which then reports a possible
change: what was notified meanwhile is gone), and an unreachable server is StoreUnavailable.
"""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from tinywf_cli.stores.postgres.store import PostgresStore


class PostgresWatch:
    """Wake-ups for one run of a PostgreSQL store: its releases after a change, from any process."""

    def __init__(self, store: PostgresStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._listen()

    def _listen(self) -> None:
        import psycopg

        from tinywf_cli.stores.postgres.connection import connect, fail

        conn = connect(self.store.location, self.store.lease, "wait")
        try:
            conn.execute(f'LISTEN "{self.store.location.channel}"')
        except psycopg.Error as exc:
            with suppress(Exception):
                conn.close()
            fail(self.store.location, exc, f"listening for changes of run '{self.run_id}'")
        self.conn = conn

    def __enter__(self) -> PostgresWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait up to ``seconds`` for the run to be released after a change (or ``stop``)."""
        import psycopg

        if self.conn is None or self.conn.closed:
            self._listen()
            return True  # what was notified while it had no connection is gone: look again
        end = time.monotonic() + seconds
        try:
            while not stop.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                for note in self.conn.notifies(timeout=min(left, 1.0)):
                    if note.payload == self.run_id:
                        return True
        except psycopg.Error:
            self.close()
            return True
        return False
