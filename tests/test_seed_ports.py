"""The original's own test scenarios (durableState, guessGame, guessGame2), written with tinywf's API.

Each asserts what the original's snapshots recorded: final states, the questions asked in
each round, the audit trail and how many step transitions the run made. "Save/load" means a
new ``Runtime`` over the same state directory between rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import pytest
from pydantic import BaseModel

from tinywf_cli import Runtime, Workflow, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]


def trail(rt: Runtime, run_id: str, *, skip: tuple[str, ...] = ("start", "finish")) -> list[tuple[str, Any]]:
    """The audit log as (type, values), with the values that name times or ids left out."""
    out = []
    for entry in rt.get(run_id).logs:
        if entry.type in skip:
            continue
        values = {k: v for k, v in entry.values.items() if k not in ("resume_id", "due_at", "attempt")}
        out.append((entry.type, values))
    return out


# -- durableState.test.ts: simple_durable_state ----------------------------------------------------------


class Flags(BaseModel):
    startHit: bool | None = None  # the original's field names
    computed: float | None = None
    endHit: bool | None = None


def compute_pi() -> float:
    return math.pi


class Simple(Workflow[Flags]):
    @step
    def step_begin(self) -> str:
        self.state.startHit = True
        self.log("start_hit")
        return "step_compute"

    @step
    def step_compute(self) -> Steps:
        value = yield self.action("cache_computed", compute_pi)
        self.log("computed_hit", actionValue=value)
        self.state.computed = value
        return "step_end"

    @step
    def step_end(self) -> None:
        self.state.endHit = True
        self.log("end_hit")


def test_simple_durable_state(rt: MemoryRuntime) -> None:
    run = rt.start(Simple, input={"computed": 0})
    assert run.status == "finished"
    assert run.state == {"startHit": True, "computed": 3.141592653589793, "endHit": True}  # final_state
    assert trail(rt, run.run_id) == [  # audit_logs
        ("start_hit", {}),
        ("transition", {"from": "step_begin", "to": "step_compute", "visit": 2}),
        ("action", {"key": "cache_computed"}),
        ("computed_hit", {"actionValue": 3.141592653589793}),
        ("transition", {"from": "step_compute", "to": "step_end", "visit": 3}),
        ("end_hit", {}),
    ]


# -- durableState.test.ts: step_durable_state ----------------------------------------------------------------
# The original paused after each action; here the first part ends when the process dies in
# the second action, and the second part is the recovery that finishes the run.


class Stop(KeyboardInterrupt):
    """The process stopped in the middle of the step (a real interrupt, which tinywf lets through)."""


STOP_AT: dict[str, int] = {}
COMPUTE_CALLS: list[int] = []


def compute_pi_part(i: int) -> float:
    COMPUTE_CALLS.append(i)
    if STOP_AT.get("i") == i:
        del STOP_AT["i"]
        raise Stop()
    return math.pi


class Stepped(Simple):
    @step
    def step_compute(self) -> Steps:
        total = 0.0
        for i in range(3):
            total += yield self.action(f"cache_computed_{i}", compute_pi_part, i)
        self.log("computed_hit", actionValue=total)
        self.state.computed = total
        return "step_end"


def test_step_durable_state(open_runtime: Callable[[], Runtime]) -> None:
    COMPUTE_CALLS.clear()
    STOP_AT["i"] = 1
    with pytest.raises(Stop):
        open_runtime().start(Stepped, input={"computed": 0}, run_id="stepped")
    part_1 = open_runtime().get("stepped")  # run_part_1
    assert (part_1.status, part_1.step) == ("running", "step_compute")
    assert part_1.state == {"startHit": True, "computed": 0, "endHit": None}
    assert trail(open_runtime(), "stepped") == [
        ("start_hit", {}),
        ("transition", {"from": "step_begin", "to": "step_compute", "visit": 2}),
        ("action", {"key": "cache_computed_0"}),
    ]
    open_runtime().tick()
    part_2 = open_runtime().get("stepped")  # run_part_2
    assert (part_2.status, part_2.step) == ("finished", "step_end")
    assert part_2.state == {"startHit": True, "computed": 9.42477796076938, "endHit": True}
    assert trail(open_runtime(), "stepped", skip=("start", "finish", "recover")) == [
        ("start_hit", {}),
        ("transition", {"from": "step_begin", "to": "step_compute", "visit": 2}),
        ("action", {"key": "cache_computed_0"}),
        ("action", {"key": "cache_computed_1"}),
        ("action", {"key": "cache_computed_2"}),
        ("computed_hit", {"actionValue": 9.42477796076938}),
        ("transition", {"from": "step_compute", "to": "step_end", "visit": 3}),
        ("end_hit", {}),
    ]
    assert COMPUTE_CALLS == [0, 1, 1, 2]  # only the action in flight ran again


# -- durableState.test.ts: wait_ms_durable_state ----------------------------------------------------------------


class WaitMs(Workflow):
    @step
    def step_begin(self) -> Steps:
        self.state["startHit"] = True
        yield self.sleep("wait_for_1sec", 1)
        self.log("log", msg="after 1 sec")
        return "step_end"

    @step
    def step_end(self) -> None:
        self.state["endHit"] = True


def test_wait_ms_durable_state(rt: MemoryRuntime) -> None:
    run = rt.start(WaitMs)
    assert run.status == "waiting"
    assert [(p.kind, p.key) for p in run.pending] == [("timer", "wait_for_1sec")]
    rt.clock.advance(1)
    rt.tick()
    run = rt.get(run.run_id)
    assert (run.status, run.step) == ("finished", "step_end")
    assert run.state == {"startHit": True, "endHit": True}  # durable_state_with_waiting
    assert trail(rt, run.run_id) == [
        ("wait_begin", {"kind": "timer", "key": "wait_for_1sec"}),
        ("wait_end", {"kind": "timer", "key": "wait_for_1sec"}),
        ("log", {"msg": "after 1 sec"}),
        ("transition", {"from": "step_begin", "to": "step_end", "visit": 2}),
    ]


# -- durableState.test.ts: wait_event_durable_state --------------------------------------------------------------


class WaitEvent(Workflow):
    @step
    def step_begin(self) -> Steps:
        self.state["startHit"] = True
        answer = yield self.wait_event("event_01", type=int, question="hey human. 1 + 1 = ?")
        self.log("log", msg="event_01 resolved with value", answer=answer)
        self.state["eventResponse"] = answer
        return "step_end"

    @step
    def step_end(self) -> None:
        self.state["endHit"] = True


def test_wait_event_durable_state(rt: MemoryRuntime) -> None:
    run = rt.start(WaitEvent)
    (pending,) = run.pending
    assert (pending.kind, pending.key) == ("event", "event_01")
    assert pending.request == {"question": "hey human. 1 + 1 = ?"}
    run = rt.resolve(run.run_id, pending.resume_id, 2)
    assert (run.status, run.step) == ("finished", "step_end")
    assert run.state == {"startHit": True, "eventResponse": 2, "endHit": True}  # durable_state_with_event
    assert trail(rt, run.run_id) == [
        ("wait_begin", {"kind": "event", "key": "event_01"}),
        ("wait_end", {"kind": "event", "key": "event_01", "value": 2, "via": "runtime"}),
        ("log", {"msg": "event_01 resolved with value", "answer": 2}),
        ("transition", {"from": "step_begin", "to": "step_end", "visit": 2}),
    ]


# -- guessGame.test.ts ----------------------------------------------------------------------------------------------


class Guess(BaseModel):
    number: int
    answer: list[int] | None = None


class GuessGame(Workflow[Guess]):
    """Guess the number: one step asks until the answer is right."""

    @step
    def step_begin(self) -> str:
        return "step_play"

    @step
    def step_play(self) -> Steps:
        count = 0
        question = "number between 0-100"
        answer = []
        while True:
            last_answer = yield self.wait_event(f"event_ask_{count}", type=int, question=question)
            count += 1
            answer.append(last_answer)
            if last_answer == self.state.number:
                break
            if last_answer < self.state.number:
                question = f"{last_answer} lesser than the answer - number between 0-100"
            else:
                question = f"{last_answer} gretter than the answer - number between 0-100"
        self.state.answer = answer
        return "step_end"

    @step
    def step_end(self) -> None:
        return None


def play(runtime: Callable[[], Runtime], flow: type[Workflow[Any]], number: int,
         answers: list[int]) -> tuple[str, list[str]]:
    """Start ``flow`` and answer each pending event in turn; returns the run id and the questions."""
    run = runtime().start(flow, input={"number": number})
    questions = []
    for value in answers:
        assert run.status == "waiting"
        (pending,) = run.pending
        assert pending.kind == "event"
        assert pending.request is not None
        questions.append(pending.request["question"])
        run = runtime().resolve(run.run_id, pending.resume_id, value)  # one call reaches the next wait
    assert run.status == "finished"
    return run.run_id, questions


def test_guess_game_one_run(rt: MemoryRuntime) -> None:
    run_id, questions = play(lambda: rt, GuessGame, 15, [5, 20, 10, 15])
    assert questions == [
        "number between 0-100",
        "5 lesser than the answer - number between 0-100",
        "20 gretter than the answer - number between 0-100",
        "10 lesser than the answer - number between 0-100",
    ]
    run = rt.get(run_id)
    assert (run.step, run.state) == ("step_end", {"number": 15, "answer": [5, 20, 10, 15]})
    assert [v["key"] for t, v in trail(rt, run_id) if t == "wait_begin"] == [f"event_ask_{i}" for i in range(4)]
    assert [t for t, _ in trail(rt, run_id)].count("transition") == 2  # the original's _seq


def test_guess_game_save_load_run(open_runtime: Callable[[], Runtime]) -> None:
    run_id, questions = play(open_runtime, GuessGame, 95, [5, 45, 75, 99, 95])
    assert questions == [
        "number between 0-100",
        "5 lesser than the answer - number between 0-100",
        "45 lesser than the answer - number between 0-100",
        "75 lesser than the answer - number between 0-100",
        "99 gretter than the answer - number between 0-100",
    ]
    run = open_runtime().get(run_id)
    assert (run.step, run.state) == ("step_end", {"number": 95, "answer": [5, 45, 75, 99, 95]})
    assert [t for t, _ in trail(open_runtime(), run_id)].count("wait_begin") == 5  # replays asked nothing twice
    assert [t for t, _ in trail(open_runtime(), run_id)].count("transition") == 2


# -- guessGame2.test.ts: revisiting steps ------------------------------------------------------------------------------


class Guess2(BaseModel):
    number: int
    hint: str | None = None
    answer: list[int] | None = None


class GuessGame2(Workflow[Guess2]):
    """Guess the number: ask and check are steps, revisited until the answer is right."""

    @step
    def step_begin(self) -> str:
        self.state.hint = "number between 0-100. Empty for simulate save/load"
        return "step_ask"

    @step
    def step_ask(self) -> Steps:
        answer = self.state.answer or []
        last_answer = yield self.wait_event("event_ask", type=int, question=self.state.hint)
        answer.append(last_answer)
        self.state.answer = answer
        return "step_check"

    @step
    def step_check(self) -> str:
        last_answer = self.state.answer[-1] if self.state.answer else None
        if not last_answer:
            raise ValueError("last_answer should not be empty")
        if last_answer == self.state.number:
            return "step_end"
        if last_answer < self.state.number:
            self.state.hint = f"value {last_answer} is < than the answer - number between 0-100"
        else:
            self.state.hint = f"value {last_answer} is > than the answer - number between 0-100"
        return "step_ask"

    @step
    def step_end(self) -> None:
        self.state.hint = ""


def test_guess_game_2_revisit_step_one_run(rt: MemoryRuntime) -> None:
    run_id, questions = play(lambda: rt, GuessGame2, 15, [5, 20, 10, 15])
    assert questions == [
        "number between 0-100. Empty for simulate save/load",
        "value 5 is < than the answer - number between 0-100",
        "value 20 is > than the answer - number between 0-100",
        "value 10 is < than the answer - number between 0-100",
    ]
    run = rt.get(run_id)
    assert (run.step, run.state) == ("step_end", {"number": 15, "hint": "", "answer": [5, 20, 10, 15]})
    transitions = [v for t, v in trail(rt, run_id) if t == "transition"]
    assert len(transitions) == 9  # the original's _seq
    assert transitions[-1] == {"from": "step_check", "to": "step_end", "visit": 10}


def test_guess_game_2_revisit_step_save_load_run(open_runtime: Callable[[], Runtime]) -> None:
    run_id, questions = play(open_runtime, GuessGame2, 95, [5, 45, 75, 99, 95])
    assert questions == [
        "number between 0-100. Empty for simulate save/load",
        "value 5 is < than the answer - number between 0-100",
        "value 45 is < than the answer - number between 0-100",
        "value 75 is < than the answer - number between 0-100",
        "value 99 is > than the answer - number between 0-100",
    ]
    run = open_runtime().get(run_id)
    assert (run.step, run.state) == ("step_end", {"number": 95, "hint": "", "answer": [5, 45, 75, 99, 95]})
    transitions = [v for t, v in trail(open_runtime(), run_id) if t == "transition"]
    assert len(transitions) == 11  # the original's _seq
    assert transitions[-1] == {"from": "step_check", "to": "step_end", "visit": 12}
