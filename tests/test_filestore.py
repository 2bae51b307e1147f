"""The file store: bounded checkpoints, the due index, permissions, and its journal rules."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "procs"))

import store_flows
from commit_hooks import on_commit
from proc_harness import EFFECTS_ENV, memory_folder, read_effects, run_forked

from tinywf_cli import RunNotFound, Runtime, StorageError
from tinywf_cli.clock import ManualClock
from tinywf_cli.model import RunHead
from tinywf_cli.stores.files import runfiles
from tinywf_cli.stores.files import session as filestore
from tinywf_cli.stores.files.store import FileStore
from tinywf_cli.stores.journal import Entry

FLOWS = Path(store_flows.__file__)
T0 = "2026-01-01T00:00:00Z"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


class MeasuredStore(FileStore):
    """A file store that notes, per commit, the visit, the record size, the journal bytes appended,
    the wal's size and whether the record was rewritten."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.commits: list[tuple[int, int, int]] = []
        self.wal_sizes: list[int] = []
        self.rewrites = 0
        self.journal_sizes: dict[str, int] = {}
        self.inodes: dict[str, int] = {}
        on_commit(self, self.measure)

    def measure(self, head: RunHead, entries: Sequence[Entry]) -> None:
        journal = self.journal_path(head.run_id)
        before = self.journal_sizes.get(head.run_id, 0)
        after = self.journal_sizes[head.run_id] = journal.stat().st_size if journal.exists() else 0
        record = self.record_path(head.run_id).stat()
        self.commits.append((head.visit, record.st_size, after - before))
        self.wal_sizes.append(self.wal_path(head.run_id).stat().st_size)
        self.rewrites += self.inodes.get(head.run_id) != record.st_ino
        self.inodes[head.run_id] = record.st_ino


@pytest.fixture
def journal_every_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Move every checkpoint's entries to the journal at once (no tail kept in the record)."""
    monkeypatch.setattr(filestore, "TAIL_BYTES", 0)


# -- bounded checkpoints ------------------------------------------------------------------------------


