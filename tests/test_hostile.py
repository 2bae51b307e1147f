"""One bad run never stops the others: hostile flows and damaged records beside healthy runs.

Each hostile run misbehaves once its first timer is due, so one ``tinywf tick`` meets all
of them together with twenty healthy runs. Side effects are counted in a file.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from clihelpers import Cli, InProcessCli, at, describe, snapshot

HOSTILE = '''
"""Flows that misbehave in every way one run can, once their first timer is due."""

import os
import sys

from tinywf_cli import Workflow, step


def effect(name):
    with open(os.environ["TINYWF_TEST_EFFECTS"], "a", encoding="utf-8") as f:
        f.write(name + "\\n")
    return name


def huge_result():
    effect("huge_result")
    return 10 ** 5000


def exit_zero():
    effect("exit_zero")
    sys.exit(0)


def exit_three():
    effect("exit_three")
    sys.exit(3)


def interrupt():
    effect("interrupt")
    raise KeyboardInterrupt


class Healthy(Workflow):
    @step
    def settle(self):
        yield self.sleep("settle", 60)
        return self.work

    @step
    def work(self):
        self.state["done"] = yield self.action("fine", effect, "fine")
        return None


class HugeState(Workflow):
    @step
    def settle(self):
        yield self.sleep("settle", 60)
        return self.work

    @step
    def work(self):
        yield self.action("mark", effect, "huge_state")
        self.state["x"] = 10 ** 5000
        yield self.sleep("again", 60)
        return None


class HugeResult(Workflow):
    @step
    def settle(self):
        yield self.sleep("settle", 60)
        return self.work

    @step
    def work(self):
        self.state["x"] = yield self.action("huge", huge_result)
        return None


class ExitZero(Workflow):
    @step
    def settle(self):
        yield self.sleep("settle", 60)
        return self.work

    @step
    def work(self):
        yield self.action("leave", exit_zero)
        return None


class ExitThree(Workflow):
    @step
    def settle(self):
        yield self.sleep("settle", 60)
        return self.work

    @step
    def work(self):
        yield self.action("leave", exit_three)
        return None


class Interrupt(Workflow):
    @step
    def settle(self):
        yield self.sleep("settle", 60)
        return self.work

    @step
    def work(self):
        yield self.action("stop", interrupt)
        return None


class EndlessSleep(Workflow):
    @step
    def settle(self):
        yield self.sleep("settle", 60)
        return self.work

    @step
    def work(self):
        yield self.action("mark", effect, "endless_sleep")
        yield self.sleep("forever", float("inf"))
        return None


class Spinner(Workflow):
    step_timeout = 1

    @step
    def settle(self):
        yield self.sleep("settle", 60)
        return self.work

    @step
    def work(self):
        yield self.action("mark", effect, "spinner")
        while True:
            pass
'''

#: Hostile run -> the side effect it performs once (and the error type that fails it).
KINDS = {
    "a-huge-state": ("HugeState", "huge_state", "FlowError"),
    "a-huge-result": ("HugeResult", "huge_result", "NotJSON"),
    "a-exit-zero": ("ExitZero", "exit_zero", "SystemExit"),
    "a-exit-three": ("ExitThree", "exit_three", "SystemExit"),
    "a-interrupt": ("Interrupt", "interrupt", "KeyboardInterrupt"),
    "a-endless-sleep": ("EndlessSleep", "endless_sleep", "ValueError"),
    "a-spinner": ("Spinner", "spinner", "StepTimeout"),
}
DAMAGED = ["a-bad-slot", "a-nan-state"]
HEALTHY = [f"z-healthy-{i:02d}" for i in range(20)]


def effects(workspace: Path) -> Counter[str]:
    path = workspace / "effects"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def damage(state: Path) -> None:
    """A slot whose due_at is no time, and a state holding NaN: both valid JSON (as Python writes it)."""
    record = json.loads((state / "a-bad-slot.json").read_text())
    for entry in record["tail"]:
        if "slot" in entry:
            entry["slot"]["due_at"] = "soon"
    (state / "a-bad-slot.json").write_text(json.dumps(record))
    text = (state / "a-nan-state.json").read_text()
    (state / "a-nan-state.json").write_text(text.replace('"state":{}', '"state":{"x":NaN}', 1))


@pytest.fixture
def crowd(tmp_path: Path) -> tuple[Cli, InProcessCli, dict[str, str]]:
    """Twenty healthy runs, one run of each hostile kind and two damaged records, all due at NOW + 60 s."""
    fast = InProcessCli(tmp_path)
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "hostile.py").write_text(HOSTILE.lstrip(), encoding="utf-8")
    env = {"TINYWF_TEST_EFFECTS": str(tmp_path / "effects")}
    for run_id, (cls, _, _) in KINDS.items():
        fast.start(f"flows/hostile.py:{cls}", run_id, env=env)
    for run_id in [*DAMAGED, *HEALTHY]:
        fast.start("flows/hostile.py:Healthy", run_id, env=env)
    damage(fast.state_dir)
    return Cli(tmp_path), fast, env


@pytest.mark.parametrize("concurrency", ["8", "1"])
def test_one_tick_advances_every_healthy_run_past_every_hostile_one(
        crowd: tuple[Cli, InProcessCli, dict[str, str]], concurrency: str) -> None:
    """With eight threads (the default) as with one: each hostile run fails alone, its side
    effect made once, and the spinner is stopped in whichever thread it spins."""
    cli, fast, env = crowd
    started = time.monotonic()
    result = cli("tick", "--json", "--concurrency", concurrency, now=at(60), env=env, timeout=120)
    assert result.returncode == 0, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    report = json.loads(result.stdout)
    advanced = {a["run_id"]: a["status"] for a in report["advanced"]}
    skipped = {s["run_id"]: s["reason"] for s in report["skipped"]}
    assert {r: advanced.get(r) for r in HEALTHY} == dict.fromkeys(HEALTHY, "finished")
    assert {r: advanced.get(r) for r in KINDS} == dict.fromkeys(KINDS, "failed")
    assert set(skipped) == set(DAMAGED)
    assert "due_at" in skipped["a-bad-slot"] and "NaN" in skipped["a-nan-state"]
    assert report["due"] == len(HEALTHY) + len(KINDS) + len(DAMAGED)
    assert time.monotonic() - started < 60  # the spinner was stopped after its step_timeout
    counts = effects(cli.workspace)
    assert counts == Counter({"fine": 20, **{effect: 1 for _, effect, _ in KINDS.values()}})
    for run_id, (_, _, error) in KINDS.items():
        doc = fast.json("show", run_id)
        assert doc["status"] == "failed" and doc["error"]["type"] == error, (run_id, doc["error"])
    # nothing hostile runs again; damaged records stay as they were and are reported again
    before = {name: (cli.state_dir / f"{name}.json").read_bytes() for name in DAMAGED}
    again = json.loads(cli("tick", "--json", now=at(3600), env=env).stdout)
    assert again["advanced"] == [] and {s["run_id"] for s in again["skipped"]} == set(DAMAGED)
    assert effects(cli.workspace) == counts
    assert {name: (cli.state_dir / f"{name}.json").read_bytes() for name in DAMAGED} == before


def test_a_run_with_a_state_too_large_to_read_back_fails_and_stays_readable(
        crowd: tuple[Cli, InProcessCli, dict[str, str]]) -> None:
    cli, fast, env = crowd
    cli("tick", now=at(60), env=env)
    doc = fast.json("show", "a-huge-state")
    assert doc["status"] == "failed" and "cannot be saved" in doc["error"]["message"]
    assert "digits" in doc["error"]["message"]
    assert "x" not in doc["state"]  # the last saved state, never one that cannot be read
    assert fast.json("cancel", "a-huge-state")["status"] == "cancelled"


@pytest.mark.parametrize("name", DAMAGED)
def test_a_damaged_record_is_exit_5_for_every_command_and_changes_nothing(
        crowd: tuple[Cli, InProcessCli, dict[str, str]], name: str) -> None:
    cli, fast, _ = crowd
    before = snapshot(cli.state_dir)
    commands: list[tuple[str, ...]] = [("resolve", name, "x", "1"), ("send", name, "x", "1"),
                                       ("signal", name, "x"), ("cancel", name), ("retry", name),
                                       ("pause", name), ("resume", name), ("fork", name)]
    if name == "a-nan-state":  # the head itself is damaged: reading it fails too
        commands.append(("show", name))
    for args in commands:
        result = fast(*args)
        assert result.returncode == 5, (args, describe(result))
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert snapshot(cli.state_dir) == before


def test_a_worker_keeps_going_past_hostile_runs(crowd: tuple[Cli, InProcessCli, dict[str, str]]) -> None:
    cli, fast, env = crowd
    proc = cli.spawn(("worker", "--json", "--poll", "0.2", "--concurrency", "8"), at(60), env)
    try:
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while len([r for r in seen if r in HEALTHY]) < len(HEALTHY) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.update({a["run_id"]: a["status"] for a in json.loads(line)["advanced"]})
        assert {r: seen.get(r) for r in HEALTHY} == dict.fromkeys(HEALTHY, "finished")
        time.sleep(0.5)
        assert proc.poll() is None, "the worker stopped"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert effects(cli.workspace)["exit_zero"] == 1
    assert fast.json("show", "a-exit-zero")["status"] == "failed"
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
