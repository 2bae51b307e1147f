"""``Limit`` and ``Breaker`` (contract section 9), through ``Runtime`` on every store, on a clock moved by hand.

What the pending resumes say (kind, key, request, due_at), first come first served, slots
given back after each attempt (never held over a retry delay) and at a whole run's end, the
waiters a freed slot wakes, overrides, and a breaker's life: closed, open, one probe, closed
again. Real processes and real time are ``test_limits_procs.py``'s. Each ``tick`` here advances
one run after the other (``concurrency=1``), so that the order the rules give is the order seen.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from datetime import timedelta
from typing import Any

import pytest

from tinywf_cli import (
    ActionFailed,
    BadInput,
    Breaker,
    BreakerOpen,
    Limit,
    LimitNotFound,
    Retry,
    Runtime,
    Workflow,
    step,
)
from tinywf_cli.authoring.commands import Command
from tinywf_cli.clock import ManualClock
from tinywf_cli.errors import FlowDefinitionError, NotAnEvent
from tinywf_cli.stores.base import Store
from tinywf_cli.stores.limits import Gates, cells_of

Steps = Generator[Command, Any, Any]
START = "2026-01-01T00:00:00Z"


@pytest.fixture
def runtime(store: Store) -> Iterator[Runtime]:
    """A runtime over each kind of store in turn, its clock moved by hand."""
    rt = Runtime(store, clock=ManualClock(START), lock_timeout=5)
    yield rt


def clock_of(rt: Runtime) -> ManualClock:
    assert isinstance(rt.clock, ManualClock)
    return rt.clock


def calls_flow(limit: Limit | None = None, breaker: Breaker | None = None, fn: Any = None,
               retry: Retry | None = None) -> type[Workflow[Any]]:
    """A flow of one action under ``limit``/``breaker``; it logs what the action raised, if it did."""
    called: list[str] = []

    def record(run_id: str) -> str:
        called.append(run_id)
        return run_id

    class Calls(Workflow):
        @step
        def only(self) -> Steps:
            try:
                yield self.action("call", fn or record, self.run_id, limit=limit, breaker=breaker, retry=retry)
            except ActionFailed as exc:
                self.log("gave_up", error_type=exc.error_type, attempts=exc.attempts)

    Calls.called = called  # type: ignore[attr-defined]
    return Calls


# -- declaring them ------------------------------------------------------------------------------------------


def test_limits_and_breakers_are_checked_when_declared() -> None:
    assert Limit("api", rate="20/s").tokens == (20, 1.0)
    assert Limit("api", rate="100/m", concurrency=5).key("acme").keyed == "acme"
    assert Limit("api", concurrency=1).key(42).keyed == "42"
    for bad in ({"rate": "20"}, {"rate": "0/s"}, {"rate": "20/d"}, {"concurrency": 0}, {"concurrency": True}, {}):
        with pytest.raises(ValueError):
            Limit("api", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        Limit("a b", rate="1/s")
    with pytest.raises(TypeError):
        Limit("api", "1/s")  # type: ignore[misc]
    with pytest.raises(TypeError):
        Limit("api", rate="1/s").key(None)  # type: ignore[arg-type]
    for bad_breaker in ({"failures": 0}, {"within": 0}, {"reset": -1}, {"on_open": "skip"}):
        with pytest.raises(ValueError):
            Breaker("svc", **bad_breaker)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limit= takes a Limit"):
        Workflow().action("x", print, limit="api")  # type: ignore[arg-type]
    with pytest.raises(FlowDefinitionError, match="limit must be a Limit"):
        type("Bad", (Workflow,), {"limit": 5, "go": step(lambda self: None)})


# -- rate ------------------------------------------------------------------------------------------------------


def test_a_rate_lets_the_bucket_through_then_one_start_per_token_first_come_first_served(runtime: Runtime) -> None:
    flow = calls_flow(Limit("api", rate="2/s"))
    runs = [runtime.start(flow, run_id=f"r{i}") for i in range(5)]
    assert [r.status for r in runs] == ["finished", "finished", "waiting", "waiting", "waiting"]
    waiting = [r.pending[0] for r in runs[2:]]
    assert {(p.kind, p.key) for p in waiting} == {("limit", "call")}
    assert all(p.request == {"limit": "api"} for p in waiting)
    # each waiter is told when its token comes: 0.5 s apart, in the order they came
    assert [(p.due_at - clock_of(runtime).now()).total_seconds() for p in waiting] == \
        pytest.approx([0.501, 1.001, 1.501], abs=0.002)
    assert runtime.limits().model_dump(mode="json")["limits"] == [
        {"name": "api", "key": None, "rate": "2/s", "concurrency": None, "in_flight": 0, "waiting": 3}]
    clock_of(runtime).advance(0.6)
    assert [a.run_id for a in runtime.tick(concurrency=1).advanced] == ["r2"]
    clock_of(runtime).advance(1.0)
    assert [a.run_id for a in runtime.tick(concurrency=1).advanced] == ["r3", "r4"]
    assert flow.called == ["r0", "r1", "r2", "r3", "r4"]  # type: ignore[attr-defined]
    assert runtime.limits().limits[0].waiting == 0


def test_a_waiter_woken_early_waits_again_and_a_newcomer_queues_behind_it(runtime: Runtime) -> None:
    flow = calls_flow(Limit("api", rate="1/s"))
    assert runtime.start(flow, run_id="first").status == "finished"
    assert runtime.start(flow, run_id="second").status == "waiting"
    assert runtime.advance("second").status == "waiting"  # not due: left alone
    clock_of(runtime).advance(1.01)
    late = runtime.start(flow, run_id="late")  # a token is there, but "second" came first
    assert late.status == "waiting"
    assert runtime.tick(concurrency=1).advanced[0].run_id == "second"
    assert runtime.get("late").status == "waiting"
    with pytest.raises(NotAnEvent, match="is a limit, not an event"):
        runtime.resolve("late", "call", None)


# -- concurrency -------------------------------------------------------------------------------------------------


def test_a_slot_is_held_while_the_attempt_runs_and_wakes_the_next_waiter_when_given_back(runtime: Runtime) -> None:
    inside, go_on = threading.Event(), threading.Event()
    limit = Limit("render", concurrency=1)

    def slow(run_id: str) -> str:
        if run_id == "a":
            inside.set()
            assert go_on.wait(30)
        return run_id

    flow = calls_flow(limit, fn=slow)
    first = threading.Thread(target=runtime.start, args=(flow,), kwargs={"run_id": "a"})
    first.start()
    assert inside.wait(30)
    b = runtime.start(flow, run_id="b")
    assert b.status == "waiting" and b.pending[0].kind == "limit"
    assert runtime.limits().limits[0].in_flight == 1
    expected = b.pending[0].due_at
    go_on.set()
    first.join(30)
    woken = runtime.get("b").pending[0]
    assert woken.due_at is not None and expected is not None and woken.due_at < expected  # brought forward
    assert woken.due_at <= clock_of(runtime).now()
    assert [a.run_id for a in runtime.tick(concurrency=1).advanced] == ["b"]
    assert runtime.limits().limits[0].in_flight == 0


def test_a_whole_run_holds_one_slot_per_key_from_its_first_step_to_its_end(runtime: Runtime) -> None:
    sync = Limit("sync", concurrency=1)
    ran: list[str] = []

    class Sync(Workflow):
        def limit(self) -> Limit:
            return sync.key(self.state["customer"])

        @step
        def begin(self) -> Steps:
            ran.append(self.run_id)
            yield self.wait_event("done")

    a = runtime.start(Sync, input={"customer": "acme"}, run_id="a")
    b = runtime.start(Sync, input={"customer": "acme"}, run_id="b")
    c = runtime.start(Sync, input={"customer": "zeta"}, run_id="c")
    assert a.pending[0].kind == "event" and c.pending[0].kind == "event"
    assert b.status == "waiting" and b.step == "begin" and ran == ["a", "c"]  # none of b's code ran
    (pending,) = b.pending
    assert (pending.kind, pending.key, pending.request) == ("limit", "sync", {"limit": "sync", "key": "acme"})
    rows = {r.key: (r.in_flight, r.waiting) for r in runtime.limits().limits}
    assert rows == {"acme": (1, 1), "zeta": (1, 0)}
    runtime.resolve("a", "done", True)  # a ends: its slot goes to b
    assert runtime.tick(concurrency=1).advanced[0].run_id == "b"
    assert "b" in ran and runtime.get("b").pending[0].kind == "event"
    runtime.cancel("b")
    assert {r.key: (r.in_flight, r.waiting) for r in runtime.limits().limits} == {"acme": (0, 0), "zeta": (1, 0)}


def test_waiters_get_room_in_the_order_they_came_and_a_cancelled_or_paused_one_leaves_the_line(
        runtime: Runtime) -> None:
    class Job(Workflow):
        limit = Limit("one", concurrency=1)

        @step
        def begin(self) -> Steps:
            yield self.wait_event("done")

    for name in ("a", "b", "c", "d"):
        runtime.start(Job, run_id=name)
    clock_of(runtime).advance(120)  # every waiter's own due time passed: they look, and wait on
    first = runtime.tick(concurrency=1).advanced
    assert first == [] or all(r.status == "waiting" for r in runtime.tick(concurrency=1).advanced)
    runtime.pause("b")
    runtime.cancel("c")
    assert runtime.limits().limits[0].waiting == 1
    runtime.resolve("a", "done", True)
    runtime.tick(concurrency=1)
    assert runtime.get("d").pending[0].kind == "event"  # b left the line, c is gone: d is next
    runtime.resume("b")
    assert runtime.get("b").pending[0].kind == "limit"  # back at the end of the line


def test_a_retry_delay_holds_no_slot(runtime: Runtime) -> None:
    failing = {"left": 1}

    def flaky(run_id: str) -> str:
        if run_id == "flaky" and failing["left"]:
            failing["left"] -= 1
            raise RuntimeError("busy")
        return run_id

    flow = calls_flow(Limit("db", concurrency=1), fn=flaky, retry=Retry(attempts=2, delay=30))
    flaky_run = runtime.start(flow, run_id="flaky")
    assert flaky_run.pending[0].kind == "retry"
    assert runtime.limits().limits[0].in_flight == 0
    assert runtime.start(flow, run_id="other").status == "finished"
    clock_of(runtime).advance(31)
    assert runtime.tick(concurrency=1).advanced[0].status == "finished"


def test_parallel_parts_each_take_room_and_wait_for_it_on_their_own(runtime: Runtime) -> None:
    limit = Limit("fan", concurrency=1)
    done: list[str] = []

    class Fan(Workflow):
        @step
        def begin(self) -> Steps:
            yield self.parallel({k: self.action(k, done.append, k, limit=limit) for k in ("a", "b", "c")})

    run = runtime.start(Fan)
    assert done == ["a"]
    assert sorted((p.kind, p.key) for p in run.pending) == [("limit", "b"), ("limit", "c")]
    for _ in range(4):
        clock_of(runtime).advance(61)
        runtime.tick(concurrency=1)
    assert sorted(done) == ["a", "b", "c"] and runtime.get(run.run_id).status == "finished"


# -- overrides ------------------------------------------------------------------------------------------------------


def test_limit_set_overrides_the_code_for_every_process_until_reset(runtime: Runtime, store: Store) -> None:
    flow = calls_flow(Limit("api", rate="1/s"))
    runtime.start(flow, run_id="a")
    assert runtime.start(flow, run_id="b").status == "waiting"
    shown = runtime.set_limit("api", rate="10/s", concurrency=3).model_dump(mode="json")
    assert shown == {"limits": [{"name": "api", "key": None, "rate": "10/s", "concurrency": 3, "in_flight": 0,
                                 "waiting": 1}]}
    assert runtime.tick(concurrency=1).advanced[0].run_id == "b"  # woken at once: what applies changed
    other = Runtime(store, clock=runtime.clock)  # another process sees the same override
    assert other.limits().limits[0].rate == "10/s"
    runtime.set_limit("api", key="acme", concurrency=1)
    keyed = [r.model_dump(mode="json") for r in runtime.limits("api").limits]
    assert keyed[0]["key"] is None
    assert runtime.reset_limit("api").limits[0].rate == "1/s"
    for bad in ({"rate": "fast"}, {"concurrency": 0}, {}):
        with pytest.raises(BadInput):
            runtime.set_limit("api", **bad)  # type: ignore[arg-type]
    with pytest.raises(BadInput):
        runtime.set_limit("no such", rate="1/s")
    with pytest.raises(LimitNotFound):
        runtime.reset_limit("never-seen")


# -- breakers ---------------------------------------------------------------------------------------------------------


class Service:
    """A service that fails until told it is up; it counts its calls."""

    def __init__(self) -> None:
        self.up = False
        self.calls: list[str] = []

    def __call__(self, run_id: str) -> str:
        self.calls.append(run_id)
        if not self.up:
            raise ConnectionError("service down")
        return "ok"


def test_a_breaker_opens_after_its_failures_waits_then_lets_one_probe_through(runtime: Runtime) -> None:
    service = Service()
    flow = calls_flow(breaker=Breaker("svc", failures=2, within=60, reset=30), fn=service)
    assert runtime.start(flow, run_id="f1").status == "finished"  # failed (caught), counted
    assert runtime.breakers().breakers[0].state == "closed"
    assert runtime.start(flow, run_id="f2").status == "finished"
    assert "breaker_opened" in [e.type for e in runtime.get("f2").logs]
    waiting = [runtime.start(flow, run_id=f"w{i}") for i in range(3)]
    assert len(service.calls) == 2  # open: no call made
    opened = runtime.breakers().model_dump(mode="json")["breakers"][0]
    assert opened["state"] == "open" and opened["failures"] == 2
    for run in waiting:
        (pending,) = run.pending
        assert (pending.kind, pending.key, pending.request) == ("breaker", "call", None)
        assert pending.due_at is not None and pending.due_at.isoformat().startswith("2026-01-01T00:00:30")
    clock_of(runtime).advance(31)
    assert runtime.breakers().breakers[0].state == "half_open"
    runtime.tick(concurrency=1)
    assert len(service.calls) == 3  # one probe; it failed: open for another 30 s
    assert runtime.breakers().breakers[0].state == "open"
    service.up = True
    clock_of(runtime).advance(31)
    runtime.tick(concurrency=1)
    runtime.tick(concurrency=1)  # the others were woken when the probe closed it
    assert runtime.breakers().breakers[0].state == "closed"
    assert all(runtime.get(f"w{i}").status == "finished" for i in range(3))
    assert service.calls == ["f1", "f2", "w0", "w1", "w2"]  # w0's probe failed (caught); w1's closed it
    closing = [r for r in ("w0", "w1", "w2") if "breaker_closed" in [e.type for e in runtime.get(r).logs]]
    assert len(closing) == 1


def test_only_one_probe_goes_through_a_half_open_breaker_while_it_is_in_flight(runtime: Runtime) -> None:
    inside, go_on = threading.Event(), threading.Event()
    calls: list[str] = []

    def probe(run_id: str) -> str:
        calls.append(run_id)
        if len(calls) <= 1:
            raise ConnectionError("down")
        inside.set()
        assert go_on.wait(30)
        return "ok"

    flow = calls_flow(breaker=Breaker("svc", failures=1, reset=10), fn=probe)
    runtime.start(flow, run_id="opener")
    clock_of(runtime).advance(11)
    first = threading.Thread(target=runtime.start, args=(flow,), kwargs={"run_id": "probe"})
    first.start()
    assert inside.wait(30)
    second = runtime.start(flow, run_id="second")
    assert second.status == "waiting" and second.pending[0].kind == "breaker"
    go_on.set()
    first.join(30)
    assert runtime.tick(concurrency=1).advanced[0].run_id == "second"
    assert calls == ["opener", "probe", "second"]


def test_on_open_fail_fails_the_attempt_with_breaker_open_and_retries_it(runtime: Runtime) -> None:
    service = Service()
    flow = calls_flow(breaker=Breaker("svc", failures=1, reset=60, on_open="fail"), fn=service,
                      retry=Retry(attempts=2, delay=5))
    runtime.start(flow, run_id="opener")
    clock_of(runtime).advance(10)
    run = runtime.start(flow, run_id="refused")
    assert run.pending[0].kind == "retry"  # the refused attempt counted; retried per its Retry
    clock_of(runtime).advance(6)
    runtime.tick(concurrency=1)
    gave_up = [e.values for e in runtime.get("refused").logs if e.type == "gave_up"]
    assert gave_up == [{"error_type": "BreakerOpen", "attempts": 2}]
    assert service.calls == ["opener"]  # its failure opened it: nothing was called after


def test_breaker_reset_closes_it_by_hand_and_the_waiting_runs_go_on(runtime: Runtime) -> None:
    service = Service()
    flow = calls_flow(breaker=Breaker("svc", failures=1, reset=3600), fn=service)
    runtime.start(flow, run_id="opener")
    assert runtime.start(flow, run_id="waits").status == "waiting"
    service.up = True
    assert runtime.reset_breaker("svc").model_dump(mode="json")["breakers"] == [
        {"name": "svc", "state": "closed", "failures": 0, "half_open_at": None}]
    assert runtime.tick(concurrency=1).advanced[0].status == "finished"
    with pytest.raises(LimitNotFound, match="no breaker 'other'"):
        runtime.reset_breaker("other")
    assert BreakerOpen("svc", None).exit_code == 1


# -- the cells every store keeps ------------------------------------------------------------------------------------


def test_a_cell_changes_atomically_under_many_threads(store: Store) -> None:
    cells = cells_of(store)
    assert cells is not None

    def bump(cell: dict[str, Any]) -> None:
        cell["n"] = cell.get("n", 0) + 1
        cell.setdefault("name", "count")

    def work() -> None:
        for _ in range(25):
            cells.change_cell("limit", "count", "k", bump)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert cells.read_cell("limit", "count", "k") == {"n": 100, "name": "count"}
    assert cells.read_cell("limit", "count", None) is None
    assert [c["n"] for c in cells.all_cells("limit")] == [100]
    assert cells.delete_cell("limit", "count", "k") and not cells.delete_cell("limit", "count", "k")


def test_a_slot_of_a_run_that_ended_is_given_back_when_room_is_looked_for(runtime: Runtime, store: Store) -> None:
    flow = calls_flow(Limit("db", concurrency=1))
    runtime.start(flow, run_id="done")
    cells = cells_of(store)
    assert cells is not None
    gates = Gates(cells)
    now = clock_of(runtime).now()
    # a slot left behind (a process killed between giving it back and saving its result)
    assert gates.enter_limit(_spec(), gates.ticket("done", 1, "call"), now).go
    assert runtime.limits().limits[0].in_flight == 1
    assert runtime.start(flow, run_id="next").status == "finished"


def _spec() -> Any:
    from tinywf_cli.engine.gating import limit_spec

    return limit_spec(Limit("db", concurrency=1))


def test_a_slot_outlives_no_wait_the_run_is_not_held_while_it_waits(runtime: Runtime) -> None:
    class Job(Workflow):
        limit = Limit("one", concurrency=1)

        @step
        def begin(self) -> Steps:
            yield self.sleep("nap", timedelta(hours=1))

    runtime.start(Job, run_id="a")
    runtime.start(Job, run_id="b")
    # a waiting run holds no lock: another command takes it at once
    assert runtime.cancel("b").status == "cancelled"
    assert runtime.limits().limits[0].waiting == 0


def test_a_bucket_is_never_refilled_twice_for_one_span_when_processes_read_the_clock_out_of_order() -> None:
    from datetime import UTC, datetime

    from tinywf_cli.stores.limits import LimitSpec, Ticket, enter_limit

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    cell: dict[str, Any] = {}
    spec = LimitSpec("api", None, (1, 1.0), None)

    def ask(run: str, seconds: float) -> bool:
        return enter_limit(cell, spec, None, Ticket(f"{run}:1:call", run, 1), t0 + timedelta(seconds=seconds),
                           lambda holder: True).go

    assert ask("a", 1.0)  # the bucket's one token
    assert not ask("b", 0.5)  # read the clock before "a" did, got the lock after it
    assert not ask("b", 1.5)  # half a token since 1.0 (not a whole one since 0.5)
    assert ask("b", 2.0)
