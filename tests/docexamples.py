"""Run the examples of a markdown page as a new user would paste them, and compare what they print.

``tests/test_readme_examples.py`` runs README.md and every page of docs/ this way (and
``tests/test_newcomer.py`` the Getting-started page in a fresh virtual environment);
``python tests/docexamples.py PAGE.md ...`` prints what ran, what was skipped and why, and what
differed.

How a page is run
-----------------
Its fenced blocks run in order, each in a fresh shell (or Python) in one scratch workspace: a
copy of the repository's ``flows/`` and ``pyproject.toml`` with an empty ``state/``, as a fresh
clone has. Runs made by one block are there for the next, as for a reader who pastes the page
from the top into one folder; variables a block exports are not (each block is a new terminal).

``console``  ``$ CMD`` is a command; lines right after it that start with ``> `` continue it
             (the shell's second prompt). The lines after those, up to the next ``$``, are what
             it prints — stdout and stderr together, as a terminal shows them — and are compared.
             A ``> ANSWER`` line that comes *after* printed lines is typed at a prompt: that
             command runs in a pseudo-terminal and gets each answer when it prompts (``> ``).
             A command must exit 0 unless the block shows its failure: an ``error:`` line in
             what it prints, or an ``echo $?`` right after it.
``sh``       Its commands run in one shell, in order; each must exit 0. Nothing is compared.
``python``   Runs as ``python -`` in the workspace and must exit 0, except:
             - a first line ``# PATH.py`` that names a file of the repository: the block is an
               excerpt of that file — each of its lines is a line of the file, in the same
               order, lines may be left out — and is not run itself (the commands that use the
               file run it). Naming a file the repository lacks, the block is saved there, as a
               reader would save it, for the blocks after it.
             - a fragment of a workflow — a ``yield``, ``return`` or ``await`` outside a
               function, or a top-level ``def`` whose first parameter is ``self``: compiled as
               the body of a step (or of a class), not run.
others       (``ini``, ``cron``, ``mermaid``, ``text``, ...) are configuration or output: not run.

Comparing what a command prints
-------------------------------
Both sides are compared line by line after the same normalisation: colour codes and trailing
blanks dropped, runs of blanks and of ``─`` (panel and table widths) made one, bars (``█``) left out,
ISO 8601 times read as ``<time>``, durations (``3m``, ``1d 11h``, ``0.05s``) as ``<age>``, and
``now`` as ``<age> ago``. An expected line that is just ``...`` stands for any number of lines
(none too); ``...`` inside a line stands for any text. The workspace's own path is shown as
``.``. Nothing else is loose: a different word, number, id or wrapping is a difference, and the
failure names the page line of the expected text and the line that came instead.

Markers
-------
An HTML comment as the last line before a fence (not shown on the rendered page):

``<!-- example: skip: REASON -->``  not run; the report lists the block with REASON.
``<!-- example: output -->``        this block is the output of the ``console`` block before it,
                                    whose last command shows none (a ``mermaid`` diagram that
                                    ``tinywf graph`` prints, say).

What a test cannot do as a reader does
--------------------------------------
- ``pip install ...`` is not run: the tests run where tinywf and its extras are installed.
- Every command runs with ``$TINYWF_NOW`` set (a command may set its own), ``NO_COLOR=1`` and
  ``COLUMNS=80``: the clock is fixed and the output is plain text of one width.
- ``tinywf serve`` or ``tinywf worker`` as the last command of a block keeps running for the
  blocks after it, and is stopped at the end of the page with SIGTERM (it must exit 0). The
  server gets a free port: ``:8080`` and ``--port 8080`` in the page's commands are read as it.
- A ``postgresql://...@db.internal...`` URL is read as a fresh schema of the test server
  (``$TINYWF_TEST_PG``), dropped after the page; without a server, the blocks that name one are
  skipped saying why (or fail, when ``$TINYWF_REQUIRE_PG`` is set).
"""

from __future__ import annotations

import ast
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The instant ``$TINYWF_NOW`` names for a page's commands.
DEFAULT_NOW = "2026-11-22T09:14:02Z"
#: How long one block may take before it counts as hung.
BLOCK_TIMEOUT = 120.0

FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^<!--\s*example:\s*(?P<what>.*?)\s*-->$")
PATH_COMMENT = re.compile(r"^#\s*(?P<path>[\w./-]+\.py)\s*$")
DONE = "\x1etinywf-example"
DONE_LINE = re.compile(r"\n?\x1etinywf-example (\d+) (\d+)\n")
PG_URL = re.compile(r"postgresql://[^\s'\"@]*@db\.internal[^\s'\"]*")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?")
SPAN = r"\d+(?:\.\d+)?(?:ms|[smhd])(?: \d+(?:\.\d+)?(?:ms|[smhd]))*"
AGE = re.compile(rf"(?<![\w.-]){SPAN}(?![\w-])")
NOW = re.compile(r"(?<![\w.-])now(?![\w-])")


class PageError(Exception):
    """A page that breaks the conventions (an unknown marker, output before any command), or a
    block that could not be run to its end (it hung, its shell ended early)."""


@dataclass
class Block:
    """One fenced block of a page."""

    page: str  # the page's name, for messages
    line: int  # the page line of the opening fence
    lang: str
    body: list[str]
    marker: str | None = None

    @property
    def where(self) -> str:
        """``README.md:64``: where the block starts."""
        return f"{self.page}:{self.line}"

    def line_of(self, index: int) -> int:
        """The page line of body line ``index``."""
        return self.line + 1 + index


@dataclass
class Command:
    """One ``$`` command of a ``console`` block (or one command of an ``sh`` block)."""

    line: int  # the page line it starts on
    text: str  # continuation lines joined with newlines
    expected: list[tuple[int, str]] = field(default_factory=list)  # (page line, text)
    answers: list[str] = field(default_factory=list)  # typed at its prompts

    @property
    def shown(self) -> str:
        """The command as it appears in messages (its first line)."""
        lines = self.text.splitlines() or [""]
        return f"`{lines[0]}{' ...' if len(lines) > 1 else ''}`"


@dataclass
class Outcome:
    """What became of one block."""

    block: Block
    what: str  # ran, compared, excerpt, saved, fragment, skipped, not run
    detail: str = ""


