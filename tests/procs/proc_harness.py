"""Child processes for the store proofs: run one tinywf command, optionally dying at a write boundary.

A child runs one ``Runtime`` call (``start``, ``tick``, ``resolve``, ``signal``, ...) in a
process of its own: forked from the test process (fast), or exec'd as
``python tests/procs/child.py`` (the real thing). :class:`KillSwitch` wraps the ``os``
calls the file store makes and names each *write boundary* it passes in the state
directory; the child ``SIGKILL``s itself right after the Nth occurrence of a chosen
boundary (or in the middle of a write, for the ``*_torn`` ones). Nothing in tinywf knows.

Boundaries (each counted after the call returned):

``lock``                 the run's lock was taken
``index_add``            a due-index entry (or a running run's ``.running~R`` marker) was created;
                         ``index_sync`` the index folder synced
``journal_truncate``     ``R.journal`` was cut to its committed size (before every append)
``journal_write``        entries were appended to ``R.journal``; ``journal_sync`` it was fdatasync'ed
``wal_truncate``         ``R.wal`` was created empty (a new run), cut back past its last frame (a torn
                         one left by a killed writer), or emptied after the record was rewritten
``wal_write``            a frame was appended to ``R.wal``; ``wal_sync`` it was fdatasync'ed
``tmp_open``             ``R~.tmp`` was created; ``tmp_write`` written; ``tmp_fsync`` synced
``replace``              ``R~.tmp`` was renamed over ``R.json``; ``dir_fsync`` the state dir synced
``index_remove``         an old due-index entry was removed
``action_return``        an action's function returned (its result is not committed yet)
``<kind>_write_torn``    die after writing half of the bytes (every ``*_write`` has one)

Any other write, truncation or sync of a file in the state directory is a boundary too
(``record_write``, ...), so a change that writes somewhere new is swept as well. When
tracing, each boundary notes the bytes of every record, wal and journal at that moment.

Actions of the test flows call :func:`effect`, which appends the action's key to the file
named by ``$TINYWF_TEST_EFFECTS`` (one ``write`` with ``O_APPEND``), so the parent counts
side effects across kills.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EFFECTS_ENV = "TINYWF_TEST_EFFECTS"
KILL_ENV = "TINYWF_TEST_KILL_AT"
TRACE_ENV = "TINYWF_TEST_TRACE"

BOUNDARIES = (
    "lock", "index_add", "index_sync", "journal_write", "journal_write_torn", "journal_sync",
    "wal_truncate", "wal_write", "wal_write_torn", "wal_sync",
    "tmp_open", "tmp_write", "tmp_write_torn", "tmp_fsync", "replace", "dir_fsync", "index_remove",
    "action_return",
)

#: The switch installed in this process, if any (set in children only).
SWITCH: KillSwitch | None = None


def effect(key: str, value: Any = None) -> Any:
    """An action's side effect: append ``key`` to the effects file; then the action returns."""
    path = os.environ.get(EFFECTS_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{key}\n".encode())
        finally:
            os.close(fd)
    if SWITCH is not None:
        SWITCH.event("action_return", key)
    return value


def read_effects(path: Path) -> list[str]:
    """The keys of every action run so far, in order (repeats included)."""
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


class KillSwitch:
    """Counts the write boundaries a process passes in ``state_dir``; kills it at ``kill_at``."""

    def __init__(self, state_dir: Path, kill_at: tuple[str, int] | None, trace: bool = False) -> None:
        self.root = os.path.realpath(state_dir)
        self.kill_at = kill_at
        self.counts: dict[str, int] = {}
        self.trace: list[dict[str, Any]] | None = [] if trace else None

    def event(self, name: str, detail: str | None = None) -> None:
        """Pass boundary ``name``: record it, and die if it is the chosen one."""
        count = self.counts.get(name, 0) + 1
        self.counts[name] = count
        if self.trace is not None:
            item: dict[str, Any] = {"event": name, "n": count}
            if detail is not None:
                item["detail"] = detail
            item["files"] = self.files()
            self.trace.append(item)
        if self.kill_at == (name, count):
            os.kill(os.getpid(), signal.SIGKILL)

    def files(self) -> dict[str, str]:
        """The bytes of every record, wal and journal in the state directory now (base64)."""
        found = {}
        for name in sorted(os.listdir(self.root)):
            if name.endswith((".json", ".wal", ".journal")):
                with open(os.path.join(self.root, name), "rb") as f:
                    found[name] = base64.b64encode(f.read()).decode()
        return found

    def tears(self, name: str) -> bool:
        """Whether the next ``name`` write is the one to cut in half before dying."""
        return self.kill_at == (f"{name}_torn", self.counts.get(name, 0) + 1)

    def where(self, path: str) -> str | None:
        """``tmp``, ``journal``, ``record``, ``root``, ``index`` or ``index_entry`` for paths in the state dir."""
        real = os.path.realpath(path) if not path.startswith(self.root) else path
        if real == self.root:
            return "root"
        if os.path.dirname(real) == os.path.join(self.root, ".due") or real == os.path.join(self.root, ".due"):
            return "index" if real.endswith("/.due") else "index_entry"
        if os.path.dirname(real) != self.root:
            return None
        if os.path.basename(real).startswith(".running~"):  # a running run's index entry, beside its record
            return "index_entry"
        if real.endswith("~.tmp"):
            return "tmp"
        if real.endswith(".journal"):
            return "journal"
        if real.endswith(".wal"):
            return "wal"
        if real.endswith(".json"):
            return "record"
        return None

    def fd_where(self, fd: int) -> str | None:
        try:
            return self.where(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return None

    def install(self) -> None:
        """Wrap the ``os`` calls and ``FileStore.lock`` of this process (a child's; never undone)."""
        global SWITCH
        SWITCH = self
        real_open, real_write, real_pwrite = os.open, os.write, os.pwrite
        real_fsync, real_fdatasync, real_replace, real_unlink = os.fsync, os.fdatasync, os.replace, os.unlink
        real_ftruncate = os.ftruncate

        def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            kind = self.where(os.fspath(path))
            if kind == "tmp" and flags & os.O_CREAT:
                self.event("tmp_open")
            elif kind == "index_entry" and flags & os.O_CREAT:
                self.event("index_add", os.path.basename(os.fspath(path)))
            elif kind is not None and flags & os.O_TRUNC:
                self.event(f"{kind}_truncate")
            return fd

        def write(fd: int, data: Any) -> int:
            kind = self.fd_where(fd)
            if kind is None:
                return real_write(fd, data)
            if self.tears(f"{kind}_write"):
                real_write(fd, bytes(data)[: max(1, len(data) // 2)])
                os.kill(os.getpid(), signal.SIGKILL)
            written = real_write(fd, data)
            self.event(f"{kind}_write")
            return written

        def pwrite(fd: int, data: Any, offset: int) -> int:
            kind = self.fd_where(fd)
            if kind is None:
                return real_pwrite(fd, data, offset)
            if self.tears(f"{kind}_write"):
                real_pwrite(fd, bytes(data)[: max(1, len(data) // 2)], offset)
                os.kill(os.getpid(), signal.SIGKILL)
            written = real_pwrite(fd, data, offset)
            self.event(f"{kind}_write")
            return written

        def ftruncate(fd: int, length: int) -> None:
            real_ftruncate(fd, length)
            kind = self.fd_where(fd)
            if kind is not None:
                self.event(f"{kind}_truncate")

        def fsync(fd: Any) -> None:
            real_fsync(fd)
            kind = self.fd_where(fd)
            if kind is not None:
                self.event({"root": "dir_fsync", "index": "index_sync"}.get(kind, f"{kind}_fsync"))

        def fdatasync(fd: Any) -> None:
            real_fdatasync(fd)
            kind = self.fd_where(fd)
            if kind is not None:
                self.event(f"{kind}_sync" if kind in ("journal", "wal") else f"{kind}_fdatasync")

        def replace(src: Any, dst: Any, **kwargs: Any) -> None:
            real_replace(src, dst, **kwargs)
            if self.where(os.fspath(src)) == "tmp":
                self.event("replace", os.path.basename(os.fspath(dst)))

        def unlink(path: Any, **kwargs: Any) -> None:
            real_unlink(path, **kwargs)
            if self.where(os.fspath(path)) == "index_entry":
                self.event("index_remove", os.path.basename(os.fspath(path)))

        os.open, os.write, os.pwrite = open_, write, pwrite
        os.fsync, os.fdatasync, os.replace, os.unlink = fsync, fdatasync, replace, unlink
        os.ftruncate = ftruncate

        from tinywf_cli.stores.files.store import FileStore

        real_session = FileStore.open

        @contextmanager
        def open_run(store: FileStore, run_id: str, timeout: float, *, create: bool = False) -> Iterator[Any]:
            with real_session(store, run_id, timeout, create=create) as session:
                self.event("lock", run_id)
                yield session

        FileStore.open = open_run  # type: ignore[method-assign,assignment]


# -- the commands a child runs ----------------------------------------------------------------


def run_command(argv: Sequence[str]) -> dict[str, Any]:
    """Run one ``Runtime`` call named by ``argv`` against ``$TINYWF_STATE_DIR``; its JSON document."""
    from tinywf_cli import Runtime

    rt = Runtime(os.environ["TINYWF_STATE_DIR"], lock_timeout=float(os.environ.get("TINYWF_LOCK_TIMEOUT", "10")))
    command, *args = argv
    result: Any
    if command == "start":
        flow, run_id, *rest = args
        result = rt.start(flow, input=json.loads(rest[0]) if rest else None, run_id=run_id)
    elif command == "tick":
        result = rt.tick()
    elif command == "resolve":
        result = rt.resolve(args[0], args[1], json.loads(args[2]))
    elif command == "send":
        result = rt.send(args[0], args[1], json.loads(args[2]))
    elif command == "signal":
        result = rt.signal(args[0], args[1], **json.loads(args[2] if len(args) > 2 else "{}"))
    elif command == "signals":  # many signals, one lock each: the race tests
        for _ in range(int(args[2])):
            result = rt.signal(args[0], args[1])
    elif command == "advance":
        result = rt.advance(args[0])
    elif command == "retry":
        result = rt.retry(args[0])
    elif command == "cancel":
        result = rt.cancel(args[0])
    elif command == "get":
        result = rt.get(args[0])
    elif command == "hold":  # take the run's lock, say so, and keep it until stdin closes
        with rt.store.open(args[0], 10):
            print("locked", flush=True)
            sys.stdin.read()
        return {}
    else:
        raise SystemExit(f"unknown command {command}")
    doc: dict[str, Any] = json.loads(result.model_dump_json())
    return doc


def child_main(argv: Sequence[str]) -> int:
    """Entry point of a child: install the kill switch from the environment, run the command.

    Exit status: 0, or the error's ``exit_code`` with ``error: ...`` on stderr, or 70 with a
    traceback for anything else (so a parent can count tracebacks).
    """
    from tinywf_cli.errors import TinyWFError

    kill = os.environ.get(KILL_ENV)
    trace_path = os.environ.get(TRACE_ENV)
    switch = None
    if kill or trace_path:
        kill_at = None
        if kill:
            name, _, n = kill.rpartition(":")
            kill_at = (name, int(n))
        switch = KillSwitch(Path(os.environ["TINYWF_STATE_DIR"]), kill_at, trace=bool(trace_path))
        switch.install()
    try:
        doc = run_command(argv)
    except TinyWFError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except Exception:
        traceback.print_exc()
        return 70
    finally:
        if switch is not None and trace_path:
            Path(trace_path).write_text(json.dumps({"trace": switch.trace, "counts": switch.counts}))
    print(json.dumps(doc))
    return 0


# -- running children from a test ------------------------------------------------------------------


@dataclass
class Child:
    """How a child ended: its exit status or the signal that killed it, and its output."""

    code: int | None
    signal: int | None
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        """Whether SIGKILL ended it."""
        return self.signal == signal.SIGKILL

    def json(self) -> Any:
        """Its stdout, parsed."""
        return json.loads(self.stdout)


def _child_env(state_dir: Path, env: dict[str, str] | None, kill_at: tuple[str, int] | None,
               trace: Path | None) -> dict[str, str]:
    out = {"TINYWF_STATE_DIR": str(state_dir)}
    if kill_at is not None:
        out[KILL_ENV] = f"{kill_at[0]}:{kill_at[1]}"
    if trace is not None:
        out[TRACE_ENV] = str(trace)
    out.update(env or {})
    return out


def fork_child(argv: Sequence[str], state_dir: Path, env: dict[str, str] | None = None,
               kill_at: tuple[str, int] | None = None, trace: Path | None = None,
               before: Callable[[], None] | None = None) -> tuple[int, Path]:
    """Fork a child that runs ``argv``; returns its pid and the folder its output goes to.

    ``before`` runs in the child first (e.g. waiting on a start barrier).
    """
    out = Path(tempfile.mkdtemp(prefix="tinywf-child-"))
    child_env = _child_env(state_dir, env, kill_at, trace)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid:
        return pid, out
    code = 70
    try:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the child exits without closing
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.environ.update(child_env)
        if before is not None:
            before()
        code = child_main(argv)
    except BaseException:
        traceback.print_exc()
    finally:
        with suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def reap(pid: int, out: Path) -> Child:
    """Wait for a forked child; what became of it."""
    _, status = os.waitpid(pid, 0)
    stdout = (out / "stdout").read_text() if (out / "stdout").exists() else ""
    stderr = (out / "stderr").read_text() if (out / "stderr").exists() else ""
    for name in ("stdout", "stderr"):
        (out / name).unlink(missing_ok=True)
    out.rmdir()
    if os.WIFSIGNALED(status):
        return Child(None, os.WTERMSIG(status), stdout, stderr)
    return Child(os.WEXITSTATUS(status), None, stdout, stderr)


def run_forked(argv: Sequence[str], state_dir: Path, env: dict[str, str] | None = None,
               kill_at: tuple[str, int] | None = None, trace: Path | None = None) -> Child:
    """Fork a child running ``argv`` and wait for it."""
    pid, out = fork_child(argv, state_dir, env, kill_at, trace)
    return reap(pid, out)


@contextmanager
def memory_folder(fallback: Path) -> Iterator[Path]:
    """A fresh folder on tmpfs (``/dev/shm``) when there is one, else ``fallback``; removed afterwards.

    A killed process loses nothing that reached the page cache, so the order of writes,
    not fsync, decides what a kill leaves: kill proofs hold on tmpfs, where syncs cost
    nothing and a sweep of a hundred kills takes seconds however busy the disk is.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield fallback
        return
    folder = Path(tempfile.mkdtemp(prefix="tinywf-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry under ``folder``: its mode and bytes (a symlink's target, a FIFO's kind)."""
    found: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        rel = str(path.relative_to(folder))
        if stat.S_ISLNK(info.st_mode):
            found[rel] = (info.st_mode, os.readlink(path))
        elif stat.S_ISREG(info.st_mode):
            found[rel] = (info.st_mode, path.read_bytes())
        else:
            found[rel] = (info.st_mode, "")
    return found
