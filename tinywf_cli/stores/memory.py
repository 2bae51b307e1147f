"""``MemoryStore``: a store in memory, for tests and embedding — the same semantics, no files."""

from __future__ import annotations

import json
import marshal
import os
import threading
import weakref
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from tinywf_cli.errors import RunExists, RunLocked, RunNotFound, StorageError, StoreNotFound
from tinywf_cli.jsonio import dumps
from tinywf_cli.model import RunHead, head_from_json
from tinywf_cli.stores.base import LoadedRun, RunSession, RunWatch, index_due
from tinywf_cli.stores.journal import (
    AuditEntry,
    BadEntry,
    Entry,
    PartEntry,
    SlotEntry,
    VisitEntry,
    fold_slots,
    needs_trim,
    trim_history,
)
from tinywf_cli.stores.limits import CellKind, alive_by_head
from tinywf_cli.stores.schedules import MemorySchedules

if TYPE_CHECKING:
    from tinywf_cli.clock import Clock

T = TypeVar("T")

# The MemoryStores of this process by target, so that ``Runtime(self.store_target)`` in flow
# code reaches the store its run lives in; a store that nothing else holds drops out.
_MEMORY_STORES: weakref.WeakValueDictionary[str, MemoryStore] = weakref.WeakValueDictionary()


class MemoryStore:
    """A store in memory, for tests and embedding: same semantics, no files.

    Heads and entries are kept serialised (``marshal``, C-fast), so what is loaded never
    aliases what the engine holds — as with a real store. Datetimes, which marshal cannot
    write, are kept beside the bytes: they are immutable, so sharing them aliases nothing.
    """

    def __init__(self) -> None:
        #: ``memory://`` and a token: what names this store in this process (``open_store``).
        self._target = f"memory://{os.urandom(6).hex()}"
        #: The clock of runtimes opened on this store by its target (``MemoryRuntime`` sets its own),
        #: so that a ``Runtime(self.store_target)`` inside an action keeps the same time.
        self.clock: Clock | None = None
        _MEMORY_STORES[self._target] = self
        self._heads: dict[str, _HeadCopy] = {}
        # one serialised tuple of entries per commit (``_encode_entries``); the current visit
        # starts at (commit, entry)
        self._journals: dict[str, list[bytes]] = {}
        self._visit_start: dict[str, tuple[int, int]] = {}
        self._due: dict[str, datetime] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._secrets: dict[str, bytes] = {}
        self._logs: dict[str, int] = {}  # audit entries kept, for history_limit
        self._guard = threading.Lock()
        #: The cells of limits and breakers, as JSON text, and the lock every change of one holds.
        self._cells: dict[tuple[str, str, str | None], str] = {}
        self._cells_guard = threading.Lock()
        #: The schedules (``tinywf_cli.stores.schedules``).
        self.schedules = MemorySchedules()
        #: Commits and deletions so far, each run's own, for watchers (``watch``).
        self._changes: dict[str, int] = {}
        self._changed = threading.Condition()

    @classmethod
    def named(cls, target: str) -> MemoryStore:
        """The store of this process whose ``target`` is ``target``; StoreNotFound when none is."""
        store = _MEMORY_STORES.get(target)
        if store is None:
            raise StoreNotFound(target, "no in-memory store of this process has this name "
                                        "(an in-memory store lives only in the process that made it)")
        return store

    @property
    def target(self) -> str:
        """``memory://`` and a token: runs of this store live in this process only, and
        ``Runtime(target)`` reaches them from anywhere in it."""
        return self._target

    def open(self, run_id: str, timeout: float, *, create: bool = False) -> AbstractContextManager[RunSession]:
        """Hold the run's in-process lock."""
        lock = self._locks.get(run_id)
        if lock is None:
            with self._guard:
                lock = self._locks.setdefault(run_id, threading.Lock())
        return _MemoryHold(self, run_id, lock, timeout)

    def _commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        run_id = head.run_id
        journal = self._journals[run_id]
        if entries:
            encoded, start, audits = _encode_entries(entries)
            if start is not None:
                self._visit_start[run_id] = (len(journal), start)
            journal.append(marshal.dumps(encoded))
            logs = self._logs[run_id] = self._logs.get(run_id, 0) + audits
            if head.history_limit is not None and needs_trim(logs, head.history_limit):
                kept, dropped = trim_history(self._entries(run_id), head.history_limit)
                head.dropped_logs += dropped
                encoded, start, _ = _encode_entries(kept)
                self._journals[run_id] = [marshal.dumps(encoded)]
                self._visit_start[run_id] = (0, start or 0)
                self._logs[run_id] = head.history_limit
        self._heads[run_id] = _copy_head(head)
        due = index_due(head)
        if due is None:
            self._due.pop(run_id, None)
        else:
            self._due[run_id] = due
        self._note_change(run_id)

    def _note_change(self, run_id: str) -> None:
        with self._changed:
            self._changes[run_id] = self._changes.get(run_id, 0) + 1
            self._changed.notify_all()

    def watch(self, run_id: str) -> AbstractContextManager[RunWatch]:
        """Wake-ups for ``run_id``: its commits and its deletion, in this process."""
        return _MemoryWatch(self, run_id)

    def _entries(self, run_id: str, commit: int = 0) -> list[Entry]:
        journal = self._journals.get(run_id)
        if journal is None:
            raise RunNotFound(run_id)
        return [_decode_entry(e) for data in journal[commit:] for e in marshal.loads(data)]

    def head(self, run_id: str) -> RunHead:
        """Just the head."""
        copy = self._heads.get(run_id)
        if copy is None:
            raise RunNotFound(run_id)
        return _head_of(copy)

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

    def next_due(self, exclude: Collection[str] = ()) -> datetime | None:
        """Earliest due time of the runs not in ``exclude``."""
        return min((when for run_id, when in list(self._due.items()) if run_id not in exclude), default=None)

    def secret(self, name: str) -> bytes:
        """A random key, made on first use."""
        with self._guard:
            return self._secrets.setdefault(name, os.urandom(32))

    def close(self) -> None:
        """Nothing to release."""

    # -- limits and breakers (``tinywf_cli.stores.limits.Cells``) -----------------------------------

    @property
    def cells(self) -> MemoryStore:
        """The store keeps its limits' and breakers' cells itself."""
        return self

    def read_cell(self, kind: CellKind, name: str, key: str | None) -> dict[str, Any] | None:
        """A cell as last written."""
        text = self._cells.get((kind, name, key))
        return None if text is None else dict(json.loads(text))

    def change_cell(self, kind: CellKind, name: str, key: str | None, change: Callable[[dict[str, Any]], T]) -> T:
        """Change a cell under the store's cell lock; kept only when it changed."""
        with self._cells_guard:
            text = self._cells.get((kind, name, key))
            cell: dict[str, Any] = {} if text is None else json.loads(text)
            result = change(cell)
            new = dumps(cell)
            if new != text and (cell or text is not None):
                self._cells[(kind, name, key)] = new
            return result

    def delete_cell(self, kind: CellKind, name: str, key: str | None) -> bool:
        """Forget a cell."""
        with self._cells_guard:
            return self._cells.pop((kind, name, key), None) is not None

    def all_cells(self, kind: CellKind) -> list[dict[str, Any]]:
        """Every cell of ``kind``, by name and key."""
        items = sorted(((n, k or ""), t) for (c, n, k), t in list(self._cells.items()) if c == kind)
        return [json.loads(text) for _, text in items]

    def holder_alive(self, holder: list[Any]) -> bool:
        """Whether the holder's run may still be in that attempt (or, for a whole run, has not ended)."""
        copy = self._heads.get(holder[1])
        if copy is None:
            return False
        head = _head_of(copy)
        return alive_by_head(head.status, head.visit, holder)


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
        store._note_change(self.run_id)


