"""I/O errors while writing a run: a clear StorageError naming the path, the old record intact
byte for byte, no temp file left behind, and the next command gets the lock.

Failures are injected by wrapping ``os`` calls for the files of the state directory, and
for real on a small tmpfs that fills up (skipped where mounting is not permitted).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "procs"))

import store_flows
from proc_harness import run_forked

from tinywf_cli import Runtime, StorageError
from tinywf_cli.clock import ManualClock
from tinywf_cli.stores.files import session as filestore

T0 = "2026-01-01T00:00:00Z"
FLOWS = Path(store_flows.__file__)


def path_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Injector:
    """Makes one ``os`` function fail with ``code`` for matching calls; counts the calls it failed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, code: int, matches: Callable[[str], bool]) -> None:
        self.failed = 0
        real = getattr(os, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            first = args[0]
            target = path_of(first) if isinstance(first, int) else os.fspath(first)
            if matches(target):
                self.failed += 1
                raise OSError(code, os.strerror(code))
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, wrapper)


def tmp_file(path: str) -> bool:
    return path.endswith("~.tmp")


def journal(path: str) -> bool:
    return path.endswith(".journal")


def state_root(state: Path) -> Callable[[str], bool]:
    return lambda path: os.path.realpath(path) == os.path.realpath(state)


def files(state: Path) -> dict[str, bytes]:
    return {str(p.relative_to(state)): p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()}


def committed(state: Path, run_id: str = "r1") -> bytes:
    import json

    size = json.loads((state / f"{run_id}.json").read_bytes())["journal"]["size"]
    journal = state / f"{run_id}.journal"
    return journal.read_bytes()[:size] if journal.exists() else b""


@pytest.fixture
def waiting_run(tmp_path: Path) -> Iterator[tuple[Runtime, Path]]:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
    rt.start(f"{FLOWS}:Counter", run_id="r1")
    yield rt, state


FAILURES = [
    # a failure on the temp file names it; a failed rename names the record
    ("open", errno.ENOSPC, tmp_file, "r1~.tmp"),
    ("write", errno.ENOSPC, tmp_file, "r1~.tmp"),
    ("write", errno.EIO, tmp_file, "r1~.tmp"),
    ("fsync", errno.EIO, tmp_file, "r1~.tmp"),
    ("replace", errno.EIO, tmp_file, "r1.json"),
    ("replace", errno.ENOSPC, tmp_file, "r1.json"),
    ("pwrite", errno.ENOSPC, journal, "r1.journal"),
    ("fdatasync", errno.EIO, journal, "r1.journal"),
    ("ftruncate", errno.EIO, journal, "r1.journal"),
]


# A checkpoint keeps its entries in the record's tail (one atomic write) until the tail is
# full, then moves them to the journal first: the record's failures are tried both ways, the
# journal's only where it is written.
CASES = [(*f, tail) for f in FAILURES for tail in (("journal",) if f[2] is journal else ("tail", "journal"))]


@pytest.mark.parametrize(("name", "code", "matches", "named", "tail"), CASES,
                         ids=[f"{n}-{errno.errorcode[c]}-{m.__name__}-{t}" for n, c, m, _, t in CASES])
def test_a_failed_write_keeps_the_old_record(waiting_run: tuple[Runtime, Path], monkeypatch: pytest.MonkeyPatch,
                                             name: str, code: int, matches: Callable[[str], bool],
                                             named: str, tail: str) -> None:
    rt, state = waiting_run
    if tail == "journal":
        monkeypatch.setattr(filestore, "TAIL_BYTES", 0)
    if name == "ftruncate":  # only a journal with uncommitted bytes is cut
        with open(state / "r1.journal", "ab") as f:
            f.write(b'{"log":')
    record_before = (state / "r1.json").read_bytes()
    journal_before = committed(state)
    with monkeypatch.context() as patch:
        injector = Injector(patch, name, code, matches)
        with pytest.raises(StorageError) as caught:
            rt.signal("r1", "bump", by=1)
    assert injector.failed == 1  # a failed fsync is never retried
    message = caught.value.message
    assert str(state / named) in message and errno.errorcode[code] in message and "unchanged" in message
    assert caught.value.exit_code == 5
    assert (state / "r1.json").read_bytes() == record_before
    assert committed(state) == journal_before
    assert not list(state.glob("*~.tmp"))
    # the next command gets the lock (here, and in another process) and works
    assert rt.signal("r1", "bump", by=1).state["count"] == 1
    child = run_forked(["signal", "r1", "bump", '{"by": 2}'], state, {"TINYWF_NOW": T0, "TINYWF_LOCK_TIMEOUT": "0.5"})
    assert child.code == 0, child.stderr
    assert rt.get("r1").state["count"] == 3


