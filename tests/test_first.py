"""``name, value = yield self.first(**waits)`` (contract section 11): whichever of several events,
timers and child runs comes first wins, the others are withdrawn (nothing of them stays
pending, a later event for one queues), the winner is recorded (a replay after kill -9 gets
the same one), and ``check`` sees a changed set of branches as a replay mismatch."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clihelpers import Cli, InProcessCli, at

from tinywf_cli import ChildFailed, EventTimeout, InvalidValue, Runtime, Workflow, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Parcel(Workflow):
    """Waits for the parcel to arrive, or a report that it is lost, for at most a day."""

    @step
    def ship(self) -> Steps:
        self.state["carrier"] = yield self.start_child("carrier", Carrier)
        name, value = yield self.first(delivered=self.wait_event("delivered", type=str),
                                       lost=self.wait_event("lost", type=int),
                                       late=self.sleep("late", timedelta(days=1)),
                                       courier=self.child("courier", Carrier))
        self.state["winner"] = [name, value.isoformat() if isinstance(value, datetime) else value]
        self.state["next"] = yield self.wait_event("lost", type=int)  # the same key again: its next value
        return None


class Carrier(Workflow):
    """A child that ends when told."""

    @step
    def drive(self) -> Steps:
        self.state["at"] = yield self.wait_event("arrive", type=str)
        return None


def pending_of(run: Any) -> list[tuple[str, str, str]]:
    return [(p.resume_id, p.kind, p.key) for p in run.pending]


def test_every_branch_is_pending_until_one_wins_and_the_others_are_withdrawn(rt: MemoryRuntime) -> None:
    run = rt.start(Parcel, run_id="p")
    assert run.status == "waiting"
    assert pending_of(run) == [("delivered@1", "event", "delivered"), ("lost@1", "event", "lost"),
                               ("late@1", "timer", "late"), ("courier@1", "child", "courier")]
    assert run.pending[2].due_at == T0 + timedelta(days=1)
    assert run.expects == {"delivered@1": "string", "lost@1": "integer"}
    with pytest.raises(InvalidValue):  # a value its branch refuses: nothing changes
        rt.resolve("p", "lost", "not a number")
    run = rt.resolve("p", "delivered", "porch")
    assert run.state["winner"] == ["delivered", "porch"]
    assert pending_of(run) == [("lost@1.2", "event", "lost")]  # only the wait after the first
    ends = [e.values for e in rt.get("p").logs if e.type == "wait_end"]
    assert ends == [{"kind": "event", "key": "delivered", "resume_id": "delivered@1", "value": "porch",
                     "via": "runtime", "branch": "delivered", "withdrawn": ["lost", "late", "courier"]}]
    assert rt.get("p.courier").status == "waiting"  # a withdrawn child keeps running
    assert rt.resolve("p", "lost", 7).state["next"] == 7


def test_the_other_event_wins_by_send(rt: MemoryRuntime) -> None:
    rt.start(Parcel, run_id="p")
    run = rt.send("p", "lost", 3)
    assert run.state["winner"] == ["lost", 3] and pending_of(run) == [("lost@1.2", "event", "lost")]


def test_the_timer_wins_when_it_comes_due_first(rt: MemoryRuntime) -> None:
    rt.start(Parcel, run_id="p")
    rt.clock.advance(timedelta(hours=23))
    assert rt.tick().due == 0
    rt.clock.advance(timedelta(hours=2))
    assert [a.run_id for a in rt.tick().advanced] == ["p"]
    assert rt.get("p").state["winner"] == ["late", "2026-01-02T00:00:00+00:00"]


def test_the_child_wins_when_it_ends_first(rt: MemoryRuntime) -> None:
    rt.start(Parcel, run_id="p")
    rt.resolve("p.courier", "arrive", "depot")  # the child ends and wakes its parent
    run = rt.get("p")
    assert run.state["winner"] == ["courier", {"at": "depot"}]
    assert pending_of(run) == [("lost@1.2", "event", "lost")]


def test_a_value_queued_before_the_first_wins_and_a_late_one_for_a_loser_queues(rt: MemoryRuntime) -> None:
    class Queued(Workflow):
        @step
        def only(self) -> Steps:
            yield self.sleep("settle", 60)
            self.state["won"] = yield self.first(yes=self.wait_event("yes"), no=self.wait_event("no"))
            yield self.sleep("pause", 60)
            self.state["no"] = yield self.wait_event("no")
            return None

    rt.start(Queued, run_id="q")
    rt.send("q", "no", "early")
    rt.clock.advance(61)
    rt.tick()
    assert rt.get("q").state["won"] == ["no", "early"]
    rt.send("q", "yes", "too late")  # nothing waits on yes any more: it queues
    run = rt.send("q", "no", "later")
    assert run.status == "waiting" and run.queued == ("no", 1)
    rt.clock.advance(61)
    rt.tick()
    assert rt.get("q").state == {"won": ["no", "early"], "no": "later"}


def test_a_timed_out_event_or_a_failed_child_raises_at_the_yield(rt: MemoryRuntime) -> None:
    class Raises(Workflow):
        @step
        def only(self) -> Steps:
            try:
                yield self.first(answer=self.wait_event("answer", timeout=60), kid=self.child("kid", Carrier))
            except EventTimeout as exc:
                self.state["timed_out"] = exc.key
            try:
                yield self.first(kid=self.child("kid2", Carrier), never=self.wait_event("never"))
            except ChildFailed as exc:
                self.state["child"] = exc.status
            return None

    rt.start(Raises, run_id="x")
    rt.clock.advance(61)
    rt.tick()
    assert rt.get("x").state == {"timed_out": "answer"}
    rt.cancel("x.kid2")
    assert rt.get("x").state == {"timed_out": "answer", "child": "cancelled"}
    assert rt.get("x").status == "finished"


def test_first_refuses_what_it_cannot_race() -> None:
    class Flow(Workflow):
        @step
        def only(self) -> None:
            pass

    wf = Flow.__new__(Flow)
    with pytest.raises(TypeError, match="takes the waits to race"):
        wf.first()
    with pytest.raises(TypeError, match=r"must be a self\.wait_event"):
        wf.first(a=wf.action("a", print))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys must differ"):
        wf.first(a=wf.wait_event("k"), b=wf.sleep("k", 1))


# -- through the command, on disk ---------------------------------------------------------------------


RACE = '''
"""An order approved, or cancelled, or given up after a day."""

import os
import signal
from datetime import timedelta
from pathlib import Path

from tinywf_cli import Workflow, step


def note(won: str) -> str:
    marker = Path("died-once")
    if os.environ.get("DIE_AFTER_WINNER") and not marker.exists():
        marker.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)  # right after the winner was recorded
    return won


class Race(Workflow):
    """Approval against cancellation against a deadline."""

    @step
    def decide(self):
        name, value = yield self.first(approved=self.wait_event("approval", type=bool, question="Approve?"),
                                       cancelled=self.wait_event("cancel", type=str, question="Why cancel?"),
                                       expired=self.sleep("deadline", timedelta(days=1)))
        self.state["outcome"] = yield self.action("note", note, name)
        self.state["value"] = value if name != "expired" else None
        return None
'''


@pytest.fixture
def race(cli: Cli) -> Cli:
    (cli.workspace / "flows" / "race.py").write_text(RACE.lstrip(), encoding="utf-8")
    return cli


def test_show_and_resolve_through_the_command_each_branch_in_turn(race: Cli) -> None:
    fast = InProcessCli(race.workspace, race.state_dir)
    doc = fast.start("flows/race.py", "r1")
    assert [(p["resume_id"], p["kind"]) for p in doc["pending"]] == [
        ("approval@1", "event"), ("cancel@1", "event"), ("deadline@1", "timer")]
    shown = race("show", "r1")
    assert shown.returncode == 0, shown.stderr
    assert "whichever comes first of:" in shown.stdout
    for line in ("waits for event approval (approval@1): Approve?", "waits for event cancel (cancel@1): Why cancel?",
                 "waits for timer deadline (deadline@1)", "tinywf resolve", "r1 approval@1 <boolean>"):
        assert line in shown.stdout, shown.stdout
    assert race.json("resolve", "r1", "cancel", "customer asked")["state"] == {
        "outcome": "cancelled", "value": "customer asked"}
    fast.start("flows/race.py", "r2")
    assert fast.json("resolve", "r2", "approval@1", "true")["state"] == {"outcome": "approved", "value": True}
    fast.start("flows/race.py", "r3")
    tick = fast.json("tick", now=at(timedelta(days=1)))
    assert tick["advanced"] == [{"run_id": "r3", "status": "finished"}]
    assert fast.json("show", "r3")["state"] == {"outcome": "expired", "value": None}


def test_kill_9_right_after_the_winner_is_recorded_replays_the_same_winner(race: Cli) -> None:
    race.start("flows/race.py", "k1")
    died = race("resolve", "k1", "approval", "true", env={"DIE_AFTER_WINNER": "1"})
    assert died.returncode == -signal.SIGKILL, died
    doc = race.json("show", "k1")
    assert doc["status"] == "running" and doc["pending"] == []
    race.json("send", "k1", "cancel", "changed my mind")  # the loser's value: it queues, it does not win
    report = race.json("tick")
    assert report["advanced"] == [{"run_id": "k1", "status": "finished"}]
    doc = race.json("show", "k1")
    assert doc["state"] == {"outcome": "approved", "value": True}
    ends = [e["values"] for e in doc["logs"] if e["type"] == "wait_end"]
    assert [(e["branch"], e["value"]) for e in ends] == [("approved", True)]


def test_check_sees_a_changed_set_of_branches_as_a_replay_mismatch(race: Cli) -> None:
    race.start("flows/race.py", "c1")
    flow = race.workspace / "flows" / "race.py"
    flow.write_text(flow.read_text().replace(
        'expired=self.sleep("deadline", timedelta(days=1))',
        'expired=self.sleep("deadline", timedelta(days=1)), held=self.wait_event("hold")'))
    result = race("check", "--json")
    assert result.returncode == 1, result.stderr
    (only,) = json.loads(result.stdout)["runs"]
    assert only["run_id"] == "c1" and not only["ok"]
    assert "first of" in only["reason"] and "held (event 'hold')" in only["reason"]
    blocked = race.json("resolve", "c1", "approval", "true", code=1)
    assert blocked["status"] == "blocked" and blocked["error"]["type"] == "NonDeterminismError"


@pytest.mark.stores("file", "postgres")
def test_the_winner_is_recorded_in_every_store(open_runtime: Callable[[], Runtime]) -> None:
    open_runtime().start(Parcel, run_id="s")
    open_runtime().send("s", "lost", 5)
    assert open_runtime().get("s").state["winner"] == ["lost", 5]
    run = open_runtime().resolve("s", "lost", 6)
    assert run.status == "finished" and run.state["next"] == 6

