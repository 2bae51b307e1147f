"""Schedules under real processes: three ``tick`` processes racing on every slot, and a process
SIGKILLed in the middle of starting one. Each slot must start exactly once.

The racing processes are forked from the test and meet at a barrier before every slot, so
that all three tick at the same fake instant; each slot's run appends its id to an effects
file from its one action, so a slot started (or its action run) twice would show.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pgserver import fresh_url

from tinywf_cli import Runtime
from tinywf_cli.clock import ManualClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SLOTS = 200
FLOW = '''
import os

from tinywf_cli import Workflow, step


def effect(run_id: str) -> str:
    fd = os.open(os.environ["TINYWF_TEST_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (run_id + "\\n").encode())
    finally:
        os.close(fd)
    return run_id


class Minute(Workflow):
    """One effect per run."""

    @step
    def go(self):
        yield self.action("effect", effect, self.run_id)
        return None
'''


@pytest.fixture(params=["file", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "file":
        yield str(tmp_path / "state")
    else:
        with fresh_url() as url:
            yield url


@pytest.fixture
def flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "minute.py"
    path.write_text(FLOW, encoding="utf-8")
    monkeypatch.setenv("TINYWF_TEST_EFFECTS", str(tmp_path / "effects"))
    return str(path)


def effects(tmp_path: Path) -> Counter[str]:
    path = tmp_path / "effects"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def add_schedule(target: str, flow: str) -> None:
    rt = Runtime(target, clock=ManualClock(T0 - timedelta(seconds=30)))
    rt.add_schedule("race", flow, "* * * * *")
    rt.close()


def ticker(target: str, barrier: Any, slots: int) -> None:
    """A process that ticks at every slot (plus a second), once all three are there."""
    clock = ManualClock(T0)
    rt = Runtime(target, clock=clock, lock_timeout=2)
    for minute in range(slots):
        barrier.wait(timeout=60)
        clock.set(T0 + timedelta(minutes=minute, seconds=1))
        rt.tick()
    rt.close()


@pytest.mark.slow
def test_three_tick_processes_racing_on_every_slot_start_each_once(target: str, flow: str, tmp_path: Path) -> None:
    add_schedule(target, flow)
    fork = multiprocessing.get_context("fork")
    barrier = fork.Barrier(3)
    children = [fork.Process(target=ticker, args=(target, barrier, SLOTS)) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=240)
    assert [c.exitcode for c in children] == [0, 0, 0]
    expected = {f"race-{T0 + timedelta(minutes=m):%Y%m%dT%H%M}Z" for m in range(SLOTS)}
    seen = effects(tmp_path)
    assert set(seen) == expected and set(seen.values()) == {1}  # every slot, each once
    rt = Runtime(target, clock=ManualClock(T0 + timedelta(minutes=SLOTS)))
    try:
        runs = [r for r in rt.list().runs if r.run_id.startswith("race-")]
        assert len(runs) == SLOTS and {r.status for r in runs} == {"finished"}
        schedule = rt.get_schedule("race")
        assert (schedule.skipped, schedule.missed) == (0, 0)
        assert schedule.next_at == T0 + timedelta(minutes=SLOTS)
    finally:
        rt.close()


def killed_tick(target: str, where: str) -> None:
    """A tick at the first slot that SIGKILLs itself in the middle of starting it: right after the
    slot's run was created (before the schedule was saved), or after the schedule was saved
    (before the run was advanced)."""
    from tinywf_cli.runtime.schedules import Scheduling

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "created":
        original = Scheduling._start_slot

        def start_then_die(self: Scheduling, *args: Any, **kwargs: Any) -> Any:
            original(self, *args, **kwargs)
            die()

        Scheduling._start_slot = start_then_die  # type: ignore[method-assign]
    else:
        decided = Scheduling.start_due_slots

        def decide_then_die(self: Scheduling, now: datetime) -> Any:
            decided(self, now)
            die()

        Scheduling.start_due_slots = decide_then_die  # type: ignore[method-assign]
    Runtime(target, clock=ManualClock(T0 + timedelta(seconds=1))).tick()


@pytest.mark.parametrize("where", ["created", "saved"])
def test_a_tick_killed_while_starting_a_slot_leaves_it_started_once(where: str, flow: str, tmp_path: Path) -> None:
    target = str(tmp_path / "state")
    add_schedule(target, flow)
    child = multiprocessing.get_context("fork").Process(target=killed_tick, args=(target, where))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    assert effects(tmp_path) == Counter()  # killed before the run's action
    rt = Runtime(target, clock=ManualClock(T0 + timedelta(seconds=30)))
    rt.tick()
    rt.tick()
    assert effects(tmp_path) == Counter({"race-20260101T0000Z": 1})
    assert rt.get("race-20260101T0000Z").status == "finished"
    schedule = rt.get_schedule("race")
    assert (schedule.last_run_id, schedule.skipped, schedule.missed) == ("race-20260101T0000Z", 0, 0)
    assert schedule.next_at == T0 + timedelta(minutes=1)
