"""The file store: each run is a JSON record in the state directory, changed only under its lock.

Files of run ``R`` (``~`` is outside the run-id charset, so no two runs' files collide):

- ``R.json``     the record (``tinywf_cli.stores.files.record``): the run's head as of its last pause or end
  (or of its last rewrite), how much of its journal is committed, the *tail* (the latest
  journal entries, not yet moved to the journal) and the salt of the frames that follow it.
  Rewritten atomically (temp file, fsync, rename, fsync of the directory) when a commit
  leaves the run not running (waiting, paused, ended...), when the frames after it reach
  ``WAL_FRAMES`` or ``WAL_BYTES``, and when the run is created: a readable JSON document of
  the run as of its last pause or end.
- ``R.wal``      the write-ahead frames: every commit of a running run is one checksummed
  frame (its entries and the head it leaves) appended here and fdatasync'ed — one small
  append instead of a record rewrite. A load reads the record and the frames that carry its
  salt; a last frame cut short was never acknowledged: it is dropped, and cut off by the next
  writer. Rewriting the record moves the frames' entries into its tail (or the journal) and
  raises the salt, which retires every frame before it at once; the file is then emptied
  (when the retired frames add up to more than ``WAL_KEEP``; the next frame cuts them off anyway).
  Created empty with the record, so that its name is durable with the record's.
- ``R.journal``  append-only JSON lines: audit entries and the records of step visits.
  When a rewritten record's tail would outgrow ``TAIL_BYTES``, the tail is appended here
  (and synced) before the record that empties it is written. Bytes past the committed size
  (a writer killed between the two) are ignored by readers and cut off by the next writer;
  bytes before it never change. A run with a ``history_limit`` has its history trimmed now
  and then: the kept entries are written whole to the journal's next generation
  ``R~N.journal``, then the record that names it, then the old generation is removed.
- ``R.lock``     the OS file lock (``flock``; ``fileio.lock_file``) that guards every change
  (``FileStore.open``).
- ``R~.tmp``     the record being written; a leftover from a killed writer is replaced by
  the run's next writer (or removed when the run never got a record).
- ``.due/<ms>~R`` the due index of waiting runs, and ``.running~R`` the index entry of a
  running run, beside its record (``tinywf_cli.stores.files.dueindex``).
- ``.limits/``   the state of limits and breakers, a small file per limit (and key) and per
  breaker, each changed under its own lock (``tinywf_cli.stores.files.cells``).
- ``.schedules/`` the schedules, a small file per schedule, each changed under its own lock
  (``tinywf_cli.stores.files.schedules``).

What is durable when: a run's creation, every commit of an action's result, a pause and an
end each return only once synced. The engine defers what a replay re-derives (a transition)
to its next such commit (``Checkpoint.commit(durable=False)``), so a step visit costs one
append. A process killed at any point leaves the record of the last rewrite and the frames
written after it, whole: loading them gives the run as of its last completed commit.

The state directory and every file read must belong to the user running tinywf, and the
directory must not be writable by others: a record names the flow file its run executes.
Reading (``tinywf_cli.stores.files.runfiles``) needs no lock and no pydantic; this store adds the head's
validation. Writing is a session's (``tinywf_cli.stores.files.session``), under the run's lock:
the bounds named here (``TAIL_BYTES``, ``WAL_FRAMES``, ``WAL_BYTES``, ``WAL_KEEP``) are its.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from tinywf_cli.errors import InvalidRunId, RunLocked, RunNotFound, StorageError, TinyWFError
from tinywf_cli.model import RunHead, head_from_json
from tinywf_cli.names import is_run_id
from tinywf_cli.stores.base import LoadedRun, RunSession, index_due
from tinywf_cli.stores.files.cells import FileCells
from tinywf_cli.stores.files.dueindex import DueIndex, entry_name
from tinywf_cli.stores.files.fileio import (
    READ_FLAGS,
    LockTimeout,
    check_owner,
    fsync_dir,
    lock_file,
    problem,
    unlock_file,
)
from tinywf_cli.stores.files.runfiles import RunFiles, Snapshot
from tinywf_cli.stores.files.schedules import FileSchedules
from tinywf_cli.stores.files.session import FileRunSession
from tinywf_cli.stores.files.tagindex import TagIndex
from tinywf_cli.stores.files.watch import FileWatch
from tinywf_cli.stores.journal import AuditEntry, BadEntry, Entry, Slot, fold_slots

T = TypeVar("T")


def _file_status(info: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced, rewritten, or its mode or owner changed."""
    return (info.st_dev, info.st_ino, info.st_mode, info.st_uid, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class FileStore:
    """Runs as files in ``root`` (created 0700 by the first run started there)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.files = RunFiles(self.root)
        self.index = DueIndex(self.root)
        #: The tag index, in ``.tags/`` (``tinywf_cli.stores.files.tagindex``).
        self.tags = TagIndex(self.root)
        #: Index entries per run found by the last ``due`` scan: a session of such a run
        #: repairs them (drops stale ones) when it closes.
        self._found: dict[str, list[str]] = {}
        self._checked = False
        #: Secrets read, by name: the status of the file read and its bytes (``secret``).
        self._secrets: dict[str, tuple[tuple[int, ...], bytes]] = {}
        self._cells: FileCells | None = None
        #: The schedules, in ``.schedules/`` (``tinywf_cli.stores.files.schedules``).
        self.schedules = FileSchedules(self)

    @property
    def target(self) -> str:
        """The state directory."""
        return str(self.root)

    @property
    def cells(self) -> FileCells:
        """The limits' and breakers' cells, in ``.limits/`` (``tinywf_cli.stores.files.cells``)."""
        if self._cells is None:
            self._cells = FileCells(self)
        return self._cells

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

    def wal_path(self, run_id: str) -> Path:
        """``R.wal``."""
        return self._file(run_id, ".wal")

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
        try:
            lock = lock_file(path, timeout)
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
            session.release()
            if (session._disk is None or session._missing) and not os.path.lexists(session.record_path):
                # no run (a command on an unknown id, a create that failed): leave no lock file
                # behind. Removing it while held is safe: lock_file opens again a lock file
                # that was unlinked before it got the lock.
                with suppress(OSError):
                    os.unlink(path)
            unlock_file(lock)

    # -- reading --------------------------------------------------------------------------

    def _read(self, run_id: str, then: Callable[[Snapshot, RunHead], T]) -> T:
        """``then(snapshot, head)`` of the run as its files hold it now, read without the lock
        (again, when a writer changed them meanwhile); raises RunNotFound or StorageError."""
        self.record_path(run_id)  # a bad id is refused before any file is looked at
        if not self._check_root(create=False):
            raise RunNotFound(run_id)

        def read() -> T:
            snap = self.files.snapshot(run_id)
            return then(snap, self.head_of(run_id, snap))

        return self.files.retrying(read)

    def head_of(self, run_id: str, snap: Snapshot) -> RunHead:
        """The run's latest head in a snapshot (the last frame's, else the record's), validated."""
        path = self.record_path(run_id) if snap.head_json is None else self.wal_path(run_id)
        try:
            head = head_from_json(snap.record.run if snap.head_json is None else snap.head_json)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise StorageError(path, f"is not a valid run record ({where}: {first['msg']})") from None
        if head.run_id != run_id:
            raise StorageError(path, f"holds run '{head.run_id}', not '{run_id}'")
        return head

    def head(self, run_id: str) -> RunHead:
        """The run's head."""
        return self._read(run_id, lambda snap, head: head)

    def load(self, run_id: str) -> LoadedRun:
        """Head and current visit's slots, read without the lock."""
        return self._read(run_id, lambda snap, head: LoadedRun(head, self.visit_slots(run_id, snap)))

    def visit_slots(self, run_id: str, snap: Snapshot) -> list[Slot]:
        """The current visit's slots: from the journal, the record's tail and the frames."""
        entries = self.files.visit_entries(run_id, snap)
        try:
            return fold_slots(entries)
        except BadEntry as exc:
            raise StorageError(self.journal_path(run_id, snap.record.gen), f"is corrupt: {exc}") from None

    def entries(self, run_id: str) -> list[Entry]:
        """Every entry: the journal, then the record's tail and the frames."""
        return self._read(run_id, lambda snap, head: self.files.all_entries(run_id, snap))

    def history(self, run_id: str) -> list[AuditEntry]:
        """Every audit entry, oldest first."""
        return [e for e in self.entries(run_id) if type(e) is AuditEntry]

    def run_ids(self) -> list[str]:
        """Ids of every ``*.json`` record in the state directory (names outside the run-id charset are no runs)."""
        if not self._check_root(create=False):
            return []
        return self.files.run_ids()

    def secret(self, name: str) -> bytes:
        """The store's secret ``name`` (32 random bytes, e.g. the key that signs links): ``.secret~NAME``,
        made on first use and readable by its owner only.

        A new secret is written to a private temp file and hard-linked into place, which, like
        ``O_EXCL``, fails when the name exists: of two processes racing, one key wins and both read it.
        Every call answers for the file as it is now: one ``lstat`` when it is unchanged since
        the last read (same file, mode, owner, size and times), a full read and check otherwise —
        so a key removed, replaced or opened to others takes effect at the next call.
        """
        if not is_run_id(name):
            raise InvalidRunId(str(name))
        path = self.root / f".secret~{name}"
        self._check_root(create=True)
        known = self._secrets.get(name)
        if known is not None:
            with suppress(OSError):  # gone or unreadable: the full read below says what is wrong
                if _file_status(os.lstat(path)) == known[0]:
                    return known[1]
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
            self._secrets.pop(name, None)
            raise StorageError(path, "is not a 32-byte file readable by its owner only; remove it to make a new one")
        self._secrets[name] = (_file_status(info), data)
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

    def _tagged(self) -> Iterator[tuple[str, dict[str, str]]]:
        """Every run that has tags, with them (for the tag index)."""
        for run_id in self.run_ids():
            try:
                tags = self.head(run_id).tags
            except TinyWFError:
                continue
            if tags:
                yield run_id, tags

    def tagged_run_ids(self, tags: Mapping[str, str]) -> list[str] | None:
        """Ids of the runs that may carry all of ``tags`` (their records decide), from the tag index;
        None when this state directory keeps none (every record must be read)."""
        if not self._check_root(create=False):
            return []
        found = self.tags.run_ids(tags)
        return None if found is None else sorted(found)

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

    def next_due(self, exclude: Collection[str] = ()) -> datetime | None:
        """The earliest index entry of the runs not in ``exclude``."""
        return min((min(items)[0] for run_id, items in self._scan().items() if run_id not in exclude),
                   default=None)

    def watch(self, run_id: str) -> FileWatch:
        """Wake-ups for ``run_id`` from any process: its record replaced or removed, its frames written."""
        self._file(run_id, ".json")  # a bad id is refused before anything is watched
        return FileWatch(self.root, run_id)

    def reindex(self) -> int:
        """Add the index entries (due and tags) that records copied in by hand lack (how many), and
        remove lock files that no record goes with (left by a create killed before it wrote any)."""
        if not self._check_root(create=False):
            return 0
        self._ensure_index()
        added = self.index.add_missing(list(self._due_names()))
        added += self.tags.add_missing(self._tagged)
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

