"""The file store's limits and breakers: one small JSON file per cell in ``.limits/``.

``.limits/<kind>~<name>.json`` (``~<hash>`` more for a key of a keyed limit: the first 24
hex digits of the key's SHA-256; the key itself is inside) holds a cell of
``tinywf_cli.stores.limits``; ``<stem>.lock`` beside it is the ``flock`` every change of it
holds, taken for the few microseconds a change lasts, never while an action runs. A change
that changes nothing writes nothing; one that does replaces the file atomically (temp file,
fsync, rename, fsync of the folder), so a process killed at any instant leaves the cell as
it was before or after. Reading takes no lock.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tinywf_cli.errors import RunNotFound, StorageError, TinyWFError
from tinywf_cli.jsonio import dumps, strict_loads
from tinywf_cli.names import GATE_NAME
from tinywf_cli.stores.files.fileio import (
    LockTimeout,
    atomic_replace,
    fsync_dir,
    lock_file,
    problem,
    read_file,
    unlock_file,
)
from tinywf_cli.stores.limits import CellKind, alive_by_head

if TYPE_CHECKING:
    from tinywf_cli.stores.files.store import FileStore

T = TypeVar("T")

FOLDER = ".limits"
#: A cell is small (a queue of waiters at most); one larger than this is damage.
MAX_CELL_BYTES = 16 * 1024 * 1024
#: How long a change waits for a cell's lock (it is held for microseconds: longer is a stuck process).
CELL_LOCK_TIMEOUT = 30.0


class FileCells:
    """The cells of a state directory's limits and breakers."""

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.folder = store.root / FOLDER

    def _stem(self, kind: CellKind, name: str, key: str | None) -> str:
        if GATE_NAME.fullmatch(name) is None:  # never turn a bad name into a path
            raise ValueError(f"not a limit or breaker name: {name!r}")
        stem = f"{kind}~{name}"
        if key is not None:
            stem += "~" + hashlib.sha256(key.encode()).hexdigest()[:24]
        return stem

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = read_file(path, MAX_CELL_BYTES)
        except FileNotFoundError:
            return None
        try:
            cell = strict_loads(data)
        except ValueError as exc:
            raise StorageError(path, f"is not valid JSON ({exc}); remove it to start this limit afresh") from None
        if not isinstance(cell, dict):
            raise StorageError(path, "is not a limit's or breaker's state; remove it to start afresh")
        return cell

    def read_cell(self, kind: CellKind, name: str, key: str | None) -> dict[str, Any] | None:
        """The cell as last written, read without its lock."""
        return self._read(self.folder / f"{self._stem(kind, name, key)}.json")

    def _ensure_folder(self) -> None:
        if self.folder.is_dir():
            return
        self.store._check_root(create=True)
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            fsync_dir(self.store.root)
        except OSError as exc:
            raise StorageError(self.folder, f"cannot create the limits folder: {problem(exc)}") from None

    def change_cell(self, kind: CellKind, name: str, key: str | None, change: Callable[[dict[str, Any]], T]) -> T:
        """Change a cell under its lock; the file is replaced only when the cell changed."""
        stem = self._stem(kind, name, key)
        self._ensure_folder()
        path = self.folder / f"{stem}.json"
        lock_path = self.folder / f"{stem}.lock"
        try:
            lock = lock_file(lock_path, CELL_LOCK_TIMEOUT)
        except LockTimeout:
            raise StorageError(lock_path, f"stayed locked by another process for {CELL_LOCK_TIMEOUT:g}s") from None
        except OSError as exc:
            raise StorageError(lock_path, f"cannot lock: {problem(exc)}") from None
        try:
            before = self._read(path)
            cell: dict[str, Any] = {} if before is None else dict(before)
            old = None if before is None else dumps(before)
            result = change(cell)
            new = dumps(cell)
            if new != old and (cell or before is not None):
                atomic_replace(path, self.folder / f"{stem}~.tmp", new.encode())
            return result
        finally:
            unlock_file(lock)

    def delete_cell(self, kind: CellKind, name: str, key: str | None) -> bool:
        """Remove a cell (under its lock); whether there was one."""
        stem = self._stem(kind, name, key)
        path = self.folder / f"{stem}.json"
        if not os.path.lexists(path):
            return False
        try:
            lock = lock_file(self.folder / f"{stem}.lock", CELL_LOCK_TIMEOUT)
        except (LockTimeout, OSError) as exc:
            raise StorageError(path, f"cannot lock it to remove it: {exc}") from None
        try:
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise StorageError(path, f"cannot remove: {problem(exc)}") from None
            with suppress(OSError):
                fsync_dir(self.folder)
            return True
        finally:
            unlock_file(lock)

    def all_cells(self, kind: CellKind) -> list[dict[str, Any]]:
        """Every cell of ``kind``, by file name."""
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(self.folder, f"cannot list: {problem(exc)}") from None
        found = []
        for name in names:
            if name.startswith(f"{kind}~") and name.endswith(".json"):
                cell = self._read(self.folder / name)
                if cell is not None:
                    found.append(cell)
        return found

    def holder_alive(self, holder: list[Any]) -> bool:
        """Whether the holder's run may still be in that attempt (or, for a whole run, has not ended).

        A run left ``running`` by a process that died keeps its slot until it is recovered: the
        attempt it makes again takes the slot over (the same ticket).
        """
        try:
            head = self.store.head(holder[1])
        except RunNotFound:
            return False
        except TinyWFError:
            return True  # unreadable now: keep the slot rather than risk one too many in flight
        return alive_by_head(head.status, head.visit, holder)