WAL_FAILURES = [
    ("pwrite", errno.ENOSPC),
    ("pwrite", errno.EIO),
    ("fdatasync", errno.EIO),
    ("ftruncate", errno.EIO),
]


@pytest.mark.parametrize(("name", "code"), WAL_FAILURES, ids=[f"{n}-{errno.errorcode[c]}" for n, c in WAL_FAILURES])
def test_a_failed_append_to_the_wal_keeps_the_run_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            name: str, code: int) -> None:
    """A running run commits by appending a frame to its wal: a failed append is cut back, and the
    run reads as it was (the frame is never half there, never counted)."""
    state = tmp_path / "state"
    monkeypatch.setenv("TINYWF_TEST_EFFECTS", str(tmp_path / "effects"))
    rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
    rt.start(f"{FLOWS}:Asker", run_id="r1")
    if name == "ftruncate":  # only a wal with a torn frame after its last one is cut
        with open(state / "r1.wal", "ab") as f:
            f.write(b"0badf00d 1 0\t{")
    before = rt.get("r1").model_dump_json()
    files_before = files(state)
    with monkeypatch.context() as patch:
        real = getattr(os, name)
        failed = {"n": 0}

        def failing(*args: Any, **kwargs: Any) -> Any:
            if path_of(args[0]).endswith("r1.wal") and not failed["n"]:
                failed["n"] += 1
                raise OSError(code, os.strerror(code))
            return real(*args, **kwargs)

        patch.setattr(os, name, failing)
        with pytest.raises(StorageError) as caught:
            rt.resolve("r1", "answer", 3)  # running again: the event's value is the first frame
    assert failed["n"] == 1
    message = caught.value.message
    assert str(state / "r1.wal") in message and errno.errorcode[code] in message and "unchanged" in message
    assert rt.get("r1").model_dump_json() == before
    assert files(state)["r1.json"] == files_before["r1.json"]
    assert rt.resolve("r1", "answer", 3).status == "finished"
    assert rt.get("r1").state["total"] == 4


def test_a_failed_index_update_keeps_the_old_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
    rt.start(f"{FLOWS}:Asker", run_id="r1")
    before = (state / "r1.json").read_bytes()
    with monkeypatch.context() as patch:
        Injector(patch, "open", errno.ENOSPC, lambda p: "/.running~" in p)
        with pytest.raises(StorageError) as caught:
            rt.resolve("r1", "answer", 3)  # running again: needs its index entry (.running~r1) first
    assert str(state / ".running~r1") in caught.value.message and "ENOSPC" in caught.value.message
    assert (state / "r1.json").read_bytes() == before and not list(state.glob("*~.tmp"))
    assert rt.resolve("r1", "answer", 3).status == "finished"


def test_a_failed_timer_index_update_keeps_the_old_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
    rt.start(f"{FLOWS}:Counter", run_id="r1")
    before = (state / "r1.json").read_bytes()
    with monkeypatch.context() as patch:
        Injector(patch, "open", errno.ENOSPC, lambda p: "/.due/" in p)
        with pytest.raises(StorageError) as caught:
            rt.start(f"{FLOWS}:Alarm", run_id="r2")  # created, then waits on a timer: needs a due-index entry
    assert str(state / ".due") in caught.value.message and "ENOSPC" in caught.value.message
    assert (state / "r1.json").read_bytes() == before and not list(state.glob("*~.tmp"))
    assert rt.get("r2").status == "running"  # as created: its pause was not saved
    assert [(a.run_id, a.status) for a in rt.tick().advanced] == [("r2", "waiting")]
    assert [p.name.partition("~")[2] for p in (state / ".due").iterdir()] == ["r2"]


