"""Child runs, event channels, typed answers, idempotent starts and long timelines, through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clihelpers import Cli, InProcessCli, assert_error, assert_run_document, at, describe

FLOWS = {
    "family.py": '''
"""A parent with three children: one started and left alone, one with a timer, one that fails."""

from tinywf_cli import ChildFailed, Workflow, step


def fetch(name):
    return name.upper()


def explode():
    raise RuntimeError("the child broke")


class Quick(Workflow):
    @step
    def only(self):
        self.state["got"] = yield self.action("fetch", fetch, "quick")


class Napper(Workflow):
    @step
    def nap(self):
        yield self.sleep("nap", 3600)
        self.state["got"] = yield self.action("fetch", fetch, "napper")


class Breaker(Workflow):
    @step
    def only(self):
        yield self.action("explode", explode)


class Family(Workflow):
    @step
    def start(self):
        self.state["background"] = yield self.start_child("bg", Quick)
        self.state["napper"] = yield self.child("napper", Napper)
        try:
            yield self.child("breaker", "family.py:Breaker")
        except ChildFailed as failed:
            self.state["breaker"] = failed.status
        return None
''',
    "code.py": '''
from tinywf_cli import Workflow, step


class Code(Workflow):
    @step
    def ask(self):
        self.state["code"] = yield self.wait_event("code", type=str, question="The code from the SMS?")
''',
    "guesses.py": '''
from tinywf_cli import Workflow, step


class Guesses(Workflow):
    @step
    def play(self):
        self.state["guesses"] = []
        for _ in range(3):
            self.state["guesses"].append((yield self.wait_event("guess", type=int, question="A guess?")))
''',
    "looper.py": '''
from tinywf_cli import Workflow, step


class Looper(Workflow):
    @step
    def spin(self):
        self.state["n"] = self.state.get("n", 0) + 1
        self.log("lap", n=self.state["n"])
        return self.spin if self.state["n"] < 400 else None
''',
}


@pytest.fixture
def flows(cli: Cli) -> Cli:
    for name, source in FLOWS.items():
        (cli.workspace / "flows" / name).write_text(source.lstrip(), encoding="utf-8")
    return cli


def test_a_parent_and_its_children_through_the_command(flows: Cli) -> None:
    cli = flows
    doc = assert_run_document(cli.start("flows/family.py:Family", "p"))
    assert doc["status"] == "waiting" and doc["parent"] is None
    assert [(p["kind"], p["key"], p["request"]) for p in doc["pending"]] == [
        ("child", "napper", {"run_id": "p.napper"})]
    bg = cli.json("show", "p.bg")
    assert bg["status"] == "finished" and bg["parent"] == "p"
    assert cli.json("show", "p.napper")["status"] == "waiting"
    human = cli("show", "p")
    assert "waits for child run p.napper" in human.stdout and "p.bg" in human.stdout
    assert_error(cli("resolve", "p", "napper", "1"), 2, "child")
    report = cli.json("tick", now=at(3600))
    assert {a["run_id"]: a["status"] for a in report["advanced"]} == {
        "p.napper": "finished", "p": "finished", "p.breaker": "failed"}
    done = cli.json("show", "p")
    assert done["status"] == "finished"
    assert done["state"] == {"background": "p.bg", "napper": {"got": "NAPPER"}, "breaker": "failed"}
    assert cli.json("tick", now=at(7200))["due"] == 0


def test_cancel_cascades_to_children_through_the_command(flows: Cli) -> None:
    flows.start("flows/family.py:Family", "p")
    assert flows.json("cancel", "p")["status"] == "cancelled"
    assert flows.json("show", "p.napper")["status"] == "cancelled"


@pytest.mark.parametrize(("typed", "stored"), [("1234", "1234"), ("0042", "0042"), ("true", "true"),
                                               ('"quoted"', "quoted"), ("two words", "two words")])
def test_a_typed_answer_is_taken_as_the_events_type_wants_it(flows: InProcessCli, typed: str, stored: str) -> None:
    fast = InProcessCli(flows.workspace, flows.state_dir)
    fast.start("flows/code.py", "c")
    assert fast.json("resolve", "c", "code", typed)["state"] == {"code": stored}


def test_three_sends_on_one_key_answer_three_waits(flows: Cli) -> None:
    fast = InProcessCli(flows.workspace, flows.state_dir)
    doc = fast.start("flows/guesses.py", "g")
    assert [p["resume_id"] for p in doc["pending"]] == ["guess@1"]
    assert [p["resume_id"] for p in flows.json("send", "g", "guess", "5")["pending"]] == ["guess@1.2"]
    fast.json("send", "g", "guess", "6")
    done = flows.json("send", "g", "guess", "7")
    assert done["status"] == "finished" and done["state"] == {"guesses": [5, 6, 7]}


def test_run_attach_is_an_idempotent_start(flows: Cli) -> None:
    cli = flows
    first = cli.start("flows/code.py", "order-17")
    again = cli.start("flows/code.py", "order-17", "--attach")
    assert again == first  # the same run, advanced if due (it is not), printed
    assert_error(cli("run", "flows/code.py", "--run-id", "order-17"), 4, "already taken")
    assert_error(cli("run", "flows/guesses.py", "--run-id", "order-17", "--attach"), 4, "already taken")
    assert_error(cli("run", "flows/code.py", "--attach"), 2, "--run-id")
    created = cli.start("flows/code.py", "order-18", "--attach")  # attach to nothing: a plain start
    assert created["status"] == "waiting"


def test_show_last_and_a_long_timeline_for_people(flows: Cli) -> None:
    fast = InProcessCli(flows.workspace, flows.state_dir)
    fast.start("flows/looper.py", "loop")
    doc = fast.json("show", "loop", "--last", "3")
    assert [e["type"] for e in doc["logs"]] == ["transition", "lap", "finish"]
    assert len(fast.json("show", "loop")["logs"]) == 801  # --json keeps the whole timeline
    human = flows("show", "loop")
    assert human.returncode == 0, describe(human)
    assert "earlier entries not shown" in human.stdout
    assert len(human.stdout.splitlines()) < 120
    shown_all = flows("show", "loop", "--last", "2000")
    assert "earlier entries not shown" not in shown_all.stdout


def test_a_bounded_queue_of_early_events(flows: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinywf_cli.runtime import commands

    monkeypatch.setattr(commands, "MAX_QUEUED_EVENTS", 3)
    fast = InProcessCli(flows.workspace, flows.state_dir)
    fast.start("flows/code.py", "c")
    for value in ("a", "b", "c"):
        fast.json("send", "c", "later", value)
    before = (flows.state_dir / "c.json").read_bytes()
    assert_error(fast("send", "c", "later", "d"), 4, "3 queued events")
    assert (flows.state_dir / "c.json").read_bytes() == before


def test_documents_name_version_and_parent(flows: Cli) -> None:
    flows.start("flows/family.py:Family", "p")
    listed = json.loads(flows("show", "p.bg", "--json").stdout)
    assert listed["version"] == 1 and listed["parent"] == "p"
    assert list(listed)[:4] == ["run_id", "workflow", "version", "status"]


def test_a_flow_file_for_a_child_is_found_beside_the_parents(flows: Cli, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = Cli(flows.workspace, flows.state_dir)
    doc = cli.start("flows/family.py:Family", "p2")
    assert doc["status"] == "waiting"  # "family.py:Breaker" is found beside flows/family.py, not in the cwd
