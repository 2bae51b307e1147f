"""Crash safety of the file store: processes SIGKILLed at every write boundary and at random.

Each kill is a real ``SIGKILL`` of a child process (forked from the test, or a fresh
interpreter) that is advancing a run; recovery is ``Runtime.tick()`` in another fresh
process. After every kill the run must load, and load as it did right after the last write
that completed before the kill (the record of the last rewrite and every whole frame
after it: a torn frame is dropped); its entries must be a prefix of those a run without
kills writes, no committed action may be lost, and only the action killed between its
return and its commit may run twice.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "procs"))

from proc_harness import EFFECTS_ENV, fork_child, memory_folder, read_effects, reap, run_forked

from tinywf_cli import Runtime
from tinywf_cli.clock import ManualClock
from tinywf_cli.model import head_to_json
from tinywf_cli.stores.files import session as filestore
from tinywf_cli.stores.files.store import FileStore

PROCS = Path(__file__).resolve().parent / "procs"
FLOWS = PROCS / "store_flows.py"
CHILD = PROCS / "child.py"
T0 = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:02:00Z"  # past every one-minute timer of the flows
RUN = "r1"


View = tuple[str, list[str]]


def view_of(state: Path, run_id: str = RUN) -> View | None:
    """The run as a fresh store loads it: its head's JSON and every entry (None: no record yet)."""
    store = FileStore(state)
    try:
        head = store.load(run_id).head
    except Exception as exc:
        from tinywf_cli.errors import RunNotFound

        if isinstance(exc, RunNotFound):
            return None
        raise AssertionError(f"the run does not load after a kill: {exc!r}") from exc
    return head_to_json(head), [json.dumps(e.to_json()) for e in store.entries(run_id)]


def view_of_files(files: dict[str, str], folder: Path) -> View | None:
    """The view of a run whose files held ``files`` (base64, as traced)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700)
    for name, data in files.items():
        (folder / name).write_bytes(base64.b64decode(data))
    return view_of(folder)


@dataclass
class Reference:
    """What a run without kills did: its boundaries in order (with the files after each), effects, end state."""

    trace: list[dict[str, Any]]
    entries: list[str]
    effects: list[str]
    final: dict[str, Any]

    def points(self) -> list[tuple[str, int]]:
        """Every kill point: each boundary occurrence, plus torn variants of the writes."""
        out = [(t["event"], t["n"]) for t in self.trace if t["event"] != "other_fsync"]
        out += [(f"{t['event']}_torn", t["n"]) for t in self.trace if t["event"].endswith("_write")]
        return out

    def position(self, kill: tuple[str, int]) -> int:
        name, n = kill
        base = name.removesuffix("_torn")
        for i, t in enumerate(self.trace):
            if t["event"] == base and t["n"] == n:
                return i - 1 if name.endswith("_torn") else i  # a torn write did not complete
        raise AssertionError(f"{kill} is not in the reference trace")

    def files_after(self, position: int) -> dict[str, str] | None:
        """The run's files once the boundaries up to ``position`` passed (None: before the first)."""
        return self.trace[position]["files"] if position >= 0 else None

    def in_flight(self, position: int) -> str | None:
        """The action that returned but whose result was not committed at ``position``: a frame
        written whole, or a record renamed into place, commits it."""
        for t in reversed(self.trace[: position + 1]):
            if t["event"] in ("replace", "wal_write"):
                return None
            if t["event"] == "action_return":
                return str(t["detail"])
        return None


@dataclass
class Tally:
    """Figures of a kill campaign."""

    kills: int = 0
    corrupted: int = 0
    lost: int = 0
    duplicates: int = 0
    tracebacks: int = 0
    notes: list[str] = field(default_factory=list)
    #: Kills by boundary kind (``wal_write``, ``tmp_write_torn``...).
    kinds: Counter[str] = field(default_factory=Counter)

    def line(self, name: str) -> str:
        return (f"{name}: kills={self.kills} corrupted={self.corrupted} lost={self.lost} "
                f"duplicates={self.duplicates} tracebacks={self.tracebacks} "
                f"({', '.join(f'{k} {n}' for k, n in sorted(self.kinds.items()))})")


def env_for(folder: Path, now: str = T0) -> dict[str, str]:
    return {"TINYWF_NOW": now, EFFECTS_ENV: str(folder / "effects")}


