"""``tinywf_cli.testing``: how a user tests their own flow in pytest, in memory, moving the clock by hand."""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from tinywf_cli import EventTimeout, Retry, Workflow, signal, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import ManualClock, MemoryRuntime, MemoryStore

SENT: list[str] = []


def charge_card(email: str) -> str:
    return f"receipt-for-{email}"


def send_mail(to: str, text: str) -> None:
    SENT.append(f"{to}: {text}")


class Order(BaseModel):
    email: str
    approved: bool | None = None
    receipt: str | None = None


class Checkout(Workflow[Order]):
    """Charge, wait for approval, ship."""

    @step(start=True)
    def charge(self) -> Generator[Command, Any, Any]:
        self.state.receipt = yield self.action("charge", charge_card, self.state.email,
                                               retry=Retry(attempts=5, delay=1, backoff=2))
        return self.approve

    @step
    def approve(self) -> Generator[Command, Any, Any]:
        try:
            ok = yield self.wait_event("approval", type=bool, timeout=timedelta(days=2),
                                       question="Ship the order?")
        except EventTimeout:
            ok = False
        self.state.approved = ok
        return "ship" if ok else None

    @step
    def ship(self) -> Generator[Command, Any, Any]:
        yield self.sleep("cool_down", timedelta(minutes=5))
        yield self.action("mail", send_mail, self.state.email, "shipped")
        return None

    @signal
    def set_email(self, email: str) -> None:
        self.state.email = email


# -- what a user's own tests look like ------------------------------------------------------------------


def test_checkout_times_out_without_approval() -> None:
    rt = MemoryRuntime()
    run = rt.start(Checkout, input={"email": "a@b.c"})
    assert run.status == "waiting"
    assert run.state["receipt"] == "receipt-for-a@b.c"
    rt.clock.advance(timedelta(days=2))
    rt.tick()
    run = rt.get(run.run_id)
    assert (run.status, run.state["approved"]) == ("finished", False)


def test_checkout_ships_after_approval_and_cool_down() -> None:
    SENT.clear()
    rt = MemoryRuntime("2026-06-01T09:00:00Z")
    run = rt.start(Checkout, input={"email": "a@b.c"}, run_id="order-1")
    run = rt.signal("order-1", "set_email", email="new@b.c")
    run = rt.resolve("order-1", "approval", True)
    assert run.step == "ship"
    assert run.pending[0].due_at == datetime(2026, 6, 1, 9, 5, tzinfo=UTC)
    assert SENT == []
    rt.clock.advance(timedelta(minutes=5))
    report = rt.tick()
    assert [(a.run_id, a.status) for a in report.advanced] == [("order-1", "finished")]
    assert SENT == ["new@b.c: shipped"]


def test_events_can_be_sent_before_the_run_waits_for_them() -> None:
    rt = MemoryRuntime()

    class Slow(Workflow):
        @step
        def first(self) -> Generator[Command, Any, Any]:
            yield self.sleep("warm_up", 60)
            return "second"

        @step
        def second(self) -> Generator[Command, Any, Any]:
            self.state["answer"] = yield self.wait_event("answer", type=int)

    run = rt.start(Slow)
    rt.send(run.run_id, "answer", 42)
    rt.clock.advance(60)
    rt.tick()
    assert rt.get(run.run_id).state == {"answer": 42}


# -- the module itself -------------------------------------------------------------------------------------


def test_memory_runtime_has_a_manual_clock_and_a_memory_store() -> None:
    rt = MemoryRuntime()
    assert isinstance(rt.clock, ManualClock)
    assert isinstance(rt.store, MemoryStore)
    assert rt.clock.now() == datetime(2026, 1, 1, tzinfo=UTC)
    assert MemoryRuntime(datetime(2030, 5, 1, 12)).clock.now() == datetime(2030, 5, 1, 12, tzinfo=UTC)


def test_memory_runtimes_do_not_share_runs() -> None:
    class Tiny(Workflow):
        @step
        def only(self) -> None:
            pass

    one, two = MemoryRuntime(), MemoryRuntime()
    one.start(Tiny, run_id="same")
    two.start(Tiny, run_id="same")
    assert [r.run_id for r in one.list().runs] == ["same"]


def test_the_manual_clock_only_moves_when_told() -> None:
    clock = ManualClock("2026-01-01T00:00:00Z")
    assert clock.now() == clock.now()
    assert clock.advance(90) == datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC)
    clock.sleep(30)
    assert clock.now() == datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
    clock.set("2026-02-01T00:00:00+01:00")
    assert clock.now() == datetime(2026, 1, 31, 23, tzinfo=UTC)


# -- isolation: what a MemoryRuntime hands out never aliases what it keeps ----------------------------------

BASKETS: list[list[str]] = []


def fetch_items() -> list[str]:
    return ["apple", "pear"]


class Picking(Workflow[dict[str, Any]]):
    """Takes an action's list, changes it in the step, then waits; records what the action gave."""

    @step
    def pick(self) -> Generator[Command, Any, Any]:
        items = yield self.action("fetch", fetch_items)
        BASKETS.append(list(items))
        items.append("changed by the step")
        self.state["items"] = items
        self.log("picked", items=items)
        yield self.wait_event("go")
        return None


def test_changing_what_a_memory_runtime_returned_changes_nothing_it_keeps() -> None:
    BASKETS.clear()
    rt = MemoryRuntime()
    input_ = {"items": ["from input"]}
    run = rt.start(Picking, input=input_)
    input_["items"].append("changed by the caller")
    run.state["items"].append("changed in the document")
    picked = next(e for e in rt.get(run.run_id).logs if e.type == "picked")
    picked.values["items"].append("changed in the history")
    kept = rt.get(run.run_id)
    assert kept.state == {"items": ["apple", "pear", "changed by the step"]}
    assert [e.values for e in rt.get(run.run_id).logs if e.type == "picked"] == [
        {"items": ["apple", "pear", "changed by the step"]}]
    # the replay is given the action's result as recorded, not as the step changed it
    assert rt.send(run.run_id, "go", True).status == "finished"
    assert BASKETS == [["apple", "pear"], ["apple", "pear"]]
    assert rt.get(run.run_id).state == {"items": ["apple", "pear", "changed by the step"]}

