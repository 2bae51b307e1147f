"""Safe file primitives: read a regular file without following links, append and sync (once,
or through an ``Appender`` held open by a session), replace atomically and durably, and the
OS lock (``flock``) that guards a run.

Every write that matters is made durable before tinywf goes on: an append is followed by
``fdatasync``; a replace writes a temp file, syncs it, renames it over the target and syncs
the directory. A failed sync is never retried (after a failed sync the page cache cannot be
trusted). Errors become ``StorageError`` naming the file that failed and what that means
for the run.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from tinywf_cli.errors import StorageError

#: Never follow a link; never hang on a FIFO (a regular-file check follows the open).
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: What a failed write of a run means: nothing of it changed.
UNCHANGED = "the run is unchanged"


def problem(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: an OS error for people."""
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{exc.strerror or exc} ({name})"


def owner_name(uid: int) -> str:
    """A user's name (or ``uid N``)."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def check_owner(path: Path, info: os.stat_result, what: str) -> None:
    """Refuse a file or directory that belongs to another user.

    Running tinywf on another user's state would run the flow files their records name
    with our rights (as root: with every right), and leave files they cannot read.
    """
    me = os.geteuid()
    if info.st_uid != me:
        raise StorageError(path, f"{what} belongs to {owner_name(info.st_uid)}, not to you ({owner_name(me)}); "
                                 "tinywf only uses state that the user running it owns: run it as that user")


def regular_file(path: Path, fd: int) -> os.stat_result:
    """The status of an open file; StorageError unless it is a regular file of ours."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise StorageError(path, "is not a regular file")
    check_owner(path, info, "the file")
    return info


