"""Answers to events, on every path they enter by: the CLI (`resolve`, `send`, a prompt), the
HTTP API, the web page's form, a signed link and the library.

- Every path refuses, with one line and nothing changed, a value tinywf could not keep: a
  lone surrogate, nesting beyond the 200 levels every reader can read (as `--input` and
  `signal` refuse them).
- The audit log says what was answered and how: `wait_end` carries `value` and `via`
  (`cli`, `http`, `link`, `runtime`), trimmed for people by `show`, whole in `--json`.
- An answer given to a run that then blocks (or fails) before its wait takes it is kept in
  the run's queue for that key, said so, and taken by the wait once `retry` gets there.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from clihelpers import Cli, InProcessCli, assert_error, make_workspace
from webhelpers import TOKEN, Server

from tinywf_cli import Runtime
from tinywf_cli.testing import MemoryRuntime

ANSWERS = '''
"""Waits for stop (any JSON), then a minute for later (any JSON)."""

from tinywf_cli import EventTimeout, Workflow, signal, step


class Answers(Workflow):
    """Two waits of any JSON."""

    @step
    def ask(self):
        self.state["stop"] = yield self.wait_event("stop")
        try:
            self.state["later"] = yield self.wait_event("later", timeout=60)
        except EventTimeout:
            self.state["later"] = "too late"
        return None

    @signal
    def note(self, text: object):
        self.state["note"] = text
'''

#: The approval flow as a run records it, changed under the run, and fixed with a patch marker.
EXPENSE = '''
"""An expense waits for its approval."""

from tinywf_cli import Workflow, step


def audit() -> str:
    return "audited"


class Expense(Workflow):
    """Approve, then done."""

    @step
    def approve(self):
{before}        self.state["approved"] = yield self.wait_event("approval", type=bool, question="Approve?")
        return None
'''
RECORDED = ""
CHANGED = {"blocks": '        yield self.action("audit", audit)\n',
           "fails": '        raise RuntimeError("the ledger is down")\n'}
FIXED = '        if self.patched("audit"):\n            yield self.action("audit", audit)\n'

LONE_SURROGATE = '"\\ud800"'
#: Values that are JSON but that tinywf cannot keep: text that is no Unicode, nesting too deep.
UNKEEPABLE = {
    "a lone surrogate": (LONE_SURROGATE, "lone surrogate"),
    "990 levels": ("[" * 990 + "]" * 990, "nested more than 200 levels"),
    "5000 levels": ("[" * 5000 + "]" * 5000, "nested more than 200 levels"),
}


@pytest.fixture(name="cli")
def cli_fixture(tmp_path: Path) -> InProcessCli:
    workspace = make_workspace(tmp_path / "ws")
    (workspace / "flows" / "answers.py").write_text(ANSWERS.lstrip("\n"), encoding="utf-8")
    write_expense(workspace, RECORDED)
    return InProcessCli(workspace)


def write_expense(workspace: Path, before: str) -> None:
    path = workspace / "flows" / "expense.py"
    path.write_text(EXPENSE.lstrip("\n").format(before=before), encoding="utf-8")
    for cached in (workspace / "flows" / "__pycache__").glob("expense*"):
        cached.unlink()


def wait_ends(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The values of the ``wait_end`` entries of a ``show --json`` document."""
    return [entry["values"] for entry in doc["logs"] if entry["type"] == "wait_end"]


# -- 2. the same checks on every path a value enters by ------------------------------------------------


@pytest.mark.parametrize(("command", "key"), [("resolve", "stop"), ("send", "stop"), ("send", "later")])
@pytest.mark.parametrize(("case", "how"), [("a lone surrogate", "argument"), ("a lone surrogate", "stdin"),
                                           ("990 levels", "stdin"), ("5000 levels", "stdin")])
def test_an_answer_tinywf_cannot_keep_is_refused(cli: InProcessCli, command: str, key: str, case: str,
                                                 how: str) -> None:
    value, words = UNKEEPABLE[case]
    cli.start("flows/answers.py", "n1")
    before = cli.snapshot()
    result = cli(command, "n1", key, value if how == "argument" else "-", input=value)
    assert_error(result, 2, f"invalid value for event '{key}'", words)
    assert cli.snapshot() == before


