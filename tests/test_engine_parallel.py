"""``self.parallel``: concurrent actions, results by name, each cached and retried on its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

import pytest

from tinywf_cli import Retry, Runtime, Workflow, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]


class Counted:
    """A callable returning ``value`` after failing its first ``failures`` calls; counts calls."""

    def __init__(self, value: Any, failures: int = 0) -> None:
        self.value = value
        self.failures = failures
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
            call = self.calls
        if call <= self.failures:
            raise RuntimeError(f"failure {call}")
        return self.value


def test_parallel_actions_overlap_in_time(rt: MemoryRuntime) -> None:
    # Both actions must be inside the barrier at once, or it breaks after its timeout.
    barrier = threading.Barrier(2, timeout=5)

    def meet(name: str) -> str:
        barrier.wait()
        return name

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["results"] = yield self.parallel({
                "left": self.action("l", meet, "L"),
                "right": self.action("r", meet, "R"),
            })

    run = rt.start(Flow)
    assert run.status == "finished", run.error
    assert run.state == {"results": {"left": "L", "right": "R"}}


def test_parallel_gives_a_dict_by_name_and_each_result_is_cached(rt: MemoryRuntime) -> None:
    a, b = Counted((1, 2)), Counted(None)
    received: list[Any] = []

    def typed() -> tuple[int, int]:
        return a()

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            received.append((yield self.parallel({"a": self.action("typed", typed),
                                                   "b": self.action("none", b)})))
            yield self.wait_event("go")

    run = rt.start(Flow)
    rt.resolve(run.run_id, "go", 1)
    assert received == [{"a": (1, 2), "b": None}] * 2
    assert (a.calls, b.calls) == (1, 1)
    actions = [e.values["key"] for e in rt.get(run.run_id).logs if e.type == "action"]
    assert sorted(actions) == ["none", "typed"]


def test_only_the_failed_part_is_retried(rt: MemoryRuntime) -> None:
    good, flaky = Counted("g"), Counted("f", failures=2)

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["r"] = yield self.parallel({
                "good": self.action("good", good),
                "flaky": self.action("flaky", flaky, retry=Retry(attempts=3, delay=10)),
            })

    run = rt.start(Flow)
    assert run.status == "waiting"
    assert [(p.kind, p.key) for p in run.pending] == [("retry", "flaky")]
    for _ in range(2):
        rt.clock.advance(60)
        rt.tick()
    run = rt.get(run.run_id)
    assert run.status == "finished"
    assert run.state == {"r": {"good": "g", "flaky": "f"}}
    assert (good.calls, flaky.calls) == (1, 3)


def test_attempts_are_counted_per_key(rt: MemoryRuntime) -> None:
    two, four = Counted("2", failures=1), Counted("4", failures=3)

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["r"] = yield self.parallel({
                "two": self.action("two", two, retry=Retry(attempts=2, delay=1)),
                "four": self.action("four", four, retry=Retry(attempts=4, delay=1, backoff=1)),
            })

    run = rt.start(Flow)
    for _ in range(5):
        rt.clock.advance(1)
        rt.tick()
    run = rt.get(run.run_id)
    assert run.status == "finished"
    assert (two.calls, four.calls) == (2, 4)


def test_a_failing_part_does_not_discard_the_others_results(rt: MemoryRuntime) -> None:
    good, bad = Counted("g"), Counted("b", failures=1)

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["r"] = yield self.parallel({"good": self.action("good", good),
                                                   "bad": self.action("bad", bad)})

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert "action 'bad'" in run.error.message
    run = rt.retry(run.run_id)
    assert run.status == "finished"
    assert run.state == {"r": {"good": "g", "bad": "b"}}
    assert (good.calls, bad.calls) == (1, 2)


PARTS: dict[str, Counted] = {}


class Fanout(Workflow):
    @step
    def only(self) -> Steps:
        self.state["r"] = yield self.parallel({
            name: self.action(name, PARTS[name], retry=Retry(attempts=2, delay=5)) for name in sorted(PARTS)
        })


@pytest.mark.stores("file", "postgres")
def test_parallel_results_survive_a_restart(open_runtime: Callable[[], Runtime], clock: Any) -> None:
    PARTS.clear()
    PARTS.update(x=Counted(1), y=Counted(2, failures=1), z=Counted(3))
    run = open_runtime().start(Fanout, run_id="fan")
    assert run.status == "waiting"
    clock.advance(5)
    open_runtime().tick()
    run = open_runtime().get("fan")
    assert run.status == "finished"
    assert run.state == {"r": {"x": 1, "y": 2, "z": 3}}
    assert [PARTS[k].calls for k in "xyz"] == [1, 2, 1]


@pytest.mark.parametrize("bad", [{"a": 1}, {"a": "not an action"}])
def test_parallel_takes_a_dict_of_actions(rt: MemoryRuntime, bad: Any) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.parallel(bad)

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert "self.parallel" in run.error.message


def test_parallel_keys_must_differ(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.parallel({"a": self.action("k", int), "b": self.action("k", int)})

    run = rt.start(Flow)
    assert run.status == "failed"


def test_a_parallel_key_clashing_with_another_command_fails(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.action("k", int)
            yield self.parallel({"a": self.action("k", int), "b": self.action("j", int)})

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert "'k' twice" in run.error.message


def test_async_actions_in_parallel_overlap_too(rt: MemoryRuntime) -> None:
    barrier = threading.Barrier(3, timeout=5)

    async def meet(name: str) -> str:
        barrier.wait()  # each async action runs on a loop of its own thread
        return name

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["r"] = yield self.parallel({k: self.action(k, meet, k) for k in ("a", "b", "c")})

    run = rt.start(Flow)
    assert run.status == "finished", run.error
    assert run.state == {"r": {"a": "a", "b": "b", "c": "c"}}
