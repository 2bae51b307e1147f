"""One test per bug measured in the TypeScript original; each proves tinywf does not have it."""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tinywf_cli import ResumeNotFound, Retry, Runtime, Workflow, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

CALLS: list[str] = []
FALSY: dict[str, Any] = {}


def falsy_action() -> Any:
    CALLS.append("falsy")
    return FALSY["value"]


class FalsyFlow(Workflow):
    @step
    def only(self) -> Steps:
        value = yield self.action("falsy", falsy_action)
        self.state.setdefault("seen", []).append(value)
        yield self.wait_event("go")
        self.state["final"] = value


@pytest.fixture(autouse=True)
def clear() -> None:
    CALLS.clear()
    FALSY.clear()


# 1. A cached falsy result was a cache miss and ran again.
@pytest.mark.parametrize("value", [0, "", None, False, []])
@pytest.mark.parametrize("store", ["memory", "files"])
def test_falsy_cached_result_is_not_rerun(
    rt: MemoryRuntime, open_runtime: Callable[[], Runtime], value: Any, store: str
) -> None:
    FALSY["value"] = value
    runtime: Callable[[], Runtime] = (lambda: rt) if store == "memory" else open_runtime
    run = runtime().start(FalsyFlow, run_id="falsy")
    assert run.state == {"seen": [value]}
    run = runtime().resolve("falsy", "go", 1)
    assert run.status == "finished"
    assert run.state == {"seen": [value], "final": value}
    assert CALLS == ["falsy"]


# 2. A step that transitioned to itself kept its visit, so its cache answered the new visit.
def test_self_transition_starts_a_new_visit(rt: MemoryRuntime) -> None:
    keys: list[str] = []

    def poll(key: str) -> int:
        keys.append(key)
        return len(keys)

    class Poller(Workflow):
        @step
        def poll(self) -> Steps:
            count = yield self.action("poll", poll, self.idempotency_key("poll"))
            self.state["counts"] = [*self.state.get("counts", []), count]
            return self.poll if count < 3 else None

    run = rt.start(Poller, run_id="poller")
    assert run.status == "finished"
    assert run.state == {"counts": [1, 2, 3]}
    assert keys == ["poller:1:poll", "poller:2:poll", "poller:3:poll"]
    transitions = [e.values for e in rt.get("poller").logs if e.type == "transition"]
    assert transitions == [{"from": "poll", "to": "poll", "visit": 2}, {"from": "poll", "to": "poll", "visit": 3}]


# 3. Resume ids were key + millisecond: a step revisited within one millisecond reused the id,
#    and an answer meant for one wait resolved another.
def test_resume_ids_unique_when_step_revisited_quickly(rt: MemoryRuntime) -> None:
    class Quiz(Workflow):
        @step
        def ask(self) -> Steps:
            answers = self.state.setdefault("answers", [])
            answer = yield self.wait_event("answer", round=len(answers) + 1)
            answers.append(answer)
            return self.ask if len(answers) < 3 else None

    run = rt.start(Quiz, run_id="quiz")
    ids = []
    for round_ in (1, 2, 3):
        (pending,) = run.pending
        assert pending.request == {"round": round_}
        ids.append(pending.resume_id)
        if round_ > 1:  # the clock never moved: an answer for an earlier round finds nothing
            with pytest.raises(ResumeNotFound):
                rt.resolve("quiz", ids[0], "stale")
        run = rt.resolve("quiz", pending.resume_id, f"answer {round_}")
    assert rt.clock.now() == T0
    assert len(set(ids)) == 3
    assert run.status == "finished"
    assert run.state == {"answers": ["answer 1", "answer 2", "answer 3"]}


def test_resume_ids_unique_across_timers_retries_and_events_of_revisits(rt: MemoryRuntime) -> None:
    flaky = {"fail": True}

    def once() -> str:
        if flaky["fail"]:
            flaky["fail"] = False
            raise RuntimeError("once")
        return "ok"

    class Loop(Workflow):
        @step
        def work(self) -> Steps:
            yield self.sleep("nap", 0 if self.state.get("n") else 1)
            yield self.action("call", once, retry=Retry(attempts=2, delay=1))
            yield self.wait_event("nap_done")
            self.state["n"] = self.state.get("n", 0) + 1
            flaky["fail"] = True
            return self.work if self.state["n"] < 2 else None

    run = rt.start(Loop)
    seen: list[str] = []
    while run.status == "waiting":
        seen += [p.resume_id for p in run.pending]
        if run.pending[0].kind == "event":
            run = rt.resolve(run.run_id, run.pending[0].resume_id, None)
        else:
            rt.clock.advance(1)
            rt.tick()
            run = rt.get(run.run_id)
    assert run.status == "finished"
    assert len(seen) == len(set(seen)) == 5