def read_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file owned by us; RunNotFound-style ``FileNotFoundError`` passes through.

    Raises StorageError for a link, a non-regular file, another user's file, or one larger than ``limit``.
    """
    try:
        fd = os.open(path, READ_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(path, "is a symlink; refusing to follow it") from None
        raise StorageError(path, f"cannot read: {problem(exc)}") from None
    try:
        info = regular_file(path, fd)
        if info.st_size > limit:
            raise StorageError(path, f"is too large ({info.st_size} bytes; the limit is {limit})")
        chunks = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise StorageError(path, f"is too large (over {limit} bytes)")
    except OSError as exc:
        raise StorageError(path, f"cannot read: {problem(exc)}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_range(path: Path, start: int, end: int, what: str = "the run's journal") -> bytes:
    """Bytes ``start`` to ``end`` of a regular file; StorageError when it is shorter or unreadable."""
    if end <= start:
        return b""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError as exc:
        raise StorageError(path, f"cannot read {what}: {problem(exc)}") from None
    try:
        regular_file(path, fd)
        chunks = []
        offset = start
        while offset < end and (chunk := os.pread(fd, min(end - offset, 1 << 24), offset)):
            chunks.append(chunk)
            offset += len(chunk)
    except OSError as exc:
        raise StorageError(path, f"cannot read: {problem(exc)}") from None
    finally:
        os.close(fd)
    if offset != end:
        raise StorageError(path, f"is shorter than its record says ({offset} < {end} bytes)")
    return b"".join(chunks)


def append_at(path: Path, size: int, data: bytes, *, cut_back: bool = False) -> None:
    """Write ``data`` at offset ``size`` of ``path`` (dropping anything past ``size``) and sync it.

    Bytes past ``size`` were appended by a writer that was killed before it committed:
    they are cut off. A file shorter than ``size`` is damaged and never padded. A file this
    call creates has its name synced too (the directory), so that what it holds is found.
    ``cut_back``: after a failure, cut the file back to ``size`` (what reached it would read
    as committed: a whole frame of a wal).
    """
    appender = Appender(path)
    try:
        appender._write(size, data, cut_back=cut_back)
    finally:
        appender.close()


class Appender:
    """A file a writer holding its lock appends to at known offsets, kept open between appends
    (a run's wal, for one session): one open and stat for all of them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.size = 0  # the file's size as this writer left it
        self.created = False

    def _open(self) -> None:
        path = self.path
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                self.created = True
        except OSError as exc:
            raise StorageError(path, f"cannot write: {problem(exc)}; {UNCHANGED}") from None
        try:
            info = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise StorageError(path, f"cannot write: {problem(exc)}; {UNCHANGED}") from None
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise StorageError(path, f"is not a regular file; {UNCHANGED}")
        self.fd, self.size = fd, info.st_size

    def append(self, at: int, data: bytes) -> None:
        """Write ``data`` at offset ``at`` (dropping anything past it) and sync it; after a failure,
        cut the file back to ``at`` (what reached it would read as committed)."""
        self._write(at, data, cut_back=True)

    def _write(self, at: int, data: bytes, *, cut_back: bool) -> None:
        """``append``; ``cut_back=False`` leaves what a failed write left past ``at`` (``append_at``
        of a file whose readers never read past the committed size)."""
        if self.fd < 0:
            self._open()
        path, fd = self.path, self.fd
        if self.size < at:
            raise StorageError(path, f"is shorter than its record says ({self.size} < {at} bytes); {UNCHANGED}")
        try:
            if self.size > at:
                os.ftruncate(fd, at)
                self.size = at
            view = memoryview(data)
            offset = at
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
            self.size = offset
            os.fdatasync(fd)  # never retried: after a failed sync the page cache cannot be trusted
            if self.created:
                fsync_dir(path.parent)
                self.created = False
        except OSError as exc:
            if not cut_back:  # bytes past the committed size are never read
                raise StorageError(path, f"cannot write: {problem(exc)}; {UNCHANGED}") from None
            try:
                os.ftruncate(fd, at)
                os.fdatasync(fd)
            except OSError:
                raise StorageError(path, f"cannot write: {problem(exc)}, and cannot cut off what was written; "
                                         "the change may or may not have been saved") from None
            self.size = at
            raise StorageError(path, f"cannot write: {problem(exc)}; {UNCHANGED}") from None

    def close(self) -> None:
        """Close the file (the next append opens it again)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_whole(root: Path, folder: Path, fill: Callable[[Path], None], doing: str) -> None:
    """Make the missing folder ``folder`` of ``root`` whole or not at all: ``fill(build)`` fills a
    folder ``<folder>~build`` (one a killed build left is removed first), which is synced and renamed
    into place, under the lock ``<folder>.lock``; nothing when another process made it meanwhile.
    An index that exists is never swapped (a commit may be adding to it right now). ``doing`` says
    what the holder of a lock held for over 60 s is at; an OSError is the caller's to word."""
    from filelock import FileLock
    from filelock import Timeout as LockTimeout

    lock = root / f"{folder.name}.lock"
    build = root / f"{folder.name}~build"
    try:
        with FileLock(lock, timeout=60, mode=0o600, fallback_to_soft=False):
            if os.path.isdir(folder):
                return
            shutil.rmtree(build, ignore_errors=True)
            os.mkdir(build, 0o700)
            fill(build)
            fsync_dir(build)
            fsync_dir(root)
            os.rename(build, folder)
            fsync_dir(root)
    except LockTimeout:
        raise StorageError(lock, f"another process has been {doing} for over 60 s") from None


def atomic_replace(path: Path, tmp: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably, through the temp file ``tmp``.

    On any error before the rename the old file stays as it was and the temp file is removed.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:  # left by a writer that was killed; we hold the lock now
            os.unlink(tmp)
            fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise StorageError(tmp, f"cannot write: {problem(exc)}; {UNCHANGED}") from None
    failed = tmp
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        failed = path
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp)
        raise StorageError(failed, f"cannot write: {problem(exc)}; {UNCHANGED}") from None
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(path.parent, f"cannot sync the state directory after writing {path.name}: "
                                        f"{problem(exc)}; the change may not survive a power loss") from None


class LockTimeout(Exception):
    """The lock stayed held by another process (or thread) past the timeout."""


def lock_file(path: Path, timeout: float, poll: float = 0.01) -> int:
    """Take the OS lock (``flock``, exclusive) on ``path``, created 0600 if missing; the fd that holds it.

    Waits up to ``timeout`` seconds (0: one try), then raises LockTimeout; OSError for a lock
    file that cannot be opened (a symlink is never followed). A lock file unlinked by its
    holder before we got it is opened again: the lock must be on the file that has the name.
    """
    import fcntl
    import time

    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockTimeout(path) from None
            time.sleep(poll)
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # unlinked (or replaced) under us: lock the file that has the name now


def unlock_file(fd: int) -> None:
    """Release a lock taken by ``lock_file`` (closing its fd releases it)."""
    os.close(fd)
