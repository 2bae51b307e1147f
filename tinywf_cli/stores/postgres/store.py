"""``PostgresStore``: runs in PostgreSQL, shared by any number of processes on any number of hosts.

A session of a run is a **claim** on its row: ``owner``, ``lease_until`` (the database's
clock, never a host's) and ``epoch``, which grows at every claim. Every write of the
session is fenced by its epoch, so a process that lost its claim — frozen, killed or cut
off past its lease, while another process claimed the run — writes nothing more
(``ClaimLost``). A live claim is kept alive by the keeper's heartbeats
(``tinywf_cli.stores.postgres.keeper``) and by each commit. Each store operation is one statement
on an autocommit connection: no transaction stays open while flow code runs.

Connections are pooled: a statement borrows an idle connection (or opens one when none is
idle) and gives it back when done, so threads that spend their time in actions (``tick
--concurrency 50`` over calls to other services) share the few connections their statements
need instead of opening one each; a connection that failed is closed, not given back. The
keeper has one more. A session is not tied to a connection: one claimed in one thread may be
used in another, one thread at a time (``tick --concurrency`` claims a run where it hands it
over and advances it in a crew thread); each of its statements is its own transaction. The tables are
created, or migrated, by the first process that uses the schema, under an advisory lock
(``schema.py``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tinywf_cli.errors import BadInput, ClaimLost, RunExists, RunLocked, RunNotFound, StorageError, StoreUnavailable
from tinywf_cli.jsonio import dumps
from tinywf_cli.model import RunHead, head_from_json, head_to_json
from tinywf_cli.stores.base import LoadedRun, RunSession, index_due
from tinywf_cli.stores.journal import (
    AuditEntry,
    BadEntry,
    Entry,
    entry_from_json,
    fold_slots,
    last_visit,
    needs_trim,
    visit_start,
)
from tinywf_cli.stores.postgres import schema
from tinywf_cli.stores.postgres.cells import PostgresCells
from tinywf_cli.stores.postgres.connection import DEFAULT_LEASE, Target, connect, fail, parse_target
from tinywf_cli.stores.postgres.keeper import Keeper
from tinywf_cli.stores.postgres.schedules import PostgresSchedules
from tinywf_cli.stores.postgres.watch import PostgresWatch

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("tinywf")

#: While waiting for a claim, look again at least this often (a wake-up may be lost).
CLAIM_POLL = 0.25


class PostgresStore:
    """Runs in a PostgreSQL database: ``PostgresStore("postgresql://user@host/db?schema=tinywf")``.

    ``lease`` is how long a claim outlives a process that stopped renewing it (killed,
    frozen, cut off): after that, another process may take the run over.
    """

    def __init__(self, url: str, lease: float = DEFAULT_LEASE) -> None:
        if not lease > 0:
            raise BadInput(f"the lease must be a positive number of seconds, not {lease!r}")
        self.location: Target = parse_target(url)
        #: The URL as given (its password too: never shown, as ``location.conninfo``).
        self.url = url
        self.lease = float(lease)
        self.sql = schema.statements(self.location.schema)
        #: Who holds a claim: this process, on this host (a new token per store object).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        #: Every open connection, and those of them no statement is using.
        self._connections: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._idle: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._guard = threading.Lock()
        self._migrated = False
        self.keeper = Keeper(self)
        self.cells = PostgresCells(self)
        #: The schedules, in the ``schedules`` table (``tinywf_cli.stores.postgres.schedules``).
        self.schedules = PostgresSchedules(self)

    @property
    def target(self) -> str:
        """The store's URL, without its password."""
        return self.location.shown

    def __repr__(self) -> str:
        return f"PostgresStore({self.target!r}, lease={self.lease:g})"

    # -- connections --------------------------------------------------------------------------

    @contextmanager
    def _borrowed(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """An idle connection of the pool (a new one when none is idle), given back afterwards
        unless it failed or was dropped meanwhile."""
        conn = self._take()
        try:
            yield conn
        finally:
            with self._guard:
                if conn in self._connections and not conn.closed and not conn.broken:
                    self._idle.append(conn)

    def _take(self) -> psycopg.Connection[tuple[Any, ...]]:
        with self._guard:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
                self._connections.remove(conn)
        conn = connect(self.location, self.lease, "main")
        with self._guard:
            self._connections.append(conn)
        if not self._migrated:
            try:
                self._migrate(conn)
            except BaseException:
                self._drop(conn)
                raise
            self._migrated = True
        return conn

    def _drop(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        with self._guard:
            if conn in self._connections:
                self._connections.remove(conn)
            if conn in self._idle:
                self._idle.remove(conn)
        with suppress(Exception):
            conn.close()

    def _execute(self, name: str, params: dict[str, Any], doing: str) -> list[tuple[Any, ...]]:
        """Run statement ``name``; its rows. Driver errors become StoreUnavailable/StorageError."""
        import psycopg

        with self._borrowed() as conn:
            try:
                cursor = conn.execute(self.sql[name], params)
                return cursor.fetchall() if cursor.description is not None else []
            except psycopg.Error as exc:
                if conn.broken or conn.closed or isinstance(exc, psycopg.OperationalError):
                    self._drop(conn)  # the next statement starts from a new connection
                fail(self.location, exc, doing)

    def _rowcount(self, name: str, params: dict[str, Any], doing: str) -> int:
        import psycopg

        with self._borrowed() as conn:
            try:
                return conn.execute(self.sql[name], params).rowcount
            except psycopg.Error as exc:
                self._drop(conn)
                fail(self.location, exc, doing)

    def _migrate(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Create or migrate the tables: a fast read when they are current, else one transaction
        under an advisory lock (concurrent first uses would race on CREATE ... IF NOT EXISTS)."""
        import psycopg

        try:
            row = conn.execute(self.sql["version"]).fetchone()
            if row is not None and row[0] == schema.SCHEMA_VERSION:
                return
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            pass
        except psycopg.Error as exc:
            fail(self.location, exc, "reading the schema version")
        name = schema.quoted(self.location.schema)
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '30s'")
                conn.execute("SET LOCAL statement_timeout = '120s'")
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                             (f"tinywf-migrate:{self.location.schema}",))
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
                conn.execute(f"CREATE TABLE IF NOT EXISTS {name}.schema_version (version int NOT NULL)")
                row = conn.execute(f"SELECT version FROM {name}.schema_version FOR UPDATE").fetchone()
                version = 0 if row is None else int(row[0])
                if version > schema.SCHEMA_VERSION:
                    raise StorageError(self.target, f"its tables are at version {version}, newer than this "
                                                    f"tinywf knows ({schema.SCHEMA_VERSION}): upgrade tinywf")
                for step in range(version + 1, schema.SCHEMA_VERSION + 1):
                    conn.execute(schema.migration(self.location.schema, step).encode())
                if row is None:
                    conn.execute(f"INSERT INTO {name}.schema_version VALUES (%s)", (schema.SCHEMA_VERSION,))
                elif version != schema.SCHEMA_VERSION:
                    conn.execute(f"UPDATE {name}.schema_version SET version = %s", (schema.SCHEMA_VERSION,))
        except psycopg.Error as exc:
            fail(self.location, exc, "creating its tables")

    # -- sessions --------------------------------------------------------------------------------

    @contextmanager
    def open(self, run_id: str, timeout: float, *, create: bool = False) -> Iterator[RunSession]:
        """Claim the run for one session (waiting up to ``timeout`` seconds); release it after.

        A run that does not exist gives a session whose ``load`` raises RunNotFound and
        whose ``create`` stores it (born claimed).
        """
        session = PostgresRunSession(self, run_id, self._claim(run_id, timeout))
        try:
            yield session
        finally:
            session.end()

    def claim_due(self, now: datetime, seen: Collection[str] = ()) -> PostgresRunSession | None:
        """A session holding the next run due by ``now`` that nobody holds (and that is not in
        ``seen``), or None: ``tick`` takes its runs this way, one claim per statement, never
        waiting for a run another process is claiming (``FOR UPDATE SKIP LOCKED``)."""
        rows = self._execute("claim_due", {"now": now, "seen": list(seen), "owner": self.owner,
                                           "lease": self.lease}, "claiming a due run")
        if not rows:
            return None
        return PostgresRunSession(self, str(rows[0][0]), int(rows[0][1]))

    def _claim(self, run_id: str, timeout: float) -> int | None:
        """The epoch of a new claim on the run, or None when there is no such run; RunLocked after
        ``timeout`` while another process holds it."""
        params = {"run_id": run_id, "owner": self.owner, "lease": self.lease}
        epoch, holder = self._try_claim(run_id, params)
        if epoch is not None or not holder:
            return epoch
        if timeout <= 0:
            raise RunLocked(run_id, timeout)
        return self._wait_for_claim(run_id, timeout, params)

    def _try_claim(self, run_id: str, params: dict[str, Any]) -> tuple[int | None, list[Any]]:
        """One try: ``(epoch, [])`` with the claim, ``(None, [])`` when there is no such run, or
        ``(None, holder rows)`` while another process holds it."""
        rows = self._execute("claim", params, f"claiming run '{run_id}'")
        if rows:
            return int(rows[0][0]), []
        return None, self._execute("holder", {"run_id": run_id}, f"reading who holds run '{run_id}'")

    def _wait_for_claim(self, run_id: str, timeout: float, params: dict[str, Any]) -> int | None:
        import psycopg

        deadline = time.monotonic() + timeout
        channel = self.location.channel
        with self._borrowed() as conn:  # held while waiting: it is the one that listens
            try:
                conn.execute(f'LISTEN "{channel}"')
                while True:
                    # claim again right after LISTEN: the holder may have released in between
                    epoch, holder = self._try_claim(run_id, params)
                    if epoch is not None or not holder:
                        return epoch
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RunLocked(run_id, timeout)
                    lease_left = float(holder[0][1] or 0.0)
                    for note in conn.notifies(timeout=max(min(left, CLAIM_POLL, max(lease_left, 0.01)), 0.001)):
                        if note.payload == run_id:
                            break
            except psycopg.Error as exc:
                self._drop(conn)
                fail(self.location, exc, f"waiting for run '{run_id}'")
            finally:
                if not conn.closed:
                    try:
                        conn.execute(f'UNLISTEN "{channel}"')
                    except psycopg.Error:
                        self._drop(conn)  # not given back still listening

    def _release(self, run_id: str, epoch: int, wake: bool) -> None:
        try:
            self._execute("release" if wake else "release_quietly",
                          {"run_id": run_id, "epoch": epoch, "channel": self.location.channel},
                          f"releasing run '{run_id}'")
        except StorageError as exc:  # the claim runs out by itself after the lease
            log.warning("tinywf: could not release run '%s' (%s); it is free again after its %gs lease",
                        run_id, exc.message, self.lease)

    # -- reading -----------------------------------------------------------------------------------

    def _parse_head(self, run_id: str, text: str) -> RunHead:
        from pydantic import ValidationError

        try:
            return head_from_json(text)
        except ValidationError as exc:
            raise StorageError(self._where(run_id), f"is corrupt: {_first_error(exc)}") from None

    def _parse_entries(self, run_id: str, text: str) -> list[Entry]:
        try:
            return [entry_from_json(item) for item in json.loads(text)]
        except (BadEntry, ValueError) as exc:
            raise StorageError(self._where(run_id), f"has a corrupt journal: {exc}") from None

    def _where(self, run_id: str) -> str:
        return f"{self.target} run '{run_id}'"

    def head(self, run_id: str) -> RunHead:
        """The run's head, read without claiming it."""
        rows = self._execute("head", {"run_id": run_id}, f"reading run '{run_id}'")
        if not rows:
            raise RunNotFound(run_id)
        return self._parse_head(run_id, rows[0][0])

    def load(self, run_id: str) -> LoadedRun:
        """The head and the current visit's slots, in one snapshot, without claiming the run."""
        rows = self._execute("load", {"run_id": run_id}, f"reading run '{run_id}'")
        if not rows:
            raise RunNotFound(run_id)
        head = self._parse_head(run_id, rows[0][0])
        try:
            return LoadedRun(head, fold_slots(self._parse_entries(run_id, rows[0][1])))
        except BadEntry as exc:
            raise StorageError(self._where(run_id), f"has a corrupt journal: {exc}") from None

    def entries(self, run_id: str) -> list[Entry]:
        """Every journal entry of the run, oldest first."""
        rows = self._execute("entries", {"run_id": run_id}, f"reading run '{run_id}'")
        if not rows:
            raise RunNotFound(run_id)
        return self._parse_entries(run_id, rows[0][0])

    def history(self, run_id: str) -> list[AuditEntry]:
        """Every audit entry of the run, oldest first."""
        rows = self._execute("history", {"run_id": run_id}, f"reading run '{run_id}'")
        if not rows:
            raise RunNotFound(run_id)
        return [e for e in self._parse_entries(run_id, rows[0][0]) if type(e) is AuditEntry]

    def run_ids(self) -> list[str]:
        """Every run id, oldest run first."""
        return [str(row[0]) for row in self._execute("run_ids", {}, "listing runs")]

    def tagged_run_ids(self, tags: Mapping[str, str]) -> list[str]:
        """Ids of the runs whose tags hold all of ``tags`` (by the tags index), oldest run first."""
        return [str(row[0]) for row in self._execute("run_ids_tagged", {"tags": json.dumps(dict(tags))},
                                                     "listing runs")]

    def due(self, now: datetime) -> list[str]:
        """Runs to look at by ``now``: due timers, retries and timeouts, and running runs whose
        process stopped renewing its lease (never a run a live process is advancing)."""
        return [str(row[0]) for row in self._execute("due", {"now": now}, "finding due runs")]

    def next_due(self, exclude: Collection[str] = ()) -> datetime | None:
        """The earliest due time of the runs not in ``exclude``; a run a live process advances
        counts when its lease would end."""
        rows = self._execute("next_due", {"exclude": list(exclude)}, "finding the next due time")
        value = rows[0][0] if rows else None
        return value if isinstance(value, datetime) else None

    def secret(self, name: str) -> bytes:
        """A random key kept in the ``secrets`` table, made on first use (racing processes agree).

        Read from the table at every call (one small query once it exists), so that a key
        deleted there is replaced everywhere at once: ``tinywf serve`` checks links with it.
        """
        rows = self._execute("secret_select", {"name": name}, "reading a key")
        if not rows:
            rows = self._execute("secret_insert", {"name": name, "value": os.urandom(32)}, "storing a key")
        if not rows:  # another process stored it between the two statements
            rows = self._execute("secret_select", {"name": name}, "reading a key")
        return bytes(rows[0][0])

    # -- wake-ups --------------------------------------------------------------------------------

    def wait_for_work(self, seconds: float, stop: threading.Event) -> None:
        """Wait up to ``seconds`` for a wake-up (a run was released somewhere) or ``stop``.

        The first call starts listening; a wake-up that came during the last pass over the
        due runs returns at once, so none is missed.
        """
        self.keeper.listen()
        deadline = time.monotonic() + seconds
        wake = self.keeper.wake
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if wake.wait(min(left, 0.05)):
                break
        wake.clear()

    def end_thread(self) -> None:
        """A thread of a crew is about to end: close an idle connection while more than one is
        idle, so that a ``tick`` whose threads are gone keeps one connection open, not one per
        thread it had."""
        with self._guard:
            conn = self._idle.pop() if len(self._idle) > 1 else None
            if conn is not None and conn in self._connections:
                self._connections.remove(conn)
        if conn is not None:
            with suppress(Exception):
                conn.close()

    def watch(self, run_id: str) -> PostgresWatch:
        """Wake-ups for ``run_id`` from any process on any host (``LISTEN``, a connection of its own)."""
        with self._borrowed():  # the tables exist (or the store is unreachable) before anything is listened for
            pass
        return PostgresWatch(self, run_id)

    def close(self) -> None:
        """Stop the keeper and close every connection; the store opens new ones when used again."""
        self.keeper.close()
        with self._guard:
            connections, self._connections = self._connections, []
            self._idle = []
        for conn in connections:
            with suppress(Exception):
                conn.close()


class PostgresRunSession:
    """A run of a ``PostgresStore``, claimed: its epoch fences every write."""

    def __init__(self, store: PostgresStore, run_id: str, epoch: int | None) -> None:
        self.store = store
        self.run_id = run_id
        #: The claim's epoch; None while the run does not exist (until ``create``).
        self.epoch = epoch
        #: Whether the session changed the run (then its release wakes the workers).
        self.wrote = False
        #: Audit entries the run's journal holds, once counted (for history_limit).
        self.logs: int | None = None
        if epoch is not None:
            store.keeper.hold(id(self), run_id, epoch)

    def pulse(self, alive: Callable[[float], bool]) -> None:
        """Renew this claim only while ``alive(seconds)`` (the run's action attempts showed a sign of
        life within that many seconds): a hung attempt lets it run out (``Keeper.pulse``)."""
        self.store.keeper.pulse(id(self), alive)

    def load(self) -> LoadedRun:
        """The head and the current visit's slots."""
        if self.epoch is None:
            raise RunNotFound(self.run_id)
        return self.store.load(self.run_id)

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Store a new run, born claimed by this session; RunExists when the id is taken."""
        store = self.store
        if self.epoch is not None:
            raise RunExists(head.run_id)
        kinds, texts = _encode(entries)
        rows = store._execute("create", {
            "run_id": head.run_id, "head": head_to_json(head), "tags": json.dumps(head.tags), "status": head.status,
            "due_at": index_due(head),
            "owner": store.owner, "lease": store.lease, "kinds": kinds, "entries": texts,
            "visit_seq": visit_start(entries),
        }, f"creating run '{head.run_id}'")
        if not rows:
            raise RunExists(head.run_id)
        self.epoch = int(rows[0][0])
        self.wrote = True
        store.keeper.hold(id(self), self.run_id, self.epoch)

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Replace the head and append the entries in one statement, if this claim still holds."""
        if self.epoch is None:
            raise RunNotFound(self.run_id)
        kinds, texts = _encode(entries)
        at = last_visit(entries)
        try:
            rows = self.store._execute("commit", {
                "run_id": self.run_id, "epoch": self.epoch, "head": head_to_json(head), "tags": json.dumps(head.tags),
                "status": head.status,
                "due_at": index_due(head), "lease": self.store.lease, "kinds": kinds, "entries": texts,
                "visit_at": at,
            }, f"saving run '{self.run_id}'")
        except StoreUnavailable as exc:  # the answer was lost, not necessarily the write
            raise StoreUnavailable(exc.path, f"{exc.problem}; whether this change of the run was saved is "
                                             f"unknown: `tinywf show {self.run_id}` tells once the database "
                                             "answers (an unfinished step is taken up again after the lease)"
                                   ) from None
        if not rows or rows[0][0] != 1:
            self._lost()
        self.wrote = True
        if head.history_limit is not None:
            self._trim(head, kinds.count("log"))

    def _trim(self, head: RunHead, added: int) -> None:
        """Drop the oldest audit entries once they pass the run's history_limit by its slack."""
        store = self.store
        assert head.history_limit is not None
        if self.logs is None:
            rows = store._execute("count_logs", {"run_id": self.run_id}, f"reading run '{self.run_id}'")
            self.logs = int(rows[0][0]) if rows else 0
        else:
            self.logs += added
        if not needs_trim(self.logs, head.history_limit):
            return
        rows = store._execute("trim", {"run_id": self.run_id, "epoch": self.epoch, "keep": head.history_limit},
                              f"trimming the history of run '{self.run_id}'")
        dropped = int(rows[0][0]) if rows else 0
        self.logs -= dropped
        if dropped:
            head.dropped_logs += dropped
            store._execute("set_head", {"run_id": self.run_id, "epoch": self.epoch, "head": head_to_json(head)},
                           f"saving run '{self.run_id}'")

    def delete(self) -> None:
        """Remove the run and its journal, if this claim still holds."""
        if self.epoch is None:
            raise RunNotFound(self.run_id)
        if self.store._rowcount("delete", {"run_id": self.run_id, "epoch": self.epoch},
                                f"deleting run '{self.run_id}'") == 0:
            self._lost()
        self.store.keeper.drop(id(self))
        self.epoch = None

    def _lost(self) -> None:
        if not self.store._execute("exists", {"run_id": self.run_id}, f"reading run '{self.run_id}'"):
            raise RunNotFound(self.run_id)
        log.warning("tinywf: run '%s': write refused, the claim (epoch %s) was taken over by another process",
                    self.run_id, self.epoch)
        self.store.keeper.drop(id(self))
        self.epoch = None
        raise ClaimLost(self.run_id, self.store.lease)

    def __enter__(self) -> PostgresRunSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    def end(self) -> None:
        """Release the claim (and wake the workers) when the session ends."""
        self.store.keeper.drop(id(self))
        if self.epoch is not None:
            epoch, self.epoch = self.epoch, None
            self.store._release(self.run_id, epoch, self.wrote)


def _encode(entries: Sequence[Entry]) -> tuple[list[str], list[str]]:
    kinds: list[str] = []
    texts: list[str] = []
    for entry in entries:
        data = entry.to_json()
        kinds.append(next(iter(data)))
        texts.append(dumps(data))
    return kinds, texts


def _first_error(exc: Any) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    place = ".".join(str(p) for p in first.get("loc", ())) or "the head"
    return f"{place}: {first.get('msg', 'invalid')}"


__all__ = ["DEFAULT_LEASE", "PostgresRunSession", "PostgresStore", "StoreUnavailable"]
