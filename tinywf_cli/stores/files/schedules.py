"""The file store's schedules: one small JSON file per schedule in ``.schedules/``.

``.schedules/NAME.json`` holds a schedule's document (``tinywf_cli.stores.schedules``);
``NAME.lock`` beside it is the ``flock`` every change holds, for the milliseconds the
change takes. A change replaces the document atomically (``NAME~.tmp``, fsync, rename,
fsync of the folder), so a process killed at any instant leaves it as it was before or
after; a leftover temp file is replaced by the next writer. The folder is made 0700 on
first use and its name synced in the state directory. Reading takes no lock.

Beside each document, an empty *marker* says when ``tick`` should look at it, so that a
tick lists the folder instead of reading every document: ``NAME~<ms>`` (its next slot, in
milliseconds since the epoch), ``NAME~B`` (a slot is buffered: look at every pass) or
``NAME~-`` (paused, or no slot left). A change creates the new marker before it replaces
the document and removes the old one after, so a process killed in between leaves a marker
too many, never one too few; ``due`` reads the documents its due markers name and passes
by one the document says is not due (the next change removes it). A document without any
marker (copied in by hand) is read at every tick.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywf_cli.errors import InvalidSchedule, ScheduleExists, ScheduleLocked, StorageError
from tinywf_cli.jsonio import dumps, strict_loads
from tinywf_cli.names import is_schedule_name
from tinywf_cli.stores.files.fileio import (
    LockTimeout,
    atomic_replace,
    fsync_dir,
    lock_file,
    problem,
    read_file,
    unlock_file,
)
from tinywf_cli.stores.schedules import ScheduleSession, index_of, is_due

if TYPE_CHECKING:
    from tinywf_cli.stores.files.store import FileStore

FOLDER = ".schedules"
#: A schedule's document is small (its log keeps 50 entries); one larger than this is damage.
MAX_BYTES = 4 * 1024 * 1024
#: How long the first schedule's creation waits for its lock (held for milliseconds by a racing creator).
CREATE_TIMEOUT = 10.0
#: The markers of a schedule that is always to be looked at (a slot buffered), or never (paused, no slot left).
BUFFERED, NEVER = "B", "-"


def marker_of(name: str, record: dict[str, Any]) -> str:
    """The marker file's name for a schedule's document."""
    paused, buffered, next_at = index_of(record)
    if paused or (not buffered and next_at is None):
        return f"{name}~{NEVER}"
    if buffered:
        return f"{name}~{BUFFERED}"
    assert next_at is not None
    return f"{name}~{max(0, int(next_at.timestamp() * 1000)):015d}"


def parse_marker(entry: str) -> tuple[str, str] | None:
    """``(name, when)`` of a marker file's name (``when``: 15 digits, B or -), or None for another file."""
    name, sep, when = entry.partition("~")
    if not sep or not is_schedule_name(name):
        return None
    if when in (BUFFERED, NEVER) or (len(when) == 15 and when.isdigit()):
        return name, when
    return None


