"""The PostgreSQL store's schedules: one row per schedule in ``schedules``, held by a claim.

A session of a schedule is a claim on its row, as a run's is (``owner``, ``lease_until`` on
the database's clock, ``epoch`` growing at every claim), held for the milliseconds a change
takes: no transaction stays open meanwhile. Every write is fenced by the epoch, so a process
whose claim ran out and was taken over writes nothing more (``ClaimLost``). ``tick`` looks
only at the schedules nobody holds: another process is deciding the others' slots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tinywf_cli.errors import ClaimLost, ScheduleExists, ScheduleLocked, StorageError
from tinywf_cli.jsonio import dumps
from tinywf_cli.stores.schedules import ScheduleSession, index_of

if TYPE_CHECKING:
    from tinywf_cli.stores.postgres.store import PostgresStore

#: While waiting for a schedule another process holds, look again this often.
POLL = 0.02


class PostgresSchedules:
    """The schedules of a PostgreSQL store."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    def _where(self, name: str) -> str:
        return f"{self.store.target} schedule '{name}'"

    def _parse(self, name: str, text: str) -> dict[str, Any]:
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise StorageError(self._where(name), f"is corrupt: {exc}") from None
        if not isinstance(record, dict):
            raise StorageError(self._where(name), "is corrupt: not a JSON object")
        return record

    @contextmanager
    def open(self, name: str, timeout: float) -> Iterator[ScheduleSession]:
        """Claim the schedule for the block (waiting up to ``timeout`` seconds); release it after.

        A schedule that does not exist gives a session whose ``load`` is None and whose
        ``save`` creates it (ScheduleExists if another process created it meanwhile).
        """
        store = self.store
        params = {"name": name, "owner": store.owner, "lease": store.lease}
        deadline = time.monotonic() + timeout
        while True:
            rows = store._execute("schedule_claim", params, f"claiming schedule '{name}'")
            if rows:
                session = _PgSession(self, name, int(rows[0][0]), self._parse(name, rows[0][1]))
                break
            if not store._execute("schedule_exists", {"name": name}, f"reading schedule '{name}'"):
                session = _PgSession(self, name, None, None)
                break
            if time.monotonic() >= deadline:
                raise ScheduleLocked(name, timeout)
            time.sleep(POLL)
        try:
            yield session
        finally:
            session.end()

    def read(self, name: str) -> dict[str, Any] | None:
        """The document as last saved, without claiming it."""
        rows = self.store._execute("schedule_read", {"name": name}, f"reading schedule '{name}'")
        return self._parse(name, rows[0][0]) if rows else None

    def all(self) -> list[dict[str, Any]]:
        """Every document, by name."""
        rows = self.store._execute("schedule_all", {}, "listing schedules")
        return [self._parse("?", row[0]) for row in rows]

    def due(self, now: datetime) -> list[str]:
        """Names to look at by ``now`` that nobody holds."""
        return [str(row[0]) for row in self.store._execute("schedule_due", {"now": now}, "finding due schedules")]

    def next_at(self) -> datetime | None:
        """The earliest next slot of a schedule not paused."""
        rows = self.store._execute("schedule_next", {}, "finding the next slot")
        value = rows[0][0] if rows else None
        return value if isinstance(value, datetime) else None


class _PgSession:
    """A schedule of a PostgreSQL store, claimed: its epoch fences every write."""

    def __init__(self, schedules: PostgresSchedules, name: str, epoch: int | None,
                 record: dict[str, Any] | None) -> None:
        self.schedules = schedules
        self.name = name
        self.epoch = epoch
        self.record = record

    def load(self) -> dict[str, Any] | None:
        return self.record

    def save(self, record: dict[str, Any]) -> None:
        store = self.schedules.store
        paused, buffered, next_at = index_of(record)
        params = {"name": self.name, "record": dumps(record), "paused": paused, "buffered": buffered,
                  "next_at": next_at, "owner": store.owner, "lease": store.lease, "epoch": self.epoch}
        if self.epoch is None:
            rows = store._execute("schedule_insert", params, f"creating schedule '{self.name}'")
            if not rows:
                raise ScheduleExists(self.name)
            self.epoch = int(rows[0][0])
        elif not store._execute("schedule_save", params, f"saving schedule '{self.name}'"):
            self.epoch = None
            raise ClaimLost(f"schedule {self.name}", store.lease)
        self.record = record

    def delete(self) -> None:
        if self.epoch is None:
            return
        store = self.schedules.store
        if not store._execute("schedule_delete", {"name": self.name, "epoch": self.epoch},
                              f"removing schedule '{self.name}'"):
            self.epoch = None
            raise ClaimLost(f"schedule {self.name}", store.lease)
        self.epoch = None
        self.record = None

    def end(self) -> None:
        if self.epoch is not None:
            epoch, self.epoch = self.epoch, None
            with suppress(StorageError):  # the claim runs out by itself after the lease
                self.schedules.store._execute("schedule_release", {"name": self.name, "epoch": epoch},
                                              f"releasing schedule '{self.name}'")
