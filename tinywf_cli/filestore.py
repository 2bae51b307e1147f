"""The file store: each run is a JSON record in the state directory, changed only under its lock.

Files of run ``R`` (``~`` is outside the run-id charset, so no two runs' files collide):

- ``R.json``     the record: the run's head and how much of its journal is committed.
  Replaced atomically at every checkpoint (temp file, fsync, rename, fsync of the
  directory), so it stays small whatever the history.
- ``R.journal``  append-only JSON lines: audit entries and the records of step visits.
  Bytes past the committed size (a writer killed mid-append) are ignored by readers and
  cut off by the next writer.
- ``R.lock``     the ``filelock.FileLock`` that guards every change.
- ``R~.tmp``     the record being written; a leftover from a killed writer is replaced.
- ``.due/<ms>~R`` the due index: ``tick`` lists names, it does not read every run.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as LockTimeout
from pydantic import ValidationError

from tinywf_cli.errors import RunExists, RunLocked, RunNotFound, StorageError
from tinywf_cli.model import RunHead
from tinywf_cli.store import Entry, LoadedRun, fold_slots, index_due
from tinywf_cli.values import dumps

#: Records larger than this are refused rather than read.
MAX_RECORD_BYTES = 64 * 1024 * 1024
FORMAT = 1
INDEX_DIR = ".due"


@dataclass
class _Meta:
    """What this process knows of a run's files since it last read or wrote them (under the lock)."""

    size: int
    visit_start: int
    due: datetime | None


