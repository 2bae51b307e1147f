"""The store interface the runtime depends on, and the in-memory store.

A store keeps, per run, a small *head* (``RunHead``, replaced at every commit) and an
append-only journal of typed entries (``tinywf_cli.journal``). Every change to a run goes
through a :class:`RunSession`, which a store hands out holding the run's lock::

    with store.open(run_id, timeout) as run:
        loaded = run.load()
        run.commit(loaded.head, entries)

What the session knows (the lock, where the journal ends) lives in the session, so a
commit can only come from whoever holds the run. Reading (``head``, ``history``) takes no
lock. Each store keeps its own indexes in step with the heads it commits; nothing outside
a store repairs them. ``open_store`` picks the store for a target: a directory
(``FileStore``), a ``postgresql://`` URL, or a store object.

A store shared by many processes may offer two more methods, which ``Runtime`` uses when
they are there (``PostgresStore`` does): ``claim_due(now, seen)``, a session holding the
next due run nobody holds (or None), for ``tick``; and ``wait_for_work(seconds, stop)``,
which a worker waits in between passes and which returns early when a run changed anywhere.
"""

from __future__ import annotations

import marshal
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from tinywf_cli.errors import RunExists, RunLocked, RunNotFound, StorageError
from tinywf_cli.journal import (
    AuditEntry,
    BadEntry,
    Entry,
    Slot,
    entry_from_json,
    fold_slots,
    needs_trim,
    trim_history,
    visit_start,
)
from tinywf_cli.model import HEAD, RunHead, head_from_json

#: The head's JSON (bytes), straight from pydantic's serializer: on every commit of a MemoryStore.
_HEAD_TO_JSON = HEAD.serializer.to_json

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
    slots: list[Slot] = field(default_factory=list)


def index_due(head: RunHead) -> datetime | None:
    """When ``tick`` should look at this run: now if running (or ended with a parent not yet
    woken), its earliest due time if waiting, or never."""
    if head.status == "running" or wakes_parent(head):
        return RUNNING_DUE
    if head.status == "waiting":
        return head.wake_at
    return None


def wakes_parent(head: RunHead) -> bool:
    """Whether this child run has ended and its parent has not been woken for it yet."""
    return head.parent is not None and not head.parent_woken and head.status in ("finished", "failed", "cancelled")


class RunSession(Protocol):
    """One run, held: its lock (or claim) is held for as long as the session is open."""

    run_id: str

    def load(self) -> LoadedRun:
        """The head and the current visit's slots; raises RunNotFound or StorageError."""
        ...

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Store a new run; raises RunExists."""
        ...

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Durably replace the head and append ``entries``, atomically; raises StorageError."""
        ...

    def delete(self) -> None:
        """Remove the run and everything kept for it."""
        ...


class Store(Protocol):
    """Where runs live. Every change to a run happens inside ``open(run_id)``."""

    @property
    def target(self) -> str:
        """What names this store for a user: a directory, or a URL without its password."""
        ...

    def open(self, run_id: str, timeout: float, *, create: bool = False) -> AbstractContextManager[RunSession]:
        """A session holding the run's lock; raises RunLocked after ``timeout`` seconds.

        ``create=True`` when the session is to create a new run.
        """
        ...

    def head(self, run_id: str) -> RunHead:
        """The run's head, read without its lock; raises RunNotFound or StorageError."""
        ...

    def load(self, run_id: str) -> LoadedRun:
        """The head and the current visit's slots, read without the run's lock (dry replays)."""
        ...

    def entries(self, run_id: str) -> list[Entry]:
        """Every journal entry of the run, oldest first, read without its lock."""
        ...

    def history(self, run_id: str) -> list[AuditEntry]:
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

    def secret(self, name: str) -> bytes:
        """A random key kept in the store under ``name`` (made on first use, readable by its owner only)."""
        ...

    def close(self) -> None:
        """Release what the store holds open (connections); it may be used again after."""
        ...


def open_store(target: str | Path | Store, *, lease: float | None = None) -> Store:
    """The store a target names: a ``postgresql://`` URL, a directory, or a store object as it is.

    ``lease`` (seconds) is how long a PostgreSQL claim outlives a process that stopped
    renewing it; a directory's locks are the OS's and need none.
    """
    if not isinstance(target, str | Path):
        return target
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        from tinywf_cli.pgstore import DEFAULT_LEASE, PostgresStore

        store: Store = PostgresStore(text, DEFAULT_LEASE if lease is None else lease)
        return store
    from tinywf_cli.filestore import FileStore

    return FileStore(Path(text))


