"""Workflows of the limit and breaker proofs (``limits_flows.py:Class``), run by ``limits_driver.py``.

Every action appends a ``start`` and an ``end`` line (process, run, key, wall-clock time, a
token) to ``$TINYWF_LIMITS_LOGS/actions-<pid>.jsonl``, written whole with ``O_APPEND``, so
the test rebuilds each attempt's interval across processes (an attempt whose process was
killed has no end).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from tinywf_cli import ActionFailed, Breaker, Limit, Workflow, step
from tinywf_cli.authoring.commands import Command

Steps = Generator[Command, Any, Any]

RATED = Limit("rated", rate="20/s")
SLOTS = Limit("slots", concurrency=5)
CUSTOMER = Limit("customer", concurrency=1)
HELD = Limit("held", concurrency=2)
SERVICE = Breaker("service", failures=3, within=60, reset=1.5)


def logs() -> Path:
    return Path(os.environ["TINYWF_LIMITS_LOGS"])


def note(line: dict[str, Any]) -> None:
    fd = os.open(logs() / f"actions-{os.getpid()}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def act(run_id: str, key: str, seconds: float = 0.0, block: bool = False, fail_unless_up: bool = False) -> str:
    """An attempt: noted when it starts and ends; ``block`` holds the first attempt of the run (to
    be killed in it), ``fail_unless_up`` fails while the file ``up`` is missing (a service down)."""
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    note({"event": "start", "run": run_id, "key": key, "pid": os.getpid(), "token": token, "at": time.time()})
    marker = logs() / f"blocked-{run_id}"
    if block and not marker.exists():
        marker.write_text("in it")
        time.sleep(600)  # until killed
    time.sleep(seconds)
    ok = not fail_unless_up or (logs() / "up").exists()
    note({"event": "end", "run": run_id, "key": key, "pid": os.getpid(), "token": token, "at": time.time(),
          "ok": ok})
    if not ok:
        raise ConnectionError("the service is down")
    return token


class Rated(Workflow):
    """One action under ``rate="20/s"``."""

    @step
    def only(self) -> Steps:
        self.state["token"] = yield self.action("call", act, self.run_id, "call", limit=RATED)


class Slots(Workflow):
    """One action of 0.1 s under ``concurrency=5``."""

    @step
    def only(self) -> Steps:
        self.state["token"] = yield self.action("call", act, self.run_id, "call", 0.1, limit=SLOTS)


class PerCustomer(Workflow):
    """One action of 0.05 s under ``concurrency=1`` per customer."""

    @step
    def only(self) -> Steps:
        limit = CUSTOMER.key(self.state["customer"])
        self.state["token"] = yield self.action("call", act, self.run_id, "call", 0.05, limit=limit)


class Held(Workflow):
    """One action under ``concurrency=2``; with ``block`` its first attempt never returns."""

    @step
    def only(self) -> Steps:
        block = bool(self.state.get("block"))
        self.state["token"] = yield self.action("call", act, self.run_id, "call", 0.05, block, limit=HELD)


class Calls(Workflow):
    """One call to a service that may be down, through a breaker; a failure is caught."""

    @step
    def only(self) -> Steps:
        try:
            self.state["token"] = yield self.action("call", act, self.run_id, "call", 0.0, False, True,
                                                    breaker=SERVICE)
        except ActionFailed as exc:
            self.state["failed"] = exc.error_type
