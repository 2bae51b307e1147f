"""The tinywf workflows the benchmarks run (defined here so the benchmarks depend on no example file)."""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from typing import Any

from pydantic import BaseModel, Field

from effects import effect
from tinywf_cli import Workflow, step

Steps = Generator[Any, Any, Any]


class SimpleState(BaseModel):
    """State of the seed's ``simple`` flow."""

    startHit: bool = False  # the seed's field names
    computed: float | None = None
    endHit: bool = False


def compute() -> float:
    """The seed's "heavy computation"."""
    return math.pi


class Simple(Workflow[SimpleState]):
    """The seed's three-step flow: begin, compute (one cached action), end."""

    @step
    def step_begin(self) -> Any:
        self.state.startHit = True
        self.log("start_hit")
        return self.step_compute

    @step
    def step_compute(self) -> Steps:
        value = yield self.action("cache_computed", compute)
        self.log("computed_hit", actionValue=value)
        self.state.computed = value
        return self.step_end

    @step
    def step_end(self) -> Any:
        self.state.endHit = True
        self.log("end_hit")
        return None


class LoopState(BaseModel):
    """A loop of ``n`` visits; ``stamps`` keeps the clock at the visits listed in ``marks``."""

    n: int
    i: int = 0
    marks: list[int] = Field(default_factory=list)
    stamps: dict[str, float] = Field(default_factory=dict)


class Loop(Workflow[LoopState]):
    """One step visited ``n`` times, one action per visit: the checkpoint stays the same size."""

    @step
    def work(self) -> Steps:
        now = yield self.action("work", time.perf_counter)
        if self.state.i in self.state.marks:
            self.state.stamps[str(self.state.i)] = now
        self.state.i += 1
        return self.work if self.state.i < self.state.n else None


def echo(value: int) -> int:
    """A side effect that does nothing but return its input."""
    return value


class CountState(BaseModel):
    """How many actions to run."""

    n: int


class ManyActions(Workflow[CountState]):
    """One step visit with ``n`` actions."""

    @step
    def work(self) -> Steps:
        for i in range(self.state.n):
            yield self.action(f"a{i}", echo, i)
        return None


class ThreeSteps(Workflow[dict[str, Any]]):
    """Three steps of one action each (a DBOS workflow of three steps, step for step)."""

    @step
    def first(self) -> Steps:
        yield self.action("one", echo, 1)
        return self.second

    @step
    def second(self) -> Steps:
        yield self.action("two", echo, 2)
        return self.third

    @step
    def third(self) -> Steps:
        yield self.action("three", echo, 3)
        return None


class ThreeActions(Workflow[dict[str, Any]]):
    """One step with three actions (DBOS's three steps as tinywf actions)."""

    @step
    def only(self) -> Steps:
        yield self.action("one", echo, 1)
        yield self.action("two", echo, 2)
        yield self.action("three", echo, 3)
        return None


class NapState(BaseModel):
    """Seconds between wake-ups."""

    interval: float


class Napper(Workflow[NapState]):
    """Sleeps ``interval`` seconds, again and again: a run that is always waiting on a timer."""

    @step
    def nap(self) -> Steps:
        yield self.sleep("nap", self.state.interval)
        return self.nap


class AnswerState(BaseModel):
    """The answer received."""

    answer: int | None = None


class AwaitAnswer(Workflow[AnswerState]):
    """Waits for the event ``go`` and finishes."""

    @step
    def wait(self) -> Steps:
        self.state.answer = yield self.wait_event("go", type=int, question="Go?")
        return None


class FiveState(BaseModel):
    """Where the executions are counted."""

    log: str


class FiveSteps(Workflow[FiveState]):
    """Five steps of one action each, for the crash-recovery workload."""

    @step
    def s1(self) -> Steps:
        yield self.action("e1", effect, 1, self.state.log)
        return self.s2

    @step
    def s2(self) -> Steps:
        yield self.action("e2", effect, 2, self.state.log)
        return self.s3

    @step
    def s3(self) -> Steps:
        yield self.action("e3", effect, 3, self.state.log)
        return self.s4

    @step
    def s4(self) -> Steps:
        yield self.action("e4", effect, 4, self.state.log)
        return self.s5

    @step
    def s5(self) -> Steps:
        yield self.action("e5", effect, 5, self.state.log)
        return None


class QueuedState(BaseModel):
    """When the run is due, and how long each action waits (an external call)."""

    due: str
    wait_ms: float = 0.0


def call(n: int, wait_ms: float) -> int:
    """An action: waits ``wait_ms`` (a call to another service), returns ``n``."""
    if wait_ms:
        time.sleep(wait_ms / 1000)
    return n


class QueuedThreeActions(Workflow[QueuedState]):
    """Due at ``due`` (a timer), then three actions: work for the workers of a store."""

    @step
    def run(self) -> Steps:
        from datetime import datetime

        yield self.sleep_until("queued", datetime.fromisoformat(self.state.due))
        yield self.action("one", call, 1, self.state.wait_ms)
        yield self.action("two", call, 2, self.state.wait_ms)
        yield self.action("three", call, 3, self.state.wait_ms)
        return None


class Handoff(Workflow[AnswerState]):
    """Waits for ``go``; then a 1 ms timer hands the rest to whichever worker wakes first; one action."""

    @step
    def wait(self) -> Steps:
        self.state.answer = yield self.wait_event("go", type=int)
        yield self.sleep("handoff", 0.001)
        yield self.action("done", echo, self.state.answer)
        return None


class ServiceState(BaseModel):
    """When the run is due, and how long its one call to another service takes."""

    due: str
    wait_ms: float = 100.0


class TimerThenCall(Workflow[ServiceState]):
    """Due at ``due`` (a timer), then one action that waits ``wait_ms`` on another service (an
    HTTP call, say): the I/O-bound run that ``tick --concurrency`` is for."""

    @step
    def run(self) -> Steps:
        from datetime import datetime

        yield self.sleep_until("queued", datetime.fromisoformat(self.state.due))
        yield self.action("call", call, 1, self.state.wait_ms)
        return None
