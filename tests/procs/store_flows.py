"""Workflows the store proofs run in child processes (``store_flows.py:Class``).

Every action goes through ``proc_harness.effect``, which appends its key to the effects
file, so a test counts how often each side effect really ran.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from proc_harness import effect
from pydantic import BaseModel

from tinywf_cli import EventTimeout, Retry, Workflow, signal, step
from tinywf_cli.authoring.commands import Command

Steps = Generator[Command, Any, Any]


class Total(BaseModel):
    total: int = 0
    n: int = 0
    per_step: int = 10
    count: int = 0
    answer: int | None = None
    visits: int = 0


class Chain(Workflow[Total]):
    """Three actions, a transition, an action, a zero timer, an action."""

    @step(start=True)
    def first(self) -> Steps:
        for i in range(3):
            self.state.total += yield self.action(f"a{i}", effect, f"a{i}", i + 1)
        self.log("halfway", total=self.state.total)
        return "second"

    @step
    def second(self) -> Steps:
        self.state.total += yield self.action("b0", effect, "b0", 10)
        yield self.sleep("nap", 0)
        self.state.total += yield self.action("b1", effect, "b1", 20)
        return None


class Many(Workflow[Total]):
    """``n`` small actions, ``per_step`` per step visit (the step revisits itself)."""

    @step
    def work(self) -> Steps:
        start = self.state.visits * self.state.per_step
        self.state.visits += 1
        for i in range(start, min(start + self.state.per_step, self.state.n)):
            self.state.total += yield self.action(f"a{i}", effect, f"a{i}", 1)
        return "work" if start + self.state.per_step < self.state.n else None


class Napper(Workflow[Total]):
    """An action, a one-minute timer, two actions."""

    @step
    def go(self) -> Steps:
        self.state.total += yield self.action("pre", effect, "pre", 1)
        yield self.sleep("nap", 60)
        self.state.total += yield self.action("post0", effect, "post0", 10)
        self.state.total += yield self.action("post1", effect, "post1", 100)
        return None


class Asker(Workflow[Total]):
    """Waits for an int, then two actions use it."""

    @step
    def ask(self) -> Steps:
        self.state.answer = yield self.wait_event("answer", type=int, question="A number?")
        self.state.total += yield self.action("use", effect, "use", self.state.answer)
        self.state.total += yield self.action("more", effect, "more", 1)
        return None


class Counter(Workflow[Total]):
    """Counts ``bump`` signals while it waits for ``done``."""

    @step
    def wait(self) -> Steps:
        yield self.wait_event("done")
        return None

    @signal
    def bump(self, by: int = 1) -> None:
        self.state.count += by


class Ticker(Workflow[Total]):
    """Counts ``bump`` signals while a one-second timer loop runs (ticks advance it)."""

    @step
    def loop(self) -> Steps:
        self.state.visits += 1
        yield self.sleep("beat", 1)
        return "loop"

    @signal
    def bump(self, by: int = 1) -> None:
        self.state.count += by


class Approver(Workflow[Total]):
    """Waits for approval, then ships once."""

    @step
    def approve(self) -> Steps:
        ok = yield self.wait_event("approve", type=bool)
        if ok:
            yield self.action("ship", effect, "ship")
        return None


class Alarm(Workflow[Total]):
    """A one-minute timer, then one action."""

    @step
    def wait(self) -> Steps:
        yield self.sleep("alarm", 60)
        yield self.action("fire", effect, "fire")
        return None

    @signal
    def bump(self, by: int = 1) -> None:
        self.state.count += by


def flaky(key: str) -> int:
    """Always fails (after recording that it ran)."""
    effect(key)
    raise RuntimeError("this attempt fails")


class Retrier(Workflow[Total]):
    """An action that fails and is retried a minute later (then the run fails)."""

    @step
    def go(self) -> Steps:
        yield self.action("flaky", flaky, "flaky", retry=Retry(attempts=2, delay=60))
        return None


class Deadline(Workflow[Total]):
    """Waits for an event for one minute."""

    @step
    def wait(self) -> Steps:
        try:
            yield self.wait_event("reply", timeout=60)
        except EventTimeout:
            self.state.answer = -1
        return None


class Looper(Workflow[Total]):
    """Revisits one step ``n`` times with one action per visit."""

    @step
    def loop(self) -> Steps:
        self.state.visits += 1
        self.state.total += yield self.action("tick", lambda: 1)
        self.log("visited", visit=self.state.visits)
        return "loop" if self.state.visits < self.state.n else None


def gated(key: str) -> str:
    """Blocks until the file ``$TINYWF_TEST_GATE`` exists (at most 30 s), then records its effect."""
    import os
    import time

    gate = os.environ["TINYWF_TEST_GATE"]
    ready = gate + ".ready"
    open(ready, "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return str(effect(key, key))


class Gated(Workflow[Total]):
    """One action that runs until the test opens its gate."""

    @step
    def go(self) -> Steps:
        yield self.action("slow", gated, "slow")
        return None

    @signal
    def bump(self, by: int = 1) -> None:
        self.state.count += by


def nap(i: int) -> int:
    """Sleeps a millisecond (other threads run meanwhile)."""
    import time

    time.sleep(0.001)
    return i


class Sleepy(Workflow[Total]):
    """``n`` actions of a millisecond each."""

    @step
    def work(self) -> Steps:
        for i in range(self.state.n):
            self.state.total += yield self.action(f"a{i}", nap, 1)
        return None


class BoundedLooper(Looper):
    """``Looper`` keeping only its newest 100 audit entries."""

    history_limit = 100
