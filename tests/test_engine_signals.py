"""``@signal`` methods, cancel, and the status rules every command that changes a run follows."""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from tinywf_cli import (
    FlowDefinitionError,
    InvalidValue,
    ResumeNotFound,
    Runtime,
    SignalNotFound,
    StatusConflict,
    Workflow,
    signal,
    step,
)
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]


class Order(BaseModel):
    email: str = "a@b.c"
    quantity: int = 1
    notes: list[str] = []


class Shop(Workflow[Order]):
    @step
    def wait(self) -> Steps:
        yield self.sleep("cool_down", timedelta(hours=1))
        ok = yield self.wait_event("approve", type=bool)
        return "ship" if ok else "broken"

    @step
    def ship(self) -> None:
        self.state.notes.append(f"shipped {self.state.quantity} to {self.state.email}")

    @step
    def broken(self) -> None:
        raise RuntimeError("refused")

    @signal
    def set_email(self, email: str) -> None:
        self.state.email = email

    @signal
    def add(self, quantity: int, note: str = "") -> None:
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        self.state.quantity += quantity
        self.log("added", quantity=quantity)
        if note:
            self.state.notes.append(note)


def test_a_signal_changes_the_state_and_is_logged(rt: MemoryRuntime) -> None:
    run = rt.start(Shop)
    run = rt.signal(run.run_id, "add", quantity=2, note="gift wrap")
    assert run.state == {"email": "a@b.c", "quantity": 3, "notes": ["gift wrap"]}
    logs = [(e.type, e.values) for e in rt.get(run.run_id).logs if e.type in ("signal", "added")]
    assert logs == [("signal", {"name": "add", "args": {"quantity": 2, "note": "gift wrap"}}),
                    ("added", {"quantity": 2})]


def test_a_signal_does_not_advance_the_run(rt: MemoryRuntime) -> None:
    run = rt.start(Shop)
    before = run
    rt.clock.advance(timedelta(hours=2))  # the timer is due, but a signal is no tick
    run = rt.signal(run.run_id, "set_email", email="x@y.z")
    assert (run.status, run.step, run.pending) == (before.status, before.step, before.pending)
    rt.tick()
    rt.resolve(run.run_id, "approve", True)
    assert rt.get(run.run_id).state["notes"] == ["shipped 1 to x@y.z"]


@pytest.mark.parametrize(
    "args",
    [{"quantity": "lots"}, {}, {"quantity": 1, "colour": "red"}, {"quantity": 0}],
)
def test_bad_signal_arguments_are_refused_with_nothing_changed(rt: MemoryRuntime, args: dict[str, Any]) -> None:
    run = rt.start(Shop)
    before = rt.get(run.run_id).model_dump_json()
    with pytest.raises(InvalidValue, match="signal 'add'") as caught:
        rt.signal(run.run_id, "add", **args)
    assert caught.value.exit_code == 2
    assert rt.get(run.run_id).model_dump_json() == before


def test_signal_arguments_are_coerced_from_annotations(rt: MemoryRuntime) -> None:
    run = rt.start(Shop)
    assert rt.signal(run.run_id, "add", quantity="4").state["quantity"] == 5


def test_an_unknown_signal_is_not_found(rt: MemoryRuntime) -> None:
    run = rt.start(Shop)
    with pytest.raises(SignalNotFound, match="set_email") as caught:
        rt.signal(run.run_id, "refund")
    assert caught.value.exit_code == 3
    with pytest.raises(SignalNotFound):
        rt.signal(run.run_id, "ship")  # a step is not a signal


def test_a_signal_works_on_a_failed_run(rt: MemoryRuntime) -> None:
    run = rt.start(Shop)
    rt.clock.advance(timedelta(hours=1))
    rt.tick()
    run = rt.resolve(run.run_id, "approve", False)
    assert run.status == "failed"
    run = rt.signal(run.run_id, "set_email", email="fixed@b.c")
    assert (run.status, run.state["email"]) == ("failed", "fixed@b.c")


@pytest.mark.stores("file", "postgres")
def test_a_signal_is_saved_to_the_file_store(open_runtime: Callable[[], Runtime]) -> None:
    open_runtime().start(Shop, run_id="s")
    open_runtime().signal("s", "add", quantity=1)
    assert open_runtime().get("s").state["quantity"] == 2


def test_a_signal_must_be_a_plain_method() -> None:
    with pytest.raises(FlowDefinitionError):

        class Bad(Workflow):
            @step
            def only(self) -> None:
                pass

            @signal
            def poke(self) -> Steps:
                yield self.sleep("x", 1)


# -- cancel ------------------------------------------------------------------------------------------------


def test_cancel_ends_a_run_with_nothing_pending(rt: MemoryRuntime) -> None:
    run = rt.start(Shop)
    run = rt.cancel(run.run_id, reason="customer changed their mind")
    assert (run.status, run.pending) == ("cancelled", [])
    rt.clock.advance(timedelta(days=1))
    assert rt.tick().due == 0
    assert rt.get(run.run_id).status == "cancelled"
    cancel = [e.values for e in rt.get(run.run_id).logs if e.type == "cancel"]
    assert cancel == [{"reason": "customer changed their mind"}]


def test_cancel_works_on_a_failed_run(rt: MemoryRuntime) -> None:
    class Broken(Workflow):
        @step
        def only(self) -> None:
            raise RuntimeError("x")

    run = rt.start(Broken)
    assert rt.cancel(run.run_id).status == "cancelled"


# -- status rules -----------------------------------------------------------------------------------------


