"""The file store: each run is a JSON record in the state directory, changed only under its lock.

Files of run ``R`` (``~`` is outside the run-id charset, so no two runs' files collide):

- ``R.json``     the record: the run's head, how much of its journal is committed, and the
  *tail*: the latest journal entries, not yet moved to the journal. Replaced atomically at
  every checkpoint (temp file, fsync, rename, fsync of the directory), so a checkpoint is
  one atomic write; the tail is bounded (``TAIL_BYTES``), so the record stays small
  whatever the history.
- ``R.journal``  append-only JSON lines: audit entries and the records of step visits.
  When the tail outgrows its bound, it is appended here (and synced) before the record
  that empties it is written. Bytes past the committed size (a writer killed between the
  two) are ignored by readers and cut off by the next writer; bytes before it never change.
- ``R.lock``     the ``filelock.FileLock`` that guards every change.
- ``R~.tmp``     the record being written; a leftover from a killed writer is replaced by
  the run's next writer (or removed by ``tick`` when the run never got a record).
- ``.due/<ms>~R`` the due index: ``tick`` lists names, it does not read every run. An
  entry is added (and synced) before the record that needs it is committed, and removed
  after, so a crash leaves at most a stale entry, which ``tick`` drops. A missing index
  is rebuilt from the records.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tinywf_cli.errors import InvalidRunId, RunExists, RunLocked, RunNotFound, StorageError, TinyWFError
from tinywf_cli.model import RunHead, head_from_json, head_to_json
from tinywf_cli.store import Entry, LoadedRun, fold_slots, index_due, is_run_id
from tinywf_cli.values import dumps

#: Records larger than this are refused rather than read (and never written).
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: Journal entries kept in the record until they outgrow this; then they go to the journal.
TAIL_BYTES = 8 * 1024
FORMAT = 1
INDEX_DIR = ".due"
#: Where a missing due index is rebuilt before it is renamed into place, and the lock for that.
INDEX_BUILD = ".due~build"
INDEX_LOCK = ".due.lock"
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class _Meta:
    """What this process knows of a run's files since it last read or wrote them (under the lock)."""

    size: int
    visit_start: int
    due_name: str | None
    #: The record's tail: encoded journal entries not yet in the journal (one JSON text each).
    tail: list[bytes]


