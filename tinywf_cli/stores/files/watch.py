"""Waking a waiter when a run of a state directory changes, from whichever process changes it.

Every commit of a run touches one of two files: ``R.wal`` grows by a frame (a running run), or
``R.json`` is replaced by a rename (a pause, an end, a creation; its removal when the run is
pruned). On Linux the directory is watched with inotify for exactly those: the waiter sleeps in
``select`` until the kernel says one of them changed, so it wakes within a millisecond or two
and costs nothing meanwhile. Elsewhere (or if inotify cannot be had: no more watches left, a
file system that has none) the two files' status is looked at every ``POLL`` seconds instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys
import threading
import time
from pathlib import Path

#: How often the files are looked at where inotify cannot watch them.
POLL = 0.05

# from <sys/inotify.h>
_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_DELETE_SELF = 0x00000400
_IN_IGNORED = 0x00008000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_DELETE_SELF
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        return libc
    except (OSError, AttributeError):
        return None


class FileWatch:
    """Wake-ups for one run of a state directory: ``R.json`` replaced or removed, ``R.wal`` written."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.names = {f"{run_id}.json".encode(), f"{run_id}.wal".encode()}
        self.paths = [root / name.decode() for name in sorted(self.names)]
        self.fd: int | None = None
        libc = _libc()
        if libc is not None:
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd >= 0:
                if libc.inotify_add_watch(fd, os.fsencode(root), _MASK) >= 0:
                    self.fd = fd
                else:
                    os.close(fd)
        self.seen = self._status() if self.fd is None else ()

    @property
    def notified(self) -> bool:
        """Whether the kernel tells this watch of changes (else it looks at the files now and then)."""
        return self.fd is not None

    def __enter__(self) -> FileWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            # closing an inotify descriptor waits for the kernel's grace period (10-20 ms): not the
            # waiter's business, who has its answer
            threading.Thread(target=os.close, args=(fd,), name="tinywf-unwatch", daemon=True).start()

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait up to ``seconds`` for the run's files to change (or ``stop``); whether they may have."""
        end = time.monotonic() + seconds
        while not stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self.fd is None:
                time.sleep(min(left, POLL))
                status = self._status()
                if status != self.seen:
                    self.seen = status
                    return True
                continue
            ready, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if ready and self._ours():
                return True
        return False

    def _ours(self) -> bool:
        """Read the events waiting; whether one is about this run's files (or the directory itself)."""
        assert self.fd is not None
        found = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if name in self.names or mask & (_IN_DELETE_SELF | _IN_IGNORED):
                    found = True

    def _status(self) -> tuple[tuple[int, int, int] | None, ...]:
        """What changes in the run's files when it is committed."""
        out: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                info = os.stat(path)
            except OSError:
                out.append(None)
            else:
                out.append((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(out)
