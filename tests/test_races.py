"""Races between real processes on one state directory: the run lock must exclude.

Children are forked and held at a start barrier (a pipe the parent closes), so they
contend for real; the TypeScript original let 3 of 4 contenders in at once and ran one
resume's side effect twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "procs"))

from proc_harness import EFFECTS_ENV, Child, fork_child, read_effects, reap, run_forked

from tinywf_cli import RunLocked, Runtime
from tinywf_cli.clock import ManualClock
from tinywf_cli.stores.files.store import FileStore

PROCS = Path(__file__).resolve().parent / "procs"
FLOWS = PROCS / "store_flows.py"
T0 = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:02:00Z"


def barrier() -> tuple[Callable[[], None], Callable[[], None]]:
    """``(wait, release)``: children call ``wait`` (blocks), the parent calls ``release`` once all are forked."""
    read_end, write_end = os.pipe()

    def wait() -> None:
        os.close(write_end)
        os.read(read_end, 1)  # EOF once every write end is closed
        os.close(read_end)

    def release() -> None:
        os.close(write_end)
        os.close(read_end)

    return wait, release


def race(commands: Sequence[tuple[list[str], dict[str, str]]], state: Path) -> list[Child]:
    """Start every command in its own process at once; wait for all."""
    wait, release = barrier()
    children = [fork_child(argv, state, env, before=wait) for argv, env in commands]
    release()
    return [reap(pid, out) for pid, out in children]


def env(tmp_path: Path, now: str = T0, **extra: str) -> dict[str, str]:
    return {"TINYWF_NOW": now, EFFECTS_ENV: str(tmp_path / "effects"), **extra}


def start(tmp_path: Path, flow: str, run_id: str = "r1") -> Path:
    state = tmp_path / "state"
    child = run_forked(["start", f"{FLOWS}:{flow}", run_id], state, env(tmp_path))
    assert child.code == 0, child.stderr
    return state


@pytest.mark.slow
def test_8_processes_x_25_signals_plus_2_ticks_lose_no_signal(tmp_path: Path) -> None:
    state = start(tmp_path, "Ticker")
    signals = (["signals", "r1", "bump", "25"], env(tmp_path, LATER, TINYWF_LOCK_TIMEOUT="30"))
    ticks = (["tick"], env(tmp_path, LATER))
    began = time.monotonic()
    children = race([signals] * 8 + [ticks] * 2, state)
    elapsed = time.monotonic() - began
    assert [c.code for c in children] == [0] * 10, [c.stderr for c in children if c.code]
    rt = Runtime(state, clock=ManualClock(LATER))
    doc = rt.get("r1")
    assert doc.state["count"] == 200  # 0 lost
    assert sum(1 for log in doc.logs if log.type == "signal") == 200
    reports = [c.json() for c in children[8:]]
    fired = sum(len(r["advanced"]) for r in reports)
    skipped = sum(len(r["skipped"]) for r in reports)
    assert fired <= 1 and doc.state["visits"] == 1 + fired  # a tick that found the run locked skipped it
    rt.tick()
    assert rt.get("r1").state == {**doc.state, "visits": 2}  # the due timer fired once in all
    print(f"8x25 signals + 2 ticks: count={doc.state['count']}/200, ticks fired={fired} skipped={skipped}, "
          f"{elapsed:.2f}s")


def test_8_processes_resolving_one_event_ship_once(tmp_path: Path) -> None:
    state = start(tmp_path, "Approver")
    children = race([(["resolve", "r1", "approve", "true"], env(tmp_path))] * 8, state)
    codes = Counter(c.code for c in children)
    assert codes[0] == 1, [(c.code, c.stderr) for c in children]
    assert set(codes) <= {0, 3, 4}  # not found (already resolved) or conflict (finished / locked)
    assert not any("Traceback" in c.stderr for c in children)
    assert read_effects(tmp_path / "effects") == ["ship"]
    assert Runtime(state, clock=ManualClock(T0)).get("r1").status == "finished"
    print(f"8 resolves: {dict(codes)}")


def test_one_due_timer_and_8_concurrent_ticks_fire_once(tmp_path: Path) -> None:
    state = start(tmp_path, "Alarm")
    children = race([(["tick"], env(tmp_path, LATER))] * 8, state)
    assert [c.code for c in children] == [0] * 8, [c.stderr for c in children]
    advanced = [a for c in children for a in c.json()["advanced"]]
    assert advanced == [{"run_id": "r1", "status": "finished"}]
    assert read_effects(tmp_path / "effects") == ["fire"]


@pytest.mark.parametrize("exists", [True, False], ids=["run", "no-run"])
def test_the_lock_excludes_other_processes(tmp_path: Path, exists: bool) -> None:
    """8 processes x 20 read-sleep-write increments of a plain file under one run's lock: none lost.

    Without a run record each release removes the lock file while others wait on it.
    """
    root = start(tmp_path, "Counter") if exists else tmp_path / "state"
    root.mkdir(mode=0o700, exist_ok=True)  # an empty state directory: the lock guards no record
    counter = tmp_path / "counter"
    counter.write_text("0")
    wait, release = barrier()
    pids = []
    for _ in range(8):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                wait()
                store = FileStore(root)
                for _ in range(20):
                    with store.open("r1", 30):
                        value = int(counter.read_text())
                        time.sleep(0.0005)
                        counter.write_text(str(value + 1))
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    release()
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    assert statuses == [0] * 8
    assert counter.read_text() == "160"
    assert (root / "r1.lock").exists() == exists  # no lock file is left for a run that does not exist


def test_a_lock_held_past_the_timeout_is_a_conflict_promptly(tmp_path: Path) -> None:
    state = start(tmp_path, "Counter")
    holder = subprocess.Popen(
        [sys.executable, str(PROCS / "child.py"), "hold", "r1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=dict(os.environ, TINYWF_STATE_DIR=str(state)))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
        began = time.monotonic()
        with pytest.raises(RunLocked) as caught:
            rt.signal("r1", "bump")
        assert time.monotonic() - began < 5
        assert caught.value.exit_code == 4 and "locked" in caught.value.message
        began = time.monotonic()
        assert rt.get("r1").status == "waiting"  # readers take no lock
        assert time.monotonic() - began < 5
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert holder.returncode == 0
    assert Runtime(state, clock=ManualClock(T0), lock_timeout=0.5).signal("r1", "bump").state["count"] == 1


def test_tick_skips_a_locked_due_run_and_reports_it(tmp_path: Path) -> None:
    state = start(tmp_path, "Alarm")
    holder = subprocess.Popen(
        [sys.executable, str(PROCS / "child.py"), "hold", "r1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=dict(os.environ, TINYWF_STATE_DIR=str(state)))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        began = time.monotonic()
        report = Runtime(state, clock=ManualClock(LATER), lock_timeout=10).tick()
        assert time.monotonic() - began < 5  # tick never waits for a lock
        assert report.advanced == [] and [s.run_id for s in report.skipped] == ["r1"]
        assert "locked" in report.skipped[0].reason
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    report = Runtime(state, clock=ManualClock(LATER)).tick()
    assert [a.run_id for a in report.advanced] == ["r1"]


def test_a_running_action_holds_the_lock(tmp_path: Path) -> None:
    """While a process runs an action, other commands wait for the lock and tick neither waits nor recovers it."""
    state = tmp_path / "state"
    gate = tmp_path / "gate"
    pid, out = fork_child(["start", f"{FLOWS}:Gated", "r1"], state, env(tmp_path, TINYWF_TEST_GATE=str(gate)))
    try:
        deadline = time.monotonic() + 30
        while not Path(f"{gate}.ready").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        rt = Runtime(state, clock=ManualClock(T0), lock_timeout=0.5)
        assert rt.get("r1").status == "running"
        with pytest.raises(RunLocked):
            rt.signal("r1", "bump")
        report = rt.tick()
        assert report.advanced == [] and [s.run_id for s in report.skipped] == ["r1"]
    finally:
        gate.touch()
        child = reap(pid, out)
    assert child.code == 0, child.stderr
    assert read_effects(tmp_path / "effects") == ["slow"]  # not recovered (run twice) while it ran
    assert Runtime(state, clock=ManualClock(T0)).get("r1").status == "finished"