def check_loads(state: Path, run_id: str = RUN) -> dict[str, Any] | None:
    """The run's document from a fresh store and runtime; None if it has no record; fails on corruption."""
    store = FileStore(state)
    try:
        store.load(run_id)
    except Exception as exc:
        from tinywf_cli.errors import RunNotFound

        if isinstance(exc, RunNotFound):
            return None
        raise AssertionError(f"the record does not load after a kill: {exc!r}") from exc
    store.history(run_id)
    doc: dict[str, Any] = json.loads(Runtime(state, clock=ManualClock(T0)).get(run_id).model_dump_json())
    return doc


def tick_until_settled(state: Path, folder: Path, now: str, tally: Tally) -> None:
    """``tick`` in fresh processes until the run is no longer running or due."""
    for _ in range(5):
        child = run_forked(["tick"], state, env_for(folder, now))
        if child.code != 0:
            tally.tracebacks += "Traceback" in child.stderr
            raise AssertionError(f"tick failed after a kill: {child.stderr}")
        if not child.json()["advanced"]:
            return
        doc = check_loads(state)
        if doc is None or (doc["status"] != "running" and not any(
                p["due_at"] and p["due_at"] <= now for p in doc["pending"])):
            return
    raise AssertionError("tick kept finding work")


def reference(folder: Path, setup: Path | None, argv: list[str], now: str) -> Reference:
    """Run ``argv`` once without kills (from a copy of ``setup``), tracing its boundaries."""
    state = folder / "state"
    if setup is not None:
        shutil.copytree(setup, state, symlinks=True)
    trace = folder / "trace.json"
    child = run_forked(argv, state, env_for(folder, now), trace=trace)
    assert child.code == 0, child.stderr
    traced = json.loads(trace.read_text())["trace"]
    final = check_loads(state)
    assert final is not None
    view = view_of(state)
    assert view is not None
    return Reference(traced, view[1], read_effects(folder / "effects"), final)


def sweep(tmp_path: Path, setup: Path | None, argv: list[str], now: str,
          recover: Any, settle: Any | None = None) -> Tally:
    """Kill ``argv`` at each of its write boundaries in turn; recover and check after each."""
    ref = reference(tmp_path / "ref", setup, argv, now)
    setup_effects = read_effects(setup.parent / "effects") if setup is not None else []
    tally = Tally()
    for i, kill in enumerate(ref.points()):
        folder = tmp_path / f"k{i}"
        state = folder / "state"
        folder.mkdir()
        if setup is not None:
            shutil.copytree(setup, state, symlinks=True)
            shutil.copy(setup.parent / "effects", folder / "effects")
        before = view_of(state) if setup is not None else None
        child = run_forked(argv, state, env_for(folder, now), kill_at=kill)
        assert child.killed, f"{kill}: the child was not killed ({child.code}): {child.stderr}"
        tally.kills += 1
        tally.kinds[kill[0]] += 1
        # right after the kill: the run loads as it was after the last write that completed
        position = ref.position(kill)
        files = ref.files_after(position)
        expected = before if files is None else view_of_files(files, folder / "expected")
        on_disk = view_of(state)
        if on_disk != expected:
            tally.corrupted += 1
            raise AssertionError(f"{kill}: the run does not load as it was after the last completed write")
        if on_disk is not None:
            check_loads(state)
            assert ref.entries[:len(on_disk[1])] == on_disk[1], f"{kill}: the committed entries differ"
        recover(state, folder, tally)
        # after recovery: every action ran, and only the one in flight ran twice
        doc = check_loads(state)
        assert doc is not None, f"{kill}: the run is gone after recovery"
        if settle is not None:
            settle(doc, ref.final, kill)
        else:
            assert doc["status"] == ref.final["status"] and doc["state"] == ref.final["state"], kill
        counts = Counter(read_effects(folder / "effects"))
        wanted = Counter(setup_effects + ref.effects)  # the reference ran from the setup: its effects are new
        lost = [k for k in wanted if counts[k] < wanted[k]]
        dupes = sorted(k for k in counts if counts[k] > wanted[k])
        tally.lost += len(lost)
        tally.duplicates += sum(counts[k] - wanted[k] for k in dupes)
        in_flight = ref.in_flight(position)
        assert not lost, f"{kill}: lost actions {lost}"
        assert dupes == ([in_flight] if in_flight else []), f"{kill}: ran twice {dupes}, in flight {in_flight}"
        assert Runtime(state, clock=ManualClock(T0)).list().problems == []
        # a stale due-index entry the kill left is dropped by the next tick, which finds nothing to do
        assert Runtime(state, clock=ManualClock(now)).tick().advanced == []
        assert not list((state / ".due").glob(f"*~{RUN}")), f"{kill}: the index still lists the run"
        assert not (state / f".running~{RUN}").exists(), f"{kill}: the run is still marked running"
        shutil.rmtree(folder)
    return tally


