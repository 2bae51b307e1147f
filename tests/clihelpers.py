"""Helpers for the CLI tests: run the installed ``tinywf`` command in a workspace, check
its documents and errors, and snapshot a state directory.

A workspace is a temporary folder holding a copy of the example flows plus a few small
flows made for these tests (``flows/fail.py``, ``flows/echo.py``...); commands run with
the workspace as their working directory, ``--state-dir`` inside it and ``$TINYWF_NOW``
fixing the clock.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FLOWS = REPO / "flows"
BIN = Path(sys.executable).parent
NOW = "2026-01-01T00:00:00Z"
#: Pass as ``now=`` to run a command on the wall clock (no ``$TINYWF_NOW``).
REAL_CLOCK = "real"
#: The installed console script (the virtual environment's, else the one on PATH).
TINYWF = shutil.which("tinywf", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}") or "tinywf"

RUN_KEYS = {"run_id", "workflow", "version", "status", "step", "state", "pending", "error", "parent", "tags",
            "created_at", "updated_at"}
SHOW_KEYS = RUN_KEYS | {"logs"}
PENDING_KEYS = {"resume_id", "kind", "key", "request", "due_at"}
LOG_KEYS = {"at", "step", "type", "values"}
ERROR_KEYS = {"type", "message"}
LIST_KEYS = {"runs"}
SUMMARY_KEYS = {"run_id", "workflow", "status", "step", "updated_at", "tags"}
TICK_KEYS = {"due", "advanced", "skipped"}
ADVANCED_KEYS = {"run_id", "status"}
SKIPPED_KEYS = {"run_id", "reason"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)")
ANSI = re.compile(r"\x1b\[")

#: Small flows for the tests, beside the six examples.
TEST_FLOWS: dict[str, str] = {
    "fail.py": '''
"""Fails while $TINYWF_TEST_FAIL is set; otherwise charges, then waits for a note
(the note "boom" fails the run)."""

import os

from tinywf_cli import Workflow, signal, step


def charge() -> str:
    if os.environ.get("TINYWF_TEST_FAIL"):
        raise RuntimeError("card declined")
    return "receipt-1"


class Charge(Workflow):
    """Charge once, then wait for a note."""

    @step
    def pay(self):
        self.state["receipt"] = yield self.action("charge", charge)
        return self.note

    @step
    def note(self):
        note = yield self.wait_event("note", type=str, question="A note?")
        if note == "boom":
            raise ValueError("the note went boom")
        self.state["note"] = note
        return None

    @signal
    def tag(self, label: str):
        self.state["label"] = label
''',
    "retrying.py": '''
"""An action that always fails, retried once a minute later."""

from tinywf_cli import Retry, Workflow, step


def flaky() -> int:
    raise ConnectionError("service down")


class Retrying(Workflow):
    """Two attempts, 60 seconds apart."""

    @step
    def call(self):
        yield self.action("flaky", flaky, retry=Retry(attempts=2, delay=60))
        return None
''',
    "echo.py": '''
"""Waits for one value of any JSON type and keeps it in the state."""

from tinywf_cli import Workflow, step


class Echo(Workflow):
    """Keep whatever value arrives."""

    @step
    def ask(self):
        self.state["value"] = yield self.wait_event("value", question="Any value?")
        return None
''',
    "chatty.py": '''
"""Prints to stdout everywhere flow code runs: at import, in a step, an action, a signal."""

from tinywf_cli import Workflow, signal, step

print("chatty: imported")


def shout() -> str:
    print("chatty: action")
    return "ok"


class Chatty(Workflow):
    """Talks a lot."""

    @step
    def talk(self):
        print("chatty: step")
        self.state["said"] = yield self.action("shout", shout)
        self.state["heard"] = yield self.wait_event("reply")
        return None

    @signal
    def poke(self):
        print("chatty: signal")
        self.state["poked"] = True
''',
    "fifo.py": '''
"""Sleeps a minute, then takes three items (lower-case words) from the "item" event, in order."""

from typing import Annotated

from pydantic import StringConstraints

from tinywf_cli import Workflow, step

Word = Annotated[str, StringConstraints(pattern=r"^[a-z]+$")]


class Queue(Workflow):
    """Collect three words, one per visit of ``take``."""

    @step
    def settle(self):
        yield self.sleep("settle", 60)
        return self.take

    @step
    def take(self):
        item = yield self.wait_event("item", type=Word, question="Next item?")
        self.state.setdefault("items", []).append(item)
        return self.take if len(self.state["items"]) < 3 else None
''',
    "slow.py": '''
"""An action that hangs the first time it runs (its process is meant to be killed)."""

import time
from pathlib import Path

from tinywf_cli import Workflow, step


def slow_call() -> str:
    marker = Path("slow-started")
    if not marker.exists():
        marker.write_text("started", encoding="utf-8")
        time.sleep(120)
    return "done"


class Slow(Workflow):
    """One slow action."""

    @step
    def call(self):
        self.state["result"] = yield self.action("slow_call", slow_call)
        return None
''',
    "two.py": '''
from tinywf_cli import Workflow, step


class First(Workflow):
    @step
    def only(self):
        return None


class Second(Workflow):
    @step
    def only(self):
        return None
''',
    "broken.py": "from tinywf_cli import Workflow, step\n\nclass Broken(Workflow:\n    pass\n",
    "raises.py": 'raise RuntimeError("flow import went wrong")\n',
    "empty.py": '"""No workflow here."""\n\nVALUE = 1\n',
}


def make_workspace(root: Path) -> Path:
    """A folder with ``flows/`` (the examples and the test flows); returns it."""
    root.mkdir(parents=True, exist_ok=True)
    flows = root / "flows"
    shutil.copytree(FLOWS, flows, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    for name, source in TEST_FLOWS.items():
        (flows / name).write_text(source.lstrip("\n"), encoding="utf-8")
    return root


def runs_workspace(root: Path) -> InProcessCli:
    """A workspace (``make_workspace``) with one run of each kind: waiting on an event (``g1``) or
    a timer (``u1``), finished (``s1``), failed (``f1``), a subscription (``sub-1``); and two
    inputs nested too deeply to read: ``deep.json`` (100,000 brackets) and ``flows/deep.py``
    (3,000 chained conditional expressions)."""
    cli = InProcessCli(make_workspace(root))
    cli.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    cli.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60}')
    cli.start("flows/simple.py", "s1")
    cli.start("flows/fail.py", "f1", code=1, env={"TINYWF_TEST_FAIL": "1"})
    cli.start("flows/interval_payment.py", "sub-1")
    (cli.workspace / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (cli.workspace / "flows" / "deep.py").write_text(
        "from tinywf_cli import Workflow, step\n\n\nclass Deep(Workflow):\n    @step\n    def only(self):\n"
        "        a = True\n        self.state['x'] = " + " if a else ".join(["1"] * 3000) + "\n")
    return cli


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a command: ours without tinywf or colour settings, plus ``extra``."""
    drop = {"NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYWF_") and k not in drop}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def at(offset: timedelta | float = 0.0) -> str:
    """``NOW`` moved by ``offset`` (seconds or a timedelta), as ISO 8601."""
    delta = offset if isinstance(offset, timedelta) else timedelta(seconds=offset)
    when = datetime.fromisoformat(NOW.replace("Z", "+00:00")).astimezone(UTC) + delta
    return when.isoformat().replace("+00:00", "Z")