def test_a_failed_directory_sync_is_reported(waiting_run: tuple[Runtime, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename already happened: the error says the change may not be durable, and nothing is left half done."""
    rt, state = waiting_run
    with monkeypatch.context() as patch:
        Injector(patch, "fsync", errno.EIO, state_root(state))
        with pytest.raises(StorageError) as caught:
            rt.signal("r1", "bump", by=1)
    assert caught.value.path == str(state) and "EIO" in caught.value.message
    assert "power loss" in caught.value.message
    assert not list(state.glob("*~.tmp"))
    assert rt.signal("r1", "bump", by=1).state["count"] == 2


def test_a_failed_checkpoint_of_an_action_is_recovered_by_tick(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fails after an action ran: the run stays at its last checkpoint and tick finishes it later."""
    state = tmp_path / "state"
    effects = tmp_path / "effects"
    monkeypatch.setenv("TINYWF_TEST_EFFECTS", str(effects))
    rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
    rt.start(f"{FLOWS}:Asker", run_id="r1")
    real_fsync = os.fsync
    calls = {"n": 0}

    def fdatasync(fd: int) -> None:
        if path_of(fd).endswith("r1.wal"):
            calls["n"] += 1
            if calls["n"] == 2:  # 1: the event's value, 2: the result of action "use"
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fdatasync", fdatasync)
        with pytest.raises(StorageError):
            rt.resolve("r1", "answer", 7)
    assert rt.get("r1").status == "running" and not list(state.glob("*~.tmp"))
    report = rt.tick()
    assert [(a.run_id, a.status) for a in report.advanced] == [("r1", "finished")]
    assert rt.get("r1").state["total"] == 8
    assert effects.read_text().split() == ["use", "use", "more"]  # only the action in flight ran again


def test_a_failed_create_leaves_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
    with monkeypatch.context() as patch:
        Injector(patch, "replace", errno.ENOSPC, tmp_file)
        with pytest.raises(StorageError):
            rt.start(f"{FLOWS}:Counter", run_id="r1")
    assert not (state / "r1.json").exists() and not list(state.glob("*~.tmp"))
    assert rt.list().runs == []
    assert rt.tick().advanced == []  # drops the index entry the create left
    assert not list((state / ".due").iterdir())
    assert rt.start(f"{FLOWS}:Counter", run_id="r1").status == "waiting"


def test_a_record_too_large_to_read_back_is_never_written(waiting_run: tuple[Runtime, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tinywf_cli.stores.files import session as filestore

    rt, state = waiting_run
    before = files(state)
    monkeypatch.setattr(filestore, "MAX_RECORD_BYTES", len((state / "r1.json").read_bytes()) + 10)
    with pytest.raises(StorageError) as caught:
        rt.signal("r1", "bump", by=10**40)
    assert "over the limit" in caught.value.message and str(state / "r1.json") in caught.value.message
    assert files(state) == before


# -- a real full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs with 64 inodes (skipped where mounting is not permitted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,nr_inodes=64,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill the disk of ``folder``, then free ``leave`` bytes; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def test_a_full_disk_keeps_the_old_record(small_disk: Path) -> None:
    state = small_disk / "state"
    rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
    rt.start(f"{FLOWS}:Counter", run_id="r1")
    count = 0
    outcomes = []
    for leave in (0, 0, 4096, 8192, 12288):
        record = (state / "r1.json").read_bytes()
        prefix = committed(state)
        filler = fill(small_disk, leave)
        try:
            rt.signal("r1", "bump", by=1)
            count += 1
            outcomes.append("ok")
        except StorageError as exc:
            outcomes.append("ENOSPC")
            assert "ENOSPC" in exc.message and str(state) in exc.message
            assert (state / "r1.json").read_bytes() == record
        assert committed(state).startswith(prefix)
        assert not list(state.glob("*~.tmp"))
        filler.unlink()
        assert rt.get("r1").state["count"] == count
    print(f"full tmpfs, 0/0/4/8/12 KiB free: {outcomes}")
    assert outcomes[0] == "ENOSPC"
    assert rt.signal("r1", "bump", by=1).state["count"] == count + 1  # space again: the lock is free, it works


def test_running_out_of_inodes_keeps_the_old_record(small_disk: Path) -> None:
    state = small_disk / "state"
    rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
    rt.start(f"{FLOWS}:Counter", run_id="r1")
    record = (state / "r1.json").read_bytes()
    made = []
    try:
        for i in range(1000):
            path = small_disk / f"f{i}"
            path.touch()
            made.append(path)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    with pytest.raises(StorageError) as caught:
        rt.signal("r1", "bump", by=1)
    assert "ENOSPC" in caught.value.message and str(state / "r1~.tmp") in caught.value.message
    assert (state / "r1.json").read_bytes() == record
    for path in made:
        path.unlink()
    assert rt.signal("r1", "bump", by=1).state["count"] == 1
