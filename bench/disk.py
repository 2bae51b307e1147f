"""The disk's floor: the least a durable checkpoint of the same bytes costs on the same disk."""

from __future__ import annotations

import os
import time
from pathlib import Path


def atomic_replace(folder: Path, name: str, data: bytes) -> None:
    """Write ``data`` to ``folder/name`` as tinywf replaces a record: temp file, fsync, rename, directory fsync."""
    tmp = folder / f"{name}~.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, folder / name)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def append_durably(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` and ``fdatasync`` it, as tinywf appends to a run's journal."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def floor_seconds(folder: Path, record: bytes, count: int) -> float:
    """Seconds per atomic replace of ``record``, over ``count`` replaces."""
    start = time.perf_counter()
    for _ in range(count):
        atomic_replace(folder, "floor.json", record)
    return (time.perf_counter() - start) / count


def append_floor_seconds(folder: Path, frame: bytes, count: int) -> float:
    """Seconds per append of ``frame`` + fdatasync (open and close included, as tinywf commits a
    frame to a run's wal), over ``count`` appends: the floor of a durable action."""
    path = folder / "floor.wal"
    start = time.perf_counter()
    for _ in range(count):
        append_durably(path, frame)
    return (time.perf_counter() - start) / count


def design_floor_seconds(folder: Path, record: bytes, frame: bytes, replaces: int, appends: int) -> float:
    """Seconds for ``replaces`` atomic replaces of ``record`` and ``appends`` appends of ``frame``:
    the durable writes of one workflow in this design, and nothing else."""
    start = time.perf_counter()
    for i in range(replaces):
        atomic_replace(folder, f"floor{i}.json", record)
    for _ in range(appends):
        append_durably(folder / "floor.wal", frame)
    return time.perf_counter() - start


def checkpoint_seconds(folder: Path, record: bytes, line: bytes, count: int) -> float:
    """Seconds per journal append (fdatasync) followed by an atomic replace: one tinywf commit, minus Python."""
    start = time.perf_counter()
    for _ in range(count):
        append_durably(folder / "floor.journal", line)
        atomic_replace(folder, "floor.json", record)
    return (time.perf_counter() - start) / count