def prepared(tmp_path: Path, argv: list[str], now: str = T0) -> Path:
    """A state directory where ``argv`` already ran (the starting point of every kill)."""
    folder = tmp_path / "setup"
    folder.mkdir()
    state = folder / "state"
    child = run_forked(argv, state, env_for(folder, now))
    assert child.code == 0, child.stderr
    (folder / "effects").touch()
    return state


# -- kill at every boundary -------------------------------------------------------------------


@pytest.fixture
def memory_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on tmpfs when there is one (see ``proc_harness.memory_folder``)."""
    with memory_folder(tmp_path) as folder:
        yield folder


@pytest.fixture(params=["tail", "journal", "rewrites"])
def tail_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sweep the ways a commit can be written: frames appended to the wal of a running run, the
    record rewritten with its entries kept in its tail (one atomic write) or moved to the
    journal first (append, sync, then the atomic write), and ("rewrites") a record rewritten
    after every frame, as when the frames reach their bound. Forked children inherit the setting."""
    if request.param == "journal":
        monkeypatch.setattr(filestore, "TAIL_BYTES", 0)
    if request.param == "rewrites":
        monkeypatch.setattr(filestore, "WAL_FRAMES", 1)
    return str(request.param)


@pytest.mark.slow
def test_kill_at_every_write_boundary_of_a_new_run(memory_dir: Path, tail_mode: str) -> None:
    argv = ["start", f"{FLOWS}:Chain", RUN]

    def recover(state: Path, folder: Path, tally: Tally) -> None:
        tick_until_settled(state, folder, T0, tally)
        if not (state / f"{RUN}.json").exists():  # died before the run existed: the user starts it again
            assert read_effects(folder / "effects") == []
            assert not list((state / ".due").glob(f"*~{RUN}")) if (state / ".due").exists() else True
            assert not (state / f".running~{RUN}").exists()
            child = run_forked(argv, state, env_for(folder))
            assert child.code == 0, child.stderr

    tally = sweep(memory_dir, None, argv, T0, recover)
    print(tally.line(f"new run (Chain), {tail_mode}"))
    # every boundary of an append, of a record rewrite, and those between them
    assert {"wal_truncate", "wal_write", "wal_write_torn", "wal_sync", "tmp_write_torn", "replace",
            "dir_fsync"} <= set(tally.kinds)
    if tail_mode == "journal":
        assert {"journal_write", "journal_write_torn", "journal_sync"} <= set(tally.kinds)
    assert tally.kills >= {"tail": 40, "journal": 45, "rewrites": 50}[tail_mode]
    assert tally.corrupted == 0 and tally.lost == 0
    assert 0 < tally.duplicates <= tally.kills


@pytest.mark.slow
def test_kill_at_every_write_boundary_of_a_waking_run(memory_dir: Path, tail_mode: str) -> None:
    setup = prepared(memory_dir, ["start", f"{FLOWS}:Napper", RUN])

    def recover(state: Path, folder: Path, tally: Tally) -> None:
        tick_until_settled(state, folder, LATER, tally)

    tally = sweep(memory_dir, setup, ["tick"], LATER, recover)
    print(tally.line(f"timer wake (Napper via tick), {tail_mode}"))
    assert tally.kills >= {"tail": 20, "journal": 24, "rewrites": 25}[tail_mode]
    assert tally.corrupted == 0 and tally.lost == 0


