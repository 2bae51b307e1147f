"""Damaged records: a StorageError naming the path, no traceback, not one byte changed,
other runs unaffected, ``list`` shows the run as unreadable. Bad run ids never reach the disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "procs"))

import store_flows
from proc_harness import snapshot

from tinywf_cli import InvalidRunId, Runtime, StorageError
from tinywf_cli.clock import ManualClock
from tinywf_cli.stores.files import session as filestore
from tinywf_cli.stores.files.session import MAX_RECORD_BYTES
from tinywf_cli.stores.files.store import FileStore

FLOWS = Path(store_flows.__file__)
CHILD = FLOWS.parent / "child.py"
T0 = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:02:00Z"

Damage = Callable[[Path, bytes], object]


def write(data: bytes) -> Damage:
    return lambda path, good: path.write_bytes(data)


def edit(change: Callable[[dict[str, object]], object]) -> Damage:
    def damage(path: Path, good: bytes) -> None:
        doc = json.loads(good)
        change(doc)
        path.write_bytes(json.dumps(doc).encode())
    return damage


def symlink(path: Path, good: bytes) -> None:
    elsewhere = path.parent.parent / "elsewhere.json"
    elsewhere.write_bytes(good)
    path.unlink()
    path.symlink_to(elsewhere)


def fifo(path: Path, good: bytes) -> None:
    path.unlink()
    os.mkfifo(path, 0o600)


def directory(path: Path, good: bytes) -> None:
    path.unlink()
    path.mkdir()


def oversized(path: Path, good: bytes) -> None:
    with open(path, "r+b") as f:
        f.truncate(MAX_RECORD_BYTES + 1)  # sparse: cheap to make


def set_in(keys: tuple[str, ...], value: object) -> Callable[[dict[str, object]], object]:
    def change(doc: dict[str, object]) -> None:
        target: dict[str, object] = doc
        for key in keys[:-1]:
            target = target[key]  # type: ignore[assignment]
        target[keys[-1]] = value
    return change


def drop(key: str) -> Callable[[dict[str, object]], object]:
    return lambda doc: doc.pop(key)


DAMAGES: dict[str, Damage] = {
    "truncated": lambda path, good: path.write_bytes(good[: len(good) // 2]),
    "empty": write(b""),
    "zero-filled": lambda path, good: path.write_bytes(b"\0" * len(good)),
    "whitespace": write(b"  \n"),
    "not-an-object": write(b"[1, 2, 3]"),
    "a-string": write(b'"r1"'),
    "null": write(b"null"),
    "trailing-garbage": lambda path, good: path.write_bytes(good + b"}garbage"),
    "invalid-utf8": lambda path, good: path.write_bytes(good.replace(b'"r1"', b'"r\xff1"', 1)),
    "nested-too-deeply": write(b"[" * 100_000 + b"]" * 100_000),
    "no-run": edit(drop("run")),
    "no-format": edit(drop("tinywf")),
    "format-true": edit(set_in(("tinywf",), True)),
    "future-format": edit(set_in(("tinywf",), 99)),
    "no-journal": edit(drop("journal")),
    "journal-size-a-string": edit(set_in(("journal", "size"), "12")),
    "visit-past-size": edit(set_in(("journal", "visit_start"), 10**9)),
    "size-past-journal": edit(set_in(("journal", "size"), 10**9)),
    "run-missing-fields": edit(set_in(("run",), {"run_id": "r1"})),
    "run-unknown-status": edit(set_in(("run", "status"), "sleeping")),
    "run-status-a-list": edit(set_in(("run", "status"), [])),
    "run-paused-from-an-object": edit(set_in(("run", "paused_from"), {})),
    "run-extra-field": edit(set_in(("run", "surprise"), 1)),
    "other-run": edit(set_in(("run", "run_id"), "r2")),
    "symlink": symlink,
    "fifo": fifo,
    "directory": directory,
    "oversized": oversized,
}


def run_files(state: Path, run_id: str = "r1") -> dict[str, object]:
    found: dict[str, object] = {k: v for k, v in snapshot(state).items() if k.startswith((f"{run_id}.", f"{run_id}~"))}
    elsewhere = state.parent / "elsewhere.json"
    if elsewhere.exists():
        found["elsewhere"] = elsewhere.read_bytes()
    return found


@pytest.fixture
def two_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bytes]:
    """``r1`` and ``r2``, both waiting on a timer that is due at LATER; returns the state dir and r1's record.

    Their entries are written to their journals (no tail kept in the records), so that the
    journals have something to damage.
    """
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0))
    with monkeypatch.context() as patch:
        patch.setattr(filestore, "TAIL_BYTES", 0)
        rt.start(f"{FLOWS}:Alarm", run_id="r1")
        rt.start(f"{FLOWS}:Alarm", run_id="r2")
    return state, (state / "r1.json").read_bytes()


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_a_damaged_record_is_refused_and_left_untouched(two_runs: tuple[Path, bytes], kind: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYWF_TEST_EFFECTS", str(two_runs[0].parent / "effects"))
    state, good = two_runs
    record = state / "r1.json"
    DAMAGES[kind](record, good)
    before = run_files(state)
    rt = Runtime(state, clock=ManualClock(LATER), lock_timeout=0.5)
    journal_kinds = {"size-past-journal"}
    named = str(state / "r1.journal") if kind in journal_kinds else str(record)
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: rt.get("r1"),
        "resolve": lambda: rt.resolve("r1", "alarm", 1),
        "send": lambda: rt.send("r1", "x", 1),
        "signal": lambda: rt.signal("r1", "bump"),
        "cancel": lambda: rt.cancel("r1"),
        "retry": lambda: rt.retry("r1"),
        "advance": lambda: rt.advance("r1"),
    }
    for name, call in calls.items():
        with pytest.raises(StorageError) as caught:
            call()
        assert caught.value.exit_code == 5, name
        assert caught.value.path == named, (name, caught.value.message)
        assert caught.value.message.startswith(named + ": "), name
    listed = rt.list()
    if kind in journal_kinds:  # list reads records only; the journal's damage shows when the run is used
        assert {r.run_id: r.status for r in listed.runs} == {"r1": "waiting", "r2": "waiting"}
    else:
        assert {r.run_id: r.status for r in listed.runs} == {"r1": "unreadable", "r2": "waiting"}
        assert len(listed.problems) == 1 and named in listed.problems[0]
    report = rt.tick()  # the other run keeps working
    assert [(a.run_id, a.status) for a in report.advanced] == [("r2", "finished")]
    assert [s.run_id for s in report.skipped] == ["r1"] and named in report.skipped[0].reason
    assert run_files(state) == before  # not one byte changed
    with pytest.raises(StorageError):
        FileStore(state).load("r1")


def test_a_damaged_journal_is_refused_and_left_untouched(two_runs: tuple[Path, bytes]) -> None:
    state, _ = two_runs
    journal = state / "r1.journal"
    data = bytearray(journal.read_bytes())
    size = json.loads((state / "r1.json").read_bytes())["journal"]["size"]
    data[size - 12:size - 8] = b"\xff\x00{]"  # inside the current visit's records
    journal.write_bytes(bytes(data))
    before = run_files(state)
    rt = Runtime(state, clock=ManualClock(LATER), lock_timeout=0.5)
    calls: list[Callable[[], object]] = [lambda: rt.get("r1"), lambda: rt.advance("r1"),
                                         lambda: rt.resolve("r1", "x", 1)]
    for call in calls:
        with pytest.raises(StorageError) as caught:
            call()
        assert caught.value.path == str(journal) and "corrupt" in caught.value.message
    report = rt.tick()
    assert [a.run_id for a in report.advanced] == ["r2"] and [s.run_id for s in report.skipped] == ["r1"]
    assert run_files(state) == before


@pytest.mark.slow
def test_a_fresh_interpreter_reports_damage_without_a_traceback(two_runs: tuple[Path, bytes]) -> None:
    state, good = two_runs
    env = dict(os.environ, TINYWF_STATE_DIR=str(state), TINYWF_NOW=LATER, TINYWF_LOCK_TIMEOUT="0.5")
    tracebacks = 0
    for kind in ("truncated", "invalid-utf8", "nested-too-deeply", "fifo", "symlink"):
        record = state / "r1.json"
        if record.is_symlink() or not record.is_file():
            record.unlink()
        record.write_bytes(good)
        DAMAGES[kind](record, good)
        for argv in (["get", "r1"], ["signal", "r1", "bump"]):
            done = subprocess.run([sys.executable, str(CHILD), *argv], env=env, capture_output=True, text=True,
                                  timeout=60, check=False)
            tracebacks += "Traceback" in done.stderr
            assert done.returncode == 5, (kind, argv, done.stderr)
            assert done.stderr.startswith(f"error: {record}: ") and done.stdout == "", (kind, done.stderr)
    assert tracebacks == 0


@pytest.mark.parametrize("kind", ["run-status-a-list", "run-paused-from-an-object", "run-unknown-status"])
def test_the_read_commands_show_a_field_of_the_wrong_type_as_unreadable(two_runs: tuple[Path, bytes],
                                                                       kind: str) -> None:
    """``list`` and ``show`` (the read path, without pydantic) judge a field that is a list or
    an object where a name belongs as damage, not as an internal error."""
    state, good = two_runs
    DAMAGES[kind](state / "r1.json", good)
    before = run_files(state)
    command = [sys.executable, "-m", "tinywf_cli"]
    listed = subprocess.run([*command, "list", "--json", "--state-dir", str(state)],
                            capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    assert {r["run_id"]: r["status"] for r in json.loads(listed.stdout)["runs"]} == {"r1": "unreadable",
                                                                                   "r2": "waiting"}
    shown = subprocess.run([*command, "show", "r1", "--state-dir", str(state)],
                           capture_output=True, text=True, check=False)
    assert shown.returncode == 5 and str(state / "r1.json") in shown.stderr
    assert "internal error" not in shown.stderr + listed.stderr
    assert run_files(state) == before


def test_leftover_temp_files_are_ignored_by_readers(two_runs: tuple[Path, bytes]) -> None:
    state, _ = two_runs
    (state / "r1~.tmp").write_bytes(b"half a rec")
    rt = Runtime(state, clock=ManualClock(LATER))
    assert sorted(r.run_id for r in rt.list().runs) == ["r1", "r2"]
    assert rt.get("r1").status == "waiting"
    rt.tick()  # writing r1 sweeps its leftover
    assert not (state / "r1~.tmp").exists()


def test_journal_entries_survive_unicode_line_separators(tmp_path: Path) -> None:
    """U+2028, U+2029 and U+0085 are written raw in the journal: only b"\\n" ends an entry."""
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0))
    rt.start(f"{FLOWS}:Counter", run_id="r1")
    rt.send("r1", "note", "a\u2028b\u2029c\x85d\x1ce")
    rt.signal("r1", "bump")
    doc = Runtime(state, clock=ManualClock(T0)).get("r1")
    assert doc.state["count"] == 1
    assert any(log.type == "event_queued" for log in doc.logs)


# -- run ids -------------------------------------------------------------------------------------------

BAD_IDS = ["../x", "a/b", "", "x\n", "ü", "a" * 129, ".hidden", "-x", "_x", "x y", "x~tmp", "x\x00", "/abs", "."]


@pytest.mark.parametrize("run_id", BAD_IDS, ids=[repr(r) for r in BAD_IDS])
def test_bad_run_ids_are_refused_before_any_file_access(tmp_path: Path, run_id: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0))

    def no_disk(*args: object, **kwargs: object) -> None:
        raise AssertionError("the disk was touched")

    monkeypatch.setattr(FileStore, "_check_root", no_disk)
    calls: list[Callable[[], object]] = [
        lambda: rt.start(f"{FLOWS}:Counter", run_id=run_id),
        lambda: rt.get(run_id),
        lambda: rt.resolve(run_id, "done", 1),
        lambda: rt.send(run_id, "done", 1),
        lambda: rt.signal(run_id, "bump"),
        lambda: rt.cancel(run_id),
        lambda: rt.retry(run_id),
        lambda: rt.advance(run_id),
    ]
    for call in calls:
        with pytest.raises(InvalidRunId) as caught:
            call()
        assert caught.value.exit_code == 2
    store = FileStore(state)
    for method in (store.head, store.load, store.history, store.entries, store.record_path):
        with pytest.raises(InvalidRunId):
            method(run_id)
    with pytest.raises(InvalidRunId), store.open(run_id, 0):
        pass
    assert not state.exists()


def test_the_longest_run_id_works(tmp_path: Path) -> None:
    run_id = "A" + "b.-_9" * 25 + "zz"
    assert len(run_id) == 128
    rt = Runtime(tmp_path / "state", clock=ManualClock(T0))
    assert rt.start(f"{FLOWS}:Counter", run_id=run_id).run_id == run_id
    assert rt.signal(run_id, "bump").state["count"] == 1
    assert [r.run_id for r in rt.list().runs] == [run_id]


def test_files_that_are_no_run_records_are_not_listed(two_runs: tuple[Path, bytes]) -> None:
    state, _ = two_runs
    (state / "notes.txt").write_text("x")
    (state / "bad name.json").write_text("{}")
    (state / ".hidden.json").write_text("{}")
    (state / "r1~.tmp").write_text("{}")
    assert sorted(r.run_id for r in Runtime(state, clock=ManualClock(T0)).list().runs) == ["r1", "r2"]


@pytest.mark.parametrize("name", ["r1.journal", "r1.lock"])
def test_a_journal_or_lock_that_is_a_symlink_is_refused(two_runs: tuple[Path, bytes], name: str) -> None:
    state, _ = two_runs
    target = state.parent / "target"
    path = state / name
    target.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(target)
    before, target_bytes = run_files(state), target.read_bytes()
    rt = Runtime(state, clock=ManualClock(LATER), lock_timeout=0.5)
    with pytest.raises(StorageError) as caught:
        rt.signal("r1", "bump")
    assert caught.value.path == str(path) and "ELOOP" in caught.value.message
    assert run_files(state) == before and target.read_bytes() == target_bytes
    assert [a.run_id for a in rt.tick().advanced] == ["r2"]
