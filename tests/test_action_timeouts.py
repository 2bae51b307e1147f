"""Action timeouts and heartbeats (contract section 11): an attempt that has not returned after
``timeout`` fails with ``ActionTimeout`` and is retried per its ``Retry``; an ``async def`` is
cancelled, a plain function's late result is discarded; ``heartbeat(details)`` reaches the next
attempt as ``last_heartbeat()``; a hung action does not hold up the other runs of a ``tick
--concurrency 8``; on PostgreSQL a heartbeating action keeps its claim past the lease, a silent
one is taken over and its late result refused.

The actions wait on events the tests set (or on short real sleeps where another process must
see them): an action's timeout is real time, whatever the run's clock says."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from clihelpers import TINYWF, Cli, InProcessCli, at, clean_env, describe

from tinywf_cli import (
    ActionFailed,
    ActionTimeout,
    Retry,
    Runtime,
    Workflow,
    heartbeat,
    last_heartbeat,
    step,
)
from tinywf_cli.authoring.commands import Action, Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event the hung actions of a test wait on, set when the test ends."""
    event = threading.Event()
    yield event
    event.set()


def test_an_attempt_past_its_timeout_fails_with_action_timeout_and_is_retried(
        rt: MemoryRuntime, release: threading.Event) -> None:
    calls: list[str] = []

    def pay() -> str:
        calls.append("called")
        if len(calls) == 1:
            release.wait(30)  # the payment service never answers
            return "late"
        return "paid"

    class Checkout(Workflow):
        @step
        def charge(self) -> Steps:
            self.state["receipt"] = yield self.action("pay", pay, timeout=0.2, retry=Retry(attempts=2, delay=60))

    run = rt.start(Checkout, run_id="c")
    assert run.status == "waiting" and [p.kind for p in run.pending] == ["retry"]
    (retry,) = [e.values for e in rt.get("c").logs if e.type == "retry"]
    assert retry["error"] == {"type": "ActionTimeout",
                              "message": "attempt 1 of action 'pay' did not return within 0.2s"}
    rt.clock.advance(61)
    rt.tick()
    assert rt.get("c").state == {"receipt": "paid"}
    release.set()  # the first call returns now: what it returns goes nowhere
    time.sleep(0.05)
    assert rt.get("c").state == {"receipt": "paid"} and calls == ["called", "called"]


def test_a_timeout_out_of_attempts_raises_action_failed_and_non_retryable_stops_at_once(
        rt: MemoryRuntime, release: threading.Event) -> None:
    def hang() -> None:
        release.wait(30)

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            try:
                yield self.action("hang", hang, timeout=0.1, retry=Retry(attempts=5, delay=0,
                                                                       non_retryable=(ActionTimeout,)))
            except ActionFailed as failed:
                self.state["failed"] = [failed.error_type, failed.attempts]

    assert rt.start(Flow).state == {"failed": ["ActionTimeout", 1]}


def test_an_async_action_past_its_timeout_is_cancelled(rt: MemoryRuntime) -> None:
    seen: list[str] = []

    async def fetch() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "never"

    async def quick() -> str:
        await asyncio.sleep(0)
        return "quick"

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["quick"] = yield self.action("quick", quick, timeout=5)
            try:
                yield self.action("fetch", fetch, timeout=0.1)
            except ActionFailed as failed:
                self.state["error"] = failed.error_type

    assert rt.start(Flow).state == {"quick": "quick", "error": "ActionTimeout"}
    assert seen == ["cancelled"]


def test_the_last_heartbeat_of_a_failed_attempt_reaches_the_next_even_after_a_restart(
        open_runtime: Callable[[], Runtime], release: threading.Event) -> None:
    seen: list[Any] = []

    def copy_rows() -> int:
        start = last_heartbeat() or 0
        seen.append(start)
        for row in range(start, start + 3):
            heartbeat(row + 1)
        if start == 0:
            release.wait(30)  # hangs after three rows
        return start

    class Copy(Workflow):
        @step
        def only(self) -> Steps:
            self.state["resumed_at"] = yield self.action("copy", copy_rows, timeout=0.2,
                                                         retry=Retry(attempts=2, delay=30))

    first = open_runtime()
    first.start(Copy, run_id="h")
    (entry,) = [e.values for e in open_runtime().get("h").logs if e.type == "retry"]
    assert entry["error"]["heartbeat"] == 3  # kept in the run's record
    first.clock.advance(31)  # type: ignore[attr-defined]
    first.tick()
    assert open_runtime().get("h").state == {"resumed_at": 3} and seen == [0, 3]


def test_heartbeat_outside_an_action_does_nothing_and_bad_details_fail_the_attempt(rt: MemoryRuntime) -> None:
    heartbeat({"ignored": True})
    assert last_heartbeat() is None

    def bad() -> None:
        heartbeat(object())

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            try:
                yield self.action("bad", bad)
            except ActionFailed as failed:
                self.state["error"] = [failed.error_type, failed.message]

    error = rt.start(Flow).state["error"]
    assert error[0] == "TypeError" and "details must be JSON" in error[1]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "1s"])
def test_a_bad_timeout_is_refused(timeout: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="timeout"):
        Action("a", print, (), {}, None, timeout=timeout)


# -- through the command ----------------------------------------------------------------------------


