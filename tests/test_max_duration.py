"""``max_duration`` on the class (contract section 11): a run that has not ended that long after it
was created is cancelled by the next ``tick`` (reason ``max_duration``), its unfinished children
with it, whatever it waits for; a bad value is refused when the class is defined."""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import pytest
from clihelpers import Cli, InProcessCli, at

from tinywf_cli import FlowDefinitionError, Workflow, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]

DEADLINE = '''
"""A quote that must be accepted within a day: its helper child runs waits too."""

from datetime import timedelta

from tinywf_cli import Workflow, step


class Helper(Workflow):
    """Waits for a note, with no end of its own."""

    @step
    def wait(self):
        yield self.wait_event("note")
        return None


class Quote(Workflow):
    """Send a quote, wait for its acceptance; a day at most."""

    max_duration = timedelta(days=1)

    @step
    def offer(self):
        yield self.start_child("helper", Helper)
        self.state["accepted"] = yield self.wait_event("accept", type=bool)
        return None
'''


@pytest.fixture
def quote(cli: Cli) -> InProcessCli:
    (cli.workspace / "flows" / "quote.py").write_text(DEADLINE.lstrip(), encoding="utf-8")
    return InProcessCli(cli.workspace, cli.state_dir)


def test_a_run_waiting_past_its_deadline_is_cancelled_by_the_next_tick_with_its_children(
        cli: Cli, quote: InProcessCli) -> None:
    doc = quote.start("flows/quote.py:Quote", "q1")
    assert doc["status"] == "waiting" and [p["kind"] for p in doc["pending"]] == ["event"]
    assert cli.json("tick", now=at(timedelta(hours=23)))["due"] == 0
    report = cli.json("tick", now=at(timedelta(hours=24, seconds=1)))
    assert report["advanced"] == [{"run_id": "q1", "status": "cancelled"}]
    for run_id in ("q1", "q1.helper"):
        shown = quote.json("show", run_id)
        assert shown["status"] == "cancelled" and shown["pending"] == []
        assert [e["values"] for e in shown["logs"] if e["type"] == "cancel"] == [{"reason": "max_duration"}]
    assert cli.json("tick", now=at(timedelta(days=2)))["due"] == 0


def test_an_answer_after_the_deadline_finds_the_run_cancelled(quote: InProcessCli) -> None:
    quote.start("flows/quote.py:Quote", "q2")
    late = quote.json("resolve", "q2", "accept", "true", now=at(timedelta(days=1, minutes=1)))
    assert late["status"] == "cancelled" and late["state"] == {}
    assert quote("resolve", "q2", "accept", "true", now=at(timedelta(days=2))).returncode == 4


def test_the_deadline_comes_before_a_later_timer_or_retry(rt: MemoryRuntime) -> None:
    class Sleepy(Workflow):
        max_duration = 3600

        @step
        def nap(self) -> Steps:
            yield self.sleep("nap", timedelta(days=30))

    run = rt.start(Sleepy, run_id="s")
    assert run.pending[0].due_at is not None and rt.next_due() == rt.clock.now() + timedelta(hours=1)
    rt.clock.advance(3601)
    assert [(a.run_id, a.status) for a in rt.tick().advanced] == [("s", "cancelled")]


def test_a_run_that_ends_in_time_is_left_alone(rt: MemoryRuntime) -> None:
    class Quick(Workflow):
        max_duration = timedelta(hours=1)

        @step
        def ask(self) -> Steps:
            self.state["v"] = yield self.wait_event("v")

    rt.start(Quick, run_id="k")
    rt.clock.advance(60)
    assert rt.resolve("k", "v", 1).status == "finished"
    rt.clock.advance(timedelta(days=1))
    assert rt.tick().due == 0 and rt.get("k").status == "finished"


def test_a_deadline_added_to_the_code_applies_to_runs_started_before_it(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def ask(self) -> Steps:
            yield self.sleep("first", 60)
            yield self.wait_event("v")

    rt.start(Flow, run_id="f")
    Flow.max_duration = timedelta(minutes=30)  # a deploy: the next advance takes it
    rt.clock.advance(61)
    assert rt.tick().advanced[0].status == "waiting"
    rt.clock.advance(timedelta(minutes=30))
    assert [(a.run_id, a.status) for a in rt.tick().advanced] == [("f", "cancelled")]


@pytest.mark.parametrize("value", [0, -5, "1d", float("nan"), timedelta(seconds=-1)])
def test_a_bad_max_duration_is_refused_when_the_class_is_defined(value: Any) -> None:
    with pytest.raises(FlowDefinitionError, match="max_duration"):

        class Bad(Workflow):
            max_duration = value

            @step
            def only(self) -> None:
                pass