def _problem(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{exc.strerror or exc} ({name})"


def _due_name(due: datetime | None, run_id: str) -> str | None:
    if due is None:
        return None
    return f"{max(0, int(due.timestamp() * 1000)):015d}~{run_id}"


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool


class FileStore:
    """Runs as files in ``root`` (created 0700 on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._meta: dict[str, _Meta] = {}
        #: Runs whose lock this store holds, and the thread holding it: only that thread's
        #: reads may be remembered for its next commit (a reader in another thread may
        #: have read an older record).
        self._held: dict[str, int] = {}
        self._found: dict[str, list[str]] = {}
        self._checked = False

    # -- paths and the directory --------------------------------------------------

    def _file(self, run_id: str, suffix: str) -> Path:
        if not is_run_id(run_id):  # never turn a bad id into a path
            raise InvalidRunId(str(run_id))
        return self.root / f"{run_id}{suffix}"

    def record_path(self, run_id: str) -> Path:
        """``R.json``."""
        return self._file(run_id, ".json")

    def journal_path(self, run_id: str) -> Path:
        """``R.journal``."""
        return self._file(run_id, ".journal")

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
                raise StorageError(self.root, f"cannot create state directory: {_problem(exc)}") from None
            self._ensure_index()
            self._checked = True
            return True
        except OSError as exc:
            raise StorageError(self.root, f"cannot use state directory: {_problem(exc)}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise StorageError(self.root, "state directory is not a directory")
        if info.st_mode & 0o022:
            raise StorageError(self.root, "state directory is writable by other users; `chmod go-w` it")
        if create:
            self._ensure_index()
            self._checked = True
        return True

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- locking -----------------------------------------------------------------------

    @contextmanager
    def lock(self, run_id: str, timeout: float, *, create: bool = False) -> Iterator[None]:
        """Hold ``R.lock`` (an OS file lock; never a soft lock).

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
            raise StorageError(path, f"cannot lock: {_problem(exc)}") from None
        self._meta.pop(run_id, None)  # what we know of a run's files holds only under its lock
        self._held[run_id] = threading.get_ident()
        try:
            yield
        finally:
            self._held.pop(run_id, None)
            self._meta.pop(run_id, None)
            if not os.path.lexists(self.record_path(run_id)):
                # no run (a command on an unknown id, a create that failed): leave no lock file
                # behind. Removing it while held is safe: filelock re-opens a lock file that
                # was unlinked before it got the lock.
                with suppress(OSError):
                    os.unlink(path)
            lock.release()

    def _holding(self, run_id: str) -> bool:
        return self._held.get(run_id) == threading.get_ident()

    # -- reading --------------------------------------------------------------------------

    def _read_record(self, run_id: str) -> tuple[RunHead, _Meta]:
        path = self.record_path(run_id)
        if not self._check_root(create=False):
            raise RunNotFound(run_id)
        try:
            fd = os.open(path, READ_FLAGS)
        except FileNotFoundError:
            raise RunNotFound(run_id) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StorageError(path, "is a symlink; refusing to follow it") from None
            raise StorageError(path, f"cannot read: {_problem(exc)}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StorageError(path, "is not a regular file")
            if info.st_size > MAX_RECORD_BYTES:
                raise StorageError(path, f"is too large ({info.st_size} bytes; the limit is {MAX_RECORD_BYTES})")
            chunks = []
            total = 0
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
                total += len(chunk)
                if total > MAX_RECORD_BYTES:
                    raise StorageError(path, f"is too large (over {MAX_RECORD_BYTES} bytes)")
        except OSError as exc:
            raise StorageError(path, f"cannot read: {_problem(exc)}") from None
        finally:
            os.close(fd)
        head, meta = self._parse_record(path, run_id, b"".join(chunks))
        if self._holding(run_id):  # a writer's read: what it commits next must agree with the journal
            self._check_journal(run_id, meta.size)
            self._meta[run_id] = meta
        return head, meta

    def _parse_record(self, path: Path, run_id: str, data: bytes) -> tuple[RunHead, _Meta]:
        if not data.strip():
            raise StorageError(path, "is empty (not a run record)")
        try:
            doc = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise StorageError(path, "is not valid UTF-8 (corrupt run record)") from None
        except ValueError as exc:
            raise StorageError(path, f"is not valid JSON (corrupt run record): {exc}") from None
        except RecursionError:
            raise StorageError(path, "is nested too deeply (not a run record)") from None
        if not isinstance(doc, dict) or not _is_int(doc.get("tinywf")) or not isinstance(doc.get("run"), dict):
            raise StorageError(path, "is not a tinywf run record (wrong shape)")
        if doc["tinywf"] != FORMAT:
            raise StorageError(path, f"has format {doc['tinywf']}; this tinywf reads format {FORMAT}")
        journal = doc.get("journal")
        if (not isinstance(journal, dict) or not _is_int(journal.get("size"))
                or not _is_int(journal.get("visit_start"))
                or not 0 <= journal["visit_start"] <= journal["size"]):
            raise StorageError(path, "has no valid journal position (corrupt run record)")
        tail = doc.get("tail", [])
        if not isinstance(tail, list) or not all(isinstance(e, dict) and len(e) == 1 for e in tail):
            raise StorageError(path, "has a malformed tail of journal entries (corrupt run record)")
        try:
            head = head_from_json(doc["run"])
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise StorageError(path, f"is not a valid run record ({where}: {first['msg']})") from None
        if head.run_id != run_id:
            raise StorageError(path, f"holds run '{head.run_id}', not '{run_id}'")
        return head, _Meta(journal["size"], journal["visit_start"], _due_name(index_due(head), run_id),
                           [dumps(e).encode() for e in tail])

    def _read_journal(self, run_id: str, start: int, end: int) -> list[Entry]:
        path = self.journal_path(run_id)
        if end <= start:
            return []
        try:
            fd = os.open(path, READ_FLAGS)
        except OSError as exc:
            raise StorageError(path, f"cannot read the run's journal: {_problem(exc)}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StorageError(path, "is not a regular file")
            chunks = []
            offset = start
            while offset < end and (chunk := os.pread(fd, min(end - offset, 1 << 24), offset)):
                chunks.append(chunk)
                offset += len(chunk)
        except OSError as exc:
            raise StorageError(path, f"cannot read: {_problem(exc)}") from None
        finally:
            os.close(fd)
        if offset != end:
            raise StorageError(path, f"is shorter than its record says ({offset} < {end} bytes)")
        # split on b"\n" only: str.splitlines() would also split inside strings holding U+2028 etc.
        lines = b"".join(chunks).split(b"\n")
        if lines.pop() != b"":
            raise StorageError(path, f"is corrupt: the entry ending at byte {end} is cut short")
        entries = []
        try:
            for line in lines:
                entry = json.loads(line)
                if not isinstance(entry, dict) or len(entry) != 1:
                    raise ValueError("not a journal entry")
                entries.append(entry)
        except ValueError as exc:
            raise StorageError(path, f"is corrupt: {exc}") from None
        except RecursionError:
            raise StorageError(path, "is corrupt: an entry is nested too deeply") from None
        return entries

    def _check_journal(self, run_id: str, size: int) -> None:
        """Refuse a journal the record does not agree with, without reading it."""
        path = self.journal_path(run_id)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if size == 0:
                return
            raise StorageError(path, f"is missing, but its record says it holds {size} bytes") from None
        except OSError as exc:
            raise StorageError(path, f"cannot read the run's journal: {_problem(exc)}") from None
        if stat.S_ISLNK(info.st_mode):
            raise StorageError(path, "cannot read the run's journal: it is a symlink; refusing to follow it (ELOOP)")
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(path, "is not a regular file")
        if info.st_size < size:
            raise StorageError(path, f"is shorter than its record says ({info.st_size} < {size} bytes)")

    def head(self, run_id: str) -> RunHead:
        """The run's head (record only)."""
        return self._read_record(run_id)[0]

    def load(self, run_id: str) -> LoadedRun:
        """Head and current visit's slots (from the journal and the record's tail)."""
        head, meta = self._read_record(run_id)
        tail = [json.loads(line) for line in meta.tail]
        starts = [i for i, entry in enumerate(tail) if "visit" in entry]
        # a visit that began after the journal's last entry lies wholly in the tail
        entries = tail[starts[-1]:] if starts else self._read_journal(run_id, meta.visit_start, meta.size) + tail
        try:
            slots = fold_slots(entries)
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(self.journal_path(run_id), f"is corrupt: {exc}") from None
        return LoadedRun(head, slots)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """Every audit entry, oldest first."""
        _, meta = self._read_record(run_id)
        entries = self._read_journal(run_id, 0, meta.size) + [json.loads(line) for line in meta.tail]
        return [e["log"] for e in entries if "log" in e]

    def run_ids(self) -> list[str]:
        """Ids of every ``*.json`` record in the state directory (names outside the run-id charset are no runs)."""
        if not self._check_root(create=False):
            return []
        try:
            names = os.listdir(self.root)
        except OSError as exc:
            raise StorageError(self.root, f"cannot list: {_problem(exc)}") from None
        return [n[:-5] for n in names if n.endswith(".json") and is_run_id(n[:-5])]

    # -- writing ----------------------------------------------------------------------------

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Store a new run; the caller holds its lock."""
        path = self.record_path(head.run_id)
        self._check_root(create=True)
        if os.path.lexists(path):
            raise RunExists(head.run_id)
        # a journal without a record is a leftover of a create that never committed: size 0 cuts it off
        self._commit(head, entries, _Meta(0, 0, None, []))

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Atomically replace the record with ``head`` and ``entries`` added to its tail.

        A tail grown past ``TAIL_BYTES`` is first appended to the journal and synced.
        """
        run_id = head.run_id
        meta = self._meta.get(run_id) if self._holding(run_id) else None
        if meta is None:
            meta = self._read_record(run_id)[1]
        self._commit(head, entries, meta)

    def _commit(self, head: RunHead, entries: Sequence[Entry], meta: _Meta) -> None:
        run_id = head.run_id
        path = self.record_path(run_id)
        tail = meta.tail + [dumps(entry).encode() for entry in entries]
        size, visit_start = meta.size, meta.visit_start
        flush = sum(len(line) + 1 for line in tail) > TAIL_BYTES
        if flush:
            data, size, visit_start = self._journal_bytes(meta, tail)
            tail = []
        record = (b'{"tinywf":%d,"journal":{"size":%d,"visit_start":%d},"tail":[%b],"run":%b}\n'
                  % (FORMAT, size, visit_start, b",".join(tail), head_to_json(head).encode()))
        if len(record) > MAX_RECORD_BYTES:  # never write what could not be read back
            raise StorageError(path, f"the run's record would be {len(record)} bytes, over the limit of "
                                     f"{MAX_RECORD_BYTES} (its state is too large); the run is unchanged")
        due_name = _due_name(index_due(head), run_id)
        if due_name is not None and due_name != meta.due_name:
            self._index_add(run_id, due_name)
        if flush:
            self._append(run_id, meta.size, data)
        self._replace(path, run_id, record)
        old = meta.due_name
        new = _Meta(size, visit_start, due_name, tail)
        if self._holding(run_id):
            self._meta[run_id] = new
        if old is not None and old != due_name:
            self._index_remove(old)

    @staticmethod
    def _journal_bytes(meta: _Meta, tail: list[bytes]) -> tuple[bytes, int, int]:
        """The tail as journal lines: the bytes to append, the new size, where the visit starts."""
        offset, visit_start = meta.size, meta.visit_start
        for line in tail:
            if line.startswith(b'{"visit":'):
                visit_start = offset
            offset += len(line) + 1
        return b"".join(line + b"\n" for line in tail), offset, visit_start

    def _append(self, run_id: str, size: int, data: bytes) -> None:
        path = self.journal_path(run_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(path, f"cannot write: {_problem(exc)}; the run is unchanged") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StorageError(path, "is not a regular file; the run is unchanged")
            if info.st_size < size:  # never pad a damaged journal with zeros
                raise StorageError(path, f"is shorter than its record says ({info.st_size} < {size} bytes); "
                                         "the run is unchanged")
            if info.st_size > size:
                os.ftruncate(fd, size)  # drop what a killed writer appended but never committed
            view = memoryview(data)
            offset = size
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
            os.fdatasync(fd)  # never retried: after a failed sync the page cache cannot be trusted
        except OSError as exc:
            raise StorageError(path, f"cannot write: {_problem(exc)}; the run is unchanged") from None
        finally:
            os.close(fd)

    def _replace(self, path: Path, run_id: str, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically and durably; on any error before the rename the old file stays."""
        tmp = self._file(run_id, "~.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(tmp, flags, 0o600)
            except FileExistsError:  # left by a writer that was killed; we hold the lock now
                os.unlink(tmp)
                fd = os.open(tmp, flags, 0o600)
        except OSError as exc:
            raise StorageError(path, f"cannot write: {_problem(exc)}; the run is unchanged") from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise StorageError(path, f"cannot write: {_problem(exc)}; the run is unchanged") from None
        try:
            self._fsync_dir(self.root)
        except OSError as exc:
            raise StorageError(self.root, f"cannot sync the state directory after writing {path.name}: "
                                          f"{_problem(exc)}; the change may not survive a power loss") from None

    def forget(self, run_id: str) -> None:
        """Remove what a create that never committed left (index entries, journal, temp file).

        Called under the run's lock after ``load`` found no record: no run owns these files.
        """
        if os.path.lexists(self.record_path(run_id)):
            return
        names = self._found.get(run_id)
        if names is None:
            names = [n for _, n in self._scan().get(run_id, [])]
        for name in names:
            self._index_remove(name)
        for suffix in ("~.tmp", ".journal"):
            with suppress(OSError):
                os.unlink(self._file(run_id, suffix))

    # -- the due index -------------------------------------------------------------------------

    def _ensure_index(self) -> None:
        """Create the due index, from the records when there are any (it was lost or never made)."""
        folder = self.root / INDEX_DIR
        try:
            if stat.S_ISDIR(os.lstat(folder).st_mode):
                return
            raise StorageError(folder, "is not a directory (the due index)")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(folder, f"cannot use the due index: {_problem(exc)}") from None
        from filelock import FileLock
        from filelock import Timeout as LockTimeout

        guard = FileLock(self.root / INDEX_LOCK, timeout=60, mode=0o600, fallback_to_soft=False)
        build = self.root / INDEX_BUILD
        try:
            with guard:
                if os.path.isdir(folder):
                    return
                shutil.rmtree(build, ignore_errors=True)  # left by a rebuild that was killed
                os.mkdir(build, 0o700)
                for run_id in self.run_ids():
                    try:
                        name = self._parse_due(run_id)
                    except TinyWFError:
                        continue  # unreadable or gone: nothing to index
                    if name is not None:
                        os.close(os.open(build / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
                self._fsync_dir(build)
                os.rename(build, folder)  # the index appears whole or not at all
                self._fsync_dir(self.root)
        except LockTimeout:
            raise StorageError(self.root / INDEX_LOCK, "another process has been rebuilding the due index "
                                                       "for over 60 s") from None
        except OSError as exc:
            raise StorageError(folder, f"cannot create the due index: {_problem(exc)}") from None

    def _parse_due(self, run_id: str) -> str | None:
        return self._read_record(run_id)[1].due_name

    def _index_add(self, run_id: str, name: str) -> None:
        folder = self.root / INDEX_DIR
        try:
            try:
                fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # the index was removed under us: rebuild it
                self._ensure_index()
                fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
            self._fsync_dir(folder)
        except OSError as exc:
            raise StorageError(folder, f"cannot update the due index: {_problem(exc)}; "
                                       "the run is unchanged") from None

    def _index_remove(self, name: str) -> None:
        with suppress(OSError):  # a stale entry only costs a later tick one look at the run
            os.unlink(self.root / INDEX_DIR / name)

    def _scan(self) -> dict[str, list[tuple[datetime, str]]]:
        found: dict[str, list[tuple[datetime, str]]] = {}
        if not self._check_root(create=False):
            return found
        folder = self.root / INDEX_DIR
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            self._ensure_index()
            try:
                names = os.listdir(folder)
            except OSError as exc:
                raise StorageError(folder, f"cannot list: {_problem(exc)}") from None
        except OSError as exc:
            raise StorageError(folder, f"cannot list: {_problem(exc)}") from None
        for name in names:
            ms, sep, run_id = name.partition("~")
            if not sep or not ms.isdigit() or not is_run_id(run_id):
                continue
            when = datetime.fromtimestamp(int(ms) / 1000, UTC)
            found.setdefault(run_id, []).append((when, name))
        return found

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

    def sync_index(self, head: RunHead) -> None:
        """Drop index entries of ``head``'s run that its record no longer backs."""
        keep = _due_name(index_due(head), head.run_id)
        found = self._found.get(head.run_id)
        if found is None:
            found = [n for _, n in self._scan().get(head.run_id, [])]
        for name in found:
            if name != keep:
                self._index_remove(name)
        if keep is not None and keep not in found:
            self._index_add(head.run_id, keep)

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
                import secrets

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
                self._fsync_dir(self.root)
            fd = os.open(path, READ_FLAGS)
            try:
                info = os.fstat(fd)
                data = os.read(fd, 64)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(path, f"cannot read or create the secret: {_problem(exc)}") from None
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or len(data) != 32:
            raise StorageError(path, "is not a 32-byte file readable by its owner only; remove it to make a new one")
        return data
