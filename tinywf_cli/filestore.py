"""The file store: each run is a JSON record in the state directory, changed only under its lock.

Files of run ``R`` (``~`` is outside the run-id charset, so no two runs' files collide):

- ``R.json``     the record (``tinywf_cli.record``): the run's head, how much of its journal
  is committed, and the *tail*: the latest journal entries, not yet moved to the journal.
  Replaced atomically at every checkpoint (temp file, fsync, rename, fsync of the
  directory), so a checkpoint is one atomic write; the tail is bounded (``TAIL_BYTES``), so
  the record stays small whatever the history.
- ``R.journal``  append-only JSON lines: audit entries and the records of step visits.
  When the tail outgrows its bound, it is appended here (and synced) before the record
  that empties it is written. Bytes past the committed size (a writer killed between the
  two) are ignored by readers and cut off by the next writer; bytes before it never change.
  A run with a ``history_limit`` has its history trimmed now and then: the kept entries
  are written whole to the journal's next generation ``R~N.journal``, then the record that
  names it, then the old generation is removed.
- ``R.lock``     the ``filelock.FileLock`` that guards every change (``FileStore.open``).
- ``R~.tmp``     the record being written; a leftover from a killed writer is replaced by
  the run's next writer (or removed when the run never got a record).
- ``.due/<ms>~R`` the due index (``tinywf_cli.dueindex``).

The state directory and every file read must belong to the user running tinywf, and the
directory must not be writable by others: a record names the flow file its run executes.
"""

from __future__ import annotations

import glob
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from tinywf_cli import record as records
from tinywf_cli.dueindex import DueIndex, entry_name
from tinywf_cli.errors import InvalidRunId, RunExists, RunLocked, RunNotFound, StorageError, TinyWFError
from tinywf_cli.fileio import (
    READ_FLAGS,
    append_at,
    atomic_replace,
    check_owner,
    fsync_dir,
    problem,
    read_file,
    read_range,
)
from tinywf_cli.journal import AuditEntry, BadEntry, Entry, Slot, fold_slots, needs_trim, trim_history
from tinywf_cli.model import RunHead
from tinywf_cli.record import Record, encode_entry, encode_record, is_visit_line, parse_entries, split_journal
from tinywf_cli.store import LoadedRun, RunSession, index_due, is_run_id

#: Journal entries kept in the record until they outgrow this; then they go to the journal.
TAIL_BYTES = 8 * 1024
#: Records larger than this are refused rather than read (and never written).
MAX_RECORD_BYTES = records.MAX_RECORD_BYTES


