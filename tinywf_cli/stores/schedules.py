"""Schedules as stores keep them: one small JSON document per schedule, changed under its own lock.

Every store offers ``store.schedules``, a ``ScheduleStore``: a schedule is read without a
lock, and changed only inside ``open(name, timeout)``, which holds the schedule (the file
store: its ``flock``; PostgreSQL: a claim on its row, with a lease; memory: a lock) for
the few milliseconds a change takes — never while a run advances. Of two processes that
look at the same schedule at once, one holds it and the other passes it by (``tick``
opens with timeout 0), so its slots are decided once; and because the run of a slot has
an id of its own, a slot that two holders decided anyway (a lease that ran out) still
starts once.

A store indexes each document by three of its fields, which it reads itself: ``paused``,
``buffered`` (a slot waits for the previous run to end: look at it at every pass) and
``next_at`` (the next slot; ``None``: none left). Nothing else in a document is the
store's business (``tinywf_cli.schedules.record`` says what it holds).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, Protocol

from tinywf_cli.clock import parse_instant
from tinywf_cli.errors import BadInput, ScheduleLocked
from tinywf_cli.jsonio import dumps


class ScheduleSession(Protocol):
    """One schedule, held: its lock (or claim) is held while the session is open."""

    name: str

    def load(self) -> dict[str, Any] | None:
        """The schedule's document, or None when there is no such schedule."""
        ...

    def save(self, record: dict[str, Any]) -> None:
        """Durably replace (or create) the document, atomically."""
        ...

    def delete(self) -> None:
        """Remove the schedule."""
        ...


class ScheduleStore(Protocol):
    """Where a store keeps its schedules."""

    def open(self, name: str, timeout: float) -> AbstractContextManager[ScheduleSession]:
        """A session holding the schedule; ScheduleLocked after ``timeout`` seconds."""
        ...

    def read(self, name: str) -> dict[str, Any] | None:
        """The document as last saved (None: no such schedule), read without the lock."""
        ...

    def all(self) -> list[dict[str, Any]]:
        """Every document, by name."""
        ...

    def due(self, now: datetime) -> list[str]:
        """The schedules to look at by ``now``: not paused, and a slot buffered or ``next_at`` come."""
        ...

    def next_at(self) -> datetime | None:
        """The earliest ``next_at`` of a schedule that is not paused (a worker's next wake-up)."""
        ...


def index_of(record: dict[str, Any]) -> tuple[bool, bool, datetime | None]:
    """What a store indexes a document by: ``(paused, buffered, next_at)``."""
    next_at = record.get("next_at")
    try:
        when = parse_instant(next_at) if isinstance(next_at, str) else None
    except BadInput:
        when = None
    return bool(record.get("paused")), record.get("buffered") is not None, when


def is_due(index: tuple[bool, bool, datetime | None], now: datetime) -> bool:
    """Whether a schedule indexed so is to be looked at by ``now``."""
    paused, buffered, next_at = index
    return not paused and (buffered or (next_at is not None and next_at <= now))


class MemorySchedules:
    """The schedules of a ``MemoryStore``: documents as JSON text, a lock per schedule."""

    def __init__(self) -> None:
        self._records: dict[str, str] = {}
        self._index: dict[str, tuple[bool, bool, datetime | None]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def open(self, name: str, timeout: float) -> Iterator[ScheduleSession]:
        """Hold the schedule's lock for the block."""
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        acquired = lock.acquire(timeout=timeout) if timeout > 0 else lock.acquire(blocking=False)
        if not acquired:
            raise ScheduleLocked(name, timeout)
        try:
            yield _MemorySession(self, name)
        finally:
            lock.release()

    def read(self, name: str) -> dict[str, Any] | None:
        """The document, parsed afresh (nothing aliases what is kept)."""
        text = self._records.get(name)
        return None if text is None else dict(json.loads(text))

    def all(self) -> list[dict[str, Any]]:
        """Every document, by name."""
        return [json.loads(text) for _, text in sorted(self._records.items())]

    def due(self, now: datetime) -> list[str]:
        """Names to look at by ``now``."""
        return sorted(name for name, index in list(self._index.items()) if is_due(index, now))

    def next_at(self) -> datetime | None:
        """The earliest next slot of a schedule not paused."""
        return min((i[2] for i in list(self._index.values()) if not i[0] and i[2] is not None), default=None)


class _MemorySession:
    def __init__(self, schedules: MemorySchedules, name: str) -> None:
        self.schedules = schedules
        self.name = name

    def load(self) -> dict[str, Any] | None:
        return self.schedules.read(self.name)

    def save(self, record: dict[str, Any]) -> None:
        self.schedules._records[self.name] = dumps(record)
        self.schedules._index[self.name] = index_of(record)

    def delete(self) -> None:
        self.schedules._records.pop(self.name, None)
        self.schedules._index.pop(self.name, None)