@pytest.mark.slow
def test_kill_at_every_write_boundary_of_a_resolve(memory_dir: Path, tail_mode: str) -> None:
    setup = prepared(memory_dir, ["start", f"{FLOWS}:Asker", RUN])
    argv = ["resolve", RUN, "answer", "5"]

    def recover(state: Path, folder: Path, tally: Tally) -> None:
        tick_until_settled(state, folder, T0, tally)
        doc = check_loads(state)
        assert doc is not None
        if doc["status"] == "waiting":  # the answer never got committed: give it again
            assert doc["pending"][0]["key"] == "answer"
            child = run_forked(argv, state, env_for(folder))
            assert child.code == 0, child.stderr

    tally = sweep(memory_dir, setup, argv, T0, recover)
    print(tally.line(f"resolve (Asker), {tail_mode}"))
    assert tally.kills >= {"tail": 20, "journal": 22, "rewrites": 24}[tail_mode]
    assert tally.corrupted == 0 and tally.lost == 0


@pytest.mark.slow
def test_kill_at_every_write_boundary_of_a_signal(memory_dir: Path, tail_mode: str) -> None:
    setup = prepared(memory_dir, ["start", f"{FLOWS}:Counter", RUN])
    argv = ["signal", RUN, "bump", '{"by": 1}']

    def recover(state: Path, folder: Path, tally: Tally) -> None:
        tick_until_settled(state, folder, T0, tally)

    def settle(doc: dict[str, Any], final: dict[str, Any], kill: tuple[str, int]) -> None:
        assert doc["status"] == "waiting"
        assert doc["state"]["count"] in (0, 1), kill  # the signal happened or not; never half, never twice

    tally = sweep(memory_dir, setup, argv, T0, recover, settle)
    print(tally.line(f"signal (Counter), {tail_mode}"))
    assert tally.kills >= {"tail": 7, "journal": 10, "rewrites": 7}[tail_mode] and tally.corrupted == 0


# -- random kills ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_random_kills_of_runs_with_many_small_actions(memory_dir: Path) -> None:
    """The parent SIGKILLs a child after a seeded random delay, over and over, until every run finished."""
    tmp_path = memory_dir
    rng = random.Random(20260101)
    state = tmp_path / "state"
    tally = Tally()
    # kill within the time one whole run takes on this machine (the median of three)
    took = []
    for i in range(3):
        began = time.monotonic()
        calibration = run_forked(["start", f"{FLOWS}:Many", f"calibration{i}", json.dumps({"n": 30, "per_step": 7})],
                                 tmp_path / "calibration", env_for(tmp_path, T0))
        took.append(time.monotonic() - began)
        assert calibration.code == 0, calibration.stderr
    longest = sorted(took)[1]
    runs: dict[str, Path] = {}
    n_actions = 30
    run_index = 0
    crash_loops = 0
    while tally.kills < 80 or run_index < 3:
        run_id = f"r{run_index}"
        run_index += 1
        folder = tmp_path / run_id
        folder.mkdir()
        runs[run_id] = folder
        env = env_for(folder, T0)
        for _attempt in range(1000):
            doc = check_loads(state, run_id)
            if doc is not None and doc["status"] == "finished":
                break
            if doc is None:
                argv = ["start", f"{FLOWS}:Many", run_id, json.dumps({"n": n_actions, "per_step": 7})]
            elif doc["status"] == "failed":  # five deaths at one point: the contract fails it; retry it
                assert "died" in doc["error"]["message"], doc["error"]
                crash_loops += 1
                argv = ["retry", run_id]
            else:
                argv = ["tick"]
            pid, out = fork_child(argv, state, env)
            time.sleep(rng.uniform(0.0, longest))
            os.kill(pid, signal.SIGKILL)
            child = reap(pid, out)
            if child.killed:
                tally.kills += 1
            elif child.code not in (0, 4):
                tally.tracebacks += "Traceback" in child.stderr
                raise AssertionError(f"{argv}: {child.stderr}")
            try:
                check_loads(state, run_id)
            except AssertionError:
                tally.corrupted += 1
                raise
        else:
            raise AssertionError(f"{run_id} did not finish")
    for run_id, folder in runs.items():
        doc = check_loads(state, run_id)
        assert doc is not None and doc["status"] == "finished" and doc["state"]["total"] == n_actions
        counts = Counter(read_effects(folder / "effects"))
        tally.lost += sum(1 for i in range(n_actions) if counts[f"a{i}"] == 0)
        tally.duplicates += sum(c - 1 for c in counts.values() if c > 1)
    print(tally.line(f"random kills within {longest * 1000:.0f} ms ({run_index} runs x {n_actions} actions, "
                     f"{crash_loops} crash-loop retries)"))
    assert tally.kills >= 50
    assert tally.corrupted == 0 and tally.lost == 0 and tally.tracebacks == 0
    assert tally.duplicates <= tally.kills
    assert Runtime(state, clock=ManualClock(T0)).list().problems == []


