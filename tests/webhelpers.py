"""Helpers for the web tests: a real ``tinywf serve`` process in a workspace, and an HTTP client.

``Server`` starts ``tinywf serve --port 0 --json`` on a ``Cli``'s store (the server picks a
free port and prints its URL), with ``$TINYWF_API_TOKEN`` and ``$TINYWF_NOW`` set, and stops it at the end.
"""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from clihelpers import NOW, TINYWF, Cli, clean_env, make_workspace

TOKEN = "test-token-0123456789"
LINK = re.compile(r"http://\S+/link/[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")

#: Flows for the web tests, beside the examples (``expense_approval.py`` sends a link itself).
WEB_FLOWS: dict[str, str] = {
    "choices.py": '''
"""Waits for a colour (an enum), then a count (an int 1..10), then a name (text)."""

from enum import Enum
from typing import Annotated

from pydantic import Field

from tinywf_cli import Workflow, signal, step


class Colour(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Choices(Workflow):
    """Three questions of three types."""

    @step
    def ask(self):
        self.state["colour"] = yield self.wait_event("colour", type=Colour, question="Which colour?")
        self.state["count"] = yield self.wait_event("count", type=Annotated[int, Field(ge=1, le=10)],
                                                    question="How many?")
        self.state["name"] = yield self.wait_event("name", type=str, question="Your name?")
        return None

    @signal
    def note(self, text: str):
        self.state["note"] = text
''',
    "approve.py": '''
"""Two approvals in a row, then done."""

from tinywf_cli import Workflow, step


class TwoApprovals(Workflow):
    """Ask the first approver, then the second."""

    @step
    def first(self):
        self.state["first"] = yield self.wait_event("first", type=bool, question="First approval?")
        return self.second

    @step
    def second(self):
        self.state["second"] = yield self.wait_event("second", type=bool, question="Second approval?")
        return None
''',
    "markup.py": '''
"""A question and a request holding markup."""

from tinywf_cli import Workflow, signal, step


class Markup(Workflow):
    """Asks in HTML it must not run."""

    @step
    def ask(self):
        self.state["answer"] = yield self.wait_event("answer", question="<script>alert(1)</script> ok?",
                                                     detail="<b>bold</b>")
        return None

    @signal
    def note(self, text: str):
        self.state["note"] = text
''',
}


def add_web_flows(workspace: Path) -> None:
    """Write the web tests' flows into ``workspace/flows``."""
    for name, source in WEB_FLOWS.items():
        (workspace / "flows" / name).write_text(source.lstrip("\n"), encoding="utf-8")


class Server:
    """A running ``tinywf serve`` over a workspace's store (its state directory, or its PostgreSQL URL).

    Example::

        with Server.start(cli) as server:
            server.api.get("/api/runs").json()
    """

    def __init__(self, proc: subprocess.Popen[str], url: str, cli: Cli, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.cli = cli
        self.log = log
        self.api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        self.anonymous = httpx.Client(base_url=url, timeout=30)

    @classmethod
    @contextmanager
    def start(cls, cli: Cli, *args: str, now: str = NOW, token: str | None = TOKEN) -> Iterator[Server]:
        """Start ``tinywf serve`` in ``cli``'s workspace; stop it (SIGTERM) when the block ends."""
        log = cli.workspace / f"serve-{time.monotonic_ns()}.log"
        env = clean_env(TINYWF_NOW=now, **({"TINYWF_API_TOKEN": token} if token else {}))
        with open(log, "w", encoding="utf-8") as err:
            proc = subprocess.Popen([TINYWF, "serve", *cli.store_args, "--port", "0", "--json", *args],
                                    cwd=cli.workspace, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            raise AssertionError(f"tinywf serve did not start:\n{log.read_text(encoding='utf-8')}")
        server = cls(proc, json.loads(line)["url"], cli, log)
        server.started = json.loads(line)
        try:
            yield server
        finally:
            server.stop()

    started: dict[str, Any]

    def stop(self) -> int:
        """SIGTERM the server and wait for it; returns its exit code."""
        self.api.close()
        self.anonymous.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def link(self, run_id: str, resume: str, *args: str, now: str | None = None) -> str:
        """``tinywf link RUN RESUME ARGS`` with this server as the base URL: the URL printed."""
        result = self.cli("link", run_id, resume, "--base-url", self.url, *args, now=now)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def path_of(self, url: str) -> str:
        """The path of a URL on this server."""
        assert url.startswith(self.url), url
        return url[len(self.url):]


def free_port() -> int:
    """A port nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- fixtures (imported by the web test modules) ---------------------------------------------------------


@pytest.fixture(scope="module", name="web_cli")
def web_cli_fixture(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """A workspace (examples, test flows, web flows) shared by one test module."""
    workspace = make_workspace(tmp_path_factory.mktemp("web"))
    add_web_flows(workspace)
    return Cli(workspace)


@pytest.fixture(scope="module", name="server")
def server_fixture(web_cli: Cli) -> Iterator[Server]:
    """One ``tinywf serve`` for the module (lock timeout 0.5 s, so conflicts answer fast)."""
    with Server.start(web_cli, "--lock-timeout", "0.5") as running:
        yield running