class FileStore:
    """Runs as files in ``root`` (created 0700 by the first run started there)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.index = DueIndex(self.root)
        #: Index entries per run found by the last ``due`` scan: a session of such a run
        #: repairs them (drops stale ones) when it closes.
        self._found: dict[str, list[str]] = {}
        self._checked = False

    @property
    def target(self) -> str:
        """The state directory."""
        return str(self.root)

    # -- paths and the directory --------------------------------------------------

    def _file(self, run_id: str, suffix: str) -> Path:
        if not is_run_id(run_id):  # never turn a bad id into a path
            raise InvalidRunId(str(run_id))
        return self.root / f"{run_id}{suffix}"

    def record_path(self, run_id: str) -> Path:
        """``R.json``."""
        return self._file(run_id, ".json")

    def journal_path(self, run_id: str, gen: int = 0) -> Path:
        """``R.journal``, or ``R~N.journal`` for generation N of a trimmed history."""
        return self._file(run_id, ".journal" if not gen else f"~{gen}.journal")

    def _check_root(self, create: bool) -> bool:
        """Whether the state directory exists (creating it when asked); refuse unsafe ones."""
        if self._checked:
            return True
        try:
            info = os.stat(self.root)
        except FileNotFoundError:
            if not create:
                return False
            try:
                os.makedirs(self.root, mode=0o700, exist_ok=True)
                os.chmod(self.root, 0o700)
            except OSError as exc:
                raise StorageError(self.root, f"cannot create state directory: {problem(exc)}") from None
            self._ensure_index()
            self._checked = True
            return True
        except OSError as exc:
            raise StorageError(self.root, f"cannot use state directory: {problem(exc)}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise StorageError(self.root, "state directory is not a directory")
        check_owner(self.root, info, "the state directory")
        if info.st_mode & 0o022:
            raise StorageError(self.root, "state directory is writable by other users; `chmod go-w` it")
        if create:
            self._ensure_index()
            self._checked = True
        return True

    # -- sessions ------------------------------------------------------------------------

    @contextmanager
    def open(self, run_id: str, timeout: float, *, create: bool = False) -> Iterator[RunSession]:
        """Hold ``R.lock`` (an OS file lock; never a soft lock) for one session of the run.

        Only ``create=True`` (a new run) makes a missing state directory; for anything
        else a missing directory means the run does not exist.
        """
        path = self._file(run_id, ".lock")
        if not self._check_root(create=create):
            raise RunNotFound(run_id)
        from filelock import FileLock  # imported here: reading runs takes no lock
        from filelock import Timeout as LockTimeout

        lock = FileLock(path, timeout=timeout, mode=0o600, poll_interval=0.01, fallback_to_soft=False)
        try:
            lock.acquire()
        except LockTimeout:
            raise RunLocked(run_id, timeout) from None
        except OSError as exc:
            raise StorageError(path, f"cannot lock: {problem(exc)}") from None
        session = FileRunSession(self, run_id)
        try:
            yield session
            session.close()
        except BaseException:
            with suppress(TinyWFError, OSError):  # the error on its way out says more than a repair's
                session.close()
            raise
        finally:
            if not os.path.lexists(self.record_path(run_id)):
                # no run (a command on an unknown id, a create that failed): leave no lock file
                # behind. Removing it while held is safe: filelock re-opens a lock file that
                # was unlinked before it got the lock.
                with suppress(OSError):
                    os.unlink(path)
            lock.release()

    # -- reading --------------------------------------------------------------------------

    def read_record(self, run_id: str) -> Record:
        """The run's record, checked; raises RunNotFound or StorageError."""
        path = self.record_path(run_id)
        if not self._check_root(create=False):
            raise RunNotFound(run_id)
        try:
            data = read_file(path, MAX_RECORD_BYTES)
        except FileNotFoundError:
            raise RunNotFound(run_id) from None
        return records.parse_record(path, run_id, data)

    def read_journal(self, run_id: str, start: int, end: int, gen: int = 0) -> list[Entry]:
        """The journal's entries between two committed offsets."""
        path = self.journal_path(run_id, gen)
        if end > start and gen and not os.path.lexists(path):
            raise _JournalGone
        return parse_entries(path, split_journal(path, read_range(path, start, end), end))

    def check_journal(self, run_id: str, size: int, gen: int = 0) -> None:
        """Refuse a journal the record does not agree with, without reading it."""
        path = self.journal_path(run_id, gen)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if size == 0:
                return
            raise StorageError(path, f"is missing, but its record says it holds {size} bytes") from None
        except OSError as exc:
            raise StorageError(path, f"cannot read the run's journal: {problem(exc)}") from None
        if stat.S_ISLNK(info.st_mode):
            raise StorageError(path, "cannot read the run's journal: it is a symlink; refusing to follow it (ELOOP)")
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(path, "is not a regular file")
        check_owner(path, info, "the file")
        if info.st_size < size:
            raise StorageError(path, f"is shorter than its record says ({info.st_size} < {size} bytes)")

    def head(self, run_id: str) -> RunHead:
        """The run's head (record only)."""
        return self.read_record(run_id).head

    def load(self, run_id: str) -> LoadedRun:
        """Head and current visit's slots, read without the lock."""
        for _ in range(3):  # a trim may replace the journal between reading the record and it
            record = self.read_record(run_id)
            try:
                self.check_journal(run_id, record.size, record.gen)
                return LoadedRun(record.head, self.visit_slots(run_id, record))
            except _JournalGone:
                continue
        raise StorageError(self.journal_path(run_id), "keeps changing under this reader; try again")

    def visit_slots(self, run_id: str, record: Record) -> list[Slot]:
        """The current visit's slots: from the journal and the record's tail."""
        tail = parse_entries(self.record_path(run_id), record.tail)
        starts = [i for i, line in enumerate(record.tail) if is_visit_line(line)]
        # a visit that began after the journal's last entry lies wholly in the tail
        entries = (tail[starts[-1]:] if starts
                   else self.read_journal(run_id, record.visit_start, record.size, record.gen) + tail)
        try:
            return fold_slots(entries)
        except BadEntry as exc:
            raise StorageError(self.journal_path(run_id, record.gen), f"is corrupt: {exc}") from None

    def entries(self, run_id: str) -> list[Entry]:
        """Every entry: the journal, then the record's tail."""
        for _ in range(3):  # a trim may replace the journal between reading the record and it
            record = self.read_record(run_id)
            try:
                return self.all_entries(run_id, record)
            except _JournalGone:
                continue
        raise StorageError(self.journal_path(run_id), "keeps changing under this reader; try again")

    def all_entries(self, run_id: str, record: Record) -> list[Entry]:
        """Every entry a record names: its journal's, then its tail's."""
        return (self.read_journal(run_id, 0, record.size, record.gen)
                + parse_entries(self.record_path(run_id), record.tail))

    def history(self, run_id: str) -> list[AuditEntry]:
        """Every audit entry, oldest first."""
        return [e for e in self.entries(run_id) if type(e) is AuditEntry]

    def run_ids(self) -> list[str]:
        """Ids of every ``*.json`` record in the state directory (names outside the run-id charset are no runs)."""
        if not self._check_root(create=False):
            return []
        try:
            names = os.listdir(self.root)
        except OSError as exc:
            raise StorageError(self.root, f"cannot list: {problem(exc)}") from None
        return [n[:-5] for n in names if n.endswith(".json") and is_run_id(n[:-5])]

    def secret(self, name: str) -> bytes:
        """The store's secret ``name`` (32 random bytes, e.g. the key that signs links): ``.secret~NAME``,
        made on first use and readable by its owner only.

        A new secret is written to a private temp file and hard-linked into place, which, like
        ``O_EXCL``, fails when the name exists: of two processes racing, one key wins and both read it.
        """
        if not is_run_id(name):
            raise InvalidRunId(str(name))
        path = self.root / f".secret~{name}"
        self._check_root(create=True)
        try:
            if not os.path.lexists(path):
                tmp = self.root / f".secret~{name}~{os.getpid()}.{threading.get_ident()}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, secrets.token_bytes(32))
                    os.fsync(fd)
                    os.close(fd)
                    with suppress(FileExistsError):
                        os.link(tmp, path)
                finally:
                    os.unlink(tmp)
                fsync_dir(self.root)
            fd = os.open(path, READ_FLAGS)
            try:
                info = os.fstat(fd)
                data = os.read(fd, 64)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(path, f"cannot read or create the secret: {problem(exc)}") from None
        check_owner(path, info, "the secret")
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or len(data) != 32:
            raise StorageError(path, "is not a 32-byte file readable by its owner only; remove it to make a new one")
        return data

    def close(self) -> None:
        """Nothing held open between calls."""

    # -- the due index -------------------------------------------------------------------------

    def _due_names(self) -> Iterator[str]:
        for run_id in self.run_ids():
            try:
                name = entry_name(index_due(self.head(run_id)), run_id)
            except TinyWFError:
                continue  # unreadable or gone: nothing to index
            if name is not None:
                yield name

    def _ensure_index(self) -> None:
        self.index.ensure(self._due_names)

    def _rebuild_index(self) -> None:
        self.index.rebuild(self._due_names)

    def _scan(self) -> dict[str, list[tuple[datetime, str]]]:
        if not self._check_root(create=False):
            return {}
        return self.index.scan(self._rebuild_index)

    def due(self, now: datetime) -> list[str]:
        """Runs whose index entry is due by ``now``, earliest first."""
        found = self._scan()
        self._found = {r: [n for _, n in items] for r, items in found.items()}
        firsts = sorted((min(items)[0], run_id) for run_id, items in found.items())
        # entries are written with millisecond precision, rounded down: compare at that grain
        return [run_id for when, run_id in firsts if when <= now]

    def next_due(self) -> datetime | None:
        """The earliest index entry."""
        return min((min(items)[0] for items in self._scan().values()), default=None)

    def reindex(self) -> int:
        """Add the index entries that records copied in by hand lack (how many were added), and
        remove lock files that no record goes with (left by a create killed before it wrote any)."""
        if not self._check_root(create=False):
            return 0
        self._ensure_index()
        added = self.index.add_missing(list(self._due_names()))
        try:
            names = os.listdir(self.root)
        except OSError as exc:
            raise StorageError(self.root, f"cannot list: {problem(exc)}") from None
        records = {n[:-5] for n in names if n.endswith(".json")}
        for name in names:
            run_id = name[:-5]
            if name.endswith(".lock") and is_run_id(run_id) and run_id not in records:
                with suppress(TinyWFError), self.open(run_id, 0):
                    pass  # a session of a run without a record removes its lock file as it closes
        return added