def test_every_path_refuses_them_alike_and_text_that_is_no_json_is_still_a_string(cli: InProcessCli) -> None:
    from tinywf_cli.errors import InvalidValue

    cli.start("flows/answers.py", "n1")
    before = cli.snapshot()
    assert_error(cli("run", "flows/answers.py", "--run-id", "n2", "--input", '{"x": "\\ud800"}'), 2,
                 "lone surrogate")
    assert_error(cli("signal", "n1", "note", '{"text": "\\ud800"}'), 2, "lone surrogate")
    assert_error(cli("resolve", "n1", "stop", LONE_SURROGATE), 2, "invalid value for event 'stop'", "lone surrogate")
    assert_error(cli("send", "n1", "later", LONE_SURROGATE), 2, "invalid value for event 'later'", "lone surrogate")
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    rt = Runtime(cli.state_dir)
    for value in ("\ud800", deep):
        with pytest.raises(InvalidValue):
            rt.resolve("n1", "stop", value)
        with pytest.raises(InvalidValue):
            rt.send("n1", "later", value)
    assert cli.snapshot() == before
    cli.json("resolve", "n1", "stop", "[[not json")
    cli.json("send", "n1", "later", "\\ud800 is six characters")
    assert cli.json("show", "n1")["state"] == {"stop": "[[not json", "later": "\\ud800 is six characters"}


@pytest.fixture(name="server")
def server_fixture(cli: InProcessCli) -> Any:
    with Server.start(Cli(cli.workspace), "--lock-timeout", "0.5") as running:
        yield running


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, html[-400:]
    return found.group(1)


def test_the_web_form_and_a_link_refuse_what_the_cli_refuses(server: Server) -> None:
    cli = server.cli
    for run_id in ("w1", "w2"):
        cli.start("flows/answers.py", run_id)
    url = server.link("w2", "stop")
    before = cli.snapshot()
    with httpx.Client(base_url=server.url, cookies={"tinywf_token": TOKEN}) as browser:
        csrf = csrf_of(browser.get("/runs/w1").text)
        for value, words in UNKEEPABLE.values():
            page = browser.post("/runs/w1/resolve/stop%401", data={"value": value, "csrf": csrf})
            assert page.status_code == 422 and words in page.text, (page.status_code, page.text[-400:])
            page = server.anonymous.post(server.path_of(url), data={"value": value})
            assert page.status_code == 422 and words in page.text, (page.status_code, page.text[-400:])
            assert "<form" in page.text  # the question again, to answer it right
    for path in ("/api/runs/w1/resolve/stop", "/api/runs/w1/send/stop", "/api/runs/w1/send/later"):
        for value, _ in UNKEEPABLE.values():
            answer = server.api.post(path, content=f'{{"value": {value}}}',
                                     headers={"content-type": "application/json"})
            assert answer.status_code in (400, 422), (path, answer.status_code, answer.text[:200])
            assert answer.json()["error"]["exit_code"] == 2
    assert cli.snapshot() == before


# -- 3. the audit log says what was answered, and how -----------------------------------------------------


def test_wait_end_says_what_the_cli_answered(cli: InProcessCli) -> None:
    cli.start("flows/answers.py", "a1")
    long = "yes, " * 200
    cli.json("send", "a1", "later", '{"queued": 2}')  # no wait on it yet: queued, taken later
    cli.json("resolve", "a1", "stop", long)
    doc = cli.json("show", "a1")
    assert wait_ends(doc) == [
        {"kind": "event", "key": "stop", "resume_id": "stop@1", "value": long, "via": "cli"},
        {"kind": "event", "key": "later", "resume_id": "later@1", "value": {"queued": 2}, "via": "cli",
         "queued": True},
    ]
    shown = cli("show", "a1", env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if "resume_id=stop@1" in line and "wait_end" in line)
    assert "via=cli" in line and "value=" in line and "…" in line and long not in shown.stdout


