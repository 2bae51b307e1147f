"""``tinywf wait RUN [--timeout] [--for ended|waiting]`` and ``Runtime.wait`` (contract section 11):
block until the run ended (or waits for an event), whoever advances it — another process, on
either store — then print its document; exits 0/1/4, 6 on timeout (stdout empty), 3 for no run."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import pytest
from clihelpers import REAL_CLOCK, RUN_KEYS, Cli, InProcessCli, assert_error, at, describe, one_document

from tinywf_cli import RunNotFound, WaitTimeout, Workflow, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]


def test_wait_prints_the_document_and_exits_by_status(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/simple.py", "s1")
    doc = fast.json("wait", "s1")
    assert set(doc) == RUN_KEYS and doc["status"] == "finished"
    fast.start("flows/fail.py", "f1", code=1, env={"TINYWF_TEST_FAIL": "1"})
    assert fast.json("wait", "f1", code=1)["status"] == "failed"
    fast.start("flows/echo.py", "c1")
    fast.json("cancel", "c1")
    cancelled = fast("wait", "c1", "--json")
    assert cancelled.returncode == 4, describe(cancelled)
    assert one_document(cancelled.stdout)["status"] == "cancelled"
    assert cancelled.stderr.strip() == "error: run 'c1' was cancelled"
    people = cli("wait", "s1")  # the installed command
    assert people.returncode == 0 and "run s1 (flows/simple.py:Simple) finished" in people.stdout


def test_a_timeout_is_exit_6_with_nothing_on_stdout_and_no_run_is_exit_3(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/echo.py", "e1")
    before = fast.snapshot()
    assert_error(fast("wait", "e1", "--timeout", "30"), 6, "run 'e1' had not ended after 30s; it is waiting")
    assert_error(fast("wait", "e1", "--timeout", "0", "--json"), 6)
    assert fast.snapshot() == before  # waiting changes nothing
    assert_error(fast("wait", "ghost", "--timeout", "1"), 3, "no run 'ghost'")
    assert_error(fast("wait", "e1", "--for", "done"), 2, "--for must be ended or waiting")
    assert_error(fast("wait", "e1", "--timeout", "nan"), 2, "--timeout")
    assert_error(fast("wait", "bad id!"), 2)


def test_for_waiting_returns_once_the_run_waits_for_an_event(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/fifo.py", "q1")  # a timer first, then an event
    assert_error(fast("wait", "q1", "--for", "waiting", "--timeout", "5"), 6, "waited for an event")
    waiter = cli.spawn(("wait", "q1", "--for", "waiting", "--json"), REAL_CLOCK, None)
    fast.json("tick", now=at(61))  # another process moves the run on to its event
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    doc = json.loads(out)
    assert doc["status"] == "waiting" and doc["pending"][0]["kind"] == "event"
    assert fast.json("wait", "q1", "--for", "waiting")["pending"][0]["key"] == "item"


@pytest.mark.stores("file", "postgres")
def test_wait_wakes_when_another_process_ends_the_run(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/echo.py", "w1")
    waiter = cli.spawn(("wait", "w1", "--json", "--timeout", "120"), REAL_CLOCK, None)
    # the waiter may or may not be watching yet: either way it must come back with the end
    assert fast.json("resolve", "w1", "value", '"done"')["status"] == "finished"
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert json.loads(out)["state"] == {"value": "done"}


@pytest.mark.stores("file", "postgres")
def test_a_store_watch_wakes_on_a_change_from_another_process(cli: Cli, fast: InProcessCli) -> None:
    from tinywf_cli.stores import open_store

    fast.start("flows/echo.py", "w2")
    fast.start("flows/echo.py", "other")
    store = open_store(cli.target)
    stop = threading.Event()
    try:
        with store.watch("w2") as watch:  # type: ignore[attr-defined]
            assert watch.wait(0.01, stop) is False  # nothing changed yet
            fast.json("send", "other", "value", "1")  # another run: not this watch's business
            assert watch.wait(0.2, stop) is False
            fast.json("send", "w2", "value", "1")
            assert watch.wait(30, stop) is True
            assert getattr(watch, "notified", True)  # inotify on Linux, not a poll of the files
    finally:
        store.close()


def test_runtime_wait_in_memory_wakes_on_a_commit_from_another_thread(rt: MemoryRuntime) -> None:
    class Ask(Workflow):
        @step
        def ask(self) -> Steps:
            self.state["v"] = yield self.wait_event("v")

    rt.start(Ask, run_id="m")
    with pytest.raises(WaitTimeout) as caught:
        rt.wait("m", timeout=3600)  # the manual clock jumps to the timeout
    assert caught.value.exit_code == 6 and caught.value.status == "waiting"
    assert rt.clock.now() == at_time(rt, 3600)
    assert rt.wait("m", until="waiting").status == "waiting"
    answer = threading.Timer(0.05, lambda: rt.resolve("m", "v", 7))
    answer.start()
    try:
        assert rt.wait("m").state == {"v": 7}
    finally:
        answer.join()
    with pytest.raises(RunNotFound):
        rt.wait("nobody")


def at_time(rt: MemoryRuntime, seconds: float) -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
