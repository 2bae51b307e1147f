"""``tinywf limits``, ``limit set|reset``, ``breakers``, ``breaker reset``, and runs that wait for a
limit or a breaker, through the installed ``tinywf`` (a state directory, and PostgreSQL)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from clihelpers import Cli, at, describe, one_document

FLOW = '''
"""One call under a rate of 1 a minute, through a breaker that opens at the first failure."""

import os

from tinywf_cli import ActionFailed, Breaker, Limit, Workflow, step

API = Limit("api", rate="1/m")
SERVICE = Breaker("service", failures=1, reset=60)


def call(run_id):
    if os.environ.get("SERVICE_DOWN"):
        raise ConnectionError("down")
    return run_id


class Limited(Workflow):
    @step
    def only(self):
        try:
            yield self.action("call", call, self.run_id, limit=API, breaker=SERVICE)
        except ActionFailed as exc:
            self.state["failed"] = exc.error_type
'''


def tinywf(cli: Cli, *args: str, code: int = 0, now: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``tinywf ARGS --store …`` (the store after every argument: ``limit set NAME`` is a group's command)."""
    result = cli(*args, *cli.store_args, state_dir=False, now=now, env=env)
    assert result.returncode == code, describe(result)
    return result


def document(cli: Cli, *args: str, **options: Any) -> Any:
    return one_document(tinywf(cli, *args, "--json", **options).stdout)


@pytest.fixture
def limited(cli: Cli) -> Cli:
    (cli.workspace / "flows" / "limited.py").write_text(FLOW)
    return cli


@pytest.mark.stores("file", "postgres")
def test_a_run_waits_for_a_token_and_the_limit_commands_show_and_override_it(limited: Cli) -> None:
    cli = limited
    assert document(cli, "run", "flows/limited.py", "--run-id", "first")["status"] == "finished"
    second = document(cli, "run", "flows/limited.py", "--run-id", "second")
    assert second["status"] == "waiting"
    assert second["pending"] == [{"resume_id": "call@1", "kind": "limit", "key": "call",
                                  "request": {"limit": "api"}, "due_at": at(60)}]
    shown = tinywf(cli, "show", "second").stdout
    assert "waits for room under limit api, for action call" in shown
    assert document(cli, "limits") == {"limits": [{"name": "api", "key": None, "rate": "1/m", "concurrency": None,
                                                  "in_flight": 0, "waiting": 1}]}
    people = tinywf(cli, "limits").stdout
    assert "api" in people and "1/m" in people
    # an override for every process: the waiting run looks again at once
    assert document(cli, "limit", "set", "api", "--rate", "10/s", "--concurrency", "2")["limits"][0] == {
        "name": "api", "key": None, "rate": "10/s", "concurrency": 2, "in_flight": 0, "waiting": 1}
    tick = document(cli, "tick", now=at(1))
    assert tick["advanced"] == [{"run_id": "second", "status": "finished"}]
    assert document(cli, "limit", "reset", "api")["limits"][0]["rate"] == "1/m"


@pytest.mark.stores("file", "postgres")
def test_bad_limit_commands_say_why_in_one_line_and_change_nothing(limited: Cli) -> None:
    cli = limited
    tinywf(cli, "run", "flows/limited.py", "--run-id", "first")
    before = cli.snapshot()
    for args, code, says in (
            (("limit", "set", "api"), 2, "give --rate"),
            (("limit", "set", "api", "--rate", "fast"), 2, "a rate is 'N/s'"),
            (("limit", "set", "api", "--concurrency", "0"), 2, "--concurrency must be"),
            (("limit", "set", "no good", "--rate", "1/s"), 2, "invalid limit name"),
            (("limit", "reset", "unknown"), 3, "no limit 'unknown'"),
            (("breaker", "reset", "unknown"), 3, "no breaker 'unknown'")):
        result = tinywf(cli, *args, code=code)
        assert result.stdout == "" and result.stderr.startswith("error: ") and says in result.stderr, args
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert cli.snapshot() == before


@pytest.mark.stores("file", "postgres")
def test_a_run_waits_for_an_open_breaker_and_breaker_reset_lets_it_go_on(limited: Cli) -> None:
    cli = limited
    tinywf(cli, "limit", "set", "api", "--rate", "100/s")
    failed = document(cli, "run", "flows/limited.py", "--run-id", "opens", SERVICE_DOWN="1")
    assert failed["state"] == {"failed": "ConnectionError"}
    assert "breaker_opened" in tinywf(cli, "show", "opens").stdout
    waits = document(cli, "run", "flows/limited.py", "--run-id", "waits")
    assert waits["pending"] == [{"resume_id": "call@1", "kind": "breaker", "key": "call", "request": None,
                                 "due_at": at(60)}]
    assert document(cli, "breakers") == {"breakers": [{"name": "service", "state": "open", "failures": 1,
                                                      "half_open_at": at(60)}]}
    assert document(cli, "breakers", now=at(61))["breakers"][0]["state"] == "half_open"
    assert "open" in tinywf(cli, "breakers").stdout
    assert document(cli, "breaker", "reset", "service")["breakers"] == [
        {"name": "service", "state": "closed", "failures": 0, "half_open_at": None}]
    assert document(cli, "tick")["advanced"] == [{"run_id": "waits", "status": "finished"}]


def test_every_limit_command_has_help_with_an_example(cli: Cli) -> None:
    for args in (("limits",), ("limit", "set"), ("limit", "reset"), ("breakers",), ("breaker", "reset")):
        result = cli(*args, "--help", state_dir=False)
        assert result.returncode == 0 and "Example:" in result.stdout, args
    assert document(cli, "limits") == {"limits": []}
    assert document(cli, "breakers") == {"breakers": []}