@dataclass
class Report:
    """What ran on a page, what was skipped and why, and every difference found."""

    outcomes: list[Outcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def count(self, what: str) -> int:
        """How many blocks came to ``what``."""
        return sum(1 for outcome in self.outcomes if outcome.what == what)

    def summary(self) -> str:
        """The counts, a line for each block that is a command or code (what became of it and
        why), the other blocks counted by language, then the failures."""
        kinds = ("compared", "ran", "excerpt", "saved", "fragment", "skipped", "not run")
        lines = ["examples: " + ", ".join(f"{self.count(kind)} {kind}" for kind in kinds)]
        for outcome in self.outcomes:
            if outcome.what != "not run":
                lines.append(f"  {outcome.block.where} {outcome.block.lang}: {outcome.what}"
                             f"{': ' + outcome.detail if outcome.detail else ''}")
        other: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.what == "not run":
                other[outcome.block.lang or "plain"] = other.get(outcome.block.lang or "plain", 0) + 1
        if other:
            lines.append("  not run (configuration and output, not commands): "
                         + ", ".join(f"{count} {lang}" for lang, count in other.items()))
        if self.failures:
            lines.append(f"{len(self.failures)} failed:")
            lines.extend(self.failures)
        return "\n".join(lines)


# -- reading a page --------------------------------------------------------------------------


def parse(text: str, page: str = "page.md") -> list[Block]:
    """The fenced blocks of a markdown page, with the marker before each, if any."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening.group("fence")
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and not (lines[index].startswith(fence[0] * len(fence))
                                          and not lines[index].strip(fence[0]).strip()):
            body.append(lines[index])
            index += 1
        if index == len(lines):
            raise PageError(f"{page}:{start + 1}: a fenced block that never ends")
        index += 1
        blocks.append(Block(page, start + 1, opening.group("lang").lower(), body, marker_before(lines, start, page)))
    return blocks


def marker_before(lines: Sequence[str], fence: int, page: str) -> str | None:
    """The ``<!-- example: ... -->`` marker on the last non-blank line before line ``fence``."""
    before = fence - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    found = MARKER.match(lines[before].strip()) if before >= 0 else None
    if found is None:
        return None
    what = found.group("what")
    if what == "output":
        return what
    if what.startswith("skip:") and what[len("skip:"):].strip():
        return what
    raise PageError(f"{page}:{before + 1}: unknown example marker {what!r}: "
                    "use `<!-- example: skip: REASON -->` or `<!-- example: output -->`")


def console_commands(block: Block) -> list[Command]:
    """The commands of a ``console`` block, each with the output shown after it."""
    commands: list[Command] = []
    continuing = False
    for index, raw in enumerate(block.body):
        line = block.line_of(index)
        if raw.startswith("$ ") or raw == "$":
            commands.append(Command(line, raw[2:]))
            continuing = True
        elif not commands:
            raise PageError(f"{block.page}:{line}: output before any `$ command` in a console block")
        elif continuing and (raw.startswith("> ") or raw == ">"):
            commands[-1].text += "\n" + raw[2:]
        else:
            continuing = False
            command = commands[-1]
            if (raw.startswith("> ") or raw == ">") and command.expected:
                command.answers.append(raw[2:])
            command.expected.append((line, raw))
    return commands


def sh_commands(block: Block) -> list[Command]:
    """The commands of an ``sh`` block: a line each, or more while a command is not complete
    (a trailing backslash, a loop)."""
    commands: list[Command] = []
    pending: list[str] = []
    start = 0
    for index, raw in enumerate(block.body):
        if not pending:
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            start = block.line_of(index)
        pending.append(raw)
        text = "\n".join(pending)
        if raw.endswith("\\") or not complete(text):
            continue
        commands.append(Command(start, text))
        pending = []
    if pending:
        commands.append(Command(start, "\n".join(pending)))
    return commands


def complete(text: str) -> bool:
    """Whether ``text`` is a whole shell command (``bash -n`` accepts it)."""
    if not re.search(r"\b(for|while|until|if|case|do|then)\b|[{(]", text):
        return True
    return subprocess.run(["bash", "-n", "-c", text], capture_output=True, check=False).returncode == 0


# -- comparing -------------------------------------------------------------------------------


def normal(line: str) -> str:
    """A line of output as it is compared (see the module's docstring)."""
    line = ANSI.sub("", line)
    line = TIME.sub("<time>", line)
    line = NOW.sub("<age> ago", AGE.sub("<age>", line))
    line = re.sub(r"─+", "─", line)
    line = re.sub(r"[█▏▎▍▌▋▊▉]+", "", line)
    return " ".join(line.split())


def line_matches(expected: str, actual: str) -> bool:
    """Whether an expected line (``...`` for any text) shows an actual one, both normalised."""
    want, got = normal(expected), normal(actual)
    if "..." not in want:
        return want == got
    pattern = ".*?".join(re.escape(part) for part in want.split("..."))
    return re.fullmatch(pattern, got) is not None


def difference(expected: Sequence[tuple[int, str]], actual: Sequence[str]) -> str | None:
    """None when ``actual`` is what ``expected`` shows; else which line differs, and how."""
    memo: dict[tuple[int, int], bool] = {}
    deepest = [(-1, -1)]

    def match(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[(i, j)]
        if i == len(expected):
            result = j == len(actual)
        elif expected[i][1].strip() == "...":
            result = any(match(i + 1, k) for k in range(j, len(actual) + 1))
        else:
            result = j < len(actual) and line_matches(expected[i][1], actual[j]) and match(i + 1, j + 1)
        if not result and (i, j) > deepest[0] and (i == len(expected) or expected[i][1].strip() != "..."):
            deepest[0] = (i, j)
        memo[(i, j)] = result
        return result

    if match(0, 0):
        return None
    i, j = deepest[0]
    got = repr(actual[j]) if j < len(actual) else "the end of the output"
    if i == len(expected):
        return f"line {j + 1} of the output is more than the page shows: {got}"
    line, text = expected[i]
    return f"line {line} shows {text!r}; came instead (output line {j + 1}): {got}"


# -- running ---------------------------------------------------------------------------------


class Skip(Exception):
    """A block that cannot run here, and why."""


@dataclass
class Background:
    """A command left running for the rest of the page."""

    block: Block
    command: Command
    proc: subprocess.Popen[bytes]
    log: Path


class Session:
    """One page's run: the workspace, the environment, what is left running."""

    def __init__(self, repo: Path, workspace: Path, *, now: str = DEFAULT_NOW, page: str = "page.md",
                 bin_dir: Path | None = None) -> None:
        self.repo = repo
        self.workspace = workspace
        self.page = page
        self.now = now
        self.report = Report()
        self.background: list[Background] = []
        self.port = free_port()
        self.pg_schema: str | None = None
        self.pg_url: str | None = None
        self.env = page_env(now, bin_dir)
        self.notes: list[str] = []  # what the block being run was read as, for its outcome
        self.output_taken: Block | None = None  # the `output` block the last console block compared
        make_workspace(repo, workspace)

    # what a page's text is read as, here

    def substitute(self, text: str, block: Block) -> str:
        """``text`` with the server's port and the test's PostgreSQL URL (see the docstring)."""
        if ":8080" in text or "--port 8080" in text:
            text = text.replace(":8080", f":{self.port}").replace("--port 8080", f"--port {self.port}")
            self.note(f"port 8080 read as {self.port}")
        if PG_URL.search(text):
            url = self.postgres(block)
            text = PG_URL.sub(lambda _: url, text)
            self.note("db.internal read as the test server")
        return text

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def unsubstitute(self, text: str) -> str:
        """Output as the page would show it: the port and URL back, the workspace as ``.``."""
        text = text.replace(f":{self.port}", ":8080")
        if self.pg_url:
            text = text.replace(self.pg_url, "postgresql://tinywf@db.internal:5432/app")
        return text.replace(f"{self.workspace}/", "").replace(str(self.workspace), ".")

    def postgres(self, block: Block) -> str:
        """The URL of this page's fresh schema; raises Skip without a server."""
        if self.pg_url is None:
            from pgserver import new_schema_name, unavailable, url_of

            reason = unavailable()
            if reason is not None:
                if os.environ.get("TINYWF_REQUIRE_PG"):
                    raise PageError(f"{block.where}: $TINYWF_REQUIRE_PG is set but {reason}")
                raise Skip(f"needs PostgreSQL: {reason}")
            self.pg_schema = new_schema_name().replace("t_", "docs_", 1)
            self.pg_url = url_of(self.pg_schema)
        return self.pg_url

    # the page

    def run(self, blocks: Sequence[Block]) -> Report:
        """Run ``blocks`` in order; stops what was left running; returns the report."""
        try:
            for index, block in enumerate(blocks):
                following = blocks[index + 1] if index + 1 < len(blocks) else None
                output = following if following is not None and following.marker == "output" else None
                self.block(block, output)
        finally:
            self.stop()
        return self.report

    def block(self, block: Block, output: Block | None) -> None:
        """Run one block and record what became of it."""
        if block.marker is not None and block.marker.startswith("skip:"):
            self.outcome(block, "skipped", block.marker[len("skip:"):].strip())
            return
        if block.marker == "output":
            if self.output_taken is not block:
                self.fail(f"{block.where}: marked as output, but the block before it is not a console block "
                          "that was run")
            self.outcome(block, "compared", "the output of the block before it")
            return
        self.notes = []
        try:
            if block.lang == "console":
                self.console(block, output)
            elif block.lang == "sh":
                self.shell(block)
            elif block.lang == "python":
                self.python(block)
            else:
                self.outcome(block, "not run", f"{block.lang or 'plain'} text is not a command")
        except Skip as skip:
            self.outcome(block, "skipped", str(skip))
        except PageError as exc:
            self.fail(str(exc))
            self.outcome(block, "ran", "failed")

    def outcome(self, block: Block, what: str, detail: str = "") -> None:
        notes = [detail, *self.notes] if what in ("compared", "ran") else [detail]
        self.report.outcomes.append(Outcome(block, what, ", ".join(note for note in notes if note)))

    def fail(self, message: str) -> None:
        self.report.failures.append(message)

    # console and sh

    def console(self, block: Block, output: Block | None) -> None:
        commands = console_commands(block)
        if not commands:
            raise PageError(f"{block.where}: a console block without a `$ command`")
        if output is not None:
            self.output_taken = output
            last = commands[-1]
            if last.expected:
                raise PageError(f"{output.where}: marked as output, but {last.shown} at {block.page}:{last.line} "
                                "shows output of its own")
            last.expected = [(output.line_of(i), text) for i, text in enumerate(output.body)]
        if any(command.answers for command in commands):
            results = [self.terminal(block, command) for command in commands]
        else:
            results = self.script(block, commands)
        for position, (command, (code, lines)) in enumerate(zip(commands, results, strict=True)):
            problem = difference(command.expected, lines)
            if problem is not None:
                self.fail(f"{block.page}:{command.line}: {command.shown} (console block at {block.where}) "
                          f"prints other than shown: {problem}\n{indented(lines)}")
            following = commands[position + 1].text.strip() if position + 1 < len(commands) else ""
            shows_failure = following == "echo $?" or any(text.startswith("error:") for _, text in command.expected)
            if code != 0 and not shows_failure:
                self.fail(f"{block.page}:{command.line}: {command.shown} (console block at {block.where}) exited "
                          f"{code}, and the page does not show it failing\n{indented(lines)}")
        typed = sum(1 for command in commands if command.answers)
        self.outcome(block, "compared", f"{len(commands)} command{'s' * (len(commands) != 1)}"
                     + (f", {typed} at a terminal" if typed else ""))

    def shell(self, block: Block) -> None:
        every = sh_commands(block)
        commands = [command for command in every if not installs(command.text)]
        installing = len(every) - len(commands)
        results = self.script(block, commands)
        for command, (code, lines) in zip(commands, results, strict=True):
            if code != 0:
                self.fail(f"{block.page}:{command.line}: {command.shown} (sh block at {block.where}) exited {code}"
                          f"\n{indented(lines)}")
        self.outcome(block, "ran", f"{len(commands)} command{'s' * (len(commands) != 1)}"
                     + (f", {installing} pip install not run" if installing else ""))

    def script(self, block: Block, commands: Sequence[Command]) -> list[tuple[int, list[str]]]:
        """Run ``commands`` in one shell; each one's exit code and output lines. A last ``tinywf
        serve`` or ``worker`` is left running (its result is reported when it is stopped)."""
        texts = [self.substitute(command.text, block) for command in commands]
        keep = bool(commands) and long_running(texts[-1])
        parts = ["exec 2>&1"]
        for number, text in enumerate(texts):
            if keep and number == len(texts) - 1:
                if text_command(text).startswith("tinywf serve") and "--port" not in text:
                    text = text.replace("tinywf serve", f"tinywf serve --port {self.port}", 1)
                command = text_command(text)
                parts.append(f"{text[:len(text) - len(command)]}exec {command}")
                break
            parts += [text, f'__rc=$?; printf "\\n{DONE} %d %d\\n" {number} "$__rc"; (exit "$__rc")']
        source = "\n".join(parts) + "\n"
        if keep:
            return self.start_background(block, commands, source)
        _, output = self.run_process(block, ["bash", "-c", source])
        return self.split(block, commands, output)

    def run_process(self, block: Block, argv: Sequence[str], stdin: bytes | None = None) -> tuple[int, str]:
        """Run ``argv`` in the workspace, in a process group of its own (all of it is killed if
        it hangs); its exit code and output (stdout and stderr together)."""
        proc = subprocess.Popen(argv, cwd=self.workspace, env=self.env,
                                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = proc.communicate(stdin, timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise PageError(f"{block.where}: the block did not end within {BLOCK_TIMEOUT:.0f} s") from None
        return proc.returncode, output.decode(errors="replace")

    def split(self, block: Block, commands: Sequence[Command], output: str) -> list[tuple[int, list[str]]]:
        """Each command's exit code and output lines, from a script's output and its markers."""
        results: list[tuple[int, list[str]]] = []
        rest = self.unsubstitute(output)
        for number, command in enumerate(commands):
            found = DONE_LINE.search(rest)
            if found is None or int(found.group(1)) != number:
                raise PageError(f"{block.page}:{command.line}: the shell ended during {command.shown} "
                                f"(block at {block.where})\n{indented(rest.splitlines())}")
            results.append((int(found.group(2)), rest[:found.start()].splitlines()))
            rest = rest[found.end():]
        return results

    def start_background(self, block: Block, commands: Sequence[Command], source: str) -> list[tuple[int, list[str]]]:
        """Start a script whose last command keeps running; wait for the commands before it
        (and, for a server, until it listens)."""
        command, before = commands[-1], len(commands) - 1
        log = self.workspace.parent / f"background-{len(self.background)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(["bash", "-c", source], cwd=self.workspace, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        self.background.append(Background(block, command, proc, log))
        self.note(f"`{text_command(command.text).split('#')[0].strip()}` left running")
        deadline = time.monotonic() + BLOCK_TIMEOUT
        server = text_command(command.text).startswith("tinywf serve")
        while True:
            text = log.read_text(errors="replace")
            if len(DONE_LINE.findall(text)) >= before and (not server or listening(self.port)):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise PageError(f"{block.page}:{command.line}: {command.shown} (block at {block.where}) "
                                f"{'ended' if proc.poll() is not None else 'never got going'}"
                                f"\n{indented(self.unsubstitute(text).splitlines())}")
            time.sleep(0.05)
        results = self.split(block, commands[:-1], text)
        return [*results, (0, [])]

    def stop(self) -> None:
        """Stop what was left running (SIGTERM: each must exit 0), and drop the page's schema."""
        for job in self.background:
            if job.proc.poll() is None:
                job.proc.send_signal(signal.SIGTERM)
            try:
                code = job.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(job.proc.pid, signal.SIGKILL)
                code = job.proc.wait()
            if code != 0:
                lines = self.unsubstitute(job.log.read_text(errors="replace")).splitlines()
                self.fail(f"{job.block.page}:{job.command.line}: {job.command.shown} (block at {job.block.where}) "
                          f"exited {code} when stopped with SIGTERM\n{indented(lines[-20:])}")
        self.background.clear()
        if self.pg_schema is not None:
            from pgserver import drop_schema

            drop_schema(self.pg_schema)
            self.pg_schema = self.pg_url = None

    def terminal(self, block: Block, command: Command) -> tuple[int, list[str]]:
        """Run one command with a pseudo-terminal, typing its answers at its prompts."""
        import fcntl
        import pty
        import struct
        import termios

        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
        proc = subprocess.Popen(["bash", "-c", self.substitute(command.text, block)], cwd=self.workspace,
                                env=self.env, stdin=follower, stdout=follower, stderr=follower,
                                start_new_session=True)
        os.close(follower)
        seen, answered_at, answers = "", -1, list(command.answers)
        deadline = time.monotonic() + BLOCK_TIMEOUT
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([leader], [], [], 0.1)
                if ready:
                    try:
                        chunk = os.read(leader, 65536)
                    except OSError:  # the terminal closed: the command ended
                        break
                    if not chunk:
                        break
                    seen += chunk.decode(errors="replace")
                elif proc.poll() is not None:
                    break
                if answers and len(seen) > answered_at and seen.endswith("> "):
                    os.write(leader, answers.pop(0).encode() + b"\r")
                    answered_at = len(seen)
            else:
                raise PageError(f"{block.page}:{command.line}: {command.shown} did not end within "
                                f"{BLOCK_TIMEOUT:.0f} s\n{indented(seen.splitlines())}")
            return proc.wait(timeout=10), self.unsubstitute(seen.replace("\r\n", "\n")).splitlines()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            os.close(leader)

    # python

    def python(self, block: Block) -> None:
        named = PATH_COMMENT.match(block.body[0]) if block.body else None
        if named is not None:
            path = named.group("path")
            source = self.repo / path
            if source.is_file():
                self.excerpt(block, path, source)
                return
            target = self.workspace / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(block.body) + "\n", encoding="utf-8")
            self.outcome(block, "saved", path)
            return
        program = "\n".join(block.body) + "\n"
        kind = fragment(program)
        if kind is not None:
            wrapped = f"def _step(self):\n{textwrap.indent(program, '    ')}" if kind == "a step's body" \
                else f"class _Flow:\n{textwrap.indent(program, '    ')}"
            try:
                compile(wrapped, block.where, "exec")
            except SyntaxError as exc:
                line = block.line_of((exc.lineno or 2) - 2)
                self.fail(f"{block.page}:{line}: the python fragment at {block.where} does not compile as "
                          f"{kind}: {exc.msg}")
            self.outcome(block, "fragment", f"compiled as {kind}, not run")
            return
        code, output = self.run_process(block, ["python", "-"], self.substitute(program, block).encode())
        if code != 0:
            lines = self.unsubstitute(output).splitlines()
            self.fail(f"{block.page}:{python_error_line(lines, block)}: the python block at {block.where} exited "
                      f"{code}\n{indented(lines[-12:])}")
        self.outcome(block, "ran")

    def excerpt(self, block: Block, name: str, source: Path) -> None:
        """Check that ``block`` (after its path comment) is an excerpt of ``source``."""
        file_lines = [line.rstrip() for line in source.read_text(encoding="utf-8").splitlines()]
        at = 0
        for index, raw in enumerate(block.body[1:], start=1):
            if not raw.strip():
                continue
            while at < len(file_lines) and file_lines[at] != raw.rstrip():
                at += 1
            if at == len(file_lines):
                self.fail(f"{block.page}:{block.line_of(index)}: this line of the excerpt of {name} "
                          f"(python block at {block.where}) is not in the file after the lines before it: {raw!r}")
                break
            at += 1
        self.outcome(block, "excerpt", name)
        target = self.workspace / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def fragment(code: str) -> str | None:
    """``"a step's body"`` or ``"a class's body"`` when ``code`` only makes sense inside a
    workflow class (see the module's docstring); None for a program that runs as it is."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None  # it runs, and its error is reported
    outside = list(top_level(tree.body))
    if any(isinstance(node, ast.Yield | ast.YieldFrom | ast.Return | ast.Await) for node in outside):
        return "a step's body"
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.args.args \
                and node.args.args[0].arg == "self":
            return "a class's body"
    return None


def top_level(nodes: Sequence[ast.AST]) -> Iterator[ast.AST]:
    """Every node of ``nodes``, not descending into functions, lambdas or classes."""
    for node in nodes:
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            yield from top_level(list(ast.iter_child_nodes(node)))


def python_error_line(lines: Sequence[str], block: Block) -> int:
    """The page line of the innermost ``File "<stdin>", line N`` of a traceback, else the block's."""
    found = [int(m.group(1)) for line in lines if (m := re.search(r'File "<stdin>", line (\d+)', line))]
    return block.line_of(found[-1] - 1) if found else block.line


# -- the environment -------------------------------------------------------------------------


def page_env(now: str, bin_dir: Path | None = None) -> dict[str, str]:
    """A reader's environment: ours without tinywf's, pytest's or colour settings, plus the fixed
    clock and width, with ``bin_dir`` (a virtual environment's scripts; by default this Python's)
    first on the PATH."""
    drop = {"NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE"}
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TINYWF_", "PYTEST_")) and key not in drop}
    scripts = bin_dir if bin_dir is not None else Path(sys.executable).parent
    env["PATH"] = f"{scripts}{os.pathsep}{env.get('PATH', '')}"
    if bin_dir is not None:
        env["VIRTUAL_ENV"] = str(bin_dir.parent)
    env.update(TINYWF_NOW=now, NO_COLOR="1", COLUMNS="80", LINES="40", TERM="dumb", PYTHONUNBUFFERED="1",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def make_workspace(repo: Path, workspace: Path) -> None:
    """What a fresh clone gives a reader: ``flows/``, ``pyproject.toml`` and an empty ``state/``."""
    workspace.mkdir(parents=True, exist_ok=True)
    shutil.copytree(repo / "flows", workspace / "flows", ignore=shutil.ignore_patterns("__pycache__"),
                    dirs_exist_ok=True)
    shutil.copyfile(repo / "pyproject.toml", workspace / "pyproject.toml")
    (workspace / "state").mkdir(exist_ok=True)
    if (repo / "state" / ".gitignore").is_file():
        shutil.copyfile(repo / "state" / ".gitignore", workspace / "state" / ".gitignore")


def installs(command: str) -> bool:
    """Whether a command installs packages (not run: see the module's docstring)."""
    return re.match(r"\s*(python3? -m )?pip install\b", command) is not None


def text_command(text: str) -> str:
    """The command of a shell line without the variables set before it (``A=1 tinywf serve``)."""
    return re.sub(r"^\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*", "", text)


def long_running(text: str) -> bool:
    """Whether a command runs until stopped: ``tinywf serve`` or ``tinywf worker``."""
    return re.match(r"tinywf (serve|worker)\b", text_command(text)) is not None


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def indented(lines: Sequence[str], limit: int = 40) -> str:
    """Output lines for a failure message (the last ``limit``)."""
    shown = list(lines)[-limit:] or ["(no output)"]
    return "\n".join(f"    | {line}" for line in shown)


def run_page(page: Path, repo: Path, workspace: Path, *, now: str = DEFAULT_NOW,
             bin_dir: Path | None = None) -> Report:
    """Run every example of ``page`` in ``workspace`` (made here, or added to); the report of what
    happened. ``bin_dir``: the scripts of the virtual environment to run it with."""
    name = str(page.relative_to(repo)) if page.is_relative_to(repo) else page.name
    try:
        blocks = parse(page.read_text(encoding="utf-8"), name)
    except PageError as exc:
        return Report(failures=[str(exc)])
    return Session(repo, workspace, now=now, page=name, bin_dir=bin_dir).run(blocks)


#: What ``census`` counts, in the order the contributing note names them.
KINDS = ("console", "sh", "python", "excerpt", "saved", "fragment", "skipped", "output", "other")


def kind_of(block: Block, repo: Path) -> str:
    """What the runner will do with ``block``, read without running it: one of ``KINDS``."""
    if block.marker is not None:
        return "output" if block.marker == "output" else "skipped"
    if block.lang in ("console", "sh"):
        return block.lang
    if block.lang != "python":
        return "other"
    named = PATH_COMMENT.match(block.body[0]) if block.body else None
    if named is not None:
        return "excerpt" if (repo / named.group("path")).is_file() else "saved"
    return "fragment" if fragment("\n".join(block.body) + "\n") is not None else "python"


#: What the runner does with each kind of block, for the contributing note's table.
DOES = {
    "console": "runs each `$` command, compares what it prints",
    "sh": "runs its commands, each must exit 0",
    "python": "runs it, it must exit 0",
    "excerpt": "checks its lines against the file it names",
    "saved": "saves it as the file it names, for the blocks after it",
    "fragment": "compiles it as a step's or a class's body",
    "skipped": "skips it (`<!-- example: skip: REASON -->`)",
    "output": "compares it as the output of the console block before it",
    "other": "nothing: configuration or output (ini, cron, text, mermaid)",
}
CENSUS_START = "<!-- example-census:start -->"
CENSUS_END = "<!-- example-census:end -->"


def pages_of(repo: Path) -> list[Path]:
    """The pages whose examples run: README.md, then every page of docs/."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def census_table(counts: dict[str, int], pages: int) -> str:
    """The contributing note's table of ``counts`` over ``pages`` pages."""
    rows = [f"| {kind} | {counts[kind]} | {DOES[kind]} |" for kind in KINDS]
    total = sum(counts.values())
    return "\n".join([f"{total} blocks on {pages} pages (the README and docs/):", "",
                      "| block | how many | what the test does |", "| --- | --- | --- |", *rows])


def with_census(note: str, table: str) -> str:
    """``note`` with ``table`` between the census markers."""
    head, rest = note.split(CENSUS_START)
    _, tail = rest.split(CENSUS_END)
    return f"{head}{CENSUS_START}\n{table}\n{CENSUS_END}{tail}"


def census(pages: Sequence[Path], repo: Path) -> dict[str, int]:
    """How many blocks of ``pages`` are of each kind (see ``kind_of``)."""
    counts = dict.fromkeys(KINDS, 0)
    for page in pages:
        for block in parse(page.read_text(encoding="utf-8"), page.name):
            counts[kind_of(block, repo)] += 1
    return counts


def main(argv: Sequence[str]) -> int:
    """``python tests/docexamples.py PAGE.md ...``: run pages (by default all), print each report;
    exit 1 on a difference. ``--census``: rewrite the count of examples in docs/contributing.md."""
    import tempfile

    repo = Path(__file__).resolve().parent.parent
    if list(argv) == ["--census"]:
        note = repo / "docs" / "contributing.md"
        pages = pages_of(repo)
        note.write_text(with_census(note.read_text(encoding="utf-8"), census_table(census(pages, repo), len(pages))),
                        encoding="utf-8")
        return 0
    failed = False
    for page in argv or [str(page) for page in pages_of(repo)]:
        with tempfile.TemporaryDirectory() as scratch:
            report = run_page(Path(page).resolve(), repo, Path(scratch) / "workspace")
        print(f"{page}: {report.summary()}")
        failed = failed or bool(report.failures)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