class _MemoryWatch:
    """``MemoryStore.watch``: waits for the run's count of changes to move."""

    def __init__(self, store: MemoryStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.seen = store._changes.get(run_id, 0)

    def __enter__(self) -> _MemoryWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait up to ``seconds`` for a commit or the deletion of the run."""
        store = self.store
        with store._changed:
            changed = store._changed.wait_for(lambda: store._changes.get(self.run_id, 0) != self.seen
                                              or stop.is_set(), timeout=seconds)
            self.seen = store._changes.get(self.run_id, 0)
        return bool(changed) and not stop.is_set()


class _MemoryHold:
    """``MemoryStore.open``: holds the run's lock for the ``with`` block (a plain class: every
    command opens one)."""

    __slots__ = ("lock", "session", "timeout")

    def __init__(self, store: MemoryStore, run_id: str, lock: threading.Lock, timeout: float) -> None:
        self.lock = lock
        self.session = _MemorySession(store, run_id)
        self.timeout = timeout

    def __enter__(self) -> _MemorySession:
        timeout = self.timeout
        if not self.lock.acquire(blocking=timeout != 0, timeout=timeout if timeout > 0 else -1):
            raise RunLocked(self.session.run_id, timeout)
        return self.session

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


#: A head as a MemoryStore keeps it: its fields marshalled, and its datetimes (created_at,
#: updated_at, wake_at, each pending resume's due_at, deadline) as they are.
_HeadCopy = tuple[bytes, datetime, datetime, datetime | None, tuple[datetime | None, ...], datetime | None]


def _copy_head(head: RunHead) -> _HeadCopy:
    """A copy of ``head`` that nothing the engine holds aliases (``_head_of`` reads it back)."""
    flow, error, recovery = head.flow, head.error, head.recovery
    fields = (head.run_id, head.workflow, flow.file, flow.module, flow.cls, head.status, head.step, head.state,
              head.visit_state, head.doc, head.version, head.parent, head.visit, head.visit_logs,
              [(p.resume_id, p.kind, p.key, p.request) for p in head.pending] if head.pending else [],
              head.expects, head.inbox,
              None if error is None else (error.type, error.message), head.progress, recovery.count, recovery.at,
              head.children, head.parent_woken, head.paused_from, head.code, head.history_limit, head.dropped_logs,
              head.held_limit, None if head.scheduled_at is None else head.scheduled_at.isoformat(),
              head.tags, head.alerts, head.alert_attempt,
              None if head.alert_due is None else head.alert_due.isoformat(), head.trace, head.parent_trace)
    try:
        data = marshal.dumps(fields, 2)  # version 2: no back-references, faster for a flat head
    except ValueError as exc:  # a value of a type JSON has not (the engine never stores one)
        raise StorageError(f"memory:{head.run_id}", f"cannot keep the run: {exc}") from None
    dues = tuple([p.due_at for p in head.pending]) if head.pending else ()
    return data, head.created_at, head.updated_at, head.wake_at, dues, head.deadline


def _head_of(copy: _HeadCopy) -> RunHead:
    """The head a ``_copy_head`` kept, validated as a stored head is."""
    data, created_at, updated_at, wake_at, dues, deadline = copy
    (run_id, workflow, file, module, cls, status, step, state, visit_state, doc, version, parent, visit, visit_logs,
     pending, expects, inbox, error, progress, count, at, children, parent_woken, paused_from, code, history_limit,
     dropped_logs, held_limit, scheduled_at, tags, alerts, alert_attempt, alert_due, trace,
     parent_trace) = marshal.loads(data)
    return head_from_json({
        "run_id": run_id, "workflow": workflow, "flow": {"file": file, "module": module, "cls": cls},
        "status": status, "step": step, "state": state, "visit_state": visit_state, "created_at": created_at,
        "updated_at": updated_at, "doc": doc, "version": version, "parent": parent, "visit": visit,
        "visit_logs": visit_logs,
        "pending": [{"resume_id": r, "kind": k, "key": key, "request": req, "due_at": due}
                    for (r, k, key, req), due in zip(pending, dues, strict=True)],
        "expects": expects, "inbox": inbox,
        "error": None if error is None else {"type": error[0], "message": error[1]},
        "wake_at": wake_at, "progress": progress, "recovery": {"count": count, "at": at}, "children": children,
        "parent_woken": parent_woken, "paused_from": paused_from, "code": code, "history_limit": history_limit,
        "dropped_logs": dropped_logs, "held_limit": held_limit, "scheduled_at": scheduled_at, "deadline": deadline,
        "tags": tags, "alerts": alerts, "alert_attempt": alert_attempt, "alert_due": alert_due, "trace": trace,
        "parent_trace": parent_trace,
    })


def _encode_entries(entries: Sequence[Entry]) -> tuple[tuple[tuple[Any, ...], ...], int | None, int]:
    """Entries as marshal keeps them (``_decode_entry`` reads one back), the position of the
    last visit marker among them (``None``: none), and how many are audit entries."""
    out: list[tuple[Any, ...]] = []
    start: int | None = None
    audits = 0
    entry: Any  # one of the four entry classes, told apart by type() (no isinstance chain: every commit)
    for position, entry in enumerate(entries):
        kind = type(entry)
        if kind is AuditEntry:
            out.append((0, entry.at, entry.step, entry.type, entry.values))
            audits += 1
        elif kind is SlotEntry:
            out.append((1, entry.slot))
        elif kind is VisitEntry:
            out.append((2, entry.n, entry.step, entry.state, entry.version))
            start = position
        else:
            out.append((3, entry.index, entry.part))
    return tuple(out), start, audits


def _decode_entry(data: tuple[Any, ...]) -> Entry:
    """An entry ``_encode_entries`` kept."""
    tag = data[0]
    if tag == 0:
        return AuditEntry(data[1], data[2], data[3], data[4])
    if tag == 1:
        return SlotEntry(data[1])
    if tag == 2:
        return VisitEntry(data[1], data[2], data[3], data[4])
    return PartEntry(data[1], data[2])
