"""Durable progress and recovery of runs whose process died (simulated by an exception no code catches)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from commit_hooks import on_commit

from tinywf_cli import EventTimeout, Retry, Runtime, Workflow, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.clock import ManualClock
from tinywf_cli.engine.engine import MAX_RECOVERIES
from tinywf_cli.stores.journal import AuditEntry
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]


class ProcessDied(KeyboardInterrupt):
    """Stands for the process being killed (a real interrupt): nothing in tinywf or the step handles it."""


class Script:
    """An action that follows a script of outcomes, one per call: a value, an Exception, or death."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        outcome = self.outcomes[min(self.calls, len(self.outcomes)) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


DIE = ProcessDied()

STEPS: dict[str, Script] = {}


class Pipeline(Workflow):
    """Three actions in a row; the scripts decide which of them kill the process."""

    @step
    def only(self) -> Steps:
        self.state["a"] = yield self.action("a", STEPS["a"])
        self.state["b"] = yield self.action("b", STEPS["b"], retry=Retry(attempts=3, delay=10))
        self.state["c"] = yield self.action("c", STEPS["c"])


@pytest.fixture(autouse=True)
def scripts() -> dict[str, Script]:
    STEPS.clear()
    STEPS.update(a=Script("A"), b=Script("B"), c=Script("C"))
    return STEPS


def calls() -> list[int]:
    return [STEPS[k].calls for k in "abc"]


def test_a_run_left_running_is_recovered_by_tick(rt: MemoryRuntime) -> None:
    STEPS["b"] = Script(DIE, "B")
    with pytest.raises(ProcessDied):
        rt.start(Pipeline, run_id="p")
    run = rt.get("p")
    assert run.status == "running"
    assert [e.values["key"] for e in run.logs if e.type == "action"] == ["a"]  # saved before "b" started
    report = rt.tick()
    assert [(a.run_id, a.status) for a in report.advanced] == [("p", "finished")]
    assert rt.get("p").state == {"a": "A", "b": "B", "c": "C"}
    assert calls() == [1, 2, 1]
    assert [e.values for e in rt.get("p").logs if e.type == "recover"] == [{"count": 1}]


@pytest.mark.stores("file", "postgres")
def test_recovery_with_the_file_store_after_a_restart(open_runtime: Callable[[], Runtime]) -> None:
    STEPS["c"] = Script(DIE, "C")
    with pytest.raises(ProcessDied):
        open_runtime().start(Pipeline, run_id="p")
    assert open_runtime().get("p").status == "running"
    open_runtime().tick()
    run = open_runtime().get("p")
    assert (run.status, run.state) == ("finished", {"a": "A", "b": "B", "c": "C"})
    assert calls() == [1, 1, 2]


def test_a_run_that_keeps_dying_at_the_same_point_fails_after_five_recoveries(rt: MemoryRuntime) -> None:
    STEPS["b"] = Script(DIE)
    with pytest.raises(ProcessDied):
        rt.start(Pipeline, run_id="p")
    for _ in range(MAX_RECOVERIES):
        with pytest.raises(ProcessDied):
            rt.tick()
    assert rt.get("p").status == "running"
    report = rt.tick()  # the sixth look at it: no more recoveries
    assert [(a.run_id, a.status) for a in report.advanced] == [("p", "failed")]
    run = rt.get("p")
    assert run.error is not None
    assert run.error.type == "CrashLoop"
    assert "died 6 times in a row" in run.error.message
    assert "step 'only'" in run.error.message
    assert calls() == [1, 1 + MAX_RECOVERIES, 0]
    assert rt.tick().due == 0  # a failed run is not looked at again


def test_retry_after_a_crash_loop_gives_the_run_another_chance(rt: MemoryRuntime) -> None:
    STEPS["b"] = Script(DIE, DIE, DIE, DIE, DIE, DIE, "B")
    with pytest.raises(ProcessDied):
        rt.start(Pipeline, run_id="p")
    for _ in range(MAX_RECOVERIES):
        with pytest.raises(ProcessDied):
            rt.tick()
    rt.tick()
    assert rt.get("p").status == "failed"
    run = rt.retry("p")
    assert run.status == "finished"
    assert calls() == [1, 7, 1]


def test_recoveries_are_counted_per_point(rt: MemoryRuntime) -> None:
    # Deaths spread over different points never add up to a crash loop.
    STEPS["a"] = Script(DIE, DIE, DIE, "A")
    STEPS["b"] = Script(DIE, DIE, DIE, "B")
    STEPS["c"] = Script(DIE, DIE, DIE, "C")
    with pytest.raises(ProcessDied):
        rt.start(Pipeline, run_id="p")
    while rt.get("p").status == "running":
        with contextlib.suppress(ProcessDied):
            rt.tick()
    assert rt.get("p").status == "finished"
    assert calls() == [4, 4, 4]


