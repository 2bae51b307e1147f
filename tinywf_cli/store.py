"""The store interface the engine and runtime depend on, and the in-memory store.

A store keeps, per run, a small *head* (``RunHead``, rewritten at every checkpoint) and an
append-only *journal* of entries: ``{"log": {...}}`` audit entries, ``{"slot": {...}}``
records of the current step visit, and ``{"visit": n}`` markers where a visit begins.
Loading a run returns the head and the slots since the last visit marker, so a
checkpoint never rewrites the audit log or past visits.

A second backend (say PostgreSQL) implements :class:`Store`; nothing else changes.
"""

from __future__ import annotations

import marshal
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from tinywf_cli.errors import RunExists, RunLocked, RunNotFound
from tinywf_cli.model import RunHead, head_from_json, head_to_json

#: A journal entry: exactly one of ``{"log": …}``, ``{"slot": …}``, ``{"visit": n}``.
Entry = dict[str, Any]

#: Where running runs sit in the due index: always due, so ``tick`` checks their lock.
RUNNING_DUE = datetime(1970, 1, 1, tzinfo=UTC)

#: The contract's run-id charset. ASCII classes and ``fullmatch``: no ``ü``, no trailing newline.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)


def is_run_id(run_id: object) -> bool:
    """Whether ``run_id`` is a run id a store may turn into a file name or key."""
    return isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None


@dataclass
class LoadedRun:
    """A run as the engine needs it: its head and the current visit's slots, in order."""

    head: RunHead
    slots: list[dict[str, Any]] = field(default_factory=list)


def index_due(head: RunHead) -> datetime | None:
    """When ``tick`` should look at this run: now if running, its earliest due time, or never."""
    if head.status == "running":
        return RUNNING_DUE
    if head.status == "waiting":
        return head.wake_at
    return None


def fold_slots(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """The current visit's slots from journal entries after the visit marker (later wins)."""
    slots: list[dict[str, Any]] = []
    for entry in entries:
        slot = entry.get("slot")
        if slot is None:
            continue
        index = slot["index"]
        if index == len(slots):
            slots.append(slot)
        elif index < len(slots):
            slots[index] = slot
        else:
            raise ValueError(f"slot {index} recorded before slot {len(slots)}")
    return slots


class Store(Protocol):
    """Where runs live. Every change to a run happens inside ``lock(run_id)``."""

    def lock(self, run_id: str, timeout: float, *, create: bool = False) -> Any:
        """A context manager holding the run's lock; raises RunLocked after ``timeout`` s.

        ``create=True`` when the lock guards the creation of a new run.
        """
        ...

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Store a new run (under its lock); raises RunExists."""
        ...

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Durably replace the head and append ``entries`` to the journal, atomically."""
        ...

    def load(self, run_id: str) -> LoadedRun:
        """The head and current visit's slots; raises RunNotFound or StorageError."""
        ...

    def head(self, run_id: str) -> RunHead:
        """Just the head (no journal read); raises RunNotFound or StorageError."""
        ...

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """Every audit entry of the run, oldest first."""
        ...

    def run_ids(self) -> list[str]:
        """The ids of every stored run (readable or not)."""
        ...

    def due(self, now: datetime) -> list[str]:
        """Ids of runs to look at by ``now`` (earliest first): due timers, retries, timeouts, running."""
        ...

    def next_due(self) -> datetime | None:
        """The earliest time any run will be due, or ``None``."""
        ...

    def sync_index(self, head: RunHead) -> None:
        """Make the due index agree with ``head`` (drop stale entries); called under the lock."""
        ...

    def forget(self, run_id: str) -> None:
        """Drop what a run without a record left behind (index entries of a create that never
        committed); called under the run's lock once ``load`` said RunNotFound."""
        ...


class MemoryStore:
    """A store in memory, for tests and embedding: same semantics, no files.

    Heads and entries are kept serialised, so what is loaded never aliases what the
    engine holds — as with a real store.
    """

    def __init__(self) -> None:
        self._heads: dict[str, str] = {}
        # one serialised list of entries per commit (marshal: C-fast, and the engine only hands
        # over JSON values); the visit starts at (commit, entry)
        self._journals: dict[str, list[bytes]] = {}
        self._visit_start: dict[str, tuple[int, int]] = {}
        self._due: dict[str, datetime] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._secrets: dict[str, bytes] = {}

    @contextmanager
    def lock(self, run_id: str, timeout: float, *, create: bool = False) -> Iterator[None]:
        """Hold the run's in-process lock."""
        with self._guard:
            lock = self._locks.setdefault(run_id, threading.Lock())
        if not lock.acquire(blocking=timeout != 0, timeout=timeout if timeout > 0 else -1):
            raise RunLocked(run_id, timeout)
        try:
            yield
        finally:
            lock.release()

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Store a new run."""
        if head.run_id in self._heads:
            raise RunExists(head.run_id)
        self._journals[head.run_id] = []
        self.commit(head, entries)

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Replace the head, append the entries."""
        journal = self._journals[head.run_id]
        if entries:
            for position, entry in enumerate(entries):
                if "visit" in entry:
                    self._visit_start[head.run_id] = (len(journal), position)
            journal.append(marshal.dumps(list(entries)))
        self._heads[head.run_id] = head_to_json(head)
        self.sync_index(head)

    def load(self, run_id: str) -> LoadedRun:
        """Head and current visit's slots."""
        head = self.head(run_id)
        commit, position = self._visit_start.get(run_id, (0, 0))
        entries = [e for data in self._journals[run_id][commit:] for e in marshal.loads(data)]
        return LoadedRun(head, fold_slots(entries[position:]))

    def head(self, run_id: str) -> RunHead:
        """Just the head."""
        text = self._heads.get(run_id)
        if text is None:
            raise RunNotFound(run_id)
        return head_from_json(text)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """All audit entries."""
        if run_id not in self._journals:
            raise RunNotFound(run_id)
        entries = (e for data in self._journals[run_id] for e in marshal.loads(data))
        return [e["log"] for e in entries if "log" in e]

    def run_ids(self) -> list[str]:
        """Every run id."""
        return list(self._heads)

    def due(self, now: datetime) -> list[str]:
        """Runs due by ``now``, earliest first."""
        return [r for r, when in sorted(self._due.items(), key=lambda kv: kv[1]) if when <= now]

    def next_due(self) -> datetime | None:
        """Earliest due time."""
        return min(self._due.values(), default=None)

    def sync_index(self, head: RunHead) -> None:
        """Make the index agree with the head."""
        due = index_due(head)
        if due is None:
            self._due.pop(head.run_id, None)
        else:
            self._due[head.run_id] = due

    def forget(self, run_id: str) -> None:
        """Drop the index entry of a run that has no head."""
        if run_id not in self._heads:
            self._due.pop(run_id, None)

    def secret(self, name: str) -> bytes:
        """The store's secret ``name`` (32 random bytes), made on first use."""
        with self._guard:
            import secrets

            return self._secrets.setdefault(name, secrets.token_bytes(32))
