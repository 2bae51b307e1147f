"""Contract §4, exit codes 0-5 (and 70) and the status rules, through the installed command."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clihelpers import (
    Cli,
    InProcessCli,
    assert_error,
    at,
    describe,
    snapshot,
)

FAILING = {"TINYWF_TEST_FAIL": "1"}

#: Every test here runs on a state directory and on PostgreSQL, unless marked for one.
pytestmark = pytest.mark.stores("file", "postgres")

#: Holds a run's lock from another process until its stdin closes.
HOLD_LOCK = """
import sys
from tinywf_cli import Runtime

with Runtime(sys.argv[1]).store.open(sys.argv[2], 5):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def lock_holder(fast: InProcessCli) -> Iterator[None]:
    """Another process holding the lock of run ``u1`` (a timer run, due at NOW + 60 s)."""
    fast.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60}')
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, fast.target, "u1"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


# -- 0 and 1 ------------------------------------------------------------------------------


def test_exit_0_for_a_finished_run_and_for_a_waiting_one(cli: Cli) -> None:
    finished = cli("run", "flows/simple.py", "--run-id", "s1")
    assert finished.returncode == 0, describe(finished)
    assert "s1" in finished.stdout and "finished" in finished.stdout
    waiting = cli("run", "flows/guess_game.py", "--run-id", "g1")
    assert waiting.returncode == 0, describe(waiting)
    assert "waiting" in waiting.stdout and "tinywf resolve" in waiting.stdout
    assert "error:" not in finished.stderr + waiting.stderr


def test_exit_1_when_an_action_fails_with_the_document_or_the_error_shown(cli: Cli) -> None:
    shown = cli("run", "flows/fail.py", "--run-id", "f1", env=FAILING)
    assert shown.returncode == 1, describe(shown)
    assert "failed" in shown.stdout and "card declined" in shown.stdout
    # the error's type is said once, before the message
    assert "error: RuntimeError: action 'charge' failed after 1 attempt: card declined" in shown.stdout
    assert "tinywf retry" in shown.stdout  # says how to go on
    assert "Traceback" not in shown.stderr


