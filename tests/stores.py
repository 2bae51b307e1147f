"""The stores every store test runs against, and how to damage each one's data.

``STORE_KINDS`` names them; ``make_store`` builds a fresh, empty one for a test. A store
that needs a server (PostgreSQL) skips its tests with the reason when none answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tinywf_cli.filestore import FileStore
from tinywf_cli.store import MemoryStore, Store

STORE_KINDS = ["memory", "file"]


@contextmanager
def make_store(kind: str, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of ``kind``, removed after the test."""
    if kind == "memory":
        yield MemoryStore()
    elif kind == "file":
        yield FileStore(tmp_path / "state")
    else:
        raise ValueError(kind)


def damage_memory(store: Store, run_id: str) -> None:
    """Give the first slot of a memory store's run a kind no tinywf writes."""
    import marshal

    assert isinstance(store, MemoryStore)
    journal = store._journals[run_id]
    entries = marshal.loads(journal[0])
    for entry in entries:
        if "slot" in entry:
            entry["slot"]["kind"] = "nonsense"
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


DAMAGE: dict[str, Callable[[Store, str], None]] = {"memory": damage_memory, "file": damage_file}