def test_a_death_in_the_middle_of_a_retry_cycle_is_recovered(rt: MemoryRuntime) -> None:
    STEPS["b"] = Script(RuntimeError("first"), DIE, RuntimeError("third"), "B")
    run = rt.start(Pipeline, run_id="p")
    assert run.status == "waiting"
    rt.clock.advance(10)
    with pytest.raises(ProcessDied):
        rt.tick()
    assert rt.get("p").status == "running"
    rt.tick()  # recovered: the attempt that died is run again, and fails
    run = rt.get("p")
    assert run.status == "waiting"
    assert [p.kind for p in run.pending] == ["retry"]
    rt.clock.advance(60)
    rt.tick()
    run = rt.get("p")
    assert (run.status, run.state) == ("finished", {"a": "A", "b": "B", "c": "C"})
    assert run.error is None
    assert calls() == [1, 4, 1]


def test_a_death_in_a_parallel_repeats_only_that_parallel(rt: MemoryRuntime) -> None:
    record: list[str] = []
    deaths = {"left": 1}

    def left() -> str:
        record.append("left")
        if deaths["left"]:
            deaths["left"] -= 1
            raise ProcessDied()
        return "L"

    def before() -> str:
        record.append("before")
        return "B"

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.action("before", before)
            self.state["r"] = yield self.parallel({"left": self.action("left", left),
                                                   "right": self.action("right", record.append, "right")})

    with pytest.raises(ProcessDied):
        rt.start(Flow, run_id="p")
    rt.tick()
    run = rt.get("p")
    assert (run.status, run.state) == ("finished", {"r": {"left": "L", "right": None}})
    assert record.count("before") == 1
    assert record.count("left") == 2
    assert 1 <= record.count("right") <= 2


def test_a_running_run_whose_lock_is_held_is_skipped_by_tick(rt: MemoryRuntime) -> None:
    STEPS["a"] = Script(DIE, "A")
    with pytest.raises(ProcessDied):
        rt.start(Pipeline, run_id="p")
    with rt.store.open("p", 0):  # another process is advancing it
        report = rt.tick()
    assert report.advanced == []
    assert [s.run_id for s in report.skipped] == ["p"]
    assert calls() == [1, 0, 0]


# -- a process killed right after any commit -------------------------------------------------------------


class KillAfter:
    """Wraps a memory store's commit: the process "dies" right after commit number ``n`` (once)."""

    def __init__(self, rt: MemoryRuntime, n: int) -> None:
        self.n = n
        self.count = 0
        on_commit(rt.store, self)

    def __call__(self, head: Any, entries: Any) -> None:
        self.count += 1
        if self.count == self.n:
            raise ProcessDied()


def test_a_death_in_a_parallel_after_one_part_finished_runs_only_the_other_again(rt: MemoryRuntime) -> None:
    calls = {"slow": 0, "fast": 0}
    fast_saved = threading.Event()

    class Watch(KillAfter):
        def __call__(self, head: Any, entries: Any) -> None:
            if any(isinstance(e, AuditEntry) and e.values.get("key") == "fast" for e in entries):
                fast_saved.set()

    def slow() -> str:
        calls["slow"] += 1
        if calls["slow"] == 1:
            assert fast_saved.wait(5)  # "fast" is on record when the process dies
            raise ProcessDied()
        return "S"

    def fast() -> str:
        calls["fast"] += 1
        return "F"

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["r"] = yield self.parallel({"slow": self.action("slow", slow),
                                                   "fast": self.action("fast", fast)})

    Watch(rt, 0)
    with pytest.raises(ProcessDied):
        rt.start(Flow, run_id="p")
    rt.tick()
    run = rt.get("p")
    assert (run.status, run.state) == ("finished", {"r": {"slow": "S", "fast": "F"}})
    assert calls == {"slow": 2, "fast": 1}


class Everything(Workflow):
    """Actions, a retry, a parallel, a timer, an event with a timeout, logs and a transition."""

    @step
    def first(self) -> Steps:
        self.log("begin", n=1)
        self.state["a"] = yield self.action("a", EVERYTHING_CALLS.counted("a"))
        self.state["b"] = yield self.action("b", EVERYTHING_CALLS.flaky("b"), retry=Retry(attempts=3, delay=5))
        self.state["p"] = yield self.parallel({"x": self.action("x", EVERYTHING_CALLS.counted("x")),
                                               "y": self.action("y", EVERYTHING_CALLS.counted("y"))})
        self.state["nap"] = (yield self.sleep("nap", 10)).isoformat()
        try:
            self.state["ev"] = yield self.wait_event("ev", type=int, timeout=100)
        except EventTimeout:
            self.state["ev"] = "timed out"
        return "second"

    @step
    def second(self) -> Steps:
        self.log("second", n=2)
        self.state["c"] = yield self.action("c", EVERYTHING_CALLS.counted("c"))


