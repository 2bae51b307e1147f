"""``@on_failure``: called once per failure or block, as an action is (contract section 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
from clihelpers import Cli, InProcessCli, make_workspace

from tinywf_cli import Retry, Workflow, on_failure, step
from tinywf_cli.errors import FlowDefinitionError

HOOKED = '''"""Charges a card; pages someone when the run fails."""
import os
import signal
from pathlib import Path

from pydantic import BaseModel

from tinywf_cli import Retry, Workflow, on_failure, step

HERE = Path(__file__).parent


class Order(BaseModel):
    fail: bool = True
    wait: bool = False


def charge(fail: bool) -> str:
    if fail and not (HERE / "fixed").exists():
        raise RuntimeError("card declined")
    return "paid"


class Hooked(Workflow[Order]):
    @step
    def begin(self):
        if self.state.wait:
            yield self.wait_event("go", type=int)
        yield self.action("charge", charge, self.state.fail)
        return None

    @on_failure(retry=Retry(attempts=3, delay=60))
    def page(self, error):
        with open(HERE / "pages", "a") as out:
            out.write(f"{self.run_id} {error.type}: {error.message}\\n")
        if (HERE / "die").exists():
            (HERE / "die").unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        if (HERE / "flaky").exists():
            (HERE / "flaky").unlink()
            raise ConnectionError("pager is down")
        self.log("paged", who="ops")
        return {"paged": self.run_id}

    @on_failure
    def ticket(self, error):
        with open(HERE / "tickets", "a") as out:
            out.write(f"{self.run_id}\\n")
'''


@pytest.fixture
def work(tmp_path: Path) -> Cli:
    workspace = make_workspace(tmp_path)
    (workspace / "hooked.py").write_text(HOOKED, encoding="utf-8")
    return Cli(workspace)


@pytest.fixture
def quick(work: Cli) -> InProcessCli:
    return InProcessCli(work.workspace, work.state_dir)


def _lines(cli: Cli, name: str) -> list[str]:
    path = cli.workspace / name
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _logs(cli: Cli, run_id: str, *types: str) -> list[dict[str, object]]:
    return [e for e in cli.json("show", run_id)["logs"] if e["type"] in types]


def test_each_hook_is_called_once_when_the_run_fails_and_its_result_is_logged(quick: InProcessCli) -> None:
    doc = quick.start("hooked.py", "h1", code=1)
    assert doc["status"] == "failed"
    assert _lines(quick, "pages") == ["h1 RuntimeError: action 'charge' failed after 1 attempt: card declined"]
    assert _lines(quick, "tickets") == ["h1"]
    hooks = _logs(quick, "h1", "on_failure", "paged")
    assert [(e["type"], e["values"]) for e in hooks] == [
        ("paged", {"who": "ops"}), ("on_failure", {"hook": "page", "attempt": 1, "result": {"paged": "h1"}}),
        ("on_failure", {"hook": "ticket", "attempt": 1, "result": None})]
    assert quick.json("tick")["due"] == 0  # nothing owed: the failed run is due for nothing
    assert _lines(quick, "pages") == ["h1 RuntimeError: action 'charge' failed after 1 attempt: card declined"]


def test_hooks_are_called_again_for_each_new_failure(quick: InProcessCli) -> None:
    quick.start("hooked.py", "h1", code=1)
    assert quick.json("retry", "h1", code=1)["status"] == "failed"
    assert _lines(quick, "tickets") == ["h1", "h1"]


def test_not_called_on_success_or_cancel(quick: InProcessCli) -> None:
    assert quick.start("hooked.py", "ok", "--input", '{"fail": false}')["status"] == "finished"
    quick.start("hooked.py", "w1", "--input", '{"wait": true}')
    quick.json("cancel", "w1")
    quick.json("tick")
    assert _lines(quick, "pages") == [] and _lines(quick, "tickets") == []


def test_a_hook_that_raises_is_retried_at_a_durable_due_time(quick: InProcessCli) -> None:
    (quick.workspace / "flaky").touch()
    quick.start("hooked.py", "h1", code=1)
    errors = _logs(quick, "h1", "on_failure_error")
    assert errors == [{"at": errors[0]["at"], "step": "begin", "type": "on_failure_error", "values": {
        "hook": "page", "attempt": 1, "type": "ConnectionError", "message": "pager is down",
        "retry_at": "2026-01-01T00:01:00Z"}}]
    assert _lines(quick, "tickets") == []  # hooks go in order: the next waits for this one
    assert quick.json("tick", now="2026-01-01T00:00:59Z")["due"] == 0
    report = quick.json("tick", now="2026-01-01T00:01:00Z")
    assert report["advanced"] == [{"run_id": "h1", "status": "failed"}]
    assert len(_lines(quick, "pages")) == 2 and _lines(quick, "tickets") == ["h1"]
    assert [e["values"]["attempt"] for e in _logs(quick, "h1", "on_failure")] == [2, 1]


def test_a_kill_inside_a_hook_calls_it_again_once_and_only_it(work: Cli) -> None:
    (work.workspace / "die").touch()
    result = work("run", "hooked.py", "--run-id", "h1", "--json")
    assert result.returncode == -9  # killed inside `page`, after the failure was saved
    assert work.json("show", "h1")["status"] == "failed"
    assert len(_lines(work, "pages")) == 1 and _lines(work, "tickets") == []
    assert work.json("tick")["advanced"] == [{"run_id": "h1", "status": "failed"}]
    assert len(_lines(work, "pages")) == 2 and _lines(work, "tickets") == ["h1"]
    work.json("tick")
    assert len(_lines(work, "pages")) == 2 and _lines(work, "tickets") == ["h1"]


def test_a_blocked_run_owes_its_hooks_too(quick: InProcessCli) -> None:
    quick.start("hooked.py", "h1", "--input", '{"wait": true}')
    source = (quick.workspace / "hooked.py").read_text(encoding="utf-8")
    (quick.workspace / "hooked.py").write_text(source.replace(
        'yield self.wait_event("go", type=int)', 'yield self.wait_event("other", type=int)'), encoding="utf-8")
    doc = quick.json("send", "h1", "go", "1", code=1)
    assert doc["status"] == "blocked"
    assert _lines(quick, "tickets") == ["h1"]


def test_on_failure_takes_plain_methods_only() -> None:
    with pytest.raises(FlowDefinitionError, match="plain method"):
        class Bad(Workflow):
            @step
            def begin(self):  # type: ignore[no-untyped-def]
                return None

            @on_failure
            def alert(self, error):  # type: ignore[no-untyped-def]
                yield None
    with pytest.raises(FlowDefinitionError, match="Retry"):
        on_failure(retry=3)  # type: ignore[arg-type]
    assert Retry(attempts=2)  # the decorator's retry= is a Retry


def test_hooks_owed_when_the_flow_no_longer_loads_are_given_up_and_the_run_stays_failed(
        quick: InProcessCli) -> None:
    (quick.workspace / "flaky").touch()
    quick.start("hooked.py", "h1", code=1)  # `page` failed once: owed again in a minute
    (quick.workspace / "hooked.py").write_text("this is not python\n", encoding="utf-8")
    report = quick.json("tick", now="2026-01-01T00:01:00Z")
    assert report["skipped"] == [] and [a["status"] for a in report["advanced"]] == ["failed"]
    doc = quick.json("show", "h1")
    assert doc["status"] == "failed" and doc["error"]["type"] == "RuntimeError"  # its own failure, kept
    gave_up = [e["values"] for e in doc["logs"] if e["type"] == "on_failure_error"][1:]
    assert [v["hook"] for v in gave_up] == ["page", "ticket"] and gave_up[0]["type"] == "FlowLoadError"
    assert quick.json("tick", now="2026-01-01T00:02:00Z")["due"] == 0  # nothing owed: no loop


def test_a_retried_run_owes_nothing_of_its_earlier_failure(quick: InProcessCli) -> None:
    (quick.workspace / "flaky").touch()
    quick.start("hooked.py", "h1", code=1)  # `page` owed again in a minute
    (quick.workspace / "fixed").touch()
    assert quick.json("retry", "h1")["status"] == "finished"
    assert quick.json("tick", now="2026-01-01T00:05:00Z")["due"] == 0
    assert len(_lines(quick, "pages")) == 1
