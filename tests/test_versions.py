"""Changing a flow under live runs: each kind of change goes on (with a patch marker or a
migration) or blocks the run with the fix named; ``check`` predicts it without executing or
writing anything; fixing the code and ``retry`` go on where the run stopped.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest
from clihelpers import REAL_CLOCK, Cli, InProcessCli, assert_error, at, describe, snapshot

HEADER = '''
import os

from pydantic import BaseModel

from tinywf_cli import Workflow, step


def effect(name):
    with open(os.environ["TINYWF_TEST_EFFECTS"], "a", encoding="utf-8") as f:
        f.write(name + "\\n")
    return name
'''

#: The same flow before and after each kind of change: (v1 body, v2 body).
CHANGES: dict[str, tuple[str, str]] = {}

CHANGES["new-yield"] = ('''
class Flow(Workflow):
    @step
    def work(self):
        self.state["a"] = yield self.action("a", effect, "a")
        self.state["go"] = yield self.wait_event("go")
''', '''
class Flow(Workflow):
    @step
    def work(self):
        self.state["a"] = yield self.action("a", effect, "a")
        self.state["extra"] = yield self.action("extra", effect, "extra")
        self.state["go"] = yield self.wait_event("go")
''')

CHANGES["new-yield-patched"] = (CHANGES["new-yield"][0], '''
class Flow(Workflow):
    @step
    def work(self):
        self.state["a"] = yield self.action("a", effect, "a")
        if self.patched("extra-call"):
            self.state["extra"] = yield self.action("extra", effect, "extra")
        self.state["go"] = yield self.wait_event("go")
''')

CHANGES["removed-step"] = ('''
class Flow(Workflow):
    @step
    def first(self):
        yield self.action("a", effect, "a")
        return self.second

    @step
    def second(self):
        self.state["go"] = yield self.wait_event("go")
''', '''
class Flow(Workflow):
    @step
    def first(self):
        yield self.action("a", effect, "a")
        return None
''')

CHANGES["renamed-field"] = ('''
class Person(BaseModel):
    name: str = "Ada"


class Flow(Workflow[Person]):
    @step
    def work(self):
        yield self.action("a", effect, "a")
        yield self.wait_event("go")
''', '''
class Person(BaseModel):
    full_name: str


class Flow(Workflow[Person]):
    @step
    def work(self):
        yield self.action("a", effect, "a")
        yield self.wait_event("go")
''')

CHANGES["renamed-field-migrated"] = (CHANGES["renamed-field"][0], '''
class Person(BaseModel):
    full_name: str


def rename(state):
    state["full_name"] = state.pop("name")
    return state


class Flow(Workflow[Person]):
    version = 2
    migrations = {1: rename}

    @step
    def work(self):
        yield self.action("a", effect, "a")
        yield self.wait_event("go")
''')

CHANGES["new-required-field-migrated"] = (CHANGES["renamed-field"][0], '''
class Person(BaseModel):
    name: str
    tier: str


class Flow(Workflow[Person]):
    version = 2
    migrations = {1: lambda state: {**state, "tier": "basic"}}

    @step
    def work(self):
        yield self.action("a", effect, "a")
        yield self.wait_event("go")
''')

CHANGES["version-without-migration"] = (CHANGES["renamed-field"][0], '''
class Person(BaseModel):
    name: str = "Ada"


class Flow(Workflow[Person]):
    version = 3
    migrations = {2: lambda state: state}

    @step
    def work(self):
        yield self.action("a", effect, "a")
        yield self.wait_event("go")
''')

CHANGES["rolled-back"] = (CHANGES["new-required-field-migrated"][1], CHANGES["renamed-field"][0])

#: What each change does to a run waiting across it: None goes on, else the fix the error names.
OUTCOMES: dict[str, tuple[str, str] | None] = {
    "new-yield": ("NonDeterminismError", "self.patched("),
    "new-yield-patched": None,
    "removed-step": ("StepRemoved", "add the step back"),
    "renamed-field": ("StateMismatch", "add a migration"),
    "renamed-field-migrated": None,
    "new-required-field-migrated": None,
    "version-without-migration": ("MigrationMissing", "migrations[1]"),
    "rolled-back": ("CodeOlderThanRun", "deploy"),
}


def write_flow(cli: Cli, body: str) -> None:
    path = cli.workspace / "flows" / "changing.py"
    path.write_text(HEADER.lstrip() + body, encoding="utf-8")
    stamp = path.stat().st_mtime_ns + 1_000_000  # a rewrite is seen even within the clock's grain
    os.utime(path, ns=(stamp, stamp))


def effects(cli: Cli) -> Counter[str]:
    path = cli.workspace / "effects"
    return Counter(path.read_text().split()) if path.exists() else Counter()


@pytest.fixture
def env(cli: Cli) -> dict[str, str]:
    return {"TINYWF_TEST_EFFECTS": str(cli.workspace / "effects")}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_under_a_waiting_run_goes_on_or_blocks_as_check_predicted(
        cli: Cli, env: dict[str, str], change: str) -> None:
    old, new = CHANGES[change]
    fast = InProcessCli(cli.workspace, cli.state_dir)
    write_flow(cli, old)
    given = ("--input", '{"name": "Ada", "tier": "gold"}') if change == "rolled-back" else ()
    assert fast.start("flows/changing.py", "r1", *given, env=env)["status"] == "waiting"
    assert effects(cli) == {"a": 1}
    write_flow(cli, new)
    before = snapshot(cli.state_dir)
    result = cli("check", "--json", env=env)
    report = json.loads(result.stdout)
    expected = OUTCOMES[change]
    assert result.returncode == (0 if expected is None else 1), describe(result)
    [verdict] = report["runs"]
    assert verdict["run_id"] == "r1" and verdict["ok"] is (expected is None)
    assert snapshot(cli.state_dir) == before and effects(cli) == {"a": 1}  # nothing executed, nothing written
    # the real thing, now: the same verdict, for the same reason
    result = cli("resolve", "r1", "go", "1", "--json", env=env)
    doc = json.loads(result.stdout) if result.stdout else None
    if expected is None:
        assert result.returncode == 0 and doc is not None and doc["status"] == "finished", describe(result)
        assert doc["version"] == (2 if "migrated" in change else 1)
        assert effects(cli) == {"a": 1}  # the patched-in call is not made for a run recorded without it
    else:
        kind, fix = expected
        if kind in ("StepRemoved", "StateMismatch", "MigrationMissing", "CodeOlderThanRun"):
            assert result.returncode in (1, 3), describe(result)
            doc = fast.json("show", "r1") if result.returncode == 3 else doc
            if result.returncode == 3:  # nothing to resolve: the replay was not even started; tick meets it
                fast.json("tick", now=at(1))
                doc = fast.json("show", "r1")
        assert doc is not None
        assert doc["status"] == "blocked", describe(result)
        assert doc["error"]["type"] == kind and fix in doc["error"]["message"]
        assert doc["error"]["message"] == verdict["reason"] or verdict["reason"] in doc["error"]["message"]
        assert effects(cli) == {"a": 1}


def test_a_blocked_run_goes_on_where_it_stopped_once_the_code_is_fixed(cli: Cli, env: dict[str, str]) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    write_flow(cli, CHANGES["new-yield"][0])
    fast.start("flows/changing.py", "r1", env=env)
    write_flow(cli, CHANGES["new-yield"][1])
    assert fast.json("resolve", "r1", "go", "1", code=1, env=env)["status"] == "blocked"
    assert fast.json("list", "--status", "blocked")["runs"][0]["run_id"] == "r1"
    assert fast.json("tick", now=at(3600), env=env)["due"] == 0  # tick leaves blocked runs alone
    assert_error(fast("resolve", "r1", "go", "1", env=env), 4, "blocked")
    write_flow(cli, CHANGES["new-yield-patched"][1])
    assert fast.json("check", env=env)["runs"] == [{"run_id": "r1", "ok": True, "reason": None}]
    retried = fast.json("retry", "r1", env=env)
    assert retried["status"] == "finished"  # the answer given as it blocked was kept: its wait took it
    assert effects(cli) == {"a": 1}  # the completed action never ran again
    # a run started on the new code takes the patched path
    fast.start("flows/changing.py", "r2", env=env)
    assert effects(cli) == {"a": 2, "extra": 1}
    again = fast.json("resolve", "r2", "go", "1", env=env)
    assert again["state"]["extra"] == "extra" and effects(cli) == {"a": 2, "extra": 1}


def test_a_migration_is_applied_once_saved_and_logged(cli: Cli, env: dict[str, str]) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    write_flow(cli, CHANGES["renamed-field-migrated"][0])
    fast.start("flows/changing.py", "r1", env=env)
    write_flow(cli, CHANGES["renamed-field-migrated"][1])
    doc = fast.json("resolve", "r1", "go", "1", env=env)
    assert doc["version"] == 2 and doc["state"] == {"full_name": "Ada"}
    logs = fast.json("show", "r1")["logs"]
    assert [e["values"] for e in logs if e["type"] == "migrated"] == [{"from": 1, "to": 2}]
    assert [e["type"] for e in logs].count("code") == 1  # the history names the code change


def test_a_signal_on_a_run_recorded_at_an_older_version_migrates_it_first(cli: Cli, env: dict[str, str]) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    write_flow(cli, CHANGES["renamed-field"][0] + '''
    from tinywf_cli import signal

    @signal
    def rename_to(self, name: str):
        self.state.name = name
''')
    fast.start("flows/changing.py", "r1", env=env)
    write_flow(cli, CHANGES["renamed-field-migrated"][1] + '''
    from tinywf_cli import signal

    @signal
    def rename_to(self, name: str):
        self.state.full_name = name
''')
    doc = fast.json("signal", "r1", "rename_to", '{"name": "Grace"}', env=env)
    assert doc["version"] == 2 and doc["state"] == {"full_name": "Grace"}


def test_check_names_each_blocked_run_and_skips_ended_ones(cli: Cli, env: dict[str, str]) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/simple.py", "done")
    write_flow(cli, CHANGES["new-yield"][0])
    fast.start("flows/changing.py", "r1", env=env)
    fast.start("flows/changing.py", "r2", env=env)
    write_flow(cli, CHANGES["new-yield"][1])
    human = cli("check", env=env)
    assert human.returncode == 1
    assert "r1" in human.stdout and "r2" in human.stdout and "done" not in human.stdout
    assert "would not replay" in human.stdout
    only = fast.json("check", "flows/simple.py", env=env)
    assert only == {"runs": []}
    assert_error(fast("check", "flows/nonesuch.py"), 2, "not found")


# -- fork -------------------------------------------------------------------------------------------------------

COUNTER = '''
class Flow(Workflow):
    @step
    def count(self):
        self.state["n"] = self.state.get("n", 0) + 1
        yield self.action(f"tick", effect, f"tick{self.state['n']}")
        return self.count if self.state["n"] < 5 else self.wait

    @step
    def wait(self):
        yield self.wait_event("go")
'''


def test_fork_reproduces_the_state_at_the_start_of_a_visit_and_leaves_the_original(
        cli: Cli, env: dict[str, str]) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    write_flow(cli, COUNTER)
    fast.start("flows/changing.py", "r1", env=env)
    original = {p.name: p.read_bytes() for p in cli.state_dir.iterdir() if p.name.startswith("r1")}
    history = fast.json("show", "r1")["logs"]
    doc = fast.json("fork", "r1", "--at-visit", "3", "--run-id", "r1-again", env=env)
    assert doc["run_id"] == "r1-again" and doc["parent"] is None
    logs = fast.json("show", "r1-again")["logs"]
    assert logs[0]["type"] == "forked" and logs[0]["values"] == {"from": "r1", "visit": 3}
    # visit 3 started with n = 2 (two visits of `count` before it): the fork counts from there
    transitions = [e["values"] for e in history if e["type"] == "transition"]
    assert transitions[1] == {"from": "count", "to": "count", "visit": 3}
    assert doc["state"]["n"] == 5 and doc["status"] == "waiting"
    assert effects(cli) == {"tick1": 1, "tick2": 1, "tick3": 2, "tick4": 2, "tick5": 2}  # its actions ran again
    assert {p.name: p.read_bytes() for p in cli.state_dir.iterdir() if p.name.startswith("r1") and
            not p.name.startswith("r1-again")} == original
    current = fast.json("fork", "r1", env=env)  # default: the current visit
    assert current["step"] == "wait" and current["state"] == {"n": 5}
    assert_error(fast("fork", "r1", "--at-visit", "99"), 2, "between 1 and 6")
    assert_error(fast("fork", "nonesuch"), 3, "nonesuch")


def test_fork_gives_the_visit_state_exactly(cli: Cli, env: dict[str, str]) -> None:
    from tinywf_cli.runtime.runtime import Runtime
    from tinywf_cli.stores.journal import VisitEntry

    fast = InProcessCli(cli.workspace, cli.state_dir)
    write_flow(cli, COUNTER)
    fast.start("flows/changing.py", "r1", env=env)
    visits = {e.n: e for e in Runtime(cli.state_dir).store.entries("r1") if isinstance(e, VisitEntry)}
    for n in (1, 2, 4):
        doc = fast.json("fork", "r1", "--at-visit", str(n), "--run-id", f"r1-v{n}", env=env)
        first = next(e for e in Runtime(cli.state_dir).store.entries(f"r1-v{n}") if isinstance(e, VisitEntry))
        assert (first.step, first.state) == (visits[n].step, visits[n].state)
        assert doc["status"] == "waiting"


# -- pause, resume, prune ---------------------------------------------------------------------------------------


def test_a_paused_run_is_skipped_by_tick_queues_events_and_resumes_once(cli: Cli, env: dict[str, str]) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60, "end_after": 60}')
    paused = fast.json("pause", "u1")
    assert paused["status"] == "paused"
    for minutes in (2, 3, 4):
        assert fast.json("tick", now=at(60 * minutes))["due"] == 0
    assert fast.json("send", "u1", "later", "1")["status"] == "paused"
    assert_error(fast("pause", "u1"), 4, "paused")
    resumed = fast.json("resume", "u1", now=at(300))
    assert resumed["status"] == "waiting"  # the promotion timer fired once, then the end timer waits
    logs = fast.json("show", "u1")["logs"]
    assert [e["type"] for e in logs].count("resumed") == 1
    assert sum(1 for e in logs if e["type"] == "action" and "promotion" in e["values"]["key"]) == 1
    assert_error(fast("resume", "u1"), 4, "only paused runs")
    fast.start("flows/simple.py", "s1")
    assert_error(fast("pause", "s1"), 4, "finished")


def test_prune_deletes_only_ended_runs_older_than_the_age(cli: Cli) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/simple.py", "old")
    fast.start("flows/guess_game.py", "waiting", "--input", '{"number": 3}')
    fast.start("flows/fail.py", "failed", code=1, env={"TINYWF_TEST_FAIL": "1"})
    fast.json("run", "flows/simple.py", "--run-id", "new", now=at(86400 * 29))
    before = snapshot(cli.state_dir)
    people = cli("prune", "--older-than", "7d", "--dry-run", now=at(86400 * 30))
    assert people.stdout.splitlines() == ["would delete old", "1 run would be deleted, 0 skipped"], describe(people)
    none = cli("prune", "--older-than", "90d", "--dry-run", now=at(86400 * 30))
    assert none.stdout.splitlines() == ["no run would be deleted, 0 skipped"], describe(none)
    dry = fast.json("prune", "--older-than", "7d", "--dry-run", now=at(86400 * 30))
    assert dry == {"pruned": ["old"], "skipped": []}
    assert snapshot(cli.state_dir) == before
    assert cli("prune", "--older-than", "90d", now=at(86400 * 30)).stdout.splitlines() == ["no run deleted, 0 skipped"]
    done = fast.json("prune", "--older-than", "7d", now=at(86400 * 30))
    assert done == {"pruned": ["old"], "skipped": []}
    assert not any(p.name.startswith("old") for p in cli.state_dir.iterdir())
    assert_error(fast("show", "old"), 3, "old")
    failed = fast.json("prune", "--older-than", "7d", "--status", "failed", now=at(86400 * 30))
    assert failed["pruned"] == ["failed"]
    assert_error(fast("prune", "--older-than", "7d", "--status", "waiting"), 2, "waiting")
    assert_error(fast("prune", "--older-than", "soon"), 2, "invalid age")
    assert {r["run_id"] for r in fast.json("list")["runs"]} == {"waiting", "new"}
    fast.start("flows/simple.py", "old")  # the id can be used again, with nothing of the old run
    assert fast.json("show", "old")["logs"][0]["type"] == "start"


# -- a long-running worker picks up a deploy ---------------------------------------------------------------------

NAPPER = '''
class Flow(Workflow):
    @step
    def nap(self):
        yield self.sleep("nap", float(os.environ.get("NAP", "0.3")) if self.run_id == "early" else 4.0)
        self.state["said"] = yield self.action("say", effect, "{word}")
'''


def test_a_worker_runs_the_code_deployed_while_it_runs(cli: Cli, env: dict[str, str]) -> None:
    write_flow(cli, NAPPER.replace("{word}", "old"))
    real = dict(env)  # the real clock: the worker must wait between the two runs
    for run_id in ("early", "late"):
        result = cli("run", "flows/changing.py", "--run-id", run_id, "--json", now=REAL_CLOCK, env=real)
        assert result.returncode == 0, describe(result)
    proc = cli.spawn(("worker", "--json", "--poll", "0.1"), REAL_CLOCK, real)
    fast = InProcessCli(cli.workspace, cli.state_dir)
    try:
        deadline = time.monotonic() + 30
        while fast.json("show", "early", now=REAL_CLOCK)["status"] != "finished" and time.monotonic() < deadline:
            time.sleep(0.05)
        write_flow(cli, NAPPER.replace("{word}", "new"))
        while fast.json("show", "late", now=REAL_CLOCK)["status"] != "finished" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    late = fast.json("show", "late", now=REAL_CLOCK)
    assert fast.json("show", "early", now=REAL_CLOCK)["state"] == {"said": "old"}
    assert late["state"] == {"said": "new"}
    codes = [e["values"] for e in late["logs"] if e["type"] == "code"]
    assert len(codes) == 1 and codes[0]["from"] != codes[0]["to"]