def _problem(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{exc.strerror or exc} ({name})"


def _due_name(due: datetime, run_id: str) -> str:
    return f"{max(0, int(due.timestamp() * 1000)):015d}~{run_id}"


class FileStore:
    """Runs as files in ``root`` (created 0700 on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._meta: dict[str, _Meta] = {}
        self._found: dict[str, list[str]] = {}
        self._checked = False

    # -- paths and the directory --------------------------------------------------

    def record_path(self, run_id: str) -> Path:
        """``R.json``."""
        return self.root / f"{run_id}.json"

    def journal_path(self, run_id: str) -> Path:
        """``R.journal``."""
        return self.root / f"{run_id}.journal"

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
                os.makedirs(self.root / INDEX_DIR, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StorageError(self.root, f"cannot create state directory: {_problem(exc)}") from None
            self._checked = True
            return True
        except OSError as exc:
            raise StorageError(self.root, f"cannot use state directory: {_problem(exc)}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise StorageError(self.root, "state directory is not a directory")
        if info.st_mode & 0o022:
            raise StorageError(self.root, "state directory is writable by other users; `chmod go-w` it")
        if create:
            try:
                os.makedirs(self.root / INDEX_DIR, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StorageError(self.root, f"cannot create the due index: {_problem(exc)}") from None
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
    def lock(self, run_id: str, timeout: float) -> Iterator[None]:
        """Hold ``R.lock`` (an OS file lock; never a soft lock)."""
        self._check_root(create=True)
        lock = FileLock(self.root / f"{run_id}.lock", timeout=timeout, mode=0o600,
                        poll_interval=0.01, fallback_to_soft=False)
        try:
            lock.acquire()
        except LockTimeout:
            raise RunLocked(run_id, timeout) from None
        except OSError as exc:
            raise StorageError(self.root / f"{run_id}.lock", f"cannot lock: {_problem(exc)}") from None
        self._meta.pop(run_id, None)  # what we know of a run's files holds only under its lock
        try:
            yield
        finally:
            self._meta.pop(run_id, None)
            lock.release()

    # -- reading --------------------------------------------------------------------------

    def _read_record(self, run_id: str) -> tuple[RunHead, _Meta]:
        path = self.record_path(run_id)
        if not self._check_root(create=False):
            raise RunNotFound(run_id)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
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
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
                if sum(len(c) for c in chunks) > MAX_RECORD_BYTES:
                    raise StorageError(path, "is too large")
        except OSError as exc:
            raise StorageError(path, f"cannot read: {_problem(exc)}") from None
        finally:
            os.close(fd)
        return self._parse_record(path, run_id, b"".join(chunks))

    def _parse_record(self, path: Path, run_id: str, data: bytes) -> tuple[RunHead, _Meta]:
        if not data.strip():
            raise StorageError(path, "is empty (not a run record)")
        try:
            doc = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise StorageError(path, "is not valid UTF-8 (corrupt run record)") from None
        except ValueError as exc:
            raise StorageError(path, f"is not valid JSON (corrupt run record): {exc}") from None
        if not isinstance(doc, dict) or doc.get("tinywf") != FORMAT or not isinstance(doc.get("run"), dict):
            raise StorageError(path, "is not a tinywf run record (wrong shape)")
        journal = doc.get("journal")
        if (not isinstance(journal, dict) or not isinstance(journal.get("size"), int)
                or not isinstance(journal.get("visit_start"), int)
                or not 0 <= journal["visit_start"] <= journal["size"]):
            raise StorageError(path, "has no valid journal position (corrupt run record)")
        try:
            head = RunHead.model_validate(doc["run"])
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise StorageError(path, f"is not a valid run record ({where}: {first['msg']})") from None
        if head.run_id != run_id:
            raise StorageError(path, f"holds run '{head.run_id}', not '{run_id}'")
        meta = _Meta(journal["size"], journal["visit_start"], index_due(head))
        self._meta[run_id] = meta
        return head, meta

    def _read_journal(self, run_id: str, start: int, end: int) -> list[Entry]:
        path = self.journal_path(run_id)
        if end <= start:
            return []
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(path, f"cannot read the run's journal: {_problem(exc)}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StorageError(path, "is not a regular file")
            data = os.pread(fd, end - start, start)
        except OSError as exc:
            raise StorageError(path, f"cannot read: {_problem(exc)}") from None
        finally:
            os.close(fd)
        if len(data) != end - start:
            raise StorageError(path, f"is shorter than its record says ({start + len(data)} < {end} bytes)")
        entries = []
        try:
            for line in data.decode("utf-8").splitlines():
                entry = json.loads(line)
                if not isinstance(entry, dict) or len(entry) != 1:
                    raise ValueError("not a journal entry")
                entries.append(entry)
        except ValueError as exc:
            raise StorageError(path, f"is corrupt: {exc}") from None
        return entries

    def head(self, run_id: str) -> RunHead:
        """The run's head (record only)."""
        return self._read_record(run_id)[0]

    def load(self, run_id: str) -> LoadedRun:
        """Head and current visit's slots."""
        head, meta = self._read_record(run_id)
        entries = self._read_journal(run_id, meta.visit_start, meta.size)
        try:
            slots = fold_slots(entries)
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(self.journal_path(run_id), f"is corrupt: {exc}") from None
        return LoadedRun(head, slots)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """Every audit entry, oldest first."""
        _, meta = self._read_record(run_id)
        return [e["log"] for e in self._read_journal(run_id, 0, meta.size) if "log" in e]

    def run_ids(self) -> list[str]:
        """Ids of every ``*.json`` record in the state directory."""
        if not self._check_root(create=False):
            return []
        try:
            names = os.listdir(self.root)
        except OSError as exc:
            raise StorageError(self.root, f"cannot list: {_problem(exc)}") from None
        return [n[:-5] for n in names if n.endswith(".json") and "~" not in n and not n.startswith(".")]

    # -- writing ----------------------------------------------------------------------------

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Store a new run; the caller holds its lock."""
        path = self.record_path(head.run_id)
        if os.path.lexists(path):
            raise RunExists(head.run_id)
        # a journal without a record is a leftover of a create that never committed
        self._meta[head.run_id] = _Meta(0, 0, None)
        self.commit(head, entries)

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Append ``entries`` to the journal, then atomically replace the record."""
        run_id = head.run_id
        meta = self._meta.get(run_id)
        if meta is None:
            meta = self._read_record(run_id)[1]
        size, visit_start = meta.size, meta.visit_start
        if entries:
            size, visit_start = self._append(run_id, size, visit_start, entries)
        due = index_due(head)
        if due != meta.due and due is not None:
            self._index_add(run_id, due)
        record = (f'{{"tinywf":{FORMAT},"journal":{{"size":{size},"visit_start":{visit_start}}},'
                  f'"run":{head.model_dump_json()}}}\n').encode()
        self._replace(self.record_path(run_id), run_id, record)
        old_due = meta.due
        self._meta[run_id] = _Meta(size, visit_start, due)
        if old_due != due and old_due is not None:
            self._index_remove(_due_name(old_due, run_id))

    def _append(self, run_id: str, size: int, visit_start: int, entries: Sequence[Entry]) -> tuple[int, int]:
        path = self.journal_path(run_id)
        lines = []
        offset = size
        for entry in entries:
            line = (dumps(entry) + "\n").encode()
            if "visit" in entry:
                visit_start = offset
            offset += len(line)
            lines.append(line)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(path, f"cannot write: {_problem(exc)}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StorageError(path, "is not a regular file")
            os.ftruncate(fd, size)  # drop what a killed writer appended but never committed
            data = b"".join(lines)
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], size + written)
            os.fdatasync(fd)
        except OSError as exc:
            raise StorageError(path, f"cannot write: {_problem(exc)}; the run is unchanged") from None
        finally:
            os.close(fd)
        return offset, visit_start

    def _replace(self, path: Path, run_id: str, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically and durably; on any error the old file stays."""
        tmp = self.root / f"{run_id}~.tmp"
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
            raise StorageError(self.root, f"cannot sync the state directory: {_problem(exc)}") from None

    # -- the due index -------------------------------------------------------------------------

    def _index_add(self, run_id: str, due: datetime) -> None:
        folder = self.root / INDEX_DIR
        try:
            fd = os.open(folder / _due_name(due, run_id), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
            self._fsync_dir(folder)
        except OSError as exc:
            raise StorageError(folder, f"cannot update the due index: {_problem(exc)}") from None

    def _index_remove(self, name: str) -> None:
        try:
            os.unlink(self.root / INDEX_DIR / name)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # a stale entry only costs a later tick one look at the run

    def _scan(self) -> dict[str, list[tuple[datetime, str]]]:
        found: dict[str, list[tuple[datetime, str]]] = {}
        if not self._check_root(create=False):
            return found
        try:
            names = os.listdir(self.root / INDEX_DIR)
        except FileNotFoundError:
            return found
        except OSError as exc:
            raise StorageError(self.root / INDEX_DIR, f"cannot list: {_problem(exc)}") from None
        for name in names:
            ms, sep, run_id = name.partition("~")
            if not sep or not ms.isdigit() or not run_id:
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
        due = index_due(head)
        keep = None if due is None else _due_name(due, head.run_id)
        for name in self._found.get(head.run_id, []):
            if name != keep:
                self._index_remove(name)
        if keep is not None and keep not in self._found.get(head.run_id, []):
            self._index_add(head.run_id, due)  # type: ignore[arg-type]