def test_wait_end_says_what_the_api_the_form_and_a_link_answered(server: Server) -> None:
    cli = server.cli
    for run_id in ("h1", "h2", "h3"):
        cli.start("flows/answers.py", run_id)
    assert server.api.post("/api/runs/h1/resolve/stop", json={"value": [1, "two"]}).status_code == 200
    assert server.api.post("/api/runs/h1/send/later", json={"value": None}).status_code == 200
    with httpx.Client(base_url=server.url, cookies={"tinywf_token": TOKEN}) as browser:
        csrf = csrf_of(browser.get("/runs/h2").text)
        done = browser.post("/runs/h2/resolve/stop", data={"value": '{"a": 1}', "csrf": csrf},
                            follow_redirects=False)
        assert done.status_code == 303, done.text[-400:]
    url = server.link("h3", "stop")
    assert server.anonymous.post(server.path_of(url), data={"value": "approved by ann"}).status_code == 200
    assert [(v["value"], v["via"]) for v in wait_ends(cli.json("show", "h1"))] == [([1, "two"], "http"),
                                                                                 (None, "http")]
    assert [(v["value"], v["via"]) for v in wait_ends(cli.json("show", "h2"))] == [({"a": 1}, "http")]
    assert [(v["value"], v["via"]) for v in wait_ends(cli.json("show", "h3"))] == [("approved by ann", "link")]
    # what the API shows is what the CLI shows
    assert server.api.get("/api/runs/h3").json()["logs"] == cli.json("show", "h3")["logs"]


def test_wait_end_says_what_the_library_answered(cli: InProcessCli) -> None:
    cli.start("flows/answers.py", "l1")
    rt = Runtime(cli.state_dir)
    rt.send("l1", "later", {"n": 1.5})
    rt.resolve("l1", "stop", True)
    assert [(v["value"], v["via"], v.get("queued")) for v in wait_ends(cli.json("show", "l1"))] == [
        (True, "runtime", None), ({"n": 1.5}, "runtime", True)]
    memory = MemoryRuntime()
    run_id = memory.start(str(cli.workspace / "flows" / "answers.py")).run_id
    memory.resolve(run_id, "stop", "x")
    entries = [e for e in memory.get(run_id).logs if e.type == "wait_end"]
    assert [(e.values["value"], e.values["via"]) for e in entries] == [("x", "runtime")]
    # a wait that timed out names no answer
    memory.clock.advance(timedelta(minutes=2))
    memory.tick()
    assert [e.values for e in memory.get(run_id).logs if e.type == "wait_end"][-1] == {
        "kind": "event", "key": "later", "resume_id": "later@1", "timed_out": True}


# -- 4. an answer to a run that then blocks is kept, and said so ----------------------------------------


@pytest.mark.parametrize("change", list(CHANGED))
def test_an_answer_to_a_run_that_then_stops_is_kept_for_retry(cli: InProcessCli, change: str) -> None:
    cli.start("flows/expense.py", "exp-3")
    write_expense(cli.workspace, CHANGED[change])
    answered = cli("resolve", "exp-3", "approval", "true")
    assert answered.returncode == 1, answered.stderr
    said = " ".join(answered.stdout.split())
    status = "blocked" if change == "blocks" else "failed"
    assert status in said and "approval" in said and "kept" in said and "tinywf retry" in said, said
    doc = cli.json("show", "exp-3", code=0)
    assert doc["status"] == status and doc["pending"] == []
    queued = [e for e in doc["logs"] if e["type"] == "event_queued"]
    assert queued and queued[-1]["values"]["key"] == "approval"
    write_expense(cli.workspace, FIXED)
    done = cli.json("retry", "exp-3")
    assert done["status"] == "finished" and done["state"] == {"approved": True}
    [end] = wait_ends(cli.json("show", "exp-3"))
    assert end["value"] is True and end["via"] == "cli" and end["queued"] is True


def test_an_answer_kept_for_retry_is_kept_through_the_library_and_a_link(server: Server) -> None:
    cli = server.cli
    cli.start("flows/expense.py", "exp-4")
    cli.start("flows/expense.py", "exp-5")
    url = server.link("exp-5", "approval")
    write_expense(cli.workspace, CHANGED["blocks"])
    rt = Runtime(cli.state_dir)
    assert rt.resolve("exp-4", "approval", False).status == "blocked"
    page = server.anonymous.post(server.path_of(url), data={"value": "true"})
    assert page.status_code == 200, page.text[-400:]
    write_expense(cli.workspace, FIXED)
    assert rt.retry("exp-4").state == {"approved": False}
    assert rt.retry("exp-5").state == {"approved": True}
    assert [(v["value"], v["via"]) for v in wait_ends(cli.json("show", "exp-5"))] == [(True, "link")]
