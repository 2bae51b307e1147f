"""``self.action``: run once, store through JSON, same value on replay; ``Retry`` and ``tinywf retry``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from tinywf_cli import Retry, Runtime, Workflow, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]


def received_twice(rt: MemoryRuntime, fn: Callable[[], Any]) -> list[Any]:
    """What a step receives from action ``fn`` on its first run and on replay."""
    received: list[Any] = []

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            received.append((yield self.action("value", fn)))
            yield self.wait_event("go")

    run = rt.start(Flow)
    assert run.status == "waiting"
    run = rt.resolve(run.run_id, "go", None)
    assert run.status == "finished"
    assert len(received) == 2
    return received


# -- sync, async, values -----------------------------------------------------------------------------


def test_sync_and_async_actions_run_once(rt: MemoryRuntime) -> None:
    calls: list[str] = []

    def sync_fn(x: int, *, y: int) -> int:
        calls.append("sync")
        return x + y

    async def async_fn(x: int) -> int:
        calls.append("async")
        await asyncio.sleep(0)
        return x * 2

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            a = yield self.action("sync", sync_fn, 1, y=2)
            b = yield self.action("async", async_fn, a)
            self.state["out"] = [a, b]
            yield self.wait_event("go")

    run = rt.start(Flow)
    assert run.state == {"out": [3, 6]}
    rt.resolve(run.run_id, "go", 1)
    assert calls == ["sync", "async"]


def test_an_async_action_runs_from_inside_an_event_loop(rt: MemoryRuntime) -> None:
    async def async_fn() -> str:
        return "ok"

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["out"] = yield self.action("async", async_fn)

    async def embedding_program() -> Any:
        return rt.start(Flow)

    assert asyncio.run(embedding_program()).state == {"out": "ok"}


def test_a_tuple_annotation_restores_a_tuple_on_first_run_and_replay(rt: MemoryRuntime) -> None:
    def pair() -> tuple[int, int]:
        return (1, 2)

    assert received_twice(rt, pair) == [(1, 2), (1, 2)]
    assert all(type(v) is tuple for v in received_twice(rt, pair))


def test_without_an_annotation_a_tuple_is_a_list_both_times(rt: MemoryRuntime) -> None:
    def pair():  # deliberately without a return annotation
        return (1, 2)

    received = received_twice(rt, pair)
    assert received == [[1, 2], [1, 2]]
    assert all(type(v) is list for v in received)


class Receipt(BaseModel):
    id: str
    amount: int
    at: datetime


def test_a_pydantic_return_type_is_restored_both_times(rt: MemoryRuntime) -> None:
    def charge() -> Receipt:
        return Receipt(id="r1", amount=5, at=datetime(2026, 1, 1, 12))

    first, second = received_twice(rt, charge)
    assert isinstance(first, Receipt)
    assert isinstance(second, Receipt)
    assert first == second == Receipt(id="r1", amount=5, at=datetime(2026, 1, 1, 12))


def test_a_datetime_return_annotation_restores_a_datetime(rt: MemoryRuntime) -> None:
    def when() -> datetime:
        return datetime(2026, 3, 1, 8, 30)

    assert received_twice(rt, when) == [datetime(2026, 3, 1, 8, 30)] * 2


def test_a_model_returned_without_annotation_is_its_json_both_times(rt: MemoryRuntime) -> None:
    def charge():  # deliberately without a return annotation
        return Receipt(id="r1", amount=5, at=datetime(2026, 1, 1, 12))

    assert received_twice(rt, charge) == [{"id": "r1", "amount": 5, "at": "2026-01-01T12:00:00"}] * 2


@pytest.mark.parametrize("value", [0, "", None, False, [], {}, 0.0])
def test_falsy_results_are_cached(rt: MemoryRuntime, value: Any) -> None:
    calls: list[int] = []

    def falsy() -> Any:
        calls.append(1)
        return value

    assert received_twice(rt, falsy) == [value, value]
    assert calls == [1]


class Opaque:
    pass


@pytest.mark.parametrize("bad", [Opaque(), float("nan"), {"f": print}, [float("inf")]])
def test_a_result_that_is_not_json_fails_the_run_naming_the_action(rt: MemoryRuntime, bad: Any) -> None:
    after: list[str] = []

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.action("make_thing", lambda: bad)
            after.append("continued")

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert "action 'make_thing'" in run.error.message
    assert "JSON" in run.error.message
    assert after == []


def test_a_result_not_matching_its_annotation_fails_the_run(rt: MemoryRuntime) -> None:
    def count() -> int:
        return "many"

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.action("count", count)

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert "action 'count'" in run.error.message


# -- Retry -----------------------------------------------------------------------------------------------


class Flaky:
    """A callable that fails its first ``failures`` calls, then returns ``"ok"``."""

    def __init__(self, failures: int, error: type[Exception] = RuntimeError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"boom {self.calls}")
        return "ok"


def retrying_flow(fn: Callable[[], str], retry: Retry) -> type[Workflow[Any]]:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["result"] = yield self.action("flaky", fn, retry=retry)

    return Flow


def test_retry_calls_exactly_attempts_times_then_fails_with_the_error(rt: MemoryRuntime) -> None:
    flaky = Flaky(failures=100, error=ConnectionError)
    run = rt.start(retrying_flow(flaky, Retry(attempts=3, delay=1)))
    for _ in range(10):
        rt.clock.advance(3600)
        rt.tick()
    run = rt.get(run.run_id)
    assert flaky.calls == 3
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "ConnectionError"
    assert "action 'flaky' failed after 3 attempts" in run.error.message
    assert "boom 3" in run.error.message
    assert run.pending == []
    assert "result" not in run.state


def test_retry_succeeds_on_a_later_attempt(rt: MemoryRuntime) -> None:
    flaky = Flaky(failures=2)
    run = rt.start(retrying_flow(flaky, Retry(attempts=3, delay=10)))
    assert (run.status, flaky.calls) == ("waiting", 1)
    assert [p.kind for p in run.pending] == ["retry"]
    assert run.pending[0].key == "flaky"
    rt.clock.advance(9)
    rt.tick()
    assert flaky.calls == 1  # not due yet
    rt.clock.advance(1)
    rt.tick()
    assert flaky.calls == 2
    rt.clock.advance(20)
    rt.tick()
    run = rt.get(run.run_id)
    assert (run.status, run.state, flaky.calls) == ("finished", {"result": "ok"}, 3)
    retries = [e.values for e in run.logs if e.type == "retry"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert retries[0]["error"] == {"type": "RuntimeError", "message": "boom 1"}


def test_one_attempt_means_no_retry(rt: MemoryRuntime) -> None:
    flaky = Flaky(failures=1)
    run = rt.start(retrying_flow(flaky, Retry(attempts=1)))
    assert (run.status, flaky.calls) == ("failed", 1)


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        (Retry(attempts=6, delay=1, backoff=2), [1, 2, 4, 8, 16]),
        (Retry(attempts=6, delay=1, backoff=2, max_delay=5), [1, 2, 4, 5, 5]),
        (Retry(attempts=4, delay=timedelta(minutes=1), backoff=3, max_delay=timedelta(minutes=5)),
         [60, 180, 300]),
        (Retry(attempts=3, delay=2.5, backoff=1), [2.5, 2.5]),
    ],
)
def test_retry_delays_grow_by_backoff_up_to_max_delay(
    rt: MemoryRuntime, retry: Retry, expected: list[float]
) -> None:
    flaky = Flaky(failures=100)
    run = rt.start(retrying_flow(flaky, retry))
    delays = []
    while run.status == "waiting":
        (pending,) = run.pending
        assert pending.kind == "retry"
        assert pending.due_at is not None
        delays.append((pending.due_at - rt.clock.now()).total_seconds())
        rt.clock.set(pending.due_at)
        rt.tick()
        run = rt.get(run.run_id)
    assert delays == expected
    assert flaky.calls == retry.attempts
    assert run.status == "failed"


def test_a_non_retryable_error_fails_at_once(rt: MemoryRuntime) -> None:
    flaky = Flaky(failures=5, error=PermissionError)
    run = rt.start(retrying_flow(flaky, Retry(attempts=5, non_retryable=(PermissionError,))))
    assert (run.status, flaky.calls) == ("failed", 1)
    assert run.error is not None
    assert run.error.type == "PermissionError"
    assert "after 1 attempt:" in run.error.message


def test_a_subclass_of_a_non_retryable_error_fails_at_once(rt: MemoryRuntime) -> None:
    flaky = Flaky(failures=5, error=FileNotFoundError)
    run = rt.start(retrying_flow(flaky, Retry(attempts=5, non_retryable=OSError)))
    assert (run.status, flaky.calls) == ("failed", 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"attempts": 1.5}, {"delay": -1}, {"backoff": 0}, {"max_delay": "soon"},
     {"non_retryable": (ValueError, "x")}],
)
def test_bad_retry_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Retry(**kwargs)


def test_retry_command_gives_fresh_attempts_and_replays_the_same_visit(rt: MemoryRuntime) -> None:
    calls: dict[str, int] = {"first": 0, "flaky": 0}
    keys: list[str] = []
    flaky = Flaky(failures=4)

    def first() -> int:
        calls["first"] += 1
        return 7

    def charge(key: str) -> str:
        keys.append(key)
        calls["flaky"] += 1
        return flaky()

    class Flow(Workflow):
        @step
        def begin(self) -> str:
            return "pay"

        @step
        def pay(self) -> Steps:
            self.state["first"] = yield self.action("first", first)
            self.state["paid"] = yield self.action(
                "charge", charge, self.idempotency_key("charge"), retry=Retry(attempts=2, delay=0))
            return None

    run = rt.start(Flow, run_id="order")
    assert run.status == "failed"
    assert calls == {"first": 1, "flaky": 2}
    run = rt.retry("order")
    assert run.status == "failed"  # two more attempts, both failed (calls 3 and 4)
    assert calls == {"first": 1, "flaky": 4}
    run = rt.retry("order")
    assert run.status == "finished"
    assert calls == {"first": 1, "flaky": 5}
    assert run.state == {"first": 7, "paid": "ok"}
    assert set(keys) == {"order:2:charge"}
    assert [e.type for e in rt.get("order").logs].count("retried") == 2


def test_retry_command_after_a_failed_step_reruns_only_what_is_new(rt: MemoryRuntime) -> None:
    calls: list[str] = []
    broken = {"yes": True}

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.action("fetch", calls.append, "fetch")
            if broken["yes"]:
                raise ValueError("bug in the step")
            yield self.action("store", calls.append, "store")

    run = rt.start(Flow)
    assert run.status == "failed"
    broken["yes"] = False
    run = rt.retry(run.run_id)
    assert run.status == "finished"
    assert run.error is None
    assert calls == ["fetch", "store"]


@pytest.mark.stores("file", "postgres")
def test_retry_from_a_restarted_runtime_keeps_cached_actions(open_runtime: Callable[[], Runtime]) -> None:
    RESTART_CALLS.clear()
    RESTART_FLAKY.calls = 0
    run = open_runtime().start(RestartRetry, run_id="r")
    assert run.status == "failed"
    run = open_runtime().retry("r")
    assert run.status == "finished"
    assert run.state == {"a": "A", "b": "ok"}
    assert RESTART_CALLS == ["a"]
    assert RESTART_FLAKY.calls == 2


RESTART_CALLS: list[str] = []
RESTART_FLAKY = Flaky(failures=1)


def restart_a() -> str:
    RESTART_CALLS.append("a")
    return "A"


class RestartRetry(Workflow):
    @step
    def only(self) -> Steps:
        self.state["a"] = yield self.action("a", restart_a)
        self.state["b"] = yield self.action("b", RESTART_FLAKY)


DELAYED = Flaky(failures=1)


class DelayedRetry(Workflow):
    @step
    def only(self) -> Steps:
        self.state["r"] = yield self.action("call", DELAYED, retry=Retry(attempts=2, delay=timedelta(seconds=30)))


@pytest.mark.stores("file", "postgres")
@pytest.mark.stores("file", "postgres")
def test_a_retry_delay_is_waited_out_durably_across_processes(
    open_runtime: Callable[[], Runtime], clock: Any
) -> None:
    DELAYED.calls = 0
    run = open_runtime().start(DelayedRetry, run_id="d")
    assert (run.status, [p.kind for p in run.pending]) == ("waiting", ["retry"])
    clock.advance(29)
    assert open_runtime().tick().due == 0
    clock.advance(1)
    report = open_runtime().tick()
    assert [(a.run_id, a.status) for a in report.advanced] == [("d", "finished")]
    assert open_runtime().get("d").state == {"r": "ok"}
    assert DELAYED.calls == 2