# -- real interpreters ------------------------------------------------------------------------------


def exec_child(argv: list[str], state: Path, folder: Path, kill: str | None = None,
               now: str = T0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TINYWF_STATE_DIR=str(state), **env_for(folder, now))
    if kill:
        env["TINYWF_TEST_KILL_AT"] = kill
    return subprocess.run([sys.executable, str(CHILD), *argv], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(("kill", "twice"), [
    ("action_return:2", ["a1"]),  # a1 returned, not committed
    ("wal_write_torn:2", ["a1"]),  # a1's frame half written: never acknowledged, dropped
    ("wal_write:3", []),  # a2's frame written whole (not synced yet: a kill loses nothing of it)
    ("wal_write_torn:4", ["b0"]),  # b0's frame, which carries the transition before it, half written
    ("tmp_write_torn:2", []),  # the last rewrite of the record half written: every frame still counts
])
def test_kill_in_a_fresh_interpreter_then_tick_recovers(tmp_path: Path, kill: str, twice: list[str]) -> None:
    state = tmp_path / "state"
    died = exec_child(["start", f"{FLOWS}:Chain", RUN], state, tmp_path, kill)
    assert died.returncode == -signal.SIGKILL, died.stderr
    recovered = exec_child(["tick"], state, tmp_path)
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)["advanced"] == [{"run_id": RUN, "status": "finished"}]
    doc = check_loads(state)
    assert doc is not None and doc["state"]["total"] == 36
    counts = Counter(read_effects(tmp_path / "effects"))
    assert set(counts) == {"a0", "a1", "a2", "b0", "b1"}
    assert [k for k, c in counts.items() if c > 1] == twice


def test_a_run_that_keeps_dying_at_one_point_fails_after_five_recoveries(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = env_for(tmp_path)
    first = run_forked(["start", f"{FLOWS}:Chain", RUN], state, env, kill_at=("action_return", 2))
    assert first.killed
    for _ in range(5):
        again = run_forked(["tick"], state, env, kill_at=("action_return", 1))
        assert again.killed
    final = run_forked(["tick"], state, env)
    assert final.code == 0, final.stderr
    doc = check_loads(state)
    assert doc is not None and doc["status"] == "failed"
    assert "died" in doc["error"]["message"] and "retry" in doc["error"]["message"]
    assert Counter(read_effects(tmp_path / "effects"))["a1"] == 6  # once per process that died in it
    assert not list((state / ".due").iterdir()) and not (state / f".running~{RUN}").exists()  # a failed run is not due
    retried = run_forked(["retry", RUN], state, env)
    assert retried.code == 0, retried.stderr
    assert retried.json()["status"] == "finished"


def test_killed_create_leaves_nothing_a_new_run_could_pick_up(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = env_for(tmp_path)
    died = run_forked(["start", f"{FLOWS}:Chain", RUN], state, env, kill_at=("tmp_write_torn", 1))
    assert died.killed
    assert not (state / f"{RUN}.json").exists()
    assert (state / f".running~{RUN}").exists() and (state / f"{RUN}~.tmp").exists()  # marked running, no record
    tick = run_forked(["tick"], state, env)
    assert tick.code == 0 and tick.json() == {"due": 0, "advanced": [], "skipped": []}, tick.stdout
    assert not list((state / ".due").iterdir()) and not (state / f".running~{RUN}").exists()
    assert not (state / f"{RUN}~.tmp").exists() and not (state / f"{RUN}.journal").exists()
    assert not (state / f"{RUN}.wal").exists()
    assert not (state / f"{RUN}.lock").exists()
    again = run_forked(["start", f"{FLOWS}:Chain", RUN], state, env)
    assert again.code == 0 and again.json()["status"] == "finished", again.stderr