HUNG = '''
"""An action that sleeps ten seconds the first time, bounded to a fraction of one."""

import time
from pathlib import Path

from tinywf_cli import Retry, Workflow, step


def call(name: str) -> str:
    marker = Path(f"called-{name}")
    if not marker.exists():
        marker.write_text("once")
        time.sleep(10)
    return "answered"


class Hung(Workflow):
    """Wait a minute, then call a service that hangs on the first call."""

    @step
    def wait(self):
        yield self.sleep("settle", 60)
        return self.call

    @step
    def call(self):
        self.state["answer"] = yield self.action("call", call, self.run_id, timeout=0.5,
                                                 retry=Retry(attempts=2, delay=0))
        return None


class Quick(Workflow):
    """Wait a minute, then answer at once."""

    @step
    def wait(self):
        yield self.sleep("settle", 60)
        self.state["answer"] = yield self.action("quick", lambda: "quick")
        return None
'''


@pytest.fixture
def hung(cli: Cli) -> InProcessCli:
    (cli.workspace / "flows" / "hung.py").write_text(HUNG.lstrip(), encoding="utf-8")
    return InProcessCli(cli.workspace, cli.state_dir)


def test_a_hung_action_times_out_is_retried_and_does_not_hold_up_the_other_runs(cli: Cli, hung: InProcessCli) -> None:
    hung.start("flows/hung.py:Hung", "slow")
    for n in range(5):
        hung.start("flows/hung.py:Quick", f"quick-{n}")
    started = time.monotonic()
    result = cli("tick", "--concurrency", "8", "--json", now=at(61), timeout=30)
    took = time.monotonic() - started
    assert result.returncode == 0, describe(result)
    report = json.loads(result.stdout)
    order = [a["run_id"] for a in report["advanced"]]
    assert order[-1] == "slow" and sorted(order[:-1]) == [f"quick-{n}" for n in range(5)]
    assert {a["status"] for a in report["advanced"]} == {"finished"}
    assert took < 9, took  # neither the tick nor its process waited out the 10 s call
    doc = hung.json("show", "slow")
    assert doc["state"] == {"answer": "answered"}
    assert [e["values"]["error"]["type"] for e in doc["logs"] if e["type"] == "retry"] == ["ActionTimeout"]


# -- PostgreSQL: a heartbeat keeps the claim, silence loses it ----------------------------------------------


CLAIMED = '''
"""An action of 2.5 s (the first time it runs), heartbeating or not, with a lease of 1 s."""

import os
import time
from pathlib import Path

from tinywf_cli import Workflow, heartbeat, step


def work(beat: bool) -> int:
    logs = Path(os.environ["TINYWF_TEST_LOGS"])
    first = not (logs / "started").exists()
    (logs / "started").write_text(str(os.getpid()))
    if first:
        for _ in range(25):
            time.sleep(0.1)
            if beat:
                heartbeat()
    return os.getpid()


class Claimed(Workflow):
    """One long action."""

    @step
    def only(self):
        self.state["by"] = yield self.action("work", work, self.state["beat"])
        return None
'''


def race(cli: Cli, tmp_path: Path, beat: bool) -> tuple[subprocess.CompletedProcess[str], list[str], int, Any]:
    """``tinywf run`` (lease 1 s) runs the 2.5 s action while this process ticks the store (lease
    1 s) until that command ends; its outcome, the runs this process advanced, the command's pid,
    and the run's state as it was left."""
    import os

    assert cli.store is not None
    (cli.workspace / "flows" / "claimed.py").write_text(CLAIMED.lstrip(), encoding="utf-8")
    logs = tmp_path / "logs"
    logs.mkdir()
    argv = [TINYWF, "run", "flows/claimed.py", "--store", cli.store, "--lease", "1", "--run-id", "c1",
            "--input", json.dumps({"beat": beat}), "--json"]
    env = clean_env(TINYWF_TEST_LOGS=str(logs))
    runner = subprocess.Popen(argv, cwd=cli.workspace, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    advanced: list[str] = []
    runtime = Runtime(cli.store, lease=1)
    saved = os.environ.get("TINYWF_TEST_LOGS")
    os.environ["TINYWF_TEST_LOGS"] = str(logs)  # a takeover runs the action here
    try:
        deadline = time.monotonic() + 30
        while not (logs / "started").exists():
            assert time.monotonic() < deadline and runner.poll() is None, runner.stderr
            time.sleep(0.02)
        while runner.poll() is None:
            assert time.monotonic() < deadline
            advanced += [a.run_id for a in runtime.tick().advanced]
            time.sleep(0.1)
        out, err = runner.communicate()
        state = runtime.get("c1").state
    finally:
        if saved is None:
            os.environ.pop("TINYWF_TEST_LOGS", None)
        else:
            os.environ["TINYWF_TEST_LOGS"] = saved
        runtime.close()
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    return subprocess.CompletedProcess(argv, runner.returncode, out, err), advanced, runner.pid, state


@pytest.mark.stores("postgres")
def test_a_heartbeating_action_keeps_its_claim_past_the_lease(cli: Cli, tmp_path: Path) -> None:
    result, advanced, runner, state = race(cli, tmp_path, beat=True)
    assert result.returncode == 0, describe(result)
    assert json.loads(result.stdout)["status"] == "finished"
    assert advanced == [] and state == {"beat": True, "by": runner}  # never taken over


@pytest.mark.stores("postgres")
def test_a_silent_action_is_taken_over_after_the_lease_and_its_late_result_refused(cli: Cli, tmp_path: Path) -> None:
    import os

    result, advanced, _, state = race(cli, tmp_path, beat=False)
    assert advanced == ["c1"]  # this process took the run over and ran the action again
    assert result.returncode == 4 and "lost its claim" in result.stderr, describe(result)
    assert state == {"beat": False, "by": os.getpid()}  # the late result went nowhere
