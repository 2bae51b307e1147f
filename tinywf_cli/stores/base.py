"""The store interface the runtime depends on: ``Store``, ``RunSession``, and what they share.

A store keeps, per run, a small *head* (``RunHead``, replaced at every commit) and an
append-only journal of typed entries (``tinywf_cli.stores.journal``). Every change to a run goes
through a :class:`RunSession`, which a store hands out holding the run's lock::

    with store.open(run_id, timeout) as run:
        loaded = run.load()
        run.commit(loaded.head, entries)

What the session knows (the lock, where the journal ends) lives in the session, so a
commit can only come from whoever holds the run. Reading (``head``, ``history``) takes no
lock. Each store keeps its own indexes in step with the heads it commits; nothing outside
a store repairs them. ``tinywf_cli.stores.open_store`` picks the store for a target: a
directory (``FileStore``), a ``postgresql://`` URL, a ``memory://`` one, or a store object.

Beside its runs, every store keeps schedules (``schedules``, a ``ScheduleStore``:
``tinywf_cli.stores.schedules``). A store shared by many processes may offer two more
methods, which ``Runtime`` uses when they are there (``PostgresStore`` does):
``claim_due(now, seen)``, a session holding the next due run nobody holds (or None), for
``tick``; and ``wait_for_work(seconds, stop)``, which a worker waits in between passes and
which returns early when a run changed anywhere.
Every store of tinywf's also offers ``watch(run_id)``: a context manager giving a
:class:`RunWatch`, whose ``wait`` returns as soon as that run may have changed (``tinywf wait``).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from tinywf_cli.model import RunHead
from tinywf_cli.stores.journal import (
    AuditEntry,
    Entry,
    Slot,
)
from tinywf_cli.stores.schedules import ScheduleStore

#: Where running runs sit in the due index: always due, so ``tick`` checks their lock.
RUNNING_DUE = datetime(1970, 1, 1, tzinfo=UTC)

@dataclass
class LoadedRun:
    """A run as the engine needs it: its head and the current visit's slots, in order."""

    head: RunHead
    slots: list[Slot] = field(default_factory=list)


def index_due(head: RunHead) -> datetime | None:
    """When ``tick`` should look at this run: now if running (or ended with a parent not yet
    woken), its earliest due time if waiting, when its ``@on_failure`` methods are owed if
    failed or blocked, or never."""
    if head.status == "running" or wakes_parent(head):
        return RUNNING_DUE
    if head.status == "waiting":
        return head.wake_at
    if owes_alerts(head):
        return head.alert_due or RUNNING_DUE
    return None


def owe_alerts(head: RunHead, hooks: Sequence[str] = ()) -> None:
    """The ``@on_failure`` methods the run owes from now on (none: it owes nothing), each from its
    first attempt, at once."""
    head.alerts, head.alert_attempt, head.alert_due = list(hooks), 0, None


def owes_alerts(head: RunHead) -> bool:
    """Whether this failed or blocked run has ``@on_failure`` methods still to call."""
    return bool(head.alerts) and head.status in ("failed", "blocked")


def wakes_parent(head: RunHead) -> bool:
    """Whether this child run has ended and its parent has not been woken for it yet."""
    return head.parent is not None and not head.parent_woken and head.status in ("finished", "failed", "cancelled")


class RunWatch(Protocol):
    """Wake-ups for one run, from whichever process changes it (``Store.watch``)."""

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait up to ``seconds`` (or until ``stop``) for the run to change; whether it may have.

        A change made after the watch began and before this call returns at once: none is missed.
        """
        ...


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

    def next_due(self, exclude: Collection[str] = ()) -> datetime | None:
        """The earliest time any run will be due (of those not in ``exclude``: a worker's runs in
        flight), or ``None``."""
        ...

    def secret(self, name: str) -> bytes:
        """A random key kept in the store under ``name`` (made on first use, readable by its owner only)."""
        ...

    @property
    def schedules(self) -> ScheduleStore:
        """The store's schedules (``tinywf_cli.stores.schedules``)."""
        ...

    def close(self) -> None:
        """Release what the store holds open (connections); it may be used again after."""
        ...
