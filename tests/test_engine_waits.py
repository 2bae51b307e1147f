"""Durable timers, events (resolve, validation, timeouts) and early events (``send``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from tinywf_cli import (
    EventTimeout,
    InvalidValue,
    NotAnEvent,
    ResumeNotFound,
    Runtime,
    Workflow,
    step,
)
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record_of(rt: MemoryRuntime, run_id: str) -> str:
    """Everything a memory runtime shows of a run (document and audit log), as JSON text."""
    return rt.get(run_id).model_dump_json()


def files_of(state_dir: Path) -> dict[str, bytes]:
    """Every file of a state directory with its bytes (locks aside)."""
    return {str(p.relative_to(state_dir)): p.read_bytes()
            for p in sorted(state_dir.rglob("*")) if p.is_file() and p.suffix != ".lock"} | {
        "index": "\n".join(sorted(p.name for p in (state_dir / ".due").iterdir())).encode()}


# -- timers ------------------------------------------------------------------------------------------


def test_sleep_gives_the_time_it_was_due_on_first_run_and_replay(rt: MemoryRuntime) -> None:
    received: list[datetime] = []

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            received.append((yield self.sleep("nap", timedelta(minutes=5))))
            yield self.wait_event("go")

    run = rt.start(Flow)
    assert run.status == "waiting"
    (timer,) = run.pending
    assert (timer.kind, timer.key, timer.due_at) == ("timer", "nap", T0 + timedelta(minutes=5))
    rt.clock.advance(timedelta(minutes=7))
    rt.tick()
    run = rt.resolve(run.run_id, "go", 1)
    assert run.status == "finished"
    assert received == [T0 + timedelta(minutes=5)] * 2  # the due time, not when the tick ran


def test_sleep_takes_seconds(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.sleep("nap", 90)

    run = rt.start(Flow)
    assert run.pending[0].due_at == T0 + timedelta(seconds=90)


def test_sleep_until_gives_the_given_datetime(rt: MemoryRuntime) -> None:
    received: list[datetime] = []
    wake = datetime(2026, 1, 2, 9, 0)  # naive: taken as UTC

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            received.append((yield self.sleep_until("morning", wake)))

    run = rt.start(Flow)
    assert run.pending[0].due_at == wake.replace(tzinfo=UTC)
    rt.clock.set(wake.replace(tzinfo=UTC))
    rt.tick()
    assert rt.get(run.run_id).status == "finished"
    assert received == [wake.replace(tzinfo=UTC)]


def test_a_timer_in_the_past_does_not_pause(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["at"] = (yield self.sleep_until("past", datetime(2020, 1, 1, tzinfo=UTC))).isoformat()

    assert rt.start(Flow).state == {"at": "2020-01-01T00:00:00+00:00"}


def test_a_timer_is_not_fired_before_it_is_due(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.sleep("nap", 60)

    run = rt.start(Flow)
    before = record_of(rt, run.run_id)
    rt.clock.advance(59)
    report = rt.tick()
    assert report.due == 0
    assert record_of(rt, run.run_id) == before
    rt.clock.advance(1)
    report = rt.tick()
    assert [(a.run_id, a.status) for a in report.advanced] == [(run.run_id, "finished")]


def test_a_timer_id_cannot_be_resolved(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.sleep("nap", 60)

    run = rt.start(Flow)
    with pytest.raises(NotAnEvent):
        rt.resolve(run.run_id, run.pending[0].resume_id, 1)


@pytest.mark.stores("file", "postgres")
def test_a_timer_survives_a_restart(open_runtime: Callable[[], Runtime], clock: Any) -> None:
    run = open_runtime().start(Napper, run_id="nap")
    assert run.status == "waiting"
    clock.advance(30)
    report = open_runtime().tick()
    assert [a.status for a in report.advanced] == ["finished"]
    assert open_runtime().get("nap").state == {"woke": "2026-01-01T00:00:30+00:00"}


class Napper(Workflow):
    @step
    def only(self) -> Steps:
        self.state["woke"] = (yield self.sleep("nap", 30)).isoformat()


# -- events -------------------------------------------------------------------------------------------


class Address(BaseModel):
    street: str
    zip: str = Field(pattern=r"^\d{5}$")


class Shipping(Workflow):
    @step
    def ask(self) -> Steps:
        self.state["asked"] = self.state.get("asked", 0) + 1
        address = yield self.wait_event("address", type=Address, question="Where to?", hint="5-digit zip")
        assert isinstance(address, Address)
        self.state["zip"] = address.zip


def test_wait_event_shows_its_request_and_validates_the_value(rt: MemoryRuntime) -> None:
    run = rt.start(Shipping)
    (event,) = run.pending
    assert (event.kind, event.key, event.due_at) == ("event", "address", None)
    assert event.request == {"question": "Where to?", "hint": "5-digit zip"}
    run = rt.resolve(run.run_id, "address", {"street": "Main St", "zip": "12345"})
    assert (run.status, run.state) == ("finished", {"asked": 1, "zip": "12345"})


def test_resolve_by_resume_id_and_unknown_resume(rt: MemoryRuntime) -> None:
    run = rt.start(Shipping)
    with pytest.raises(ResumeNotFound):
        rt.resolve(run.run_id, "nope", 1)
    run = rt.resolve(run.run_id, run.pending[0].resume_id, {"street": "x", "zip": "00001"})
    assert run.status == "finished"


@pytest.mark.parametrize("value", [{"street": "Main St", "zip": "12"}, "12345", None, {"zip": "12345"}])
def test_an_invalid_event_value_is_refused_and_the_run_is_unchanged(rt: MemoryRuntime, value: Any) -> None:
    run = rt.start(Shipping)
    before = record_of(rt, run.run_id)
    rt.clock.advance(5)
    with pytest.raises(InvalidValue, match="address") as caught:
        rt.resolve(run.run_id, "address", value)
    assert caught.value.exit_code == 2
    assert record_of(rt, run.run_id) == before
    run = rt.resolve(run.run_id, "address", {"street": "Main St", "zip": "12345"})
    assert run.state == {"asked": 1, "zip": "12345"}


@pytest.mark.stores("file")  # compares the state directory's files
def test_an_invalid_event_value_leaves_the_files_byte_for_byte_unchanged(
    open_runtime: Callable[[], Runtime], state_dir: Path
) -> None:
    open_runtime().start(Shipping, run_id="ship")
    before = files_of(state_dir)
    with pytest.raises(InvalidValue):
        open_runtime().resolve("ship", "address", {"street": "Main St", "zip": "oops"})
    with pytest.raises(InvalidValue):
        open_runtime().send("ship", "address", {"street": "Main St", "zip": "oops"})
    assert files_of(state_dir) == before
    run = open_runtime().resolve("ship", "address", {"street": "Main St", "zip": "12345"})
    assert run.status == "finished"


def test_an_invalid_value_after_other_records_writes_nothing(rt: MemoryRuntime) -> None:
    calls: list[int] = []

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.action("a", calls.append, 1)
            yield self.sleep("nap", 1)
            self.state["n"] = yield self.wait_event("n", type=int)

    run = rt.start(Flow)
    rt.clock.advance(1)
    rt.tick()
    before = record_of(rt, run.run_id)
    with pytest.raises(InvalidValue):
        rt.resolve(run.run_id, "n", "seven")
    assert record_of(rt, run.run_id) == before
    assert rt.resolve(run.run_id, "n", "7").state == {"n": 7}  # pydantic's lax mode
    assert calls == [1]


# -- timeouts ------------------------------------------------------------------------------------------


class Approval(Workflow):
    @step
    def approve(self) -> Steps:
        self.state["passes"] = self.state.get("passes", 0)
        try:
            ok = yield self.wait_event("approval", type=bool, timeout=timedelta(days=2))
        except EventTimeout as exc:
            self.state["timed_out_key"] = exc.key
            ok = False
        self.state["approved"] = ok
        note = yield self.wait_event("note", type=str)
        self.state["note"] = note


def test_an_event_with_a_timeout_shows_its_deadline(rt: MemoryRuntime) -> None:
    run = rt.start(Approval)
    (event,) = run.pending
    assert event.kind == "event"
    assert event.due_at == T0 + timedelta(days=2)


def test_timeout_raises_event_timeout_at_the_yield(rt: MemoryRuntime) -> None:
    run = rt.start(Approval)
    rt.clock.advance(timedelta(days=2) - timedelta(seconds=1))
    assert rt.tick().due == 0
    rt.clock.advance(timedelta(seconds=1))
    rt.tick()
    run = rt.get(run.run_id)
    assert run.status == "waiting"
    assert run.state == {"passes": 0, "timed_out_key": "approval", "approved": False}
    assert [p.key for p in run.pending] == ["note"]
    # the timeout is recorded: replay raises it again at the same yield
    run = rt.resolve(run.run_id, "note", "late")
    assert run.state == {"passes": 0, "timed_out_key": "approval", "approved": False, "note": "late"}
    ends = [e.values for e in rt.get(run.run_id).logs if e.type == "wait_end" and e.values["key"] == "approval"]
    assert ends == [{"kind": "event", "key": "approval", "resume_id": ends[0]["resume_id"], "timed_out": True}]


def test_a_value_after_the_deadline_but_before_a_tick_still_wins(rt: MemoryRuntime) -> None:
    run = rt.start(Approval)
    rt.clock.advance(timedelta(days=3))
    run = rt.resolve(run.run_id, "approval", True)
    assert run.state == {"passes": 0, "approved": True}
    assert [p.key for p in run.pending] == ["note"]


def test_a_timed_out_event_cannot_be_resolved_any_more(rt: MemoryRuntime) -> None:
    run = rt.start(Approval)
    rt.clock.advance(timedelta(days=3))
    rt.tick()
    with pytest.raises(ResumeNotFound):
        rt.resolve(run.run_id, "approval", True)


def test_an_uncaught_timeout_fails_the_run(rt: MemoryRuntime) -> None:
    class Strict(Workflow):
        @step
        def only(self) -> Steps:
            yield self.wait_event("answer", timeout=60)

    run = rt.start(Strict)
    rt.clock.advance(60)
    rt.tick()
    run = rt.get(run.run_id)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "EventTimeout"
    assert "answer" in run.error.message


# -- send: early events ----------------------------------------------------------------------------------


class Collector(Workflow):
    """Waits for a gate, then takes three ``item`` events, one per visit."""

    @step
    def gate(self) -> Steps:
        yield self.wait_event("gate")
        self.state["items"] = []
        return self.take

    @step
    def take(self) -> Steps:
        item = yield self.wait_event("item", type=int)
        self.state["items"].append(item)
        return self.take if len(self.state["items"]) < 3 else None


def test_send_resolves_a_pending_wait(rt: MemoryRuntime) -> None:
    run = rt.start(Collector)
    run = rt.send(run.run_id, "gate", "open")
    assert run.step == "take"
    assert [p.key for p in run.pending] == ["item"]


def test_early_events_queue_per_key_first_in_first_out(rt: MemoryRuntime) -> None:
    run = rt.start(Collector)
    for value in (1, 2):
        run = rt.send(run.run_id, "item", value)
        assert run.status == "waiting"
        assert run.step == "gate"
    run = rt.send(run.run_id, "gate", "open")
    assert run.status == "waiting"
    assert run.state == {"items": [1, 2]}  # one queued value consumed per wait
    run = rt.send(run.run_id, "item", 3)
    assert run.status == "finished"
    assert run.state == {"items": [1, 2, 3]}
    logs = [e for e in rt.get(run.run_id).logs if e.type in ("event_queued", "wait_end")]
    assert [e.values.get("queued") for e in logs if e.type == "wait_end"] == [None, True, True, None]


def test_an_invalid_queued_value_is_dropped_logged_and_the_wait_stays_pending(rt: MemoryRuntime) -> None:
    run = rt.start(Collector)
    rt.send(run.run_id, "item", "not a number")
    run = rt.send(run.run_id, "gate", "open")
    assert run.status == "waiting"
    assert [p.key for p in run.pending] == ["item"]
    rejected = [e.values for e in rt.get(run.run_id).logs if e.type == "event_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["key"] == "item"
    assert rejected[0]["value"] == "not a number"
    run = rt.send(run.run_id, "item", 1)
    assert run.state == {"items": [1]}


def test_an_invalid_queued_value_is_skipped_for_the_next_valid_one(rt: MemoryRuntime) -> None:
    run = rt.start(Collector)
    for value in ("bad", 5):
        rt.send(run.run_id, "item", value)
    run = rt.send(run.run_id, "gate", "open")
    assert run.state == {"items": [5]}
    assert [e.type for e in rt.get(run.run_id).logs].count("event_rejected") == 1


@pytest.mark.stores("file", "postgres")
def test_queued_events_survive_a_restart(open_runtime: Callable[[], Runtime]) -> None:
    open_runtime().start(Collector, run_id="c")
    open_runtime().send("c", "item", 10)
    open_runtime().send("c", "item", 20)
    run = open_runtime().send("c", "gate", "open")
    assert run.state == {"items": [10, 20]}


def test_send_of_an_invalid_value_to_a_pending_wait_is_refused(rt: MemoryRuntime) -> None:
    run = rt.start(Collector)
    rt.send(run.run_id, "gate", "open")
    before = record_of(rt, run.run_id)
    with pytest.raises(InvalidValue):
        rt.send(run.run_id, "item", [1])
    assert record_of(rt, run.run_id) == before


def test_send_of_a_value_that_is_not_json_is_refused(rt: MemoryRuntime) -> None:
    run = rt.start(Collector)
    with pytest.raises(InvalidValue):
        rt.send(run.run_id, "later", object())


# -- nothing stays due once a wait has ended ------------------------------------------------------------------


@pytest.mark.parametrize("end", ["resolved", "timed out", "cancelled"])
def test_a_wait_that_ended_leaves_nothing_due(rt: MemoryRuntime, end: str) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            with contextlib.suppress(EventTimeout):
                yield self.wait_event("answer", timeout=60)
            yield self.wait_event("forever")

    run = rt.start(Flow)
    assert rt.next_due() == T0 + timedelta(seconds=60)
    if end == "resolved":
        rt.resolve(run.run_id, "answer", 1)
    elif end == "timed out":
        rt.clock.advance(60)
        rt.tick()
    else:
        rt.cancel(run.run_id)
    assert rt.next_due() is None
    rt.clock.advance(timedelta(days=1))
    assert rt.tick().due == 0
