"""A session of one run of a ``FileStore``, held under the run's lock: loading the run, and
committing it by a frame appended to its wal or a rewrite of its record (and journal).

The files it writes and the invariants they keep are described in
``tinywf_cli.stores.files.store``.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tinywf_cli.errors import RunExists, RunNotFound, StorageError
from tinywf_cli.model import RunHead, head_json_bytes
from tinywf_cli.stores.base import LoadedRun, index_due
from tinywf_cli.stores.files import record as records
from tinywf_cli.stores.files.dueindex import entry_name
from tinywf_cli.stores.files.fileio import (
    UNCHANGED,
    Appender,
    append_at,
    atomic_replace,
    problem,
    read_range,
)
from tinywf_cli.stores.files.record import (
    encode_entry,
    encode_frame,
    encode_record,
    is_audit_line,
    is_visit_line,
    parse_entries,
    split_journal,
)
from tinywf_cli.stores.files.runfiles import Snapshot
from tinywf_cli.stores.files.tagindex import tag_folders
from tinywf_cli.stores.journal import AuditEntry, Entry, needs_trim, trim_history

if TYPE_CHECKING:
    from tinywf_cli.stores.files.store import FileStore

#: The index entry of every running run begins so (``index_due`` puts running runs at the epoch).
_RUNNING_ENTRY_PREFIX = "000000000000000~"

#: Journal entries kept in the record until they outgrow this; then they go to the journal.
TAIL_BYTES = 8 * 1024
#: Frames gathered in a run's wal before its record is rewritten (each is one commit), and
#: their bytes: a bound on what a load reads beyond the record.
WAL_FRAMES = 128
WAL_BYTES = 256 * 1024
#: Retired frames up to this many bytes stay in the wal (the next frame cuts them off); more are
#: cut off when the record is rewritten, so that a run that ended keeps no large wal.
WAL_KEEP = 16 * 1024
#: Records larger than this are refused rather than read (and never written).
MAX_RECORD_BYTES = records.MAX_RECORD_BYTES


@dataclass
class _OnDisk:
    """What a session knows of its run's files, as last read or written: the record's journal
    position, tail and salt, and the frames after it."""

    size: int
    visit_start: int
    gen: int
    salt: int
    tail: list[bytes]
    #: The frames' entries, their number, and the offset just past the last one.
    lines: list[bytes]
    frames: int
    wal_end: int
    #: Audit entries in the journal, the tail and the frames.
    logs: int


class FileRunSession:
    """A run of a ``FileStore``, held under its lock: what it knows of the run's files holds only here."""

    def __init__(self, store: FileStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        #: The run's record, its temp file and its wal (named once: a commit names them again and again).
        self.record_path = store.record_path(run_id)
        self.tmp_path = self.record_path.with_name(f"{run_id}~.tmp")
        self.wal_path = self.record_path.with_name(f"{run_id}.wal")
        self._disk: _OnDisk | None = None  # the run's files as last read or written in this session
        #: Its index entry, named when it was read or written (the engine changes the head in place).
        self._due_name: str | None = None
        #: Its tag index entries' folders, as the record on disk has them (``tagindex``).
        self._tags: frozenset[str] = frozenset()
        self._loaded: RunHead | None = None  # a head loaded and not committed since
        self._missing = False
        self._wal: Appender | None = None  # the wal, held open while this session appends to it

    def _read(self) -> tuple[RunHead, Snapshot]:
        store = self.store
        try:
            head, snap = store._read(self.run_id, lambda snap, head: (head, snap))
        except RunNotFound:
            self._missing = True
            raise
        record = snap.record
        store.files.check_journal(self.run_id, record.size, record.gen)  # what we commit next must agree with it
        self._disk = _OnDisk(record.size, record.visit_start, record.gen, record.salt, record.tail,
                             snap.frames.lines, snap.frames.count, snap.frames.end, snap.logs)
        self._due_name = entry_name(index_due(head), self.run_id)
        self._tags = tag_folders(head.tags)
        return head, snap

    def load(self) -> LoadedRun:
        """Head and current visit's slots (from the journal, the record's tail and the frames)."""
        head, snap = self._read()
        slots = self.store.visit_slots(self.run_id, snap)
        self._loaded = head
        return LoadedRun(head, slots)

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Store a new run: its record, and its wal, empty."""
        store = self.store
        store._check_root(create=True)
        if os.path.lexists(self.record_path):
            raise RunExists(head.run_id)
        self._wal = new_wal(self.wal_path)
        lines = [encode_entry(entry) for entry in entries]
        # a journal without a record is a leftover of a create that never committed: size 0 cuts it off
        disk = _OnDisk(0, 0, 0, -1, [], [], 0, 0, 0)
        self._rewrite(head, head_json_bytes(head), lines, sum(map(is_audit_line, lines)), disk, None)

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Commit ``head`` and ``entries`` durably: one frame appended to the wal while the run is
        running, else (or when the frames reach their bound) a rewrite of the record."""
        disk = self._disk
        if disk is None:
            self._read()
            disk = self._disk
            assert disk is not None
        lines = [encode_entry(entry) for entry in entries]
        logs = disk.logs + sum(1 for entry in entries if type(entry) is AuditEntry)
        if needs_trim(logs, head.history_limit):
            self._trim(head, entries, disk)
            return
        head_json = head_json_bytes(head)
        if head.status == "running" and disk.frames < WAL_FRAMES:
            frame = encode_frame(disk.salt, disk.frames, lines, head_json)
            if disk.wal_end + len(frame) <= WAL_BYTES:
                self._append(head, frame, lines, logs, disk)
                return
        self._rewrite(head, head_json, disk.tail + disk.lines + lines, logs, disk, self._due_name)

    def _append(self, head: RunHead, frame: bytes, lines: list[bytes], logs: int, disk: _OnDisk) -> None:
        """Commit by appending one frame to the wal (cutting off a torn one left by a killed writer)."""
        if self._wal is None:
            self._wal = Appender(self.wal_path)
        if self._due_name == _RUNNING_ENTRY_PREFIX + self.run_id and tag_folders(head.tags) == self._tags:
            # running before and after, tags unchanged: the indexes stay
            self._wal.append(disk.wal_end, frame)
            self._loaded = None
            self.store._found.pop(self.run_id, None)
        else:
            with self._index_kept(head, self._due_name):
                self._wal.append(disk.wal_end, frame)
        disk.lines = disk.lines + lines
        disk.frames += 1
        disk.wal_end += len(frame)
        disk.logs = logs

    def _rewrite(self, head: RunHead, head_json: bytes, lines: list[bytes], logs: int, disk: _OnDisk,
                 old_due: str | None) -> None:
        """Rewrite the record with ``lines`` after its journal (in its tail, or appended to the
        journal first when they outgrow ``TAIL_BYTES``); the frames before it retire."""
        store = self.store
        size, visit_start = disk.size, disk.visit_start
        flush = sum(len(line) + 1 for line in lines) > TAIL_BYTES
        journal_first = None
        if flush:
            for line in lines:
                if is_visit_line(line):
                    visit_start = size
                size += len(line) + 1
            data = b"".join(line + b"\n" for line in lines)
            path, before = store.journal_path(self.run_id, disk.gen), disk.size
            journal_first = lambda: append_at(path, before, data)  # noqa: E731
            lines = []
        self._replace(head, head_json, _OnDisk(size, visit_start, disk.gen, disk.salt + 1, lines, [], 0, 0, logs),
                      old_due, journal_first, disk.wal_end)

    def _trim(self, head: RunHead, entries: Sequence[Entry], disk: _OnDisk) -> None:
        """Commit with the history trimmed to ``head.history_limit``: the kept entries go whole to
        the journal's next generation, which the new record names; the old one is removed after."""
        store = self.store
        run_id = self.run_id
        assert head.history_limit is not None
        journal = store.journal_path(run_id, disk.gen)
        before = (parse_entries(journal, split_journal(journal, read_range(journal, 0, disk.size), disk.size))
                  + parse_entries(store.record_path(run_id), disk.tail)
                  + parse_entries(store.wal_path(run_id), disk.lines))
        kept, dropped = trim_history(before + list(entries), head.history_limit)
        head.dropped_logs += dropped
        lines = [encode_entry(entry) for entry in kept]
        offset, visit_start = 0, 0
        for line in lines:
            if is_visit_line(line):
                visit_start = offset
            offset += len(line) + 1
        gen = disk.gen + 1
        path = store.journal_path(run_id, gen)
        data = b"".join(line + b"\n" for line in lines)
        self._replace(head, head_json_bytes(head),
                      _OnDisk(offset, visit_start, gen, disk.salt + 1, [], [], 0, 0, head.history_limit),
                      self._due_name, lambda: atomic_replace(path, store._file(run_id, "~journal.tmp"), data),
                      disk.wal_end)
        with suppress(OSError):
            os.unlink(journal)

    @contextmanager
    def _index_kept(self, head: RunHead, old_due: str | None, *, record: bool = False) -> Iterator[None]:
        """Around a commit: the index entry the new head needs is added (and synced) before it,
        the one it no longer needs removed after. ``record``: the commit writes the record into
        place, whose directory sync makes a running run's marker durable with it."""
        store = self.store
        due_name = entry_name(index_due(head), self.run_id)
        if due_name is not None and due_name != old_due:
            store.index.add(due_name, store._rebuild_index, root_synced_next=record)
        tags, old_tags = tag_folders(head.tags), self._tags
        if tags - old_tags:
            store.tags.add(self.run_id, tags - old_tags, store._tagged)
        yield
        self._due_name = due_name
        self._tags = tags
        self._loaded = None
        store._found.pop(self.run_id, None)  # this commit kept the index in step itself
        if old_due is not None and old_due != due_name:
            store.index.remove(old_due)
        if old_tags - tags:
            store.tags.remove(self.run_id, old_tags - tags)

    def _replace(self, head: RunHead, head_json: bytes, after: _OnDisk, old_due: str | None,
                 journal_first: Callable[[], None] | None, wal_end: int) -> None:
        """Write the record (after the journal, when it changes too), keeping the due index in step;
        then empty the wal, whose frames the new record retired, when they add up to much."""
        path = self.record_path
        record = encode_record(head_json, after.size, after.visit_start, after.tail, after.gen, after.logs,
                               after.salt)
        if len(record) > MAX_RECORD_BYTES:  # never write what could not be read back
            raise StorageError(path, f"the run's record would be {len(record)} bytes, over the limit of "
                                     f"{MAX_RECORD_BYTES} (its state is too large); the run is unchanged")
        with self._index_kept(head, old_due, record=True):
            if journal_first is not None:
                journal_first()
            atomic_replace(path, self.tmp_path, record)
            self._disk = after
        if wal_end > WAL_KEEP:  # a few retired frames cost a block; emptying costs a metadata write
            empty_wal(self.wal_path)

    def delete(self) -> None:
        """Remove the run's record, wal, journal and index entries (the record first: then it is gone).

        Only the files and the index entry the record names are removed: no scan of the index
        or of the directory, so pruning many runs takes time in proportion to their number.
        """
        store = self.store
        if self._disk is None:
            self._read()
        disk = self._disk
        assert disk is not None
        due_name = self._due_name
        try:
            os.unlink(self.record_path)
        except FileNotFoundError:
            raise RunNotFound(self.run_id) from None
        except OSError as exc:
            raise StorageError(self.record_path, f"cannot delete: {problem(exc)}") from None
        if due_name is not None:
            store.index.remove(due_name)
        store.tags.remove(self.run_id, self._tags)
        self.release()
        for leftover in (store.journal_path(self.run_id, disk.gen), store.journal_path(self.run_id), self.wal_path,
                         self.tmp_path, store._file(self.run_id, "~journal.tmp")):
            with suppress(OSError):
                os.unlink(leftover)
        self._disk = None
        self._loaded = None

    def _forget(self) -> None:
        """Remove what a run without a record left behind (index entries, wal, journals, temp files)."""
        store = self.store
        if os.path.lexists(store.record_path(self.run_id)):
            return
        names = store._found.get(self.run_id)
        if names is None:
            names = [n for _, n in store._scan().get(self.run_id, [])]
        for name in names:
            store.index.remove(name)
        for suffix in ("~.tmp", "~journal.tmp", ".journal", ".wal"):
            with suppress(OSError):
                os.unlink(store._file(self.run_id, suffix))
        for older in store.root.glob(f"{glob.escape(self.run_id)}~*.journal"):
            with suppress(OSError):
                os.unlink(older)

    def release(self) -> None:
        """Close the files this session held open."""
        if self._wal is not None:
            self._wal.close()

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


WAL_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def new_wal(path: Path) -> Appender:
    """Create a new run's wal, empty (its name becomes durable with the record's directory sync),
    held open for the session's first frames.

    A wal left by a run that had this id before is emptied and synced: none of its frames
    may ever follow the new record.
    """
    wal = Appender(path)
    try:
        try:
            fd = os.open(path, WAL_FLAGS | os.O_CREAT | os.O_EXCL | os.O_TRUNC, 0o600)
        except FileExistsError:
            fd = os.open(path, WAL_FLAGS | os.O_TRUNC)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise StorageError(path, f"is not a regular file; {UNCHANGED}")
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
    except OSError as exc:
        raise StorageError(path, f"cannot write: {problem(exc)}; {UNCHANGED}") from None
    wal.fd = fd
    return wal


def empty_wal(path: Path) -> None:
    """Empty a wal whose frames a rewritten record retired (best effort: the salt retired them)."""
    with suppress(OSError):
        fd = os.open(path, WAL_FLAGS)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)
