"""The stores every store test runs against, and how to damage each one's data.

``STORE_KINDS`` names them; ``make_store`` builds a fresh, empty one for a test. A store
that needs a server (PostgreSQL) skips its tests with the reason when none answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pgserver import fresh_url

from tinywf_cli.stores.base import Store
from tinywf_cli.stores.files.store import FileStore
from tinywf_cli.stores.memory import MemoryStore

STORE_KINDS = ["memory", "file", "postgres"]


@contextmanager
def make_store(kind: str, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of ``kind``, removed after the test."""
    if kind == "memory":
        yield MemoryStore()
    elif kind == "file":
        yield FileStore(tmp_path / "state")
    elif kind == "postgres":
        from tinywf_cli.stores.postgres import PostgresStore

        with fresh_url() as url:
            store = PostgresStore(url, lease=5)
            try:
                yield store
            finally:
                store.close()
    else:
        raise ValueError(kind)


def damage_memory(store: Store, run_id: str) -> None:
    """Give the first slot of a memory store's run a kind no tinywf writes."""
    import marshal

    assert isinstance(store, MemoryStore)
    journal = store._journals[run_id]
    entries = marshal.loads(journal[0])
    for entry in entries:
        if entry[0] == 1:  # a slot entry: (1, slot)
            entry[1]["kind"] = "nonsense"
    journal[0] = marshal.dumps(entries)


def damage_file(store: Store, run_id: str) -> None:
    """Give the first slot in a file record's tail a due_at that is not a time."""
    assert isinstance(store, FileStore)
    path = store.record_path(run_id)
    record = json.loads(path.read_bytes())
    for entry in record["tail"]:
        if "slot" in entry:
            entry["slot"]["due_at"] = "not a time"
    path.write_text(json.dumps(record))


def damage_postgres(store: Store, run_id: str) -> None:
    """Give the first slot in a run's journal rows a status no tinywf writes."""
    import psycopg

    from tinywf_cli.stores.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    with psycopg.connect(store.location.conninfo, autocommit=True) as conn:
        conn.execute(f'UPDATE "{store.location.schema}".journal '
                     "SET entry = json_build_object('slot', (entry->'slot')::jsonb || '{\"status\": \"odd\"}')::json "
                     "WHERE run_id = %s AND kind = 'slot'", (run_id,))


DAMAGE: dict[str, Callable[[Store, str], None]] = {
    "memory": damage_memory, "file": damage_file, "postgres": damage_postgres}
