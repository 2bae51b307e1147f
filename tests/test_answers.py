"""Answers to events, on every path they enter by: the CLI (`resolve`, `send`, a prompt), the
HTTP API, the web page's form, a signed link and the library.

- Every path refuses, with one line and nothing changed, a value tinywf could not keep: a
  lone surrogate, nesting beyond the 200 levels every reader can read (as `--input` and
  `signal` refuse them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from clihelpers import Cli, InProcessCli, assert_error, make_workspace
from webhelpers import TOKEN, Server

from tinywf_cli import Runtime

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
    return InProcessCli(workspace)


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
