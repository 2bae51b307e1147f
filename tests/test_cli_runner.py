"""The Typer app driven with ``typer.testing.CliRunner``: documents on stdout, runs read
back through the library, typed errors for ``main`` to map to exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clihelpers import NOW, RUN_KEYS, SHOW_KEYS, assert_run_document, make_workspace
from typer.testing import CliRunner, Result

from tinywf_cli import InvalidValue, RunNotFound, Runtime, StatusConflict, TinyWFError
from tinywf_cli.cli import app
from tinywf_cli.clock import ManualClock


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_workspace(tmp_path)
    monkeypatch.chdir(root)
    for name in ("TINYWF_STATE_DIR", "TINYWF_NOW", "NO_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    return root


def invoke(*args: str, input: str | None = None) -> Result:
    """``tinywf ARGS`` through the app, with the fixed clock and ``./state``."""
    return CliRunner().invoke(app, list(args), input=input, env={"TINYWF_NOW": NOW, "TINYWF_STATE_DIR": "state"})


def document(result: Result) -> Any:
    assert result.exit_code == 0, (result.exception, result.output)
    return json.loads(result.stdout)


def test_run_resolve_show_and_read_back_through_the_library(workspace: Path) -> None:
    started = assert_run_document(document(invoke("run", "flows/guess_game.py", "--run-id", "g1", "--json",
                                                  "--input", '{"number": 42}')))
    assert started["status"] == "waiting"
    resolved = document(invoke("resolve", "g1", "ask_0", "42", "--json"))
    assert set(resolved) == RUN_KEYS and resolved["status"] == "finished"
    shown = document(invoke("show", "g1", "--json"))
    assert set(shown) == SHOW_KEYS
    run = Runtime(workspace / "state", clock=ManualClock(NOW)).get("g1")
    assert run.status == "finished" and run.state == {"number": 42, "answers": [42]}
    assert run.model_dump(mode="json") == shown  # the library's document is the CLI's


def test_output_for_people(workspace: Path) -> None:
    result = invoke("run", "flows/guess_game.py", "--run-id", "g1")
    assert result.exit_code == 0
    assert "run g1 (flows/guess_game.py:GuessGame) waiting at step step_play" in result.stdout
    assert "tinywf resolve g1 ask_0@2 <integer>" in result.stdout  # ./state: no --state-dir needed
    listed = invoke("list")
    assert "g1" in listed.stdout and "waiting" in listed.stdout


def test_signal_and_cancel(workspace: Path) -> None:
    document(invoke("run", "flows/interval_payment.py", "--run-id", "sub-1", "--json"))
    signalled = document(invoke("signal", "sub-1", "add_usage", '{"item": "api", "amount": 2}', "--json"))
    assert signalled["state"]["current_usages"] == [{"item": "api", "amount": 2}]
    assert document(invoke("cancel", "sub-1", "--json"))["status"] == "cancelled"


def test_value_from_stdin(workspace: Path) -> None:
    document(invoke("run", "flows/echo.py", "--run-id", "e1", "--json"))
    assert document(invoke("resolve", "e1", "value", "-", "--json", input="[true]\n"))["state"] == {"value": [True]}


@pytest.mark.parametrize(("args", "error", "code"), [
    (("show", "nosuch"), RunNotFound, 3),
    (("run", "flows/guess_game.py", "--input", '{"number": "x"}'), InvalidValue, 2),
    (("cancel", "s1"), StatusConflict, 4),
], ids=["not-found", "invalid", "conflict"])
def test_errors_reach_main_as_typed_exceptions_with_their_exit_code(
        workspace: Path, args: tuple[str, ...], error: type[TinyWFError], code: int) -> None:
    document(invoke("run", "flows/simple.py", "--run-id", "s1", "--json"))
    result = invoke(*args)
    assert isinstance(result.exception, error) and result.exception.exit_code == code
    assert result.stdout == ""


def test_usage_errors_exit_2(workspace: Path) -> None:
    assert invoke("show").exit_code == 2
    assert invoke("run", "flows/simple.py", "--frobnicate").exit_code == 2


def test_every_command_answers_help(workspace: Path) -> None:
    for info in app.registered_commands:
        assert info.callback is not None
        name = info.name or info.callback.__name__
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0 and f"Usage: tinywf {name}" in result.stdout, name


#: Options each command takes: all take --state-dir and --json; those that change runs or
#: wait for their locks take --lock-timeout.
# every command that touches a run takes --lock-timeout (show, list and graph only read: they never wait)
TOUCHING = {"run", "resolve", "send", "signal", "tick", "worker", "cancel", "retry", "show", "list", "wait", "graph",
            "pause", "resume", "fork", "prune", "check", "serve", "link", "copy"}
#: Commands that claim runs to change them take --lease (PostgreSQL stores).
CLAIMING = {"run", "resolve", "send", "signal", "tick", "worker", "cancel", "retry", "copy", "pause", "resume",
            "fork", "prune", "serve"}


def test_every_command_takes_the_shared_options(workspace: Path) -> None:
    for info in app.registered_commands:
        assert info.callback is not None
        name = info.name or info.callback.__name__
        text = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"}).stdout
        assert "--state-dir" in text and "--json" in text, name
        assert ("--lock-timeout" in text) == (name in TOUCHING), name
        assert ("--lease" in text) == (name in CLAIMING), name


def test_every_command_prints_one_json_document(workspace: Path) -> None:
    document(invoke("run", "flows/guess_game.py", "--run-id", "g1", "--json", "--input", '{"number": 42}'))
    document(invoke("run", "flows/interval_payment.py", "--run-id", "sub-1", "--json"))
    result = CliRunner().invoke(app, ["run", "flows/fail.py", "--run-id", "f1", "--json"],
                                env={"TINYWF_NOW": NOW, "TINYWF_STATE_DIR": "state", "TINYWF_TEST_FAIL": "1"})
    assert result.exit_code == 1
    commands = {
        "run": ["flows/simple.py"], "resolve": ["g1", "ask_0", "5"], "send": ["g1", "ask_1", "6"],
        "signal": ["sub-1", "add_usage", '{"item": "a", "amount": 1}'], "show": ["g1"], "list": [],
        "wait": ["g1", "--for", "waiting"], "tick": [],
        "cancel": ["sub-1"], "retry": ["f1"], "graph": ["flows/simple.py"], "schema": ["flows/simple.py"],
        "pause": ["g1"], "resume": ["g1"], "fork": ["g1"], "prune": ["--older-than", "0s"], "check": [],
        "link": ["g1", "ask_2"],
        "copy": ["--to", "copied"], "limits": [], "breakers": [], "new": ["hello"],
    }
    for info in app.registered_commands:
        assert info.callback is not None
        name = info.name or info.callback.__name__
        if name in ("worker", "serve"):
            continue  # they run until stopped: see the worker tests and tests/test_web_api.py
        assert name in commands, f"add `tinywf {name}` to this test"
        result = invoke(name, *commands[name], "--json")
        assert result.exit_code == 0, (name, result.exception, result.output)
        assert isinstance(json.loads(result.stdout), dict), name