class MemoryStore:
    """A store in memory, for tests and embedding: same semantics, no files.

    Heads and entries are kept serialised, so what is loaded never aliases what the
    engine holds — as with a real store.
    """

    def __init__(self) -> None:
        self._heads: dict[str, bytes] = {}
        # one serialised list of entries per commit (marshal: C-fast; entries are JSON values);
        # the current visit starts at (commit, entry)
        self._journals: dict[str, list[bytes]] = {}
        self._visit_start: dict[str, tuple[int, int]] = {}
        self._due: dict[str, datetime] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._secrets: dict[str, bytes] = {}
        self._logs: dict[str, int] = {}  # audit entries kept, for history_limit
        self._guard = threading.Lock()

    @property
    def target(self) -> str:
        """``memory``: runs of this store live in this process only."""
        return "memory"

    @contextmanager
    def open(self, run_id: str, timeout: float, *, create: bool = False) -> Iterator[RunSession]:
        """Hold the run's in-process lock."""
        with self._guard:
            lock = self._locks.setdefault(run_id, threading.Lock())
        if not lock.acquire(blocking=timeout != 0, timeout=timeout if timeout > 0 else -1):
            raise RunLocked(run_id, timeout)
        try:
            yield _MemorySession(self, run_id)
        finally:
            lock.release()

    def _commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        run_id = head.run_id
        journal = self._journals[run_id]
        if entries:
            encoded = [e.to_json() for e in entries]
            start = visit_start(list(entries))
            if start or "visit" in encoded[0]:
                self._visit_start[run_id] = (len(journal), start)
            journal.append(marshal.dumps(encoded))
            logs = self._logs[run_id] = self._logs.get(run_id, 0) + sum(1 for e in entries if type(e) is AuditEntry)
            if needs_trim(logs, head.history_limit):
                assert head.history_limit is not None
                kept, dropped = trim_history(self._entries(run_id), head.history_limit)
                head.dropped_logs += dropped
                self._journals[run_id] = [marshal.dumps([e.to_json() for e in kept])]
                self._visit_start[run_id] = (0, visit_start(kept))
                self._logs[run_id] = head.history_limit
        self._heads[run_id] = _HEAD_TO_JSON(head)
        due = index_due(head)
        if due is None:
            self._due.pop(run_id, None)
        else:
            self._due[run_id] = due

    def _entries(self, run_id: str, commit: int = 0) -> list[Entry]:
        journal = self._journals.get(run_id)
        if journal is None:
            raise RunNotFound(run_id)
        return [entry_from_json(e) for data in journal[commit:] for e in marshal.loads(data)]

    def head(self, run_id: str) -> RunHead:
        """Just the head."""
        text = self._heads.get(run_id)
        if text is None:
            raise RunNotFound(run_id)
        return head_from_json(text)

    def load(self, run_id: str) -> LoadedRun:
        """Head and current visit's slots."""
        head = self.head(run_id)
        commit, position = self._visit_start.get(run_id, (0, 0))
        try:
            return LoadedRun(head, fold_slots(self._entries(run_id, commit)[position:]))
        except BadEntry as exc:
            raise StorageError(f"memory:{run_id}", f"is corrupt: {exc}") from None

    def entries(self, run_id: str) -> list[Entry]:
        """All entries, oldest first."""
        return self._entries(run_id)

    def history(self, run_id: str) -> list[AuditEntry]:
        """All audit entries."""
        return [e for e in self._entries(run_id) if type(e) is AuditEntry]

    def run_ids(self) -> list[str]:
        """Every run id."""
        return list(self._heads)

    def due(self, now: datetime) -> list[str]:
        """Runs due by ``now``, earliest first."""
        return [r for r, when in sorted(self._due.items(), key=lambda kv: kv[1]) if when <= now]

    def next_due(self) -> datetime | None:
        """Earliest due time."""
        return min(self._due.values(), default=None)

    def secret(self, name: str) -> bytes:
        """A random key, made on first use."""
        with self._guard:
            return self._secrets.setdefault(name, os.urandom(32))

    def close(self) -> None:
        """Nothing to release."""


class _MemorySession:
    """A run of a ``MemoryStore``, held."""

    def __init__(self, store: MemoryStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id

    def load(self) -> LoadedRun:
        """Head and current visit's slots."""
        return self.store.load(self.run_id)

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Store a new run."""
        if head.run_id in self.store._heads:
            raise RunExists(head.run_id)
        self.store._journals[head.run_id] = []
        self.store._commit(head, entries)

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Replace the head, append the entries."""
        self.store._commit(head, entries)

    def delete(self) -> None:
        """Forget the run."""
        store = self.store
        if store._heads.pop(self.run_id, None) is None:
            raise RunNotFound(self.run_id)
        store._journals.pop(self.run_id, None)
        store._visit_start.pop(self.run_id, None)
        store._logs.pop(self.run_id, None)
        store._due.pop(self.run_id, None)
