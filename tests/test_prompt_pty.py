"""The interactive prompt, driven through a pseudo-terminal: an invalid answer is asked
again, a valid one advances the run, an empty one leaves it waiting. ``--no-input`` and
a stdin that is not a terminal never prompt."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clihelpers import NOW, TINYWF, Cli, InProcessCli, clean_env, describe, run_in_pty

pytestmark = pytest.mark.skipif(not hasattr(pty, "openpty"), reason="needs pseudo-terminals")

QUESTION = "Guess a number between 0 and 100"


class Terminal:
    """A command running with a pseudo-terminal as stdin (and stderr, where prompts go)."""

    def __init__(self, argv: list[str], cwd: Path, *, stdout_to_terminal: bool = True,
                 real_clock: bool = False) -> None:
        self.leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        clock = {} if real_clock else {"TINYWF_NOW": NOW}
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=clean_env(TERM="dumb", NO_COLOR="1", **clock), stdin=follower,
            stdout=follower if stdout_to_terminal else subprocess.PIPE, stderr=follower, close_fds=True)
        os.close(follower)
        self.seen = ""  # everything the terminal showed
        self.unread = ""  # what ``expect`` has not consumed yet

    def expect(self, text: str, timeout: float = 30) -> str:
        """Read until ``text`` shows up; returns what came before it (the timeout only stops a hang)."""
        deadline = time.monotonic() + timeout
        while text not in self.unread:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"never saw {text!r}; the terminal shows:\n{self.seen}"
            ready, _, _ = select.select([self.leader], [], [], min(remaining, 0.5))
            if ready:
                try:
                    chunk = os.read(self.leader, 4096).decode(errors="replace")
                except OSError:
                    chunk = ""
                if not chunk:
                    assert text in self.unread, f"the command ended before {text!r}:\n{self.seen}"
                self.seen += chunk
                self.unread += chunk
        before, _, self.unread = self.unread.partition(text)
        return before

    def answer(self, line: str) -> None:
        """Type ``line`` and Enter."""
        os.write(self.leader, line.encode() + b"\r")

    def finish(self, timeout: float = 30) -> int:
        """Wait for the command to end (reading on, so it never blocks on a full terminal)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.leader, 4096).decode(errors="replace")
                except OSError:
                    break
                self.seen += chunk
                self.unread += chunk
        return self.proc.wait(timeout=max(deadline - time.monotonic(), 1))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.leader)


@pytest.fixture
def terminal(cli: Cli) -> Iterator[list[Terminal]]:
    """Terminals opened by a test; closed (their commands killed if still running) after it."""
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def open_terminal(cli: Cli, opened: list[Terminal], *args: str, stdout_to_terminal: bool = True,
                  real_clock: bool = False) -> Terminal:
    term = Terminal([TINYWF, *args[:1], "--state-dir", str(cli.state_dir), *args[1:]], cli.workspace,
                    stdout_to_terminal=stdout_to_terminal, real_clock=real_clock)
    opened.append(term)
    return term


def test_invalid_answer_is_asked_again_valid_advances_empty_leaves_waiting(
        cli: Cli, terminal: list[Terminal]) -> None:
    term = open_terminal(cli, terminal, "run", "flows/guess_game.py", "--input", '{"number": 42}', "--run-id", "g1")
    term.expect(QUESTION)
    term.expect("[integer (0..100)]")  # the expected type
    term.expect("> ")
    term.answer("lots")
    said = term.expect(QUESTION)  # the same question again
    assert "invalid value for event 'ask_0'" in said and "invalid: invalid" not in said, said
    term.expect("> ")
    term.answer("101")
    term.expect("invalid value for event 'ask_0'")
    term.expect("> ")
    term.answer("50")
    term.expect("50 is greater than the number")  # advanced: the next question
    term.expect("> ")
    term.answer("")
    term.expect("left waiting")
    assert term.finish() == 0, term.seen
    term.expect("tinywf resolve")
    assert "Traceback" not in term.seen
    doc = InProcessCli(cli.workspace, cli.state_dir).json("show", "g1")
    assert doc["status"] == "waiting"
    assert doc["state"]["answers"] == [50]
    assert [p["key"] for p in doc["pending"]] == ["ask_1"]