def ended(rt: MemoryRuntime, how: str) -> str:
    run = rt.start(Shop)
    if how == "cancelled":
        rt.cancel(run.run_id)
    else:
        rt.clock.advance(timedelta(hours=1))
        rt.tick()
        rt.resolve(run.run_id, "approve", True)
    assert rt.get(run.run_id).status == how
    return run.run_id


CHANGES: dict[str, Callable[[MemoryRuntime, str], Any]] = {
    "resolve": lambda rt, r: rt.resolve(r, "approve", True),
    "resolve unknown resume": lambda rt, r: rt.resolve(r, "no-such-resume", True),
    "send": lambda rt, r: rt.send(r, "approve", True),
    "send unknown key": lambda rt, r: rt.send(r, "anything", 1),
    "signal": lambda rt, r: rt.signal(r, "set_email", email="x@y.z"),
    "signal unknown name": lambda rt, r: rt.signal(r, "no_such_signal"),
    "signal bad args": lambda rt, r: rt.signal(r, "add", quantity="lots"),
    "cancel": lambda rt, r: rt.cancel(r),
    "retry": lambda rt, r: rt.retry(r),
}


@pytest.mark.parametrize("how", ["finished", "cancelled"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_ended_runs_refuse_changes_before_the_resume_or_signal_is_looked_up(
    rt: MemoryRuntime, how: str, change: str
) -> None:
    run_id = ended(rt, how)
    before = rt.get(run_id).model_dump_json()
    with pytest.raises(StatusConflict, match=how) as caught:
        CHANGES[change](rt, run_id)
    assert caught.value.exit_code == 4
    assert rt.get(run_id).model_dump_json() == before


def test_retry_refuses_a_run_that_did_not_fail(rt: MemoryRuntime) -> None:
    run = rt.start(Shop)
    with pytest.raises(StatusConflict):
        rt.retry(run.run_id)


def test_resolve_on_a_failed_run_finds_nothing_pending(rt: MemoryRuntime) -> None:
    class Broken(Workflow):
        @step
        def only(self) -> None:
            raise RuntimeError("x")

    run = rt.start(Broken)
    with pytest.raises(ResumeNotFound):
        rt.resolve(run.run_id, "anything", 1)


def test_send_to_a_failed_run_queues_the_event(rt: MemoryRuntime) -> None:
    calls: list[int] = []

    class Flaky(Workflow):
        @step
        def only(self) -> Steps:
            yield self.action("fail_once", lambda: calls.append(1) or (len(calls) > 1 or 1 / 0))
            self.state["got"] = yield self.wait_event("later")

    run = rt.start(Flaky)
    assert run.status == "failed"
    assert rt.send(run.run_id, "later", "early").status == "failed"
    run = rt.retry(run.run_id)
    assert (run.status, run.state) == ("finished", {"got": "early"})


# -- what replay keeps of a signal -----------------------------------------------------------------------


def test_a_signal_is_replayed_where_it_happened_and_keeps_references(rt: MemoryRuntime) -> None:
    class Basket(Workflow):
        @step
        def only(self) -> Steps:
            items = self.state.setdefault("items", [])
            items.append("before the wait")
            yield self.wait_event("go")
            items.append("after the wait")  # the list the signal appended to, not a stale copy

        @signal
        def add(self, item: str) -> None:
            self.state["items"].append(item)

    run = rt.start(Basket)
    assert rt.signal(run.run_id, "add", item="signalled").state["items"] == ["before the wait", "signalled"]
    run = rt.resolve(run.run_id, "go", 1)
    assert run.state["items"] == ["before the wait", "signalled", "after the wait"]


def test_a_signal_that_changes_what_the_step_tested_before_its_wait_replays_cleanly(rt: MemoryRuntime) -> None:
    class Subscription(Workflow):
        @step
        def billing(self) -> Steps:
            self.state.setdefault("cycles", 0)
            while self.state.get("active", True):
                yield self.sleep(f"cycle_{self.state['cycles']}", 60)
                self.state["cycles"] += 1
            return None

        @signal
        def stop(self) -> None:
            self.state["active"] = False

    run = rt.start(Subscription)
    rt.signal(run.run_id, "stop")
    rt.clock.advance(60)
    rt.tick()
    done = rt.get(run.run_id)
    assert (done.status, done.state) == ("finished", {"cycles": 1, "active": False})


def test_a_signal_computed_from_state_the_visit_changed_keeps_the_shown_value(rt: MemoryRuntime) -> None:
    class Totals(Workflow):
        @step
        def only(self) -> Steps:
            self.state["base"] = 10
            yield self.wait_event("go")

        @signal
        def bump(self) -> None:
            self.state["total"] = self.state.get("base", 0) + 1

    run = rt.start(Totals)
    assert rt.signal(run.run_id, "bump").state == {"base": 10, "total": 11}
    assert rt.resolve(run.run_id, "go", 1).state == {"base": 10, "total": 11}


def test_a_signal_on_a_field_the_visit_changed_is_applied_once_after_replay(rt: MemoryRuntime) -> None:
    class Lists(Workflow):
        @step
        def only(self) -> Steps:
            self.state.setdefault("items", []).append("from step")
            yield self.wait_event("go")

        @signal
        def add(self, item: str) -> None:
            self.state.setdefault("items", []).append(item)

    run = rt.start(Lists)
    rt.signal(run.run_id, "add", item="from signal")
    run = rt.resolve(run.run_id, "go", 1)
    assert run.state["items"] == ["from step", "from signal"]
