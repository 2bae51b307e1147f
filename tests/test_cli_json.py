"""Contract §4, the ``--json`` documents: every command prints exactly one document on
stdout with exactly the contract's keys, times in UTC, through the installed command."""

from __future__ import annotations

import pytest
from clihelpers import (
    ADVANCED_KEYS,
    LIST_KEYS,
    RUN_KEYS,
    SHOW_KEYS,
    SKIPPED_KEYS,
    SUMMARY_KEYS,
    TICK_KEYS,
    Cli,
    InProcessCli,
    assert_run_document,
    assert_times,
    at,
    describe,
    one_document,
)

#: Every test here runs on a state directory and on PostgreSQL, unless marked for one.
pytestmark = pytest.mark.stores("file", "postgres")


def test_run_prints_the_run_document(cli: Cli) -> None:
    doc = assert_run_document(cli.start("flows/simple.py", "s1"))
    assert doc["run_id"] == "s1"
    assert doc["workflow"] == "flows/simple.py:Simple"
    assert doc["status"] == "finished" and doc["pending"] == [] and doc["error"] is None
    assert doc["created_at"] == "2026-01-01T00:00:00Z"


def test_run_waiting_on_an_event_lists_it_as_pending(cli: Cli) -> None:
    doc = assert_run_document(cli.start("flows/guess_game.py", "g1", "--input", '{"number": 42}'))
    assert doc["status"] == "waiting"
    [pending] = doc["pending"]
    assert pending["kind"] == "event" and pending["key"] == "ask_0"
    assert pending["request"] == {"question": "Guess a number between 0 and 100"}
    assert pending["due_at"] is None


def test_run_waiting_on_a_timer_gives_its_due_time(cli: Cli) -> None:
    doc = assert_run_document(cli.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 90}'))
    [pending] = doc["pending"]
    assert pending["kind"] == "timer" and pending["key"] == "wait_before_promotion_email"
    assert pending["due_at"] == "2026-01-01T00:01:30Z" and pending["request"] is None


def test_run_that_fails_prints_its_document_with_the_error_and_exits_1(cli: Cli) -> None:
    doc = assert_run_document(cli.start("flows/fail.py", "f1", code=1, env={"TINYWF_TEST_FAIL": "1"}))
    assert doc["status"] == "failed"
    assert doc["error"]["type"] == "RuntimeError"
    assert "card declined" in doc["error"]["message"]


def test_resolve_prints_the_run_document(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    doc = assert_run_document(cli.json("resolve", "g1", "ask_0", "50"))
    assert doc["status"] == "waiting" and doc["state"]["answers"] == [50]
    assert [p["key"] for p in doc["pending"]] == ["ask_1"]


def test_send_prints_the_run_document_whether_it_resolves_or_queues(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/fail.py", "f1")
    resolved = assert_run_document(cli.json("send", "f1", "note", "thanks"))
    assert resolved["status"] == "finished" and resolved["state"]["note"] == "thanks"
    fast.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    queued = assert_run_document(cli.json("send", "g1", "ask_1", "42"))  # not reached yet: kept
    assert queued["status"] == "waiting" and queued["state"]["answers"] == []
    doc = fast.json("resolve", "g1", "ask_0", "10")  # the queued ask_1 answers the next question
    assert doc["status"] == "finished" and doc["state"]["answers"] == [10, 42]


def test_signal_cancel_and_retry_print_the_run_document_without_logs(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/interval_payment.py", "sub-1")
    signalled = assert_run_document(cli.json("signal", "sub-1", "add_usage", '{"item": "api", "amount": 3}'))
    assert signalled["state"]["current_usages"] == [{"item": "api", "amount": 3}]
    cancelled = assert_run_document(cli.json("cancel", "sub-1", "--reason", "moved away"))
    assert cancelled["status"] == "cancelled" and cancelled["pending"] == []
    fast.start("flows/fail.py", "f1", code=1, env={"TINYWF_TEST_FAIL": "1"})
    retried = assert_run_document(cli.json("retry", "f1"))
    assert retried["status"] == "waiting" and retried["error"] is None
    assert retried["state"]["receipt"] == "receipt-1"


def test_show_adds_the_audit_log(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    fast.json("resolve", "g1", "ask_0", "42")
    doc = assert_run_document(cli.json("show", "g1"), SHOW_KEYS)
    types = [entry["type"] for entry in doc["logs"]]
    assert types[0] == "start" and "transition" in types and "congratulation" in types
    congratulation = next(e for e in doc["logs"] if e["type"] == "congratulation")
    assert congratulation["step"] == "step_end" and congratulation["values"]["rounds"] == 1
    assert all(entry["at"].endswith("Z") for entry in doc["logs"])


def test_list_prints_the_runs_newest_first(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/simple.py", "older")
    fast.start("flows/guess_game.py", "newer", now=at(60))
    doc = cli.json("list", now=at(120))
    assert set(doc) == LIST_KEYS
    assert [r["run_id"] for r in doc["runs"]] == ["newer", "older"]
    for row in doc["runs"]:
        assert set(row) == SUMMARY_KEYS
    assert doc["runs"][0] == {"run_id": "newer", "workflow": "flows/guess_game.py:GuessGame", "status": "waiting",
                              "step": "step_play", "updated_at": "2026-01-01T00:01:00Z", "tags": {}}
    assert [r["run_id"] for r in fast.json("list", "--status", "finished")["runs"]] == ["older"]


def test_list_of_an_empty_state_directory(cli: Cli) -> None:
    assert cli.json("list") == {"runs": []}


def test_tick_prints_what_was_due_advanced_and_skipped(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60, "end_after": 60}')
    assert fast.json("tick") == {"due": 0, "advanced": [], "skipped": []}
    doc = cli.json("tick", now=at(60))
    assert set(doc) == TICK_KEYS
    assert doc["due"] == 1 and doc["skipped"] == []
    [advanced] = doc["advanced"]
    assert set(advanced) == ADVANCED_KEYS and advanced == {"run_id": "u1", "status": "waiting"}
    assert fast.json("tick", now=at(120))["advanced"] == [{"run_id": "u1", "status": "finished"}]


@pytest.mark.stores("file")  # about files: a record damaged by hand
def test_tick_reports_a_run_it_cannot_read_as_skipped(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60}')
    (cli.state_dir / "u1.json").write_text("{not json", encoding="utf-8")
    doc = cli.json("tick", now=at(60))
    assert doc["advanced"] == []
    [skipped] = doc["skipped"]
    assert set(skipped) == SKIPPED_KEYS and skipped["run_id"] == "u1"
    assert "u1.json" in skipped["reason"]


def test_flow_output_never_reaches_stdout_with_json(cli: Cli, fast: InProcessCli) -> None:
    for args in (("run", "flows/chatty.py", "--run-id", "c1"), ("signal", "c1", "poke"),
                 ("resolve", "c1", "reply", "hi")):
        result = cli(*args, "--json")
        assert result.returncode == 0, describe(result)
        doc = one_document(result.stdout)
        assert set(doc) == RUN_KEYS
        assert "chatty:" not in result.stdout
        assert "chatty:" in result.stderr
    assert fast.json("show", "c1")["state"] == {"said": "ok", "poked": True, "heard": "hi"}


def test_times_keep_fractions_and_the_utc_offset(cli: Cli, fast: InProcessCli) -> None:
    doc = fast.start("flows/simple.py", "s1", now="2026-03-04T05:06:07.250+00:00")
    assert doc["created_at"] == "2026-03-04T05:06:07.250000Z"
    assert assert_times(cli.json("show", "s1")) >= 4
