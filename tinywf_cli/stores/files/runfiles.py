"""One run's files in a state directory, read without its lock as one consistent snapshot.

``R.json`` (the record), the frames of ``R.wal`` that follow it, and the committed part of
``R.journal`` (or of its generation ``R~N.journal``): see ``tinywf_cli.stores.files.store`` for the
layout and ``tinywf_cli.stores.files.record`` for the formats. A writer may commit while this reads: a
reader that finds the record rewritten under it (a newer frame salt, a journal generation
gone) reads again. Only the standard library: ``show`` and ``list`` read runs through here
without pydantic or the engine; the file store adds the head's validation.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tinywf_cli.errors import InvalidRunId, RunNotFound, StorageError
from tinywf_cli.names import is_run_id
from tinywf_cli.stores.files.fileio import check_owner, problem, read_file, read_range
from tinywf_cli.stores.files.record import (
    MAX_RECORD_BYTES,
    Frames,
    RawRecord,
    is_audit_line,
    is_visit_line,
    parse_document,
    parse_entries,
    parse_frames,
    split_journal,
)
from tinywf_cli.stores.journal import Entry

#: A wal never grows much past its bound before the record is rewritten: more is damage.
MAX_WAL_BYTES = 2 * MAX_RECORD_BYTES

T = TypeVar("T")


class Changed(Exception):
    """The run's files changed under a lock-free reader (it reads again)."""


class Snapshot:
    """A run as its files hold it: the record, the frames after it, and where its journal stands."""

    __slots__ = ("frames", "head_json", "lines", "record")

    def __init__(self, record: RawRecord, frames: Frames, head_json: bytes | None, lines: list[bytes]) -> None:
        self.record = record
        self.frames = frames
        #: The run's head as JSON text when a frame holds the latest one (else the record's is it).
        self.head_json = head_json
        #: Encoded entries after the journal's committed end: the record's tail, then every frame's.
        self.lines = lines

    @property
    def logs(self) -> int:
        """Audit entries in the journal, the tail and the frames."""
        return self.record.logs + sum(1 for line in self.frames.lines if is_audit_line(line))


class RunFiles:
    """The files of the runs in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def file(self, run_id: str, suffix: str) -> Path:
        """``root/<run_id><suffix>``; never for a bad id."""
        if not is_run_id(run_id):
            raise InvalidRunId(str(run_id))
        return self.root / f"{run_id}{suffix}"

    def record_path(self, run_id: str) -> Path:
        """``R.json``."""
        return self.file(run_id, ".json")

    def wal_path(self, run_id: str) -> Path:
        """``R.wal``."""
        return self.file(run_id, ".wal")

    def journal_path(self, run_id: str, gen: int = 0) -> Path:
        """``R.journal``, or ``R~N.journal`` for generation N of a trimmed history."""
        return self.file(run_id, ".journal" if not gen else f"~{gen}.journal")

    def run_ids(self) -> list[str]:
        """Ids of every ``*.json`` record (names outside the run-id charset are no runs)."""
        try:
            names = os.listdir(self.root)
        except OSError as exc:
            raise StorageError(self.root, f"cannot list: {problem(exc)}") from None
        return [n[:-5] for n in names if n.endswith(".json") and is_run_id(n[:-5])]

    # -- one snapshot ------------------------------------------------------------------------

    def read_record(self, run_id: str) -> RawRecord:
        """The record alone; RunNotFound or StorageError."""
        path = self.record_path(run_id)
        try:
            data = read_file(path, MAX_RECORD_BYTES)
        except FileNotFoundError:
            raise RunNotFound(run_id) from None
        return parse_document(path, data)

    def snapshot(self, run_id: str) -> Snapshot:
        """The record and the frames after it (raises Changed when the record was rewritten meanwhile)."""
        record = self.read_record(run_id)
        path = self.wal_path(run_id)
        try:
            data = read_file(path, MAX_WAL_BYTES)
        except FileNotFoundError:
            data = b""
        frames = parse_frames(path, data, record.salt)
        if frames.stale:
            raise Changed
        return Snapshot(record, frames, frames.head, record.tail + frames.lines)

    def retrying(self, read: Callable[[], T]) -> T:
        """``read()``, again when a writer changed the run's files under it."""
        for _ in range(5):
            try:
                return read()
            except Changed:
                continue
        raise StorageError(self.root, "a run's files keep changing under this reader; try again")

    # -- the journal --------------------------------------------------------------------------

    def check_journal(self, run_id: str, size: int, gen: int = 0) -> None:
        """Refuse a journal the record does not agree with, without reading it."""
        path = self.journal_path(run_id, gen)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if size == 0:
                return
            if gen:
                raise Changed from None  # a trim replaced it after the record was read
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

    def journal_lines(self, run_id: str, start: int, end: int, gen: int = 0) -> list[bytes]:
        """The journal's lines between two committed offsets."""
        path = self.journal_path(run_id, gen)
        if end > start and gen and not os.path.lexists(path):
            raise Changed
        return split_journal(path, read_range(path, start, end), end)

    def after_journal(self, run_id: str, snap: Snapshot, start: int = 0) -> list[Entry]:
        """The entries of ``snap.lines[start:]``, checked (damage names the record or the wal)."""
        tail = snap.record.tail
        entries = parse_entries(self.record_path(run_id), tail[start:]) if start < len(tail) else []
        return entries + parse_entries(self.wal_path(run_id), snap.frames.lines[max(0, start - len(tail)):])

    def visit_entries(self, run_id: str, snap: Snapshot) -> list[Entry]:
        """The entries of the current visit (from its marker on), checked."""
        record = snap.record
        self.check_journal(run_id, record.size, record.gen)
        starts = [i for i, line in enumerate(snap.lines) if is_visit_line(line)]
        # a visit that began after the journal's last entry lies wholly in the tail and frames
        if starts:
            return self.after_journal(run_id, snap, starts[-1])
        lines = self.journal_lines(run_id, record.visit_start, record.size, record.gen)
        return parse_entries(self.journal_path(run_id, record.gen), lines) + self.after_journal(run_id, snap)

    def all_entries(self, run_id: str, snap: Snapshot) -> list[Entry]:
        """Every entry, checked: the journal's, then the tail's and the frames'."""
        record = snap.record
        self.check_journal(run_id, record.size, record.gen)
        lines = self.journal_lines(run_id, 0, record.size, record.gen)
        return parse_entries(self.journal_path(run_id, record.gen), lines) + self.after_journal(run_id, snap)