# 4. The timer's value accessor crashed when the timer had not been stored yet.
def test_timer_value_before_and_after_storage(rt: MemoryRuntime) -> None:
    received: list[tuple[str, datetime]] = []

    class Timers(Workflow):
        @step
        def only(self) -> Steps:
            received.append(("immediate", (yield self.sleep("immediate", 0))))
            received.append(("minute", (yield self.sleep("minute", timedelta(minutes=1)))))
            yield self.wait_event("go")

    run = rt.start(Timers)
    assert received == [("immediate", T0)]  # the first pass, before anything was stored
    rt.clock.advance(timedelta(minutes=5))
    rt.tick()
    rt.resolve(run.run_id, "go", None)
    assert received == [("immediate", T0),
                        ("immediate", T0), ("minute", T0 + timedelta(minutes=1)),
                        ("immediate", T0), ("minute", T0 + timedelta(minutes=1))]
    assert all(isinstance(when, datetime) and when.tzinfo is not None for _, when in received)


# 5. maxRetry N gave N-1 retries (1 gave none), and a retry could report success with undefined.
@pytest.mark.parametrize("attempts", [1, 2, 3, 5])
def test_retry_count_is_exact_and_never_fakes_success(rt: MemoryRuntime, attempts: int) -> None:
    calls: list[int] = []
    after: list[Any] = []

    def always_fails() -> str:
        calls.append(1)
        raise TimeoutError(f"attempt {len(calls)}")

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            value = yield self.action("call", always_fails, retry=Retry(attempts=attempts, delay=1))
            after.append(value)
            self.state["value"] = value

    run = rt.start(Flow)
    for _ in range(attempts + 3):
        rt.clock.advance(3600)
        rt.tick()
    run = rt.get(run.run_id)
    assert len(calls) == attempts
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "TimeoutError"
    assert f"attempt {attempts}" in run.error.message
    assert after == []  # the step never went on with a made-up value
    assert run.state == {}


def test_retry_that_succeeds_on_the_last_attempt_gives_the_real_value(rt: MemoryRuntime) -> None:
    calls: list[int] = []

    def third_time_lucky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("not yet")
        return "value"

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["value"] = yield self.action("call", third_time_lucky, retry=Retry(attempts=3, delay=0))

    run = rt.start(Flow)
    assert (run.status, run.state, len(calls)) == ("finished", {"value": "value"}, 3)


# 6. Progress was saved only at a pause or at the end: an error lost completed actions and they ran twice.
BROKEN = {"step": True}


def record(name: str) -> str:
    CALLS.append(name)
    return name.upper()


class Payment(Workflow):
    @step
    def pay(self) -> Steps:
        self.state["reserved"] = yield self.action("reserve", record, "reserve")
        self.state["charged"] = yield self.action("charge", record, "charge")
        if BROKEN["step"]:
            raise RuntimeError("bug after charging")
        self.state["mailed"] = yield self.action("mail", record, "mail")


class Died(KeyboardInterrupt):
    """The process was killed (a real interrupt, which tinywf lets through)."""


def charge_then_die(name: str) -> str:
    CALLS.append(name)
    if name == "mail" and CALLS.count("mail") == 1:
        raise Died()
    return name.upper()


class PaymentThatDies(Workflow):
    @step
    def pay(self) -> Steps:
        self.state["reserved"] = yield self.action("reserve", charge_then_die, "reserve")
        self.state["charged"] = yield self.action("charge", charge_then_die, "charge")
        self.state["mailed"] = yield self.action("mail", charge_then_die, "mail")


def test_progress_saved_after_each_action(open_runtime: Callable[[], Runtime]) -> None:
    BROKEN["step"] = True
    run = open_runtime().start(Payment, run_id="pay")
    assert run.status == "failed"
    BROKEN["step"] = False
    run = open_runtime().retry("pay")  # another process: only the records on disk count
    assert run.status == "finished"
    assert run.state == {"reserved": "RESERVE", "charged": "CHARGE", "mailed": "MAIL"}
    assert CALLS == ["reserve", "charge", "mail"]


def test_progress_saved_after_each_action_survives_a_dead_process(open_runtime: Callable[[], Runtime]) -> None:
    with pytest.raises(Died):
        open_runtime().start(PaymentThatDies, run_id="pay")
    assert open_runtime().get("pay").status == "running"
    open_runtime().tick()
    run = open_runtime().get("pay")
    assert run.status == "finished"
    assert run.state == {"reserved": "RESERVE", "charged": "CHARGE", "mailed": "MAIL"}
    assert CALLS == ["reserve", "charge", "mail", "mail"]  # only the action in flight ran again