@pytest.fixture
def memory_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on tmpfs when there is one: sizes do not depend on the disk, only speed does."""
    with memory_folder(tmp_path) as folder:
        yield folder


@pytest.mark.slow
def test_checkpoints_stay_the_same_size_over_1000_visits(memory_dir: Path) -> None:
    tmp_path = memory_dir
    store = MeasuredStore(tmp_path / "state")
    rt = Runtime(store, clock=ManualClock(T0))
    run = rt.start(f"{FLOWS}:Looper", input={"n": 1000}, run_id="loop")
    assert run.status == "finished" and run.state["visits"] == 1000

    def largest(visits: range) -> tuple[int, int]:
        rows = [(size, appended) for v, size, appended in store.commits if v in visits]
        return max(r[0] for r in rows), max(r[1] for r in rows)

    record_early, appended_early = largest(range(1, 501))
    record_late, appended_late = largest(range(501, 1001))
    print(f"largest record bytes over visits 1-500: {record_early}, over 501-1000: {record_late}; "
          f"largest journal append: {appended_early} / {appended_late}; largest wal: {max(store.wal_sizes)}")
    # the record holds the head and a bounded tail of entries; a few more digits in counters
    # (visit, progress, state), nothing that grows with the history
    assert record_late <= record_early + 256  # visit numbers in the tail's entries gain digits too
    assert record_late <= filestore.TAIL_BYTES + 2048
    # the frames of a rewrite move to the journal in one append, whatever the history before them
    assert 0 < appended_late <= appended_early + 2048
    assert max(store.wal_sizes) <= filestore.WAL_BYTES
    journal = (tmp_path / "state" / "loop.journal").stat().st_size
    assert journal > 20 * record_late  # the history is all there, in the journal
    reads: list[int] = []
    real = runfiles.RunFiles.journal_lines

    def measured(self: runfiles.RunFiles, run_id: str, start: int, end: int, gen: int = 0) -> list[bytes]:
        reads.append(end - start)
        return real(self, run_id, start, end, gen)

    runfiles.RunFiles.journal_lines = measured  # type: ignore[method-assign]
    try:
        loaded = FileStore(tmp_path / "state").load("loop")
        read_to_load = sum(reads)
        logs = rt.get("loop").logs
    finally:
        runfiles.RunFiles.journal_lines = real  # type: ignore[method-assign]
    assert len(loaded.slots) == 1 and read_to_load < 1000  # loading reads the current visit only
    assert sum(1 for log in logs if log.type == "visited") == 1000  # show still has the whole audit log
    assert sum(1 for log in logs if log.type == "transition") == 999


def test_the_record_holds_the_run_id_and_only_a_bounded_tail_of_the_audit_log(tmp_path: Path) -> None:
    rt = Runtime(tmp_path / "state", clock=ManualClock(T0))
    rt.start(f"{FLOWS}:Looper", input={"n": 200}, run_id="loop")
    data = (tmp_path / "state" / "loop.json").read_bytes()
    record = json.loads(data)
    assert record["run"]["run_id"] == "loop"
    assert len(data) <= filestore.TAIL_BYTES + 2048
    assert json.dumps(record["tail"]).count('"visited"') < 200
    assert sum(1 for log in rt.get("loop").logs if log.type == "visited") == 200


def test_a_commit_of_a_running_run_is_one_append_until_the_frames_are_full(tmp_path: Path) -> None:
    store = MeasuredStore(tmp_path / "state")
    Runtime(store, clock=ManualClock(T0)).start(f"{FLOWS}:Looper", input={"n": 600}, run_id="loop")
    # the record is rewritten at the create, every WAL_FRAMES frames, and at the end
    assert 2 < store.rewrites <= len(store.commits) // filestore.WAL_FRAMES + 3
    appends = [appended for _, _, appended in store.commits if appended]
    assert 0 < len(appends) <= store.rewrites  # the journal is written only when the record is
    assert all(a > filestore.TAIL_BYTES for a in appends)
    assert (tmp_path / "state" / "loop.wal").stat().st_size <= filestore.WAL_KEEP  # a run that ended keeps no large wal


# -- the journal --------------------------------------------------------------------------------------


def test_bytes_past_the_committed_size_are_ignored_then_cut_off(tmp_path: Path, journal_every_commit: None) -> None:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0))
    rt.start(f"{FLOWS}:Counter", run_id="r1")
    journal = state / "r1.journal"
    committed = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(b'{"slot":{"index":0,"kind":"act')  # what a writer killed mid-append leaves
    logs = len(rt.get("r1").logs)  # readers stop at the committed size
    rt.signal("r1", "bump")
    data = journal.read_bytes()
    assert data.startswith(committed) and b'"kind":"act' not in data
    assert len(rt.get("r1").logs) == logs + 1


def test_a_journal_shorter_than_its_record_is_never_padded(tmp_path: Path, journal_every_commit: None) -> None:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
    rt.start(f"{FLOWS}:Counter", run_id="r1")
    journal = state / "r1.journal"
    journal.write_bytes(journal.read_bytes()[:-10])
    record = (state / "r1.json").read_bytes()
    with pytest.raises(StorageError) as caught:
        rt.signal("r1", "bump")
    assert caught.value.path == str(journal) and "shorter" in caught.value.message
    assert (state / "r1.json").read_bytes() == record and b"\0" not in journal.read_bytes()


def test_a_reader_thread_never_rewinds_a_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One Runtime shared by a thread advancing a run and threads showing it: no committed entry is lost.

    The readers are slowed between reading a record and parsing it, so what they parse is
    older than what the writer has committed since.
    """
    rt = Runtime(tmp_path / "state", clock=ManualClock(T0))
    done = threading.Event()
    errors: list[BaseException] = []
    writer = threading.get_ident()
    parse = runfiles.parse_document

    def slow_parse(path: Path, data: bytes) -> Any:
        if threading.get_ident() != writer:
            time.sleep(0.0015)
        return parse(path, data)

    monkeypatch.setattr(runfiles, "parse_document", slow_parse)

    def show() -> None:
        while not done.is_set():
            try:
                rt.get("r1")
            except RunNotFound:
                continue
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    readers = [threading.Thread(target=show) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        run = rt.start(f"{FLOWS}:Sleepy", input={"n": 150}, run_id="r1")
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert errors == []
    assert run.status == "finished" and run.state["total"] == 150
    doc = Runtime(tmp_path / "state", clock=ManualClock(T0)).get("r1")
    assert sum(1 for log in doc.logs if log.type == "action") == 150


# -- the due index ------------------------------------------------------------------------------------


class CountingStore(FileStore):
    """Counts record reads."""

    reads: list[str]

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = []

    def _read(self, run_id: str, then: Any) -> Any:
        self.reads.append(run_id)
        return super()._read(run_id, then)


@pytest.fixture
def crowd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """40 runs waiting on events, 10 on timers not yet due, and one each due by timer, retry, event timeout."""
    monkeypatch.setenv(EFFECTS_ENV, str(tmp_path / "effects"))
    state = tmp_path / "state"
    early = Runtime(state, clock=ManualClock("2025-12-31T23:00:00Z"))
    early.start(f"{FLOWS}:Alarm", run_id="due-timer")
    early.start(f"{FLOWS}:Retrier", run_id="due-retry")
    early.start(f"{FLOWS}:Deadline", run_id="due-timeout")
    rt = Runtime(state, clock=ManualClock(T0))
    for i in range(40):
        rt.start(f"{FLOWS}:Counter", run_id=f"idle-{i}")
    for i in range(10):
        rt.start(f"{FLOWS}:Alarm", run_id=f"later-{i}")
    yield state


def test_tick_reads_only_the_due_runs(crowd: Path) -> None:
    store = CountingStore(crowd)
    report = Runtime(store, clock=ManualClock("2026-01-01T00:00:30Z")).tick()
    advanced = {a.run_id: a.status for a in report.advanced}
    assert advanced == {"due-timer": "finished", "due-retry": "failed", "due-timeout": "finished"}
    assert sorted(set(store.reads)) == ["due-retry", "due-timeout", "due-timer"]
    assert report.due == 3 and report.skipped == []
    rt = Runtime(crowd, clock=ManualClock(T0))
    assert rt.get("due-timeout").state["answer"] == -1
    assert rt.get("due-retry").error is not None
    store.reads.clear()
    again = Runtime(store, clock=ManualClock("2026-01-01T00:00:30Z")).tick()
    assert again.advanced == [] and store.reads == []  # ended runs left nothing in the index


def test_next_due_is_the_earliest_waiting_run(crowd: Path) -> None:
    rt = Runtime(crowd, clock=ManualClock(T0))
    assert rt.next_due() == at("2025-12-31T23:00:00Z") + timedelta(minutes=1)
    rt.tick()
    assert rt.next_due() == at(T0) + timedelta(minutes=1)


def test_tick_recovers_a_run_whose_process_died(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EFFECTS_ENV, str(tmp_path / "effects"))
    state = tmp_path / "state"
    env = {"TINYWF_NOW": T0, EFFECTS_ENV: str(tmp_path / "effects")}
    died = run_forked(["start", f"{FLOWS}:Chain", "r1"], state, env, kill_at=("action_return", 3))
    assert died.killed
    store = CountingStore(state)
    rt = Runtime(store, clock=ManualClock(T0))
    assert rt.get("r1").status == "running"
    store.reads.clear()
    report = rt.tick()
    assert [(a.run_id, a.status) for a in report.advanced] == [("r1", "finished")]
    assert read_effects(tmp_path / "effects") == ["a0", "a1", "a2", "a2", "b0", "b1"]
    assert any(log.type == "recover" for log in rt.get("r1").logs)


def test_tick_drops_stale_index_entries(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0))
    rt.start(f"{FLOWS}:Alarm", run_id="r1")
    rt.cancel("r1")
    assert not list((state / ".due").iterdir())  # an ended wait leaves nothing in the index
    rt.start(f"{FLOWS}:Alarm", run_id="r2")
    index = state / ".due"
    (index / "000000000000000~r1").touch()  # stale: r1 is cancelled
    (index / "000000000000000~ghost").touch()  # a run that never got a record
    (index / "000000000000001~r2").touch()  # r2 is due later than this says
    (index / "junk").touch()  # not an index entry at all
    report = rt.tick()
    assert report.advanced == [] and report.skipped == []
    left = sorted(p.name for p in index.iterdir())
    assert left == [f"{int((at(T0) + timedelta(minutes=1)).timestamp() * 1000):015d}~r2", "junk"]


