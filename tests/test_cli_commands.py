"""Contract §4, command by command: list, tick, worker, run --wait, resolve's VALUE,
--version, and output for people (colour, width), through the installed command."""

from __future__ import annotations

import json
import queue
import re
import shlex
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest
from clihelpers import (
    ANSI,
    NOW,
    REPO,
    TICK_KEYS,
    TINYWF,
    Cli,
    InProcessCli,
    assert_error,
    at,
    clean_env,
    describe,
    make_workspace,
    run_in_pty,
    snapshot,
)

from tinywf_cli import __version__

#: Every test here runs on a state directory and on PostgreSQL, unless marked for one.
pytestmark = pytest.mark.stores("file", "postgres")

# -- list -----------------------------------------------------------------------------------


@pytest.mark.stores("file")  # about files: a record damaged by hand
def test_list_shows_an_unreadable_record_warns_and_exits_0(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/simple.py", "s1")
    fast.start("flows/guess_game.py", "g1")
    (cli.state_dir / "g1.json").write_bytes(b"\x00garbage")
    before = snapshot(cli.state_dir)
    result = cli("list", "--json")
    assert result.returncode == 0, describe(result)
    rows = {row["run_id"]: row for row in json.loads(result.stdout)["runs"]}
    assert rows["s1"]["status"] == "finished"
    assert rows["g1"] == {"run_id": "g1", "workflow": "?", "status": "unreadable", "step": None, "updated_at": None,
                          "tags": {}}
    [warning] = result.stderr.splitlines()
    assert warning.startswith("warning: ") and "g1.json" in warning
    people = cli("list")
    assert people.returncode == 0 and "unreadable" in people.stdout and "s1" in people.stdout
    assert "warning: " in people.stderr and "error:" not in people.stderr
    only = fast.json("list", "--status", "unreadable")
    assert [row["run_id"] for row in only["runs"]] == ["g1"]
    assert snapshot(cli.state_dir) == before


def test_list_for_people_is_a_table(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/simple.py", "s1")
    fast.start("flows/guess_game.py", "g1", now=at(30))
    result = cli("list", now=at(90))
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run", "workflow", "status", "step", "updated"]
    assert lines[1].split()[:4] == ["g1", "flows/guess_game.py:GuessGame", "waiting", "step_play"]
    assert "1m ago" in lines[1]
    assert lines[2].split()[:3] == ["s1", "flows/simple.py:Simple", "finished"]


# -- tick ------------------------------------------------------------------------------------


def test_tick_limit_advances_at_most_n_runs(fast: InProcessCli) -> None:
    for name in ("a", "b", "c"):
        fast.start("flows/user_onboarding.py", name, "--input", '{"promotion_after": 60}')
    first = fast.json("tick", "--limit", "2", now=at(60))
    assert len(first["advanced"]) == 2
    second = fast.json("tick", now=at(60))
    assert len(second["advanced"]) == 1
    assert {r["run_id"] for r in first["advanced"] + second["advanced"]} == {"a", "b", "c"}


def test_tick_for_people_says_what_it_did(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60, "end_after": 60}')
    fast.start("flows/retrying.py", "r1")
    result = cli("tick", now=at(60))
    assert result.returncode == 0, describe(result)
    assert re.search(r"advanced u1 -> waiting", result.stdout)
    assert re.search(r"advanced r1 -> failed", result.stdout)
    assert "2 due, 2 advanced, 0 skipped" in result.stdout


# -- worker ----------------------------------------------------------------------------------


def start_worker(cli: Cli, *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    """``tinywf worker ARGS`` in the background; its stdout lines arrive in the queue (None at the end),
    its stderr goes to ``worker.err`` in the workspace (a file: it can never fill up and block)."""
    with (cli.workspace / "worker.err").open("w") as errors:
        proc = subprocess.Popen([TINYWF, "worker", *cli.store_args, "--poll", "0.2", *args],
                                cwd=cli.workspace, env=clean_env(TINYWF_NOW=NOW), stdout=subprocess.PIPE,
                                stderr=errors, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    assert proc.stdout is not None
    threading.Thread(target=pump, args=(proc.stdout,), daemon=True).start()
    return proc, lines


def next_line(lines: queue.Queue[str | None]) -> str:
    """The worker's next line (the timeout only keeps a broken worker from hanging the tests)."""
    line = lines.get(timeout=60)
    assert line is not None, "the worker ended early"
    return line


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_json_lines_until_a_signal_stops_it_cleanly(cli: Cli, fast: InProcessCli,
                                                           stop: signal.Signals) -> None:
    for name in ("u1", "u2"):
        fast.start("flows/user_onboarding.py", name, "--input", '{"promotion_after": 60, "end_after": 86400}')
    fast.start("flows/retrying.py", "r1")
    proc, lines = start_worker(cli, "--json")
    try:
        reports: list[dict[str, Any]] = []
        seen: dict[str, str] = {}
        while set(seen.values()) != {"finished", "failed"} or len(seen) < 3:
            report = json.loads(next_line(lines))  # each line is one whole document
            assert set(report) == TICK_KEYS
            reports.append(report)
            seen.update({a["run_id"]: a["status"] for a in report["advanced"]})
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen == {"u1": "finished", "u2": "finished", "r1": "failed"}  # failed runs are reported, exit 0
    assert reports[0]["due"] == 3  # the fixed clock moved to the first due time: all three at once
    while (rest := lines.get(timeout=60)) is not None:
        assert set(json.loads(rest)) == TICK_KEYS
    errors = (cli.workspace / "worker.err").read_text()
    assert "Traceback" not in errors and "error:" not in errors
    assert fast.json("show", "u1")["status"] == "finished"


def test_worker_for_people_says_when_it_starts_and_stops(cli: Cli) -> None:
    proc, lines = start_worker(cli)
    try:
        assert "worker: watching" in next_line(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "worker: stopped" in next_line(lines)


# -- run --wait ------------------------------------------------------------------------------


def test_run_wait_finishes_a_timer_flow_in_process(cli: Cli) -> None:
    result = cli("run", "flows/user_onboarding.py", "--run-id", "w1", "--wait", "--json",
                 "--input", '{"promotion_after": 86400, "end_after": 3600}')
    assert result.returncode == 0, describe(result)
    doc = json.loads(result.stdout)
    assert doc["status"] == "finished" and doc["pending"] == []
    assert doc["created_at"] == NOW and doc["updated_at"] == "2026-01-02T01:00:00Z"
    assert len(doc["state"]["deliveries"]) == 2
    assert "waiting for timer wait_before_promotion_email" in result.stderr  # the countdown, on stderr


def test_run_wait_waits_out_retry_delays(cli: Cli) -> None:
    result = cli("run", "flows/retrying.py", "--run-id", "r1", "--wait")
    assert result.returncode == 1, describe(result)  # both attempts failed: the run failed
    assert "failed" in result.stdout and "service down" in result.stdout
    assert "waiting for retry flaky" in result.stderr


def test_run_without_wait_leaves_a_timer_to_tick(fast: InProcessCli) -> None:
    doc = fast.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60}')
    assert doc["status"] == "waiting" and doc["pending"][0]["kind"] == "timer"


# -- resolve VALUE -------------------------------------------------------------------------


VALUES: list[tuple[tuple[str, ...], str | None, Any]] = [
    (("42",), None, 42),
    (("4.5",), None, 4.5),
    (("true",), None, True),
    (("null",), None, None),
    (('"42"',), None, "42"),
    (('{"a": [1, null]}',), None, {"a": [1, None]}),
    (("hello",), None, "hello"),
    (("hello world",), None, "hello world"),
    (("NaN",), None, "NaN"),  # not JSON: a string
    (("{oops",), None, "{oops"),
    (("-",), '{"from": "stdin"}\n', {"from": "stdin"}),
    (("-",), "two words\n", "two words"),
    (("--", "-5"), None, -5),
    (("--", "-x"), None, "-x"),
]


@pytest.mark.parametrize(("value", "stdin", "expected"), VALUES, ids=[" ".join(v[0]) for v in VALUES])
def test_resolve_value_is_json_if_it_parses_else_a_string(fast: InProcessCli, value: tuple[str, ...],
                                                          stdin: str | None, expected: Any) -> None:
    fast.start("flows/echo.py", "e1")
    doc = fast.json("resolve", "e1", "value", *value, input=stdin)
    assert doc["status"] == "finished"
    assert doc["state"] == {"value": expected}


def test_send_value_follows_the_same_rules(fast: InProcessCli) -> None:
    fast.start("flows/echo.py", "e1")
    assert fast.json("send", "e1", "value", "-", input="[1, 2]\n")["state"] == {"value": [1, 2]}


def test_resolve_value_rules_through_the_installed_command(cli: Cli, fast: InProcessCli) -> None:
    for run_id in ("e1", "e2", "e3"):
        fast.start("flows/echo.py", run_id)
    assert cli.json("resolve", "e1", "value", "-", input='{"n": 1}')["state"] == {"value": {"n": 1}}
    assert cli.json("resolve", "e2", "value", "--", "-5")["state"] == {"value": -5}
    assert cli.json("resolve", "e3", "value", "plain words")["state"] == {"value": "plain words"}


def test_resolve_by_resume_id_or_by_key(fast: InProcessCli) -> None:
    doc = fast.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    resume_id = doc["pending"][0]["resume_id"]
    assert resume_id != "ask_0"
    assert fast.json("resolve", "g1", resume_id, "10")["state"]["answers"] == [10]
    assert fast.json("resolve", "g1", "ask_1", "42")["status"] == "finished"


# -- --version, help ---------------------------------------------------------------------------


@pytest.mark.stores("file")  # about files: no store involved
def test_version_from_the_command_and_from_python_m(cli: Cli) -> None:
    assert cli("--version").stdout == f"tinywf {__version__}\n"
    result = subprocess.run([sys.executable, "-m", "tinywf_cli", "--version"], capture_output=True, text=True,
                            check=False, cwd=cli.workspace)
    assert result.returncode == 0 and result.stdout == f"tinywf {__version__}\n"


@pytest.mark.stores("file")  # about files: no store involved
def test_bare_tinywf_prints_its_help_and_exits_0(fast: InProcessCli) -> None:
    result = fast()
    assert result.returncode == 0 and "Usage: tinywf" in result.stdout and "resolve" in result.stdout


# -- output for people -----------------------------------------------------------------------


def test_no_ansi_codes_when_stdout_is_not_a_terminal(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/fail.py", "f1", code=1, env={"TINYWF_TEST_FAIL": "1"})
    for args in (("run", "flows/guess_game.py", "--run-id", "g1"), ("show", "f1")):
        result = cli(*args)
        assert result.returncode == 0, describe(result)
        assert not ANSI.search(result.stdout + result.stderr), args
    assert "RuntimeError: " in result.stdout and "card declined" in result.stdout  # show gives the error


def test_colour_in_a_terminal_and_none_with_no_color(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/guess_game.py", "g1")
    argv = [TINYWF, "show", "g1", *cli.store_args]
    code, coloured = run_in_pty(argv, cli.workspace, clean_env(TINYWF_NOW=NOW, TERM="xterm-256color"))
    assert code == 0 and ANSI.search(coloured.decode())
    code, plain = run_in_pty(argv, cli.workspace, clean_env(TINYWF_NOW=NOW, TERM="xterm-256color", NO_COLOR="1"))
    assert code == 0 and not ANSI.search(plain.decode())
    assert "waits for event ask_0" in plain.decode()


def test_columns_sets_the_width(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/guess_game.py", "g1")
    narrow = cli("show", "g1", env={"COLUMNS": "60"})
    wide = cli("show", "g1", env={"COLUMNS": "160"})
    assert narrow.returncode == wide.returncode == 0
    command = next(line for line in narrow.stdout.splitlines() if "tinywf resolve" in line)
    assert command.endswith(" g1 ask_0@2 <integer>")  # whole, never wrapped: it must paste
    assert max(len(line) for line in narrow.stdout.splitlines() if line != command) <= 60
    assert max(len(line) for line in wide.stdout.splitlines()) > 80


def test_show_for_people_has_the_whole_picture(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    fast.json("resolve", "g1", "ask_0", "50")
    result = cli("show", "g1", env={"COLUMNS": "120"}, now=at(300))
    assert result.returncode == 0, describe(result)
    out = result.stdout
    for text in ("flows/guess_game.py:GuessGame", "Guess a number between 0 and 100; each guess", "waiting",
                 "step_play", "State", '"answers"', "Pending", "Timeline", "wait_begin", "5m ago",
                 f"tinywf resolve {cli.hint} g1 ask_1@2 <integer>"):
        assert text in out, text


# -- the README's first command ---------------------------------------------------------------


@pytest.mark.stores("file")  # about files: the default state directory
def test_readme_first_command_runs_the_demo_without_a_terminal(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first = re.search(r'^pip install -e \. && (tinywf run [^\s#]+)', readme, re.MULTILINE)
    assert first is not None, "the README starts with `pip install -e . && tinywf run flows/...`"
    assert first.group(1) == "tinywf run flows/guess_game.py"
    assert '\npip install -e ".[test]" && pytest ' in readme[first.end():first.end() + 200]
    workspace = make_workspace(tmp_path / "clone")
    result = subprocess.run(shlex.split(first.group(1)), cwd=workspace, env=clean_env(), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, describe(result)
    assert "tinywf resolve" in result.stdout
    assert "Traceback" not in result.stderr
    state = workspace / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    [record] = state.glob("*.json")
    assert stat.S_IMODE(record.stat().st_mode) == 0o600


#: Modules that only the extras install: `pip install -e .` (the README's first command) has none.
EXTRAS_ONLY = ("fastapi", "starlette", "uvicorn", "psycopg", "httpx", "playwright", "schemathesis", "hypothesis",
               "mypy", "pytest", "dbos")

WITHOUT_EXTRAS = """
import sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (pip install -e . does not install it)")
        return None

for name in [name for name in sys.modules if name.split(".")[0] in {blocked!r}]:
    del sys.modules[name]
sys.meta_path.insert(0, NotInstalled())
from tinywf_cli.cli import main
main(sys.argv[1:])
"""


@pytest.mark.stores("file")  # about files: the default state directory
def test_readme_first_command_needs_only_the_runtime_dependencies(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "clone")
    script = WITHOUT_EXTRAS.format(blocked=set(EXTRAS_ONLY))
    for argv in (["run", "flows/guess_game.py", "--run-id", "g1"], ["resolve", "g1", "ask_0", "50"], ["show", "g1"]):
        result = subprocess.run([sys.executable, "-c", script, *argv], cwd=workspace, env=clean_env(TINYWF_NOW=NOW),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, describe(result)
    assert "step_play" in result.stdout or "step_end" in result.stdout


@pytest.mark.stores("file")  # about files: $TINYWF_STATE_DIR
def test_state_dir_comes_from_the_environment_when_not_given(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws")
    elsewhere = tmp_path / "elsewhere"
    result = subprocess.run([TINYWF, "run", "flows/simple.py", "--run-id", "s1"], cwd=workspace,
                            env=clean_env(TINYWF_STATE_DIR=str(elsewhere), TINYWF_NOW=NOW),
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, describe(result)
    assert (elsewhere / "s1.json").is_file() and not (workspace / "state").exists()
    assert_error(subprocess.run([TINYWF, "show", "s1"], cwd=workspace, env=clean_env(), capture_output=True,
                                text=True, check=False), 3, "s1")


# -- more of each command's line in the contract --------------------------------------------


def test_run_a_named_class_of_a_flow_file_with_input_from_a_file(cli: Cli, fast: InProcessCli) -> None:
    (cli.workspace / "input.json").write_text('{"number": 9}', encoding="utf-8")
    doc = cli.json("run", "flows/guess_game.py:GuessGame", "--run-id", "g1", "--input", "@input.json")
    assert doc["workflow"] == "flows/guess_game.py:GuessGame" and doc["state"]["number"] == 9
    assert fast.json("run", "flows/two.py:Second", "--run-id", "two")["workflow"] == "flows/two.py:Second"


def test_the_printed_resolve_line_pastes_into_a_shell(cli: Cli) -> None:
    result = cli("run", "flows/guess_game.py", "--input", '{"number": 42}', "--run-id", "g1")
    [line] = [line for line in result.stdout.splitlines() if "tinywf resolve" in line]
    command = line.split("answer: ", 1)[1].replace("<integer>", "42")
    assert cli.hint in command  # not ./state: the line says where the run lives
    pasted = subprocess.run(["sh", "-c", command], cwd=cli.workspace, env=clean_env(TINYWF_NOW=NOW),
                            capture_output=True, text=True, check=False)
    assert pasted.returncode == 0, describe(pasted)
    assert "finished" in pasted.stdout


def test_send_queues_early_events_first_in_first_out(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/fifo.py", "q1")
    queued = cli.json("send", "q1", "item", "first")
    assert queued["status"] == "waiting" and queued["pending"][0]["kind"] == "timer"  # not at the wait yet
    fast.json("send", "q1", "item", "5")  # not a word: the wait will drop it
    fast.json("send", "q1", "item", "second")
    doc = fast.json("tick", now=at(60))
    assert doc["advanced"] == [{"run_id": "q1", "status": "waiting"}]
    shown = fast.json("show", "q1")
    assert shown["state"] == {"items": ["first", "second"]}  # in order, one per wait
    assert [p["key"] for p in shown["pending"]] == ["item"]  # the third wait stays pending
    assert [e["values"].get("key") for e in shown["logs"] if e["type"] == "event_rejected"] == ["item"]
    assert fast.json("send", "q1", "item", "third")["status"] == "finished"


def test_send_says_when_it_queues_and_a_paused_run_suggests_only_what_it_accepts(
        cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/guess_game.py", "game-1", "--input", '{"number": 42}')
    first = cli("send", "game-1", "nosuchkey", "3")
    assert first.returncode == 0, describe(first)
    assert "queued for nosuchkey: no wait on it yet (1 queued)" in first.stdout
    assert "queued for nosuchkey: no wait on it yet (2 queued)" in cli("send", "game-1", "nosuchkey", "4").stdout
    doc = cli.json("send", "game-1", "nosuchkey", "5")
    assert doc["run_id"] == "game-1" and "queued" not in doc  # --json: the run's document, nothing more
    paused = cli("pause", "game-1")
    assert "tinywf resolve" not in paused.stdout  # refused until resume: never suggested
    assert f"paused: nothing advances it until `tinywf resume {cli.hint} game-1`" in paused.stdout
    sent = cli("send", "game-1", "ask_0", "50")
    assert sent.returncode == 0, describe(sent)
    assert "tinywf resolve" not in sent.stdout
    assert (f"queued for ask_0: the run is paused; `tinywf resume {cli.hint} game-1` hands it to its wait "
            "(1 queued)") in sent.stdout
    assert "tinywf resolve" not in cli("show", "game-1").stdout
    resumed = cli.json("resume", "game-1")
    assert [p["key"] for p in resumed["pending"]] == ["ask_1"]  # the queued answer was taken


def test_tick_recovers_a_run_whose_process_died(cli: Cli, fast: InProcessCli) -> None:
    proc = subprocess.Popen([TINYWF, "run", "flows/slow.py", "--run-id", "h1", *cli.store_args, "--lease", "1"],
                            cwd=cli.workspace, env=clean_env(TINYWF_NOW=NOW), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        marker = cli.workspace / "slow-started"
        for _ in range(600):  # the action has started: the run is recorded as running
            if marker.exists() or proc.poll() is not None:
                break
            threading.Event().wait(0.05)
        assert marker.exists(), "the slow action never started"
    finally:
        proc.kill()
        proc.wait()
    assert fast.json("show", "h1")["status"] == "running"
    report = cli.json("tick")
    for _ in range(100):  # PostgreSQL: the dead process's claim runs out after its lease (1 s)
        if report["advanced"]:
            break
        threading.Event().wait(0.1)
        report = cli.json("tick")
    assert report["advanced"] == [{"run_id": "h1", "status": "finished"}]
    assert fast.json("show", "h1")["state"] == {"result": "done"}


def test_cancel_records_its_reason(cli: Cli, fast: InProcessCli) -> None:
    fast.start("flows/guess_game.py", "g1")
    result = cli("cancel", "g1", "--reason", "changed my mind")
    assert result.returncode == 0, describe(result)
    assert "cancelled" in result.stdout
    logs = fast.json("show", "g1")["logs"]
    assert logs[-1]["type"] == "cancel" and "changed my mind" in json.dumps(logs[-1]["values"])


@pytest.mark.stores("file")  # about files: $TINYWF_STATE_DIR
def test_the_resolve_line_names_a_state_dir_other_than_the_one_a_paste_would_find(
        cli: Cli, tmp_path: Path) -> None:
    result = cli("run", "flows/guess_game.py", "--run-id", "g1", env={"TINYWF_STATE_DIR": str(tmp_path / "other")})
    assert f"tinywf resolve --state-dir {cli.state_dir} g1 ask_0@2 <integer>" in result.stdout
    same = cli("run", "flows/guess_game.py", "--run-id", "g2", state_dir=False,
               env={"TINYWF_STATE_DIR": str(cli.state_dir)})
    assert "tinywf resolve g2 ask_0@2 <integer>" in same.stdout