class _JournalGone(Exception):
    """The journal generation a record named was replaced by a trim (the reader reads again)."""


class FileRunSession:
    """A run of a ``FileStore``, held under its lock: what it knows of the run's files holds only here."""

    def __init__(self, store: FileStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self._record: Record | None = None  # the record as last read or written in this session
        #: Its index entry, named when it was read or written (the engine changes the head in place).
        self._due_name: str | None = None
        self._loaded: RunHead | None = None  # a head loaded and not committed since
        self._missing = False

    def _read(self) -> Record:
        try:
            record = self.store.read_record(self.run_id)
        except RunNotFound:
            self._missing = True
            raise
        self.store.check_journal(self.run_id, record.size, record.gen)  # what we commit next must agree with it
        self._record = record
        self._due_name = entry_name(index_due(record.head), self.run_id)
        return record

    def load(self) -> LoadedRun:
        """Head and current visit's slots (from the journal and the record's tail)."""
        record = self._read()
        slots = self.store.visit_slots(self.run_id, record)
        self._loaded = record.head
        return LoadedRun(record.head, slots)

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Store a new run."""
        path = self.store.record_path(head.run_id)
        self.store._check_root(create=True)
        if os.path.lexists(path):
            raise RunExists(head.run_id)
        # a journal without a record is a leftover of a create that never committed: size 0 cuts it off
        self._write(head, entries, Record(head, 0, 0, []), None)

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Atomically replace the record with ``head`` and ``entries`` added to its tail.

        A tail grown past ``TAIL_BYTES`` is first appended to the journal and synced.
        """
        record = self._record if self._record is not None else self._read()
        self._write(head, entries, record, self._due_name)

    def _write(self, head: RunHead, entries: Sequence[Entry], before: Record, old_due: str | None) -> None:
        store = self.store
        run_id = head.run_id
        logs = before.logs + sum(1 for entry in entries if type(entry) is AuditEntry)
        if needs_trim(logs, head.history_limit):
            self._trim(head, entries, before, old_due)
            return
        tail = before.tail + [encode_entry(entry) for entry in entries]
        size, visit_start, gen = before.size, before.visit_start, before.gen
        flush = sum(len(line) + 1 for line in tail) > TAIL_BYTES
        data = b""
        if flush:
            for line in tail:
                if is_visit_line(line):
                    visit_start = size
                size += len(line) + 1
            data = b"".join(line + b"\n" for line in tail)
            tail = []
        self._replace(head, size, visit_start, tail, gen, logs, old_due,
                      (lambda: append_at(store.journal_path(run_id, gen), before.size, data)) if flush else None)

    def _trim(self, head: RunHead, entries: Sequence[Entry], before: Record, old_due: str | None) -> None:
        """Commit with the history trimmed to ``head.history_limit``: the kept entries go whole to
        the journal's next generation, which the new record names; the old one is removed after."""
        store = self.store
        run_id = head.run_id
        assert head.history_limit is not None
        kept, dropped = trim_history(store.all_entries(run_id, before) + list(entries), head.history_limit)
        head.dropped_logs += dropped
        lines = [encode_entry(entry) for entry in kept]
        offset, visit_start = 0, 0
        for line in lines:
            if is_visit_line(line):
                visit_start = offset
            offset += len(line) + 1
        gen = before.gen + 1
        journal = store.journal_path(run_id, gen)
        data = b"".join(line + b"\n" for line in lines)
        self._replace(head, offset, visit_start, [], gen, head.history_limit, old_due,
                      lambda: atomic_replace(journal, store._file(run_id, "~journal.tmp"), data))
        with suppress(OSError):
            os.unlink(store.journal_path(run_id, before.gen))

    def _replace(self, head: RunHead, size: int, visit_start: int, tail: list[bytes], gen: int, logs: int,
                 old_due: str | None, journal_first: Callable[[], None] | None) -> None:
        """Write the record (after the journal, when it changes too), keeping the due index in step."""
        store = self.store
        run_id = head.run_id
        path = store.record_path(run_id)
        record = encode_record(head, size, visit_start, tail, gen, logs)
        if len(record) > MAX_RECORD_BYTES:  # never write what could not be read back
            raise StorageError(path, f"the run's record would be {len(record)} bytes, over the limit of "
                                     f"{MAX_RECORD_BYTES} (its state is too large); the run is unchanged")
        due_name = entry_name(index_due(head), run_id)
        if due_name is not None and due_name != old_due:
            store.index.add(due_name, store._rebuild_index)
        if journal_first is not None:
            journal_first()
        atomic_replace(path, store._file(run_id, "~.tmp"), record)
        self._record = Record(head, size, visit_start, tail, gen, logs)
        self._due_name = due_name
        self._loaded = None
        store._found.pop(run_id, None)  # this commit kept the index in step itself
        if old_due is not None and old_due != due_name:
            store.index.remove(old_due)

    def delete(self) -> None:
        """Remove the run's record, journal and index entries (the record first: then it is gone)."""
        store = self.store
        path = store.record_path(self.run_id)
        record = self._record if self._record is not None else self._read()
        due_name = self._due_name
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise RunNotFound(self.run_id) from None
        except OSError as exc:
            raise StorageError(path, f"cannot delete: {problem(exc)}") from None
        if due_name is not None:
            store.index.remove(due_name)
        for leftover in (store.journal_path(self.run_id, record.gen), store.journal_path(self.run_id),
                         store._file(self.run_id, "~.tmp"), store._file(self.run_id, "~journal.tmp")):
            with suppress(OSError):
                os.unlink(leftover)
        self._record = None
        self._loaded = None

    def _forget(self) -> None:
        """Remove what a run without a record left behind (index entries, journals, temp files)."""
        store = self.store
        if os.path.lexists(store.record_path(self.run_id)):
            return
        names = store._found.get(self.run_id)
        if names is None:
            names = [n for _, n in store._scan().get(self.run_id, [])]
        for name in names:
            store.index.remove(name)
        for suffix in ("~.tmp", "~journal.tmp", ".journal"):
            with suppress(OSError):
                os.unlink(store._file(self.run_id, suffix))
        for older in store.root.glob(f"{glob.escape(self.run_id)}~*.journal"):
            with suppress(OSError):
                os.unlink(older)

    def close(self) -> None:
        """Repair the index for this run: a run that has no record leaves nothing behind; a run
        found in the index by ``due`` and not changed here keeps only the entry its record backs."""
        store = self.store
        if self._missing:
            self._forget()
            return
        head = self._loaded
        found = store._found.get(self.run_id)
        if head is None or found is None:
            return
        keep = entry_name(index_due(head), self.run_id)
        if keep is not None and keep not in found:
            store.index.add(keep, store._rebuild_index)
        for name in found:
            if name != keep:
                store.index.remove(name)
        store._found.pop(self.run_id, None)