def test_exit_1_when_a_resolve_or_a_retry_makes_the_run_fail(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/fail.py", "f1")
    doc = cli.json("resolve", "f1", "note", "boom", code=1)
    assert doc["status"] == "failed" and doc["error"]["type"] == "ValueError"
    assert "the note went boom" in doc["error"]["message"]
    again = cli.json("retry", "f1", code=1)  # replays the same visit: the same answer, the same failure
    assert again["status"] == "failed"


# -- 2 and 3 ------------------------------------------------------------------------------


def test_exit_2_for_bad_input(cli: Cli) -> None:
    assert_error(cli("run", "flows/guess_game.py", "--input", "{number: 1}"), 2, "--input is not valid JSON")
    assert not cli.state_dir.exists()


def test_exit_3_for_what_does_not_exist(cli: Cli, fast: InProcessCli) -> None:
    assert_error(cli("show", "nosuch"), 3, "nosuch")
    fast.start("flows/guess_game.py", "g1")
    assert_error(fast("resolve", "g1", "ask_9", "1"), 3, "ask_9", "ask_0@2")
    fast.start("flows/interval_payment.py", "sub-1")
    assert_error(fast("signal", "sub-1", "refund"), 3, "refund", "add_usage")


# -- 4 ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("lock_holder")
def test_exit_4_when_another_process_holds_the_lock_past_the_timeout(cli: Cli) -> None:
    before = cli.snapshot()
    assert_error(cli("cancel", "u1", "--lock-timeout", "0.2"), 4, "locked")
    assert_error(cli("signal", "u1", "nosuch", "--lock-timeout", "0"), 4, "locked")
    assert cli.snapshot() == before
    assert cli.json("show", "u1")["status"] == "waiting"  # reading takes no lock


@pytest.mark.usefixtures("lock_holder")
def test_tick_skips_and_reports_a_run_locked_by_another_process(cli: Cli) -> None:
    report = cli.json("tick", now=at(60))
    assert report["advanced"] == []
    assert [s["run_id"] for s in report["skipped"]] == ["u1"]
    people = cli("tick", now=at(60))
    assert people.returncode == 0, describe(people)
    if cli.store is None:  # a directory's lock: someone may be stuck on it, so tick says so
        assert report["due"] == 1 and report["skipped"][0]["reason"] == "locked by another process"
        assert people.stdout.splitlines() == ["skipped  u1: locked by another process", "1 due, 0 advanced, 1 skipped"]
    else:  # a live claim: another worker advances it, nothing this one could take
        assert report["due"] == 0 and report["skipped"][0]["reason"] == "claimed by another worker"
        assert people.stdout.splitlines() == ["0 due, 0 advanced, 0 skipped"]


def test_exit_4_for_a_taken_run_id(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/simple.py", "s1")
    before = cli.snapshot()
    assert_error(cli("run", "flows/guess_game.py", "--run-id", "s1"), 4, "s1", "taken")
    assert cli.snapshot() == before


def test_exit_4_for_resolve_on_a_finished_run_and_cancel_on_a_cancelled_one(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    fast.json("resolve", "g1", "ask_0", "42")
    assert_error(cli("resolve", "g1", "no-such-resume", "3"), 4, "finished")  # not 3: status first
    fast.start("flows/guess_game.py", "g2")
    fast.json("cancel", "g2")
    before = cli.snapshot()
    assert_error(cli("cancel", "g2"), 4, "cancelled")
    assert cli.snapshot() == before


# -- 5 ------------------------------------------------------------------------------------


@pytest.mark.stores("file")  # about files: a record damaged by hand
def test_exit_5_for_a_corrupt_record_naming_its_path_and_changing_nothing(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/guess_game.py", "g1")
    record = cli.state_dir / "g1.json"
    record.write_bytes(b'{"run_id": "g1", "stat')
    before = snapshot(cli.state_dir)
    line = assert_error(cli("show", "g1"), 5)
    assert "g1.json" in line
    assert_error(cli("resolve", "g1", "ask_0", "5"), 5, "g1.json")
    for args in (("send", "g1", "ask_0", "5"), ("signal", "g1", "x"), ("cancel", "g1"), ("retry", "g1")):
        assert_error(fast(*args), 5, "g1.json")
    assert snapshot(cli.state_dir) == before


@pytest.mark.stores("file")  # about files: a symlink
def test_exit_5_for_a_record_that_is_a_symlink(cli: Cli, fast: InProcessCli, tmp_path: Path) -> None:
    fast.start("flows/simple.py", "s1")
    record = cli.state_dir / "s1.json"
    elsewhere = tmp_path / "elsewhere.json"
    record.rename(elsewhere)
    record.symlink_to(elsewhere)
    assert_error(cli("show", "s1"), 5, "s1.json")


# -- the status rules -------------------------------------------------------------------------


def test_signal_send_and_cancel_work_on_a_failed_run(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/fail.py", "f1", code=1, env=FAILING)
    signalled = cli.json("signal", "f1", "tag", '{"label": "vip"}')
    assert signalled["status"] == "failed" and signalled["state"]["label"] == "vip"
    sent = cli.json("send", "f1", "note", "hello")  # kept for the wait to come: exit 0
    assert sent["status"] == "failed"
    retried = cli.json("retry", "f1")  # the charge works now, and the queued note answers the wait
    assert retried["status"] == "finished"
    assert retried["state"] == {"label": "vip", "receipt": "receipt-1", "note": "hello"}
    fast.start("flows/fail.py", "f2", code=1, env=FAILING)
    assert cli.json("cancel", "f2", "--reason", "gave up")["status"] == "cancelled"


ENDED_COMMANDS = [
    ("resolve", "RUN", "no-such-resume", "1"),
    ("send", "RUN", "no-such-key", "1"),
    ("signal", "RUN", "no_such_signal"),
    ("cancel", "RUN"),
    ("retry", "RUN"),
]


@pytest.mark.parametrize("status", ["finished", "cancelled"])
@pytest.mark.parametrize("command", ENDED_COMMANDS, ids=lambda c: c[0])
def test_changing_commands_refuse_ended_runs_before_looking_anything_up(
        fast: InProcessCli, status: str, command: tuple[str, ...]) -> None:
    doc = fast.json("run", "flows/guess_game.py", "--run-id", "r1", "--input", '{"number": 7}')
    if status == "finished":
        fast.json("resolve", "r1", "ask_0", "7")
    else:
        fast.json("cancel", "r1")
    assert doc["run_id"] == "r1"
    before = fast.snapshot()
    args = [a.replace("RUN", "r1") for a in command]
    assert_error(fast(*args), 4, f"is {status}")  # 4, not 3: the status is checked first
    assert fast.snapshot() == before


# -- tick and worker exit 0 on failed runs; --debug; bugs ---------------------------------


def test_tick_reports_a_run_that_failed_and_exits_0(cli: Cli, fast: InProcessCli) -> None:
    doc = fast.start("flows/retrying.py", "r1")
    assert doc["status"] == "waiting" and doc["pending"][0]["kind"] == "retry"
    assert doc["pending"][0]["due_at"] == "2026-01-01T00:01:00Z"
    report = cli.json("tick", now=at(60))
    assert report["advanced"] == [{"run_id": "r1", "status": "failed"}]
    shown = cli("tick", now=at(120))
    assert shown.returncode == 0 and "0 due" in shown.stdout
    shown_doc = fast.json("show", "r1")
    assert shown_doc["status"] == "failed" and "service down" in shown_doc["error"]["message"]


def test_debug_shows_the_traceback_with_the_error_line(cli: Cli) -> None:
    result = cli("show", "nosuch", "--debug")
    assert result.returncode == 3 and result.stdout == ""
    assert "Traceback" in result.stderr and "RunNotFound" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: no run 'nosuch'")


@pytest.mark.stores("file")  # about files: no store involved
def test_a_usage_error_with_debug_still_exits_2(fast: InProcessCli) -> None:
    result = fast("run", "--debug")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: Missing argument 'FLOW'")


@pytest.mark.stores("file")  # about files: no store involved
def test_a_bug_in_tinywf_exits_70_with_an_internal_error_line(fast: InProcessCli,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from tinywf_cli.runtime.runtime import Runtime

    def broken(self: Runtime, run_id: str, last: int | None = None) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(Runtime, "get", broken)
    result = fast("show", "r1")
    assert result.returncode == 70 and result.stdout == ""
    assert result.stderr == ("error: internal error: ZeroDivisionError: division by zero "
                             "(run with --debug for the traceback)\n")
    debug = fast("show", "r1", "--debug")
    assert debug.returncode == 70 and "Traceback" in debug.stderr and "def broken" not in debug.stdout


def test_exit_codes_reach_the_shell_from_python_m(cli: Cli) -> None:
    result = subprocess.run([sys.executable, "-m", "tinywf_cli", "show", "nosuch", *cli.store_args],
                            cwd=cli.workspace, capture_output=True, text=True, check=False)
    assert_error(result, 3, "nosuch")