class CallCounter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def counted(self, name: str) -> Callable[[], str]:
        def fn() -> str:
            self.calls[name] = self.calls.get(name, 0) + 1
            return name.upper()
        return fn

    def flaky(self, name: str) -> Callable[[], str]:
        def fn() -> str:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.calls[name] == 1:
                raise RuntimeError("first attempt fails")
            return name.upper()
        return fn


EVERYTHING_CALLS = CallCounter()


class Killer:
    """Counts commits over every runtime it wraps; the process "dies" right after commit ``n`` (once)."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.count = 0

    def wrap(self, runtime: Runtime) -> Runtime:
        def commit(head: Any, entries: Any) -> None:
            self.count += 1
            if self.count == self.n:
                raise ProcessDied()

        on_commit(runtime.store, commit)
        return runtime


def drive(runtime: Callable[[], Runtime], clock: ManualClock, run_id: str, answer: bool) -> None:
    """Push a run to its end as an operator would: answer or let events time out, let time pass, tick."""
    for _ in range(50):
        try:
            run = runtime().get(run_id)
            if run.status in ("finished", "failed"):
                return
            if run.status == "running":
                runtime().tick()
                continue
            assert run.pending, f"run {run_id} is waiting with nothing pending"
            pending = run.pending[0]
            if pending.kind == "event" and answer:
                runtime().resolve(run_id, pending.resume_id, 7)
            else:
                assert pending.due_at is not None
                clock.set(max(pending.due_at, clock.now()))
                runtime().tick()
        except ProcessDied:
            pass
    raise AssertionError(f"run {run_id} did not end: {runtime().get(run_id)}")


def run_everything(store: str, tmp_path: Path, kill_after: int | None, answer: bool) -> tuple[Any, dict[str, int], int]:
    """Run ``Everything`` to its end, the process dying right after commit ``kill_after``."""
    EVERYTHING_CALLS.calls.clear()
    killer = Killer(kill_after)
    clock = ManualClock("2026-01-01T00:00:00Z")
    if store == "memory":
        memory = killer.wrap(MemoryRuntime(clock.now()))
        memory.clock = clock
        runtime: Callable[[], Runtime] = lambda: memory  # noqa: E731
    else:
        state_dir = tmp_path / f"state-{kill_after}-{answer}"
        runtime = lambda: killer.wrap(Runtime(state_dir, clock=clock))  # noqa: E731 - a new process each call
    with contextlib.suppress(ProcessDied):
        runtime().start(Everything, run_id="e")
    drive(runtime, clock, "e", answer)
    return runtime().get("e"), dict(EVERYTHING_CALLS.calls), killer.count


@pytest.mark.parametrize(
    ("store", "answer"),
    [("memory", True), ("memory", False), ("files", True)],
    ids=["memory-answered", "memory-timed-out", "files-answered"],
)
def test_a_death_right_after_any_commit_is_recovered_without_losing_or_repeating_work(
    tmp_path: Path, store: str, answer: bool
) -> None:
    expected, expected_calls, commits = run_everything(store, tmp_path, None, answer)
    assert expected.status == "finished"
    assert expected.state["ev"] == (7 if answer else "timed out")
    assert expected_calls == {"a": 1, "b": 2, "x": 1, "y": 1, "c": 1}
    assert commits > 10
    # the file store fsyncs every commit: there, every third point (the memory store tries them all)
    for n in range(1, commits + 1, 1 if store == "memory" else 3):
        run, calls, _ = run_everything(store, tmp_path, n, answer)
        assert (run.status, run.state) == ("finished", expected.state), f"killed after commit {n}"
        extra = {k: calls.get(k, 0) - v for k, v in expected_calls.items()}
        assert all(v >= 0 for v in extra.values()), f"killed after commit {n}: {calls}"
        # only a part of the parallel can be in flight at a commit
        assert sum(extra.values()) <= 1 and extra["x"] + extra["y"] == sum(extra.values()), (n, calls)
        custom = [e.type for e in run.logs if e.type in ("begin", "second")]
        assert custom == ["begin", "second"], f"killed after commit {n}"


def test_a_loop_of_steps_without_actions_is_saved_along_the_way(rt: MemoryRuntime) -> None:
    """Transitions ride with the next durable commit, but not for ever: a loop with no
    action in it is saved every few dozen entries, not once at its end."""
    saves: list[int] = []
    on_commit(rt.store, lambda head, entries: saves.append(len(entries)))

    class Spin(Workflow):
        @step
        def lap(self) -> Steps:
            self.state["n"] = self.state.get("n", 0) + 1
            return self.lap if self.state["n"] < 1000 else None
            yield  # a generator step that yields nothing

    assert rt.start(Spin).state == {"n": 1000}
    assert len(saves) >= 1000 * 2 // 64 and max(saves) <= 64 + 4