def test_a_lost_index_is_rebuilt_from_the_records(crowd: Path) -> None:
    shutil.rmtree(crowd / ".due")
    report = Runtime(crowd, clock=ManualClock("2026-01-01T00:00:30Z")).tick()
    assert sorted(a.run_id for a in report.advanced) == ["due-retry", "due-timeout", "due-timer"]
    assert len(list((crowd / ".due").iterdir())) == 10  # the later timers
    assert not (crowd / ".due~build").exists()


def test_an_index_removed_under_a_writer_is_rebuilt(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0))
    rt.start(f"{FLOWS}:Alarm", run_id="r1")
    rt.start(f"{FLOWS}:Asker", run_id="r2")
    shutil.rmtree(state / ".due")
    rt.start(f"{FLOWS}:Alarm", run_id="r3")  # this process already checked the directory
    names = sorted(p.name.partition("~")[2] for p in (state / ".due").iterdir())
    assert names == ["r1", "r3"]


# -- permissions --------------------------------------------------------------------------------------


def test_files_are_private_whatever_the_umask(tmp_path: Path, journal_every_commit: None) -> None:
    old = os.umask(0)
    try:
        state = tmp_path / "deep" / "state"
        rt = Runtime(state, clock=ManualClock(T0))
        rt.start(f"{FLOWS}:Alarm", run_id="r1")
    finally:
        os.umask(old)
    assert mode(state) == 0o700 and mode(state / ".due") == 0o700
    for name in ("r1.json", "r1.journal", "r1.wal", "r1.lock"):
        assert mode(state / name) == 0o600, name
    assert all(mode(p) == 0o600 for p in (state / ".due").iterdir())