class Cli:
    """Runs ``tinywf`` in a workspace with ``--state-dir`` and a fixed clock.

    Example::

        cli = Cli(workspace)
        result = cli("run", "flows/simple.py", "--json")
        doc = run_document(result)
    """

    def __init__(self, workspace: Path, state_dir: Path | None = None, store: str | None = None) -> None:
        self.workspace = workspace
        self.state_dir = state_dir if state_dir is not None else workspace / "state"
        #: A PostgreSQL URL when the runs live there (``--store``), else None (``--state-dir``).
        self.store = store
        self.now = NOW

    @property
    def target(self) -> str:
        """Where the runs live: the URL, or the state directory."""
        return self.store or str(self.state_dir)

    @property
    def store_args(self) -> list[str]:
        """``--store URL`` or ``--state-dir DIR``."""
        return ["--store", self.store] if self.store else ["--state-dir", str(self.state_dir)]

    @property
    def hint(self) -> str:
        """How tinywf's ready-to-paste lines name this store."""
        return f"--store {shlex.quote(self.store)}" if self.store else f"--state-dir {self.state_dir}"

    def snapshot(self) -> dict[str, Any]:
        """What the store holds (every file; or every run's head and journal): to check that a
        command changed nothing."""
        if self.store is None:
            return dict(snapshot(self.state_dir))
        from pgserver import store_snapshot

        return store_snapshot(self.store)

    def __call__(self, *args: str, input: str | None = None, now: str | None = None,
                 env: Mapping[str, str] | None = None, state_dir: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``tinywf ARGS`` (``--state-dir`` goes right after the command's name)."""
        argv, environment = self.prepare(args, now, env, state_dir)
        return subprocess.run([TINYWF, *argv], cwd=self.workspace, env=environment, input=input,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def prepare(self, args: tuple[str, ...], now: str | None, env: Mapping[str, str] | None,
                state_dir: bool) -> tuple[list[str], dict[str, str]]:
        """The command line (with ``--state-dir`` after the command's name) and its environment."""
        argv = list(args)
        if state_dir and argv and not argv[0].startswith("-"):
            argv[1:1] = self.store_args
        if now == REAL_CLOCK:
            return argv, clean_env(**dict(env or {}))
        return argv, clean_env(TINYWF_NOW=now or self.now, **dict(env or {}))

    def spawn(self, args: tuple[str, ...], now: str | None, env: Mapping[str, str] | None, *,
              text: bool = True) -> subprocess.Popen[Any]:
        """Start ``tinywf ARGS`` as a process of its own (as ``prepare`` says), stdout and stderr piped."""
        argv, environment = self.prepare(args, now, env, True)
        return subprocess.Popen([TINYWF, *argv], cwd=self.workspace, env=environment, text=text,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def json(self, *args: str, code: int = 0, **kwargs: Any) -> Any:
        """Run a command with ``--json``; check its exit code and return its one document."""
        result = self(*args[:1], "--json", *args[1:], **kwargs)  # before any `--`
        assert result.returncode == code, describe(result)
        return one_document(result.stdout)

    def start(self, flow: str, run_id: str, *args: str, code: int = 0, **kwargs: Any) -> dict[str, Any]:
        """``tinywf run FLOW --run-id RUN_ID --json ARGS``: the run's document."""
        doc: dict[str, Any] = self.json("run", flow, "--run-id", run_id, *args, code=code, **kwargs)
        return doc


class InProcessCli(Cli):
    """``Cli``, but calling ``tinywf_cli.cli.main`` in this process: the console script's
    own entry point (argument parsing, error mapping, exit codes), minus process start-up.
    Stdin is never a terminal here."""

    def __call__(self, *args: str, input: str | None = None, now: str | None = None,
                 env: Mapping[str, str] | None = None, state_dir: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        from tinywf_cli.cli import main

        argv, environment = self.prepare(args, now, env, state_dir)
        out, err = io.StringIO(), io.StringIO()
        saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
        os.environ.clear()
        os.environ.update(environment)
        os.chdir(self.workspace)
        sys.stdin = io.StringIO(input or "")
        code: int | str | None = 0
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(argv)
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.stdin = saved_stdin
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
        assert isinstance(code, int), f"exit code {code!r}"
        return subprocess.CompletedProcess([TINYWF, *argv], code, out.getvalue(), err.getvalue())


def run_in_pty(argv: Sequence[str], cwd: Path, env: Mapping[str, str], columns: int = 100,
               timeout: float = 60) -> tuple[int, bytes]:
    """Run a command with a terminal as its stdin, stdout and stderr; its exit code and all it wrote."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=follower, stdout=follower, stderr=follower,
                            close_fds=True)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            output += chunk
        return proc.wait(timeout=max(deadline - time.monotonic(), 1)), output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A command's outcome, for assertion messages."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def one_document(text: str) -> Any:
    """The single JSON document in ``text`` (``json.loads`` refuses anything after it)."""
    assert text.strip(), "expected a JSON document on stdout, got nothing"
    return json.loads(text)


def assert_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """An exit 2-5: nothing on stdout, one ``error:`` line on stderr, no traceback; returns the line."""
    assert result.returncode == code, describe(result)
    assert result.stdout == "", describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), describe(result)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def assert_times(value: Any, path: str = "") -> int:
    """Every time in a document (``*_at``, ``at``) is ISO 8601 with ``Z`` or ``+00:00``; returns how many."""
    found = 0
    if isinstance(value, dict):
        for key, item in value.items():
            if (key == "at" or key.endswith("_at")) and item is not None:
                assert isinstance(item, str) and TIME.fullmatch(item), f"{path}.{key} = {item!r}"
                found += 1
            else:
                found += assert_times(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += assert_times(item, f"{path}[{index}]")
    return found


def assert_run_document(doc: Any, keys: set[str] = RUN_KEYS) -> dict[str, Any]:
    """``doc`` has exactly the contract's keys for a run (and its pending resumes, error, logs)."""
    assert isinstance(doc, dict) and set(doc) == keys, sorted(doc) if isinstance(doc, dict) else doc
    for pending in doc["pending"]:
        assert set(pending) == PENDING_KEYS, pending
        assert pending["kind"] in ("event", "timer", "retry", "child")
    if doc["error"] is not None:
        assert set(doc["error"]) == ERROR_KEYS, doc["error"]
    for entry in doc.get("logs", []):
        assert set(entry) == LOG_KEYS, entry
    assert assert_times(doc) >= 2
    return doc


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (``None``) under ``root``, by relative path."""
    if not root.exists():
        return {}
    found: dict[str, bytes | None] = {".": None}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        found[relative] = None if path.is_dir() and not path.is_symlink() else path.read_bytes()
    return found


def flow_of(name: str) -> str:
    """``flows/NAME.py``, relative to a workspace."""
    return f"flows/{name}.py"


def last(items: Sequence[Any]) -> Any:
    """The last item of a non-empty sequence."""
    assert items, "expected at least one item"
    return items[-1]