def test_ctrl_c_at_the_prompt_says_the_run_is_left_waiting_and_how_to_answer_it(
        cli: Cli, terminal: list[Terminal]) -> None:
    term = open_terminal(cli, terminal, "run", "flows/guess_game.py", "--input", '{"number": 7}', "--run-id", "g1")
    term.expect("> ")
    term.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends (the terminal is not the test's controlling one)
    assert term.finish() == 130, term.seen
    said = term.expect(f"tinywf resolve --state-dir {cli.state_dir} g1 ask_0@2 <integer>`")
    assert "error: interrupted at the prompt; run g1 is left waiting, answer it with `" in said, term.seen
    assert "left running" not in term.seen and "Traceback" not in term.seen
    assert InProcessCli(cli.workspace, cli.state_dir).json("show", "g1")["status"] == "waiting"


def test_ctrl_c_during_a_wait_countdown_says_the_run_is_left_waiting_for_its_timer(
        cli: Cli, terminal: list[Terminal]) -> None:
    term = open_terminal(cli, terminal, "run", "flows/user_onboarding.py", "--input", '{"promotion_after": 3600}',
                         "--run-id", "u1", "--wait", real_clock=True)
    shown = InProcessCli(cli.workspace, cli.state_dir)
    deadline = time.monotonic() + 30
    while not (cli.state_dir.exists() and shown("show", "u1").returncode == 0
               and shown.json("show", "u1")["status"] == "waiting"):
        assert time.monotonic() < deadline, term.seen
        time.sleep(0.05)
    time.sleep(0.3)  # in the countdown, holding no lock
    term.proc.send_signal(signal.SIGINT)
    assert term.finish() == 130, term.seen
    term.expect("error: interrupted; run u1 is left waiting: `tinywf tick` (cron) or `tinywf worker` carries it on "
                "when due")
    assert "left running" not in term.seen
    assert InProcessCli(cli.workspace, cli.state_dir).json("show", "u1")["status"] == "waiting"


def test_the_right_answer_at_the_prompt_finishes_the_run(cli: Cli, terminal: list[Terminal]) -> None:
    term = open_terminal(cli, terminal, "run", "flows/guess_game.py", "--input", '{"number": 7}', "--run-id", "g1")
    term.expect("> ")
    term.answer("7")
    assert term.finish() == 0, term.seen
    term.expect("finished")
    assert InProcessCli(cli.workspace, cli.state_dir).json("show", "g1")["state"]["answers"] == [7]


def test_resolve_at_a_terminal_prompts_for_the_next_event(cli: Cli, terminal: list[Terminal]) -> None:
    InProcessCli(cli.workspace, cli.state_dir).start("flows/guess_game_2.py", "g2", "--input", '{"number": 7}')
    term = open_terminal(cli, terminal, "resolve", "g2", "guess", "3")
    term.expect("3 is smaller than the number")
    term.expect("> ")
    term.answer("7")
    assert term.finish() == 0, term.seen
    assert InProcessCli(cli.workspace, cli.state_dir).json("show", "g2")["status"] == "finished"


def test_with_json_the_prompt_stays_off_stdout(cli: Cli, terminal: list[Terminal]) -> None:
    term = open_terminal(cli, terminal, "run", "flows/guess_game.py", "--input", '{"number": 7}', "--run-id", "g1",
                         "--json", stdout_to_terminal=False)
    term.expect("> ")
    term.answer("7")
    assert term.finish() == 0, term.seen
    assert term.proc.stdout is not None
    doc = json.loads(term.proc.stdout.read())  # one document, no prompt in it
    assert doc["status"] == "finished"


def test_no_input_never_prompts_even_at_a_terminal(cli: Cli) -> None:
    argv = [TINYWF, "run", "--state-dir", str(cli.state_dir), "flows/guess_game.py", "--run-id", "g1", "--no-input"]
    code, output = run_in_pty(argv, cli.workspace, clean_env(TINYWF_NOW=NOW, NO_COLOR="1"))
    text = output.decode()
    assert code == 0, text
    assert "> " not in text and "tinywf resolve" in text
    assert InProcessCli(cli.workspace, cli.state_dir).json("show", "g1")["status"] == "waiting"


def test_a_stdin_that_is_not_a_terminal_never_prompts(cli: Cli) -> None:
    result = cli("run", "flows/guess_game.py", "--input", '{"number": 42}', "--run-id", "g1", input="42\n")
    assert result.returncode == 0, describe(result)
    assert "tinywf resolve" in result.stdout and "> " not in result.stdout + result.stderr
    doc = InProcessCli(cli.workspace, cli.state_dir).json("show", "g1")
    assert doc["status"] == "waiting" and doc["state"]["answers"] == []  # stdin was not read