@pytest.mark.parametrize("unsafe", [0o770, 0o702, 0o777, 0o1777])
def test_a_state_dir_others_can_write_is_refused(tmp_path: Path, unsafe: int) -> None:
    state = tmp_path / "state"
    Runtime(state, clock=ManualClock(T0)).start(f"{FLOWS}:Counter", run_id="r1")
    os.chmod(state, unsafe)
    rt = Runtime(state, clock=ManualClock(T0))
    calls: list[Callable[[], object]] = [lambda: rt.get("r1"), lambda: rt.list(), lambda: rt.tick(),
                                         lambda: rt.signal("r1", "bump"),
                                         lambda: rt.start(f"{FLOWS}:Counter", run_id="r2")]
    for call in calls:
        with pytest.raises(StorageError) as caught:
            call()
        assert caught.value.path == str(state) and "other users" in caught.value.message
    assert not (state / "r2.json").exists()


def test_a_state_dir_others_can_only_read_is_used(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    rt = Runtime(state, clock=ManualClock(T0))
    assert rt.start(f"{FLOWS}:Counter", run_id="r1").status == "waiting"
    assert mode(state) == 0o755  # an existing directory's mode is the user's business
    assert mode(state / "r1.json") == 0o600


def test_a_missing_state_dir_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    state = tmp_path / "nothing"
    rt = Runtime(state, clock=ManualClock(T0))
    assert rt.list().runs == [] and rt.tick().advanced == [] and rt.next_due() is None
    assert not state.exists()


def test_the_record_is_replaced_not_rewritten(tmp_path: Path) -> None:
    """Every checkpoint is a new file renamed into place: a reader holding the old one sees it whole."""
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0))
    rt.start(f"{FLOWS}:Counter", run_id="r1")
    with open(state / "r1.json", "rb") as old:
        before = old.read()
        rt.signal("r1", "bump")
        old.seek(0)
        assert old.read() == before
    assert (state / "r1.json").read_bytes() != before


def test_times_in_due_index_names_are_milliseconds(tmp_path: Path) -> None:
    state = tmp_path / "state"
    clock = ManualClock(datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC))
    Runtime(state, clock=clock).start(f"{FLOWS}:Alarm", run_id="r1")
    (entry,) = (state / ".due").iterdir()
    assert entry.name == f"{int(datetime(2026, 1, 1, 0, 1, 0, 999_000, tzinfo=UTC).timestamp() * 1000):015d}~r1"
    clock.set(datetime(2026, 1, 1, 0, 1, 0, 999_500, tzinfo=UTC))  # same millisecond, not yet due
    assert Runtime(state, clock=clock).tick().advanced == []
    assert [p.name for p in (state / ".due").iterdir()] == [entry.name]
    clock.set(datetime(2026, 1, 1, 0, 1, 1, tzinfo=UTC))
    assert [a.run_id for a in Runtime(state, clock=clock).tick().advanced] == ["r1"]


# -- a bounded history ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_long_loop_with_a_history_limit_keeps_its_files_small(memory_dir: Path) -> None:
    store = MeasuredStore(memory_dir / "state")
    rt = Runtime(store, clock=ManualClock(T0))
    run = rt.start(f"{FLOWS}:BoundedLooper", input={"n": 5000}, run_id="loop")
    assert run.status == "finished" and run.state["visits"] == 5000
    files = {p.name: p.stat().st_size for p in (memory_dir / "state").iterdir() if p.name.startswith("loop")}
    print(f"5,000 visits, history_limit 100: {files}")
    assert sum(files.values()) < 512 * 1024  # bounded, whatever the number of visits (the wal included)
    assert [n for n in files if n.endswith(".journal")] == [next(n for n in files if n.endswith(".journal"))]
    doc = rt.get("loop")
    assert len(doc.logs) == 100 and doc.logs[-1].type == "finish"
    # start, an action, a log and a transition per visit (none after the last), finish: all counted
    assert doc.omitted + len(doc.logs) == 1 + 5000 * 3 - 1 + 1
    late = [size for visit, size, _ in store.commits if visit > 4000]
    early = [size for visit, size, _ in store.commits if 1000 < visit <= 2000]
    # the record does not grow with the visits: it holds the head and a bounded tail
    assert max(late) <= filestore.TAIL_BYTES + 2048 and max(early) <= filestore.TAIL_BYTES + 2048
