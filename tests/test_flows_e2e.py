"""The six example flows, each driven end to end through the installed ``tinywf`` command
with ``$TINYWF_NOW`` moving the clock."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
from datetime import timedelta

import pytest
from clihelpers import Cli, InProcessCli, at, clean_env, describe

DAY = timedelta(days=1)

#: Every flow runs on a state directory and on PostgreSQL.
pytestmark = pytest.mark.stores("file", "postgres")


def test_simple_finishes_with_its_computation(cli: Cli, fast: InProcessCli) -> None:
    doc = cli.start("flows/simple.py", "s1")
    assert doc["status"] == "finished" and doc["step"] == "step_end"
    assert doc["state"] == {"start_hit": True, "computed": math.pi, "end_hit": True}
    types = [e["type"] for e in fast.json("show", "s1")["logs"]]
    assert types.count("action") == 1 and "computed_hit" in types and types[-1] == "finish"


def test_guess_game_answered_by_resolve(cli: Cli, fast: InProcessCli) -> None:
    doc = cli.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    assert doc["status"] == "waiting" and doc["pending"][0]["key"] == "ask_0"
    low = cli.json("resolve", "g1", "ask_0", "10")
    assert low["pending"][0]["request"]["question"].startswith("10 is smaller than the number")
    high = cli.json("resolve", "g1", low["pending"][0]["resume_id"], "90")
    assert high["pending"][0]["request"]["question"].startswith("90 is greater than the number")
    done = cli.json("resolve", "g1", "ask_2", "42")
    assert done["status"] == "finished" and done["state"] == {"number": 42, "answers": [10, 90, 42]}
    logs = fast.json("show", "g1")["logs"]
    [congratulation] = [e for e in logs if e["type"] == "congratulation"]
    assert congratulation["values"]["rounds"] == 3 and congratulation["values"]["number"] == 42


def test_guess_game_2_loops_between_its_steps(cli: Cli) -> None:
    doc = cli.start("flows/guess_game_2.py", "g2", "--input", '{"number": 7}')
    [pending] = doc["pending"]
    assert pending["key"] == "guess" and doc["step"] == "step_ask"
    again = cli.json("resolve", "g2", "guess", "3")
    assert again["step"] == "step_ask" and again["state"]["hint"].startswith("3 is smaller")
    assert again["pending"][0]["resume_id"] != pending["resume_id"]  # a new visit of step_ask
    done = cli.json("resolve", "g2", "guess", "7")
    assert done["status"] == "finished" and done["state"]["answers"] == [3, 7]


def test_user_onboarding_ten_runs_started_by_a_shell_loop_finished_by_tick(cli: Cli, fast: InProcessCli) -> None:
    where = " ".join(shlex.quote(arg) for arg in cli.store_args)
    loop = ('for i in 0 1 2 3 4 5 6 7 8 9; do '
            f'tinywf run flows/user_onboarding.py {where} --run-id "onboard-$i" '
            '--input "{\\"email\\": \\"user$i@example.com\\"}" || exit 1; done')
    result = subprocess.run(["sh", "-c", loop], cwd=cli.workspace, env=clean_env(TINYWF_NOW=at(0)),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, describe(result)
    assert result.stdout.count("waits for timer wait_before_promotion_email") == 10
    runs = fast.json("list")["runs"]
    assert len(runs) == 10 and {r["status"] for r in runs} == {"waiting"}
    assert fast.json("tick", now=at(DAY / 2)) == {"due": 0, "advanced": [], "skipped": []}  # promotions: 1-3 days
    promotions = cli.json("tick", now=at(3 * DAY))  # every promotion is due by now
    assert len(promotions["advanced"]) == 10 and {a["status"] for a in promotions["advanced"]} == {"waiting"}
    ends = cli.json("tick", now=at(6 * DAY))  # and every end (1-2 days after the promotion)
    assert len(ends["advanced"]) == 10 and {a["status"] for a in ends["advanced"]} == {"finished"}
    assert {r["status"] for r in fast.json("list")["runs"]} == {"finished"}
    doc = fast.json("show", "onboard-3")
    assert doc["state"]["email"] == "user3@example.com" and len(doc["state"]["deliveries"]) == 2
    assert 86400 <= doc["state"]["promotion_after"] <= 3 * 86400
    assert any(e["type"] == "onboarded" for e in doc["logs"])


def test_interval_payment_bills_each_cycle_until_cancelled(cli: Cli, fast: InProcessCli) -> None:
    doc = cli.start("flows/interval_payment.py", "sub-1", "--input", '{"user_email": "ops@example.com"}')
    assert doc["pending"][0]["due_at"] == at(60)  # the first cycle closes a minute later
    cli.json("signal", "sub-1", "add_usage", '{"item": "api-calls", "amount": 120}')
    cli.json("signal", "sub-1", "add_usage", '{"item": "storage", "amount": 5}', now=at(30))
    first = cli.json("tick", now=at(60))
    assert first["advanced"] == [{"run_id": "sub-1", "status": "waiting"}]
    cli.json("signal", "sub-1", "add_usage", '{"item": "api-calls", "amount": 7}', now=at(90))
    cli.json("tick", now=at(120))
    cli.json("tick", now=at(180))  # a cycle without usage sends nothing
    cli.json("signal", "sub-1", "add_usage", '{"item": "api-calls", "amount": 1}', now=at(200))
    cancelled = cli.json("signal", "sub-1", "cancel_subscription", now=at(210))
    assert cancelled["state"]["status"] == "cancel" and cancelled["status"] == "waiting"
    last = cli.json("tick", now=at(240))  # the cycle closes: the last usage is billed, the run ends
    assert last["advanced"] == [{"run_id": "sub-1", "status": "finished"}]
    doc = fast.json("show", "sub-1")
    receipts = doc["state"]["receipts"]
    assert [r["cycle"] for r in receipts] == [0, 1, 3]
    assert [[(u["item"], u["amount"]) for u in r["usages"]] for r in receipts] == [
        [("api-calls", 120), ("storage", 5)], [("api-calls", 7)], [("api-calls", 1)]]
    assert [r["delivery_id"] for r in receipts] == ["rcpt-0-125", "rcpt-1-7", "rcpt-3-1"]
    assert [e["values"]["cycle"] for e in doc["logs"] if e["type"] == "bill_sent"] == [0, 1, 3]
    assert doc["state"]["current_usages"] == []
    late = fast("signal", "sub-1", "add_usage", '{"item": "late", "amount": 1}', now=at(300))
    assert late.returncode == 4 and "finished" in late.stderr


def test_dag_task_run_wait_ends_every_task(cli: Cli) -> None:
    result = cli("run", "flows/dag_task.py", "--run-id", "d1", "--wait", "--json")
    assert result.returncode == 0, describe(result)
    doc = json.loads(result.stdout)
    assert doc["status"] == "finished" and doc["step"] == "step_end"
    tasks = [task for chain in doc["state"]["sequences"] for task in chain]
    assert [t["id"] for t in tasks] == ["t1_1", "t1_2", "t1_3", "t2_1", "t3_1", "t3_2"]
    assert {t["status"] for t in tasks} == {"end"}
    for task in tasks:
        assert task["started_at"] <= task["ended_at"]
    assert doc["state"]["rounds"] > 1
    assert result.stderr.count("start task") == 6  # each task started once