class FileSchedules:
    """The schedules of a state directory."""

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.folder = store.root / FOLDER

    def _path(self, name: str, suffix: str) -> Path:
        if not is_schedule_name(name):  # never turn a bad name into a path
            raise InvalidSchedule(f"invalid schedule name {name!r}")
        return self.folder / f"{name}{suffix}"

    def _ensure_folder(self) -> None:
        if self.folder.is_dir():
            return
        self.store._check_root(create=True)
        try:
            os.mkdir(self.folder, 0o700)
        except FileExistsError:
            return
        except OSError as exc:
            raise StorageError(self.folder, f"cannot create the schedules' folder: {problem(exc)}") from None
        fsync_dir(self.store.root)

    def _parse(self, path: Path, data: bytes) -> dict[str, Any]:
        try:
            record = strict_loads(data)
        except ValueError as exc:
            raise StorageError(path, f"is not valid JSON ({exc}); `tinywf schedule remove` it and add it again"
                               ) from None
        if not isinstance(record, dict):
            raise StorageError(path, "is not a schedule; `tinywf schedule remove` it and add it again")
        return record

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = read_file(path, MAX_BYTES)
        except FileNotFoundError:
            return None
        return self._parse(path, data)

    @contextmanager
    def open(self, name: str, timeout: float) -> Iterator[ScheduleSession]:
        """Hold ``NAME.lock`` for the block; a lock file no document goes with is removed after.

        Without a ``.schedules/`` folder there is no schedule, and nothing is made for a
        command that finds none: the session's ``save`` makes the folder, then holds the lock.
        """
        lock_path = self._path(name, ".lock")
        if not self.folder.is_dir():
            yield _FileSession(self, name, held=False)
            return
        try:
            fd = lock_file(lock_path, timeout)
        except LockTimeout:
            raise ScheduleLocked(name, timeout) from None
        except OSError as exc:
            raise StorageError(lock_path, f"cannot lock: {problem(exc)}") from None
        session = _FileSession(self, name)
        try:
            yield session
        finally:
            if not os.path.lexists(session.path):
                with suppress(OSError):  # no schedule (an unknown name): leave no lock file behind
                    os.unlink(lock_path)
            unlock_file(fd)

    def read(self, name: str) -> dict[str, Any] | None:
        """The document as last saved, read without the lock."""
        return self._read(self._path(name, ".json"))

    def _entries(self) -> list[str]:
        try:
            return os.listdir(self.folder)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(self.folder, f"cannot list the schedules: {problem(exc)}") from None

    def _names(self) -> list[str]:
        return sorted(n[:-5] for n in self._entries() if n.endswith(".json") and is_schedule_name(n[:-5]))

    def _scan(self, names: list[str], strict: bool) -> Iterator[tuple[str, dict[str, Any]]]:
        for name in names:
            try:
                record = self.read(name)
            except StorageError:
                if strict:
                    raise
                continue  # a damaged document: `schedule list` names it; ticks pass it by
            if record is not None:  # removed meanwhile
                yield name, record

    def all(self) -> list[dict[str, Any]]:
        """Every document, by name; StorageError names one that cannot be read."""
        return [record for _, record in self._scan(self._names(), strict=True)]

    def _markers(self) -> tuple[dict[str, list[str]], list[str]]:
        """The markers by schedule, and the schedules that have none (documents copied in by hand)."""
        entries = self._entries()
        markers: dict[str, list[str]] = {}
        for entry in entries:
            parsed = parse_marker(entry)
            if parsed is not None:
                markers.setdefault(parsed[0], []).append(parsed[1])
        bare = [n[:-5] for n in entries if n.endswith(".json") and is_schedule_name(n[:-5]) and n[:-5] not in markers]
        return markers, bare

    def due(self, now: datetime) -> list[str]:
        """Names to look at by ``now``: those a due marker names (or that have none), whose document
        says so too."""
        markers, bare = self._markers()
        ms = int(now.timestamp() * 1000)
        maybe = [name for name, whens in markers.items()
                 if any(w == BUFFERED or (w != NEVER and int(w) <= ms) for w in whens)]
        return sorted(name for name, record in self._scan(sorted(maybe + bare), strict=False)
                      if is_due(index_of(record), now))

    def next_at(self) -> datetime | None:
        """The earliest next slot of a schedule not paused: the earliest marker whose document says
        the same (a stale marker is passed by), or that of a document without markers."""
        markers, bare = self._markers()
        earliest: datetime | None = None
        timed = sorted((w, name) for name, whens in markers.items() for w in whens if w not in (BUFFERED, NEVER))
        for when, name in timed:
            try:
                record = self.read(name)
            except StorageError:
                continue
            if record is not None and marker_of(name, record) == f"{name}~{when}":
                earliest = index_of(record)[2]
                break
        for _, record in self._scan(bare, strict=False):
            paused, _, next_at = index_of(record)
            if not paused and next_at is not None and (earliest is None or next_at < earliest):
                earliest = next_at
        return earliest


class _FileSession:
    """A schedule of a state directory, held under its lock."""

    def __init__(self, schedules: FileSchedules, name: str, *, held: bool = True) -> None:
        self.schedules = schedules
        self.name = name
        self.path = schedules._path(name, ".json")
        #: False for a session opened while there was no folder (hence no schedule, and no lock to take).
        self.held = held

    def load(self) -> dict[str, Any] | None:
        return self.schedules._read(self.path) if self.held else None

    def save(self, record: dict[str, Any]) -> None:
        if not self.held:  # the first schedule: make the folder, then create it under its lock
            self.schedules._ensure_folder()
            with self.schedules.open(self.name, CREATE_TIMEOUT) as session:
                if session.load() is not None:  # another process created it meanwhile
                    raise ScheduleExists(self.name)
                session.save(record)
            return
        folder = self.schedules.folder
        marker = marker_of(self.name, record)
        others = [e for e in self.schedules._entries()
                  if e != marker and (parse_marker(e) or ("", ""))[0] == self.name]
        if not os.path.lexists(folder / marker):  # before the document: a kill leaves one too many
            try:
                os.close(os.open(folder / marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
            except OSError as exc:
                raise StorageError(folder / marker, f"cannot write: {problem(exc)}; the schedule is unchanged"
                                   ) from None
        atomic_replace(self.path, self.schedules._path(self.name, "~.tmp"), dumps(record).encode())  # syncs the folder
        for entry in others:  # after: what they said is no longer so
            with suppress(FileNotFoundError):
                os.unlink(folder / entry)

    def delete(self) -> None:
        try:
            os.unlink(self.path)
            for entry in self.schedules._entries():
                if (parse_marker(entry) or ("", ""))[0] == self.name:
                    with suppress(FileNotFoundError):
                        os.unlink(self.schedules.folder / entry)
            fsync_dir(self.schedules.folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(self.path, f"cannot remove: {problem(exc)}") from None
