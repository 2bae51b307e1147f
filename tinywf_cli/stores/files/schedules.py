"""The file store's schedules: one small JSON file per schedule in ``.schedules/``.

``.schedules/NAME.json`` holds a schedule's document (``tinywf_cli.stores.schedules``);
``NAME.lock`` beside it is the ``flock`` every change holds, for the milliseconds the
change takes. A change replaces the document atomically (``NAME~.tmp``, fsync, rename,
fsync of the folder), so a process killed at any instant leaves it as it was before or
after; a leftover temp file is replaced by the next writer. The folder is made 0700 on
first use and its name synced in the state directory. Reading takes no lock: ``tick``
reads every document (a few kilobytes each) to find the due ones.
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

    def _names(self) -> list[str]:
        try:
            entries = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(self.folder, f"cannot list the schedules: {problem(exc)}") from None
        return sorted(n[:-5] for n in entries if n.endswith(".json") and is_schedule_name(n[:-5]))

    def _scan(self, strict: bool) -> Iterator[tuple[str, dict[str, Any]]]:
        for name in self._names():
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
        return [record for _, record in self._scan(strict=True)]

    def due(self, now: datetime) -> list[str]:
        """Names to look at by ``now``."""
        return [name for name, record in self._scan(strict=False) if is_due(index_of(record), now)]

    def next_at(self) -> datetime | None:
        """The earliest next slot of a schedule not paused."""
        indexes = [index_of(record) for _, record in self._scan(strict=False)]
        return min((i[2] for i in indexes if not i[0] and i[2] is not None), default=None)


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
        atomic_replace(self.path, self.schedules._path(self.name, "~.tmp"), dumps(record).encode())

    def delete(self) -> None:
        try:
            os.unlink(self.path)
            fsync_dir(self.schedules.folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(self.path, f"cannot remove: {problem(exc)}") from None
