"""The ``tinywf`` command: a thin Typer layer over ``Runtime``.

Each command parses its arguments, makes one ``Runtime`` call, and renders the result:
a JSON document with ``--json``, rich output for people otherwise. Errors are mapped to
exit codes in one place (``main``).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import signal as signals
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from tinywf_cli import __version__, interrupts
from tinywf_cli.cli.output import OutputError, guard_streams, is_utf8
from tinywf_cli.errors import BadInput, InvalidValue, StoreUnavailable, TinyWFError
from tinywf_cli.jsonio import TextValue, strict_loads

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console

    from tinywf_cli.model import RunDocument, TickReport
    from tinywf_cli.runtime.runtime import Runtime

T = TypeVar("T")

app = typer.Typer(
    name="tinywf",
    help="Durable workflows from the shell: start runs, answer them, let cron carry them on.\n\n"
         "\b\nExample:\n    tinywf run flows/guess_game.py\n    tinywf show RUN",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- shared options, defined once -------------------------------------------------------

StoreTarget = Annotated[
    str | None,
    typer.Option("--store", metavar="TARGET",
                 help="Where runs live: a directory that exists, or a postgresql:// URL. Default: --state-dir, "
                      "else $TINYWF_STORE, else $TINYWF_STATE_DIR, else ./state."),
]
StateDir = Annotated[
    str | None,
    typer.Option("--state-dir", metavar="DIR", help="The state directory (made on first use when missing)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout, nothing else.")]
def seconds_option(name: str, low: float, high: float) -> Callable[[float], float]:
    """A callback refusing what ``min=`` lets through: NaN, infinities, absurdly long waits."""
    def check(value: float) -> float:
        if not low <= value <= high:  # False for NaN
            raise typer.BadParameter(f"{value!r} is not a number of seconds between {low:g} and {high:g}",
                                     param_hint=f"'{name}'")
        return value
    return check


#: The longest lock wait and poll interval accepted: a week, a day.
MAX_LOCK_TIMEOUT = 7 * 86400.0
MAX_POLL = 86400.0

LockTimeout = Annotated[
    float,
    typer.Option("--lock-timeout", metavar="SECONDS", callback=seconds_option("--lock-timeout", 0, MAX_LOCK_TIMEOUT),
                 help="How long to wait for a run's lock before exiting 4."),
]
Lease = Annotated[
    float | None,
    typer.Option("--lease", min=0.5, metavar="SECONDS", show_default=False,
                 help="PostgreSQL stores: how long a run's claim outlives a process that stopped renewing it "
                      "(killed, frozen, cut off) before another may take the run over. Default: 30."),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")]
ReadLockTimeout = Annotated[
    float,
    typer.Option("--lock-timeout", metavar="SECONDS", callback=seconds_option("--lock-timeout", 0, MAX_LOCK_TIMEOUT),
                 help="Accepted like every command that touches a run; reading takes no lock, so it never waits."),
]
RunId = Annotated[str, typer.Argument(metavar="RUN", help="The run id.", show_default=False)]
NoInput = Annotated[bool, typer.Option("--no-input", help="Never prompt, even with a terminal on stdin.")]
Wait = Annotated[bool, typer.Option("--wait", help="Wait out timers and retry delays in this process, "
                                                    "with a countdown.")]

DEFAULT_LOCK_TIMEOUT = 10.0

#: The runtimes the command being run opened: ``main`` closes them (database connections) when it ends.
OPENED: contextvars.ContextVar[list[Runtime] | None] = contextvars.ContextVar("tinywf_opened", default=None)


class Session:
    """What one command invocation shares: its runtime, consoles and output mode."""

    def __init__(self, store: str | None, state_dir: str | None, as_json: bool,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT, lease: float | None = None) -> None:
        self.target, self.named_by = store_source(store, state_dir)
        self.as_json = as_json
        self.lock_timeout = lock_timeout
        self.lease = lease
        self._runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        """The ``Runtime`` over the state directory (created on first use)."""
        if self._runtime is None:
            from tinywf_cli.runtime.runtime import Runtime

            check_store_exists(self.target, self.named_by)
            self._runtime = Runtime(self.target, lock_timeout=self.lock_timeout, lease=self.lease)
            opened = OPENED.get()
            if opened is not None:
                opened.append(self._runtime)
        return self._runtime

    @property
    def console(self) -> Console:
        """Output for people (stdout)."""
        from tinywf_cli.cli.render import make_console

        return make_console()

    @property
    def state_hint(self) -> str:
        """``--state-dir X`` (or ``--store URL``) for ready-to-paste commands, when X is not what
        they would find anyway."""
        if self.target == store_target(None, None):
            return ""
        import shlex

        if is_url(self.target):
            return f" --store {shlex.quote(self.runtime.store.target)}"
        return f" --state-dir {shlex.quote(self.target)}"

    @contextlib.contextmanager
    def flow_output(self) -> Iterator[None]:
        """While flow code runs: with ``--json`` its prints go to stderr, keeping stdout one document."""
        if self.as_json:
            with contextlib.redirect_stdout(sys.stderr):
                yield
        else:
            yield

    def emit(self, document: BaseModel) -> None:
        """Print a document as JSON (with ``\\u`` escapes where stdout cannot take UTF-8)."""
        self.emit_text(document.model_dump_json(indent=2))

    def emit_text(self, text: str) -> None:
        """Print a document's JSON text (with ``\\u`` escapes where stdout cannot take UTF-8)."""
        if not is_utf8(sys.stdout):
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=True)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def read(self, read: Callable[[Path], T]) -> T | None:
        """``read(state_dir)`` on the read path that needs neither pydantic nor the engine
        (``tinywf_cli.reading.documents``); ``None`` when the full path must answer (a database, a
        record only it may judge)."""
        if is_url(self.target):
            return None
        check_store_exists(self.target, self.named_by)
        from tinywf_cli.reading.documents import Fallback

        try:
            return read(Path(self.target))
        except Fallback:
            return None

    def now(self) -> datetime:
        """The clock of this command (``$TINYWF_NOW`` or the wall clock), without the runtime."""
        if self._runtime is not None:
            return self._runtime.clock.now()
        from tinywf_cli.clock import clock_from_env

        return clock_from_env().now()

    def call(self, fn: Callable[[], T]) -> T:
        """Run a runtime call with flow output redirected as needed."""
        with self.flow_output():
            return fn()


def is_url(target: str) -> bool:
    """Whether a store target is a database URL rather than a directory."""
    return "://" in target


def store_source(store: str | None, state_dir: str | None) -> tuple[str, str | None]:
    """Where runs live (``--store``, else ``--state-dir``, else ``$TINYWF_STORE``, else
    ``$TINYWF_STATE_DIR``, else ``./state``), and what named it when that must be a store that
    exists already (``--store``, ``$TINYWF_STORE``); None for a state directory, which is made
    when it is missing."""
    for given, what in ((store, "--store"), (state_dir, "--state-dir")):
        if given is not None:
            if not given.strip():
                raise BadInput(f"{what} is empty: name a directory (or a postgresql:// URL)")
            return given, what if what == "--store" else None
    named = os.environ.get("TINYWF_STORE")
    if named:
        return named, "$TINYWF_STORE"
    return os.environ.get("TINYWF_STATE_DIR") or "state", None


def store_target(store: str | None, state_dir: str | None) -> str:
    """Where runs live: ``--store``, else ``--state-dir``, else ``$TINYWF_STORE``, else
    ``$TINYWF_STATE_DIR``, else ``./state``."""
    return store_source(store, state_dir)[0]


def check_store_exists(target: str, named_by: str | None) -> None:
    """Refuse a target named by ``--store`` or ``$TINYWF_STORE`` that is neither a URL nor an
    existing directory: a typo must not become a new, empty store that runs start in unseen."""
    if named_by is None or is_url(target) or os.path.lexists(target):
        return
    from tinywf_cli.errors import StoreNotFound

    instead = "--state-dir" if named_by == "--store" else "$TINYWF_STATE_DIR"
    raise StoreNotFound(target, f"no such directory, and not a postgresql:// URL ({named_by} names a store "
                                f"that exists; to make a new state directory there, use {instead})")


def parse_value(text: str) -> TextValue:
    """A command-line VALUE (``-`` reads stdin): JSON when it parses and fits the event's type,
    else the text itself — decided where the type is known."""
    if text == "-":
        try:
            text = sys.stdin.read().rstrip("\n")
        except UnicodeDecodeError:
            raise BadInput("the value on stdin is not UTF-8 text") from None
    return TextValue(text)


def parse_object(text: str | None, what: str) -> dict[str, Any]:
    """A JSON object argument (``@file`` reads a file); BadInput when it is not one."""
    if text is None:
        return {}
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"cannot read {what} file '{text[1:]}': {exc.strerror}") from None
        except UnicodeDecodeError:
            raise BadInput(f"{what} file '{text[1:]}' is not UTF-8 text") from None
    try:
        value = strict_loads(text)
    except ValueError as exc:
        raise BadInput(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{what} must be a JSON object like '{{\"key\": 1}}', got {type(value).__name__}")
    return value


def finish(session: Session, doc: RunDocument) -> NoReturn:
    """Print a run document and exit: 1 when the command advanced the run and it failed or was blocked."""
    if session.as_json:
        session.emit(doc)
    else:
        from tinywf_cli.cli.render import run_outcome

        session.console.print(run_outcome(doc, session.runtime.clock.now(), session.state_hint), soft_wrap=True)
    raise typer.Exit(1 if doc.advanced and doc.status in ("failed", "blocked") else 0)


# -- interaction ------------------------------------------------------------------------


def interactive(no_input: bool) -> bool:
    """Whether to prompt: a terminal on stdin and no ``--no-input``."""
    return not no_input and sys.stdin.isatty()


def prompt_events(session: Session, doc: RunDocument) -> tuple[RunDocument, bool]:
    """Ask for each pending event at the terminal; returns the run and whether it was left waiting."""
    from rich.text import Text

    from tinywf_cli.cli.render import make_console, placeholder_for, resolve_command

    err = make_console(stderr=True)
    while doc.status == "waiting":
        events = [p for p in doc.pending if p.kind == "event"]
        if not events:
            break
        pending = events[0]
        question = (pending.request or {}).get("question") or f"Value for event '{pending.key}'"
        expects = doc.expects.get(pending.resume_id)
        line = Text(str(question), style="bold")
        if expects:
            line.append(f" [{expects}]", style="cyan")
        line.append(" (empty leaves the run waiting)", style="dim")
        err.print(line)
        # the prompt goes to stderr like the question: with stdout redirected, input("> ")
        # would write it into the output (and into the --json document)
        err.print("> ", end="")
        answer_later = resolve_command(doc.run_id, pending, session.state_hint, placeholder_for(expects))
        try:
            with at_rest(f"interrupted at the prompt; run {doc.run_id} is left waiting, answer it with "
                         f"`{answer_later}`"):
                answer = input()
        except EOFError:
            answer = ""
        if not answer.strip():
            err.print(Text("left waiting; answer later with:", style="dim"))
            err.print(Text(answer_later), soft_wrap=True)
            return doc, True
        try:
            doc = session.call(partial(session.runtime.resolve, doc.run_id, pending.resume_id,
                                       parse_value(answer)))
        except InvalidValue as exc:  # its message says "invalid value for event …" already
            err.print(Text(exc.message, style="red"))
    return doc, False


def wait_out(session: Session, doc: RunDocument) -> RunDocument:
    """``--wait``: sleep until each timer or retry is due (lock released), then advance."""
    from tinywf_cli.cli.render import make_console
    from tinywf_cli.clock import ago

    rt = session.runtime
    err = make_console(stderr=True)
    while doc.status == "waiting" and doc.pending and all(p.kind != "event" for p in doc.pending):
        due = min(p.due_at for p in doc.pending if p.due_at is not None)
        what = ", ".join(f"{p.kind} {p.key}" for p in doc.pending)
        remaining = (due - rt.clock.now()).total_seconds()
        if remaining > 0:
            with at_rest(f"interrupted; run {doc.run_id} is left waiting: `tinywf tick` (cron) or "
                         "`tinywf worker` carries it on when due"):
                countdown(err, rt, remaining, f"waiting for {what}")
        doc = session.call(partial(rt.advance, doc.run_id))
        if not session.as_json and doc.status == "waiting" and doc.pending:
            err.print(f"[dim]{doc.run_id}: waiting again, next due {ago(doc.pending[0].due_at, rt.clock.now())}"
                      "[/dim]")
    return doc


def countdown(console: Console, rt: Runtime, seconds: float, label: str) -> None:
    """Wait ``seconds`` on the runtime's clock, showing what is awaited and how long is left."""
    from tinywf_cli.clock import span

    if not console.is_terminal:
        console.print(f"[dim]{label}: {span(seconds)}[/dim]", highlight=False)
        rt.clock.sleep(seconds)
        return
    with console.status(f"{label}: {span(seconds)} left") as status:
        rt.clock.sleep(seconds, lambda left: status.update(f"{label}: {span(max(left, 0.0))} left"))


def drive(session: Session, doc: RunDocument, *, wait: bool, no_input: bool) -> RunDocument:
    """After starting or answering a run: prompt for events and wait out timers as asked."""
    while doc.status == "waiting":
        kinds = {p.kind for p in doc.pending}
        if "event" in kinds and interactive(no_input):
            doc, left_waiting = prompt_events(session, doc)
            if left_waiting:
                break
        elif wait and kinds and "event" not in kinds:
            doc = wait_out(session, doc)
        else:
            break
    return doc


# -- commands ------------------------------------------------------------------------------


def version_callback(value: bool) -> None:
    """``--version``."""
    if value:
        print(f"tinywf {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """tinywf: durable workflows in Python, one JSON record per run.

    \b
    Example:
        tinywf run flows/guess_game.py
    """


@app.command()
def run(
    flow: Annotated[str, typer.Argument(metavar="FLOW", help="path.py or path.py:Class", show_default=False)],
    input: Annotated[str | None, typer.Option("--input", metavar="JSON|@FILE",
                                              help="The run's input: a JSON object, or @file.json.")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", metavar="ID",
                                               help="Give the run this id (default: generated).")] = None,
    attach: Annotated[bool, typer.Option("--attach", help="When a run with this --run-id exists for the same "
                                                          "workflow, advance and print it instead of exiting 4.")]
    = False,
    wait: Wait = False,
    no_input: NoInput = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Start a run of FLOW and advance it until it finishes, fails or waits.

    With a terminal on stdin, pending events are asked for at a prompt; an empty answer
    leaves the run waiting. Otherwise a ready-to-paste `tinywf resolve` line is printed.
    With --attach and --run-id, starting twice is safe (webhooks, cron).

    \b
    Example:
        tinywf run flows/guess_game.py --input '{"number": 42}'
        tinywf run flows/checkout.py --run-id order-17 --attach --input @order.json
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    data = parse_object(input, "--input")
    if attach and run_id is None:
        raise BadInput("--attach needs --run-id: it attaches to the run with that id")
    doc = session.call(lambda: session.runtime.start(flow, input=data, run_id=run_id, attach=attach))
    finish(session, drive(session, doc, wait=wait, no_input=no_input))


@app.command()
def resolve(
    run_id: RunId,
    resume: Annotated[str, typer.Argument(metavar="RESUME", help="A resume id, or the key of a pending event.",
                                          show_default=False)],
    value: Annotated[str, typer.Argument(metavar="VALUE", show_default=False,
                                         help="JSON if it parses, else a string; - reads stdin. "
                                              "A VALUE starting with - goes after --.")],
    wait: Wait = False,
    no_input: NoInput = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Answer a pending event of RUN with VALUE, then advance the run as `run` does.

    \b
    Example:
        tinywf resolve guess_game-1a2b3c4d ask_0 50
        tinywf resolve RUN approval -- -1
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    parsed = parse_value(value)
    doc = session.call(lambda: session.runtime.resolve(run_id, resume, parsed))
    finish(session, drive(session, doc, wait=wait, no_input=no_input))


@app.command()
def send(
    run_id: RunId,
    key: Annotated[str, typer.Argument(metavar="KEY", help="The event key.", show_default=False)],
    value: Annotated[str, typer.Argument(metavar="VALUE", show_default=False,
                                         help="JSON if it parses, else a string; - reads stdin.")],
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Deliver event KEY to RUN: resolve its pending wait, or queue it for the wait to come.

    Early events queue per key, first in first out, one consumed per wait; a paused,
    failed or blocked run only queues them. Says when it queued one, and how many wait.

    \b
    Example:
        tinywf send order-17 approval true
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    parsed = parse_value(value)
    finish(session, session.call(lambda: session.runtime.send(run_id, key, parsed)))


@app.command(name="signal")
def signal_command(
    run_id: RunId,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The @signal method.", show_default=False)],
    args: Annotated[str | None, typer.Argument(metavar="[JSON-OBJECT]", show_default=False,
                                               help="The method's arguments, e.g. '{\"amount\": 3}'.")] = None,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Call the @signal method NAME of RUN with the object's fields as arguments.

    Runs under the run's lock against its latest state; does not advance the run.

    \b
    Example:
        tinywf signal sub-1 add_usage '{"item": "api-calls", "amount": 120}'
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    kwargs = parse_object(args, f"the argument object of signal {name!r}")
    doc = session.call(lambda: session.runtime.signal(run_id, name, **kwargs))
    finish(session, doc)


#: The newest timeline entries `show` prints for people unless --last says otherwise.
SHOW_LAST = 50


@app.command()
def show(
    run_id: RunId,
    last: Annotated[int | None, typer.Option("--last", min=0, metavar="N",
                                             help=f"Only the newest N entries of the timeline (for people, "
                                                  f"the newest {SHOW_LAST} unless given).")] = None,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: ReadLockTimeout = DEFAULT_LOCK_TIMEOUT,
    debug: Debug = False,
) -> None:
    """Show RUN: workflow, status, step, state, pending resumes, error and audit timeline.

    \b
    Example:
        tinywf show guess_game-1a2b3c4d
    """
    session = Session(store, state_dir, as_json)
    limit = last if last is not None or as_json else SHOW_LAST
    from tinywf_cli.reading import documents

    doc: Any = session.read(lambda root: documents.show(root, run_id, limit))
    if doc is None:  # the full path: another store, or a record it must judge
        doc = session.runtime.get(run_id, last=limit)
        if as_json:
            session.emit(doc)
            return
    elif as_json:
        session.emit_text(doc.json())
        return
    from tinywf_cli.cli.render import show_view

    # crop=False: a ready-to-paste `tinywf resolve` line stays whole, however narrow the terminal
    session.console.print(show_view(doc, session.now(), session.state_hint), crop=False)


STATUSES = ("running", "waiting", "paused", "blocked", "finished", "failed", "cancelled", "unreadable")


@app.command(name="list")
def list_runs(
    status: Annotated[str | None, typer.Option("--status", metavar="STATUS",
                                               help="Only runs in this status: " + ", ".join(STATUSES))] = None,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: ReadLockTimeout = DEFAULT_LOCK_TIMEOUT,
    debug: Debug = False,
) -> None:
    """List all runs, newest first: id, workflow, status, step, updated.

    A record that cannot be read is listed as unreadable, with a warning on stderr.

    \b
    Example:
        tinywf list --status waiting
    """
    if status is not None and status not in STATUSES:
        raise BadInput(f"--status must be one of {', '.join(STATUSES)}, not {status!r}")
    session = Session(store, state_dir, as_json)
    from tinywf_cli.reading import documents

    runs: Any = session.read(lambda root: documents.list_runs(root, status))
    if runs is None:
        runs = session.runtime.list(status)
    for problem in runs.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if as_json:
        if isinstance(runs, documents.RunRows):
            session.emit_text(runs.json())
        else:
            session.emit(runs)
        return
    from tinywf_cli.cli.render import runs_table

    session.console.print(runs_table(runs, session.now()))


@app.command()
def tick(
    limit: Annotated[int | None, typer.Option("--limit", min=1, metavar="N",
                                              help="Advance at most N runs.")] = None,
    reindex: Annotated[bool, typer.Option("--reindex", help="First repair the due index from the runs "
                                                            "themselves (after copying records in by hand).")]
    = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Advance every run whose timer, retry delay or event timeout is due; recover dead runs.

    For cron. Safe to run concurrently with itself and other commands: runs locked by
    others are skipped and reported, and so is a run that cannot be read or loaded. On
    PostgreSQL a run another worker holds is left to it: not due here, and listed only
    with --json ("claimed by another worker"). Failed and blocked runs are reported; the
    exit stays 0.

    \b
    Example:
        * * * * *  cd /srv/app && tinywf tick --json >> tick.log
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    if reindex:
        session.runtime.reindex()
    report = session.call(lambda: session.runtime.tick(limit))
    if as_json:
        session.emit(report)
        return
    from tinywf_cli.cli.render import tick_lines

    session.console.print(tick_lines(report))


@app.command()
def worker(
    poll: Annotated[float, typer.Option("--poll", metavar="SECONDS", callback=seconds_option("--poll", 0.01, MAX_POLL),
                                        help="Look for due runs at least this often.")] = 5.0,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Run `tick` in a loop, sleeping until the next due time; stop cleanly on SIGINT/SIGTERM.

    With --json, prints one tick document per line (JSON Lines) for each tick that found
    due runs. On SIGINT/SIGTERM the run in progress is finished first, then the worker
    stops (exit 0); a second signal stops it at once, leaving that run for `tinywf tick`
    to recover (exit 130). At start it repairs the due index. On a PostgreSQL store any
    number of workers on any number of hosts share the runs; a run changed anywhere wakes
    them at once (--poll is the fallback), and a database that cannot be reached is waited
    for. A pass that fails as a whole otherwise (the state directory cannot be listed) is
    reported on stderr and tried again.

    \b
    Example:
        tinywf worker --poll 10
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    rt = session.runtime
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set():  # the second signal: stop at once, the run in progress is recovered later
            interrupts.note_signal()
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signals.signal(s, request_stop) for s in (signals.SIGINT, signals.SIGTERM)}
    try:
        if not as_json:
            from rich.text import Text

            session.console.print(Text(f"worker: watching {rt.store.target} (Ctrl-C to stop)", style="dim"),
                                  soft_wrap=True)
        rt.reindex()
        out = sys.stdout  # flow code's prints go to stderr with --json (Session.call); reports do not

        def show_tick(report: TickReport) -> None:
            if as_json:
                out.write(report.model_dump_json() + "\n")
                out.flush()
            else:
                from tinywf_cli.cli.render import tick_lines

                session.console.print(tick_lines(report))

        def show_error(exc: TinyWFError) -> None:
            print(f"error: {one_line(exc.message)} (trying again)", file=sys.stderr, flush=True)

        def unavailable(exc: StoreUnavailable) -> None:  # a worker outlives a database restart
            print(f"warning: {exc.message}; trying again", file=sys.stderr, flush=True)

        session.call(lambda: rt.work(stop, poll=poll, on_tick=show_tick, on_error=show_error,
                                     on_unavailable=unavailable))
    finally:
        for sig, handler in previous.items():
            signals.signal(sig, handler)
    if not as_json:
        session.console.print("[dim]worker: stopped[/dim]")


@app.command()
def cancel(
    run_id: RunId,
    reason: Annotated[str | None, typer.Option("--reason", metavar="TEXT", help="Why, for the audit log.")] = None,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Cancel RUN if it has not ended, and its unfinished child runs; nothing of it stays pending.

    \b
    Example:
        tinywf cancel order-17 --reason "customer asked"
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    finish(session, session.call(lambda: session.runtime.cancel(run_id, reason)))


@app.command()
def retry(
    run_id: RunId,
    wait: Wait = False,
    no_input: NoInput = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Try failed or blocked RUN again from its current step; earlier cached actions stay cached.

    A failed run's failed action gets a fresh set of attempts (its idempotency key is
    unchanged); a blocked run is replayed under today's code (after you fixed it).

    \b
    Example:
        tinywf retry order-17
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    doc = session.call(lambda: session.runtime.retry(run_id))
    finish(session, drive(session, doc, wait=wait, no_input=no_input))


@app.command()
def pause(
    run_id: RunId,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Hold RUN: nothing advances it until `tinywf resume`; tick and worker skip it.

    Events sent meanwhile queue; timers that come due wait. Exit 4 on runs that ended.

    \b
    Example:
        tinywf pause order-17
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    finish(session, session.call(lambda: session.runtime.pause(run_id)))


@app.command(name="resume")
def resume_command(
    run_id: RunId,
    wait: Wait = False,
    no_input: NoInput = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Put paused RUN back and advance it as `tick` would (due timers fire, queued events are taken).

    \b
    Example:
        tinywf resume order-17
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    doc = session.call(lambda: session.runtime.resume(run_id))
    finish(session, drive(session, doc, wait=wait, no_input=no_input))


@app.command()
def fork(
    run_id: RunId,
    at_visit: Annotated[int | None, typer.Option("--at-visit", min=1, metavar="N",
                                                 help="Start from visit N of RUN (default: its current visit).")]
    = None,
    new_id: Annotated[str | None, typer.Option("--run-id", metavar="ID",
                                               help="The new run's id (default: RUN-fork-<random>).")] = None,
    wait: Wait = False,
    no_input: NoInput = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Start a new run from an earlier point of RUN: the state at the start of a step visit.

    The new run begins at that visit's step and runs its actions again (with new
    idempotency keys); its first log entry is `forked`. RUN itself is untouched, whatever
    its status. Prints the new run's document.

    \b
    Example:
        tinywf fork order-17 --at-visit 2 --run-id order-17-again
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    doc = session.call(lambda: session.runtime.fork(run_id, at_visit, new_id))
    finish(session, drive(session, doc, wait=wait, no_input=no_input))


@app.command()
def prune(
    older_than: Annotated[str, typer.Option("--older-than", metavar="AGE", show_default=False,
                                            help="Runs last updated longer ago than AGE: a number and a unit, "
                                                 "30d, 12h, 90m, 45s.")],
    status: Annotated[str, typer.Option("--status", metavar="S,...",
                                        help="Which ended runs: finished, cancelled, failed (failed only when "
                                             "named).")] = "finished,cancelled",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be deleted.")] = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Delete ended runs last updated before now - AGE, with all their files.

    Never a run that has not ended; runs locked by another process are skipped.

    \b
    Example:
        tinywf prune --older-than 30d
        tinywf prune --older-than 7d --status failed --dry-run
    """
    statuses = [s.strip() for s in status.split(",") if s.strip()]
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    report = session.runtime.prune(older_than, statuses, dry_run=dry_run)
    if as_json:
        session.emit(report)
        return
    from tinywf_cli.cli.render import prune_lines

    session.console.print(prune_lines(report, dry_run))


@app.command()
def check(
    flow: Annotated[str | None, typer.Argument(metavar="[FLOW]", show_default=False,
                                               help="Only the runs of this flow file (default: every run).")]
    = None,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: ReadLockTimeout = DEFAULT_LOCK_TIMEOUT,
    debug: Debug = False,
) -> None:
    """Would every unfinished run replay under today's code? The deploy gate: exit 0 or 1.

    Each run is loaded with today's flow code, migrated in memory and its current step
    visit replayed against its records: no action runs, nothing is written, no lock is
    waited for. Each run is reported ok, or with what would block it.

    \b
    Example:
        tinywf check flows/user_onboarding.py && deploy
    """
    session = Session(store, state_dir, as_json)
    report = session.call(lambda: session.runtime.check(flow))
    if as_json:
        session.emit(report)
    else:
        from tinywf_cli.cli.render import check_lines

        session.console.print(check_lines(report), soft_wrap=True)
    raise typer.Exit(0 if report.ok else 1)


@app.command(name="copy")
def copy_runs(
    to: Annotated[str, typer.Option("--to", metavar="TARGET", show_default=False,
                                    help="The store to copy into: a directory, or a postgresql:// URL.")],
    skip_existing: Annotated[bool, typer.Option("--skip-existing",
                                                help="Leave runs whose id exists at TARGET alone (and report "
                                                     "them) instead of exiting 4.")] = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Copy every run of the store into another: a directory into PostgreSQL, or back.

    Records and whole histories are copied, so every document (`show --json`) reads the
    same in both. An id that exists at TARGET stops the copy before anything is copied
    (exit 4) unless --skip-existing. Each run is read under its lock; stop the workers
    first for a consistent snapshot of the whole store.

    \b
    Example:
        tinywf copy --state-dir state --to postgresql://tinywf@db.internal/tinywf
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    report = session.runtime.copy(to, skip_existing=skip_existing)
    if as_json:
        session.emit(report)
        return
    from rich.text import Text

    skipped = f", {len(report.skipped)} skipped (already there)" if report.skipped else ""
    count = len(report.copied)
    session.console.print(Text(f"copied {count} run{'' if count == 1 else 's'} to {report.to}{skipped}"),
                          soft_wrap=True)


# -- reading flows ---------------------------------------------------------------------------

FlowSpec = Annotated[str, typer.Argument(metavar="FLOW", help="path.py or path.py:Class", show_default=False)]
GRAPH_FORMATS = ("mermaid", "dot")


@app.command()
def graph(
    flow: FlowSpec,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT",
                                     help="mermaid (a stateDiagram-v2) or dot (Graphviz).")] = "mermaid",
    run_id: Annotated[str | None, typer.Option("--run", metavar="RUN",
                                               help="Mark the steps this run visited, and how often.")] = None,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: ReadLockTimeout = DEFAULT_LOCK_TIMEOUT,
    debug: Debug = False,
) -> None:
    """Draw FLOW's steps and transitions, read from its source without running it.

    Each step's note lists its actions, sleeps and waits in source order; a transition
    computed at run time is drawn as "?". With --run, the steps the run visited are
    marked with their visit counts. Pipe --format dot into Graphviz (`dot -Tsvg`) for
    an image; --json prints what was read as one document.

    \b
    Example:
        tinywf graph flows/guess_game.py --run game-1
    """
    if fmt not in GRAPH_FORMATS:
        raise BadInput(f"--format must be one of {', '.join(GRAPH_FORMATS)}, not {fmt!r}")
    from tinywf_cli.analysis.graph import RunTrace, flow_document, to_dot, to_mermaid
    from tinywf_cli.authoring.loader import read_flow

    workflow, shown = read_flow(flow)
    trace = None
    if run_id is not None:
        trace = RunTrace.of(Session(store, state_dir, as_json).runtime.get(run_id))
        for warning in trace.mismatches(workflow):
            print(f"warning: {warning}", file=sys.stderr)
    for problem in workflow.problems:
        print(f"warning: {shown.rpartition(':')[0]}:{problem.line}: {problem.message}", file=sys.stderr)
    if as_json:
        sys.stdout.write(json.dumps(flow_document(workflow, shown, trace), indent=2) + "\n")
        return
    sys.stdout.write((to_dot if fmt == "dot" else to_mermaid)(workflow, trace))


@app.command()
def schema(
    flow: FlowSpec,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Print the JSON schema of FLOW's state model (the pydantic model of Workflow[Model]).

    The flow is imported (unlike `graph`). For an untyped Workflow, whose state is a plain
    dict, says so; with --json prints {"workflow": ..., "schema": ...}, the schema null then.

    \b
    Example:
        tinywf schema flows/interval_payment.py
    """
    from tinywf_cli.authoring.loader import FlowLoader

    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the schema, not the flow's prints
        cls, _, shown = FlowLoader().load(flow)
    model = cls.__tinywf_model__
    document: dict[str, Any] | None = None
    if model is not None:
        from pydantic.errors import PydanticUserError

        try:
            document = model.model_json_schema()
        except PydanticUserError as exc:
            raise BadInput(f"{shown}: no JSON schema for {model.__name__}: {exc.message}") from None
    if as_json:
        sys.stdout.write(json.dumps({"workflow": shown, "schema": document}, indent=2) + "\n")
    elif document is None:
        print(f"{shown} is an untyped Workflow: its state is a plain dict, with no schema "
              "(use Workflow[Model] with a pydantic model for one)")
    else:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")


# -- over HTTP ------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", metavar="HOST",
                                      help="Address to listen on; anything but loopback reaches other machines.")]
        = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, metavar="PORT",
                                      help="Port to listen on (0: any free port, printed at start).")] = 8080,
    flows: Annotated[Path, typer.Option("--flows", metavar="DIR",
                                        help="Only flows under DIR can be started over HTTP.")] = Path("flows"),
    max_body: Annotated[int, typer.Option("--max-body", min=1, metavar="BYTES",
                                          help="Refuse request bodies larger than this (413).")] = 1024 * 1024,
    quiet: Annotated[bool, typer.Option("--quiet", help="No access log on stderr.")] = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Serve the store over HTTP: the JSON API, pages of runs, and signed links that answer one event.

    Every request needs Authorization: Bearer TOKEN, or the cookie a browser gets at
    /?token=TOKEN. TOKEN is $TINYWF_API_TOKEN, else generated and printed once at start.
    A link's page (tinywf link) needs no token. Needs the web extra: pip install 'tinywf[web]'.
    With --json, prints {"url", "token", "flows"} once the server listens.

    \b
    Example:
        TINYWF_API_TOKEN=s3cret tinywf serve --port 8080 --flows flows
    """
    try:
        from tinywf_cli.web.server import ServeOptions
        from tinywf_cli.web.server import serve as serve_forever
    except ImportError as exc:
        raise BadInput(f"`tinywf serve` needs the web extra ({exc.name or exc} is not installed): "
                       "pip install 'tinywf[web]'") from None
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    serve_forever(session.runtime, ServeOptions(host=host, port=port, flows_dir=flows, max_body=max_body,
                                                as_json=as_json, quiet=quiet))


@app.command()
def link(
    run_id: RunId,
    resume: Annotated[str, typer.Argument(metavar="RESUME", help="A resume id, or the key of a pending event.",
                                          show_default=False)],
    expires: Annotated[str, typer.Option("--expires", metavar="AGE",
                                         help="How long the link works: 30m, 12h, 7d, 1d12h (at most 366d).")]
        = "7d",
    base_url: Annotated[str, typer.Option("--base-url", envvar="TINYWF_BASE_URL", show_envvar=True, metavar="URL",
                                          help="Where people reach `tinywf serve`.")] = "http://127.0.0.1:8080",
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: ReadLockTimeout = DEFAULT_LOCK_TIMEOUT,
    debug: Debug = False,
) -> None:
    """Print a signed URL that answers one pending event of RUN, without the server's token.

    The link shows the event's question and a form fit for its type (Approve/Reject for a
    bool); it works once, until it expires, and only for that event. The signing key is
    kept in the store, made on first use. With --json: {"url", "run_id", "resume_id",
    "expires_at"}.

    \b
    Example:
        tinywf link order-17 approval --expires 2d --base-url https://wf.example.com
    """
    from tinywf_cli.clock import format_instant
    from tinywf_cli.web.links import check_base_url, issue_link, link_url, parse_duration

    lifetime = parse_duration(expires)
    base = check_base_url(base_url)
    session = Session(store, state_dir, as_json)
    issued, token = issue_link(session.runtime, run_id, resume, lifetime)
    url = link_url(base, token)
    if as_json:
        sys.stdout.write(json.dumps({"url": url, "run_id": issued.run_id, "resume_id": issued.resume_id,
                                     "expires_at": format_instant(issued.expires_at)}, indent=2) + "\n")
        return
    print(url)


# -- the one place errors become exit codes ------------------------------------------------


def _usage_error(exc: Exception) -> bool:
    """A command-line usage error (unknown option, missing argument...), raised by Typer's parser."""
    return callable(getattr(exc, "format_message", None)) and getattr(exc, "exit_code", None) == 2


def caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt lies behind ``exc`` (its cause or context, however deep)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


INTERRUPTED = "error: interrupted; a run being advanced is left running, and `tinywf tick` recovers it"
#: What an interrupt left, when it came while the command waited holding no run (``at_rest``).
LEFT_AT_REST: contextvars.ContextVar[str | None] = contextvars.ContextVar("tinywf_left_at_rest", default=None)


@contextlib.contextmanager
def at_rest(message: str) -> Iterator[None]:
    """While the command waits holding no run (a prompt, a countdown): an interrupt then says
    ``message`` (what the run was left as), not that a run being advanced was left running."""
    try:
        yield
    except KeyboardInterrupt:
        LEFT_AT_REST.set(message)
        raise


def interrupted_line() -> str:
    """The ``error:`` line for an interrupt: what it left, as the place it came in knows."""
    message = LEFT_AT_REST.get()
    return INTERRUPTED if message is None else f"error: {message}"


def app_for(args: list[str]) -> typer.Typer:
    """The app that runs ``args``: when they start with a command's name, a copy of ``app`` that
    holds only that command (Typer builds the parser of every command it holds at each start,
    about 20 ms for this CLI); otherwise ``app`` itself (``tinywf --help`` lists them all)."""
    import copy

    from typer.main import get_command_name

    name = args[0] if args else None
    found = [info for info in app.registered_commands
             if (info.name or get_command_name(getattr(info.callback, "__name__", ""))) == name]
    if len(found) != 1:
        return app
    single = copy.copy(app)
    single.registered_commands = found
    return single


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tinywf`` command: run the app, map errors to exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    options = args[: args.index("--")] if "--" in args else args
    debug = "--debug" in options or bool(os.environ.get("TINYWF_DEBUG"))
    code: Any = 0
    interrupted = False
    opened = OPENED.set([])
    left = LEFT_AT_REST.set(None)
    with guard_streams(), interrupts.handling():
        try:
            code = app_for(args)(args=args, prog_name="tinywf", standalone_mode=False)
            if interrupts.seen():  # typer turns a KeyboardInterrupt into a return of 130
                print(interrupted_line(), file=sys.stderr)
                code, interrupted = 130, True
        except typer.Exit as exc:
            code = exc.exit_code
            if interrupts.seen() or caused_by_interrupt(exc):
                print(interrupted_line(), file=sys.stderr)
                interrupted = True
        except typer.Abort:
            print("error: aborted", file=sys.stderr)
            code = 130
        except TinyWFError as exc:
            report(exc, debug)
            code = exc.exit_code
        except KeyboardInterrupt:
            print(interrupted_line(), file=sys.stderr)
            code = 130
            interrupted = True
        except BrokenPipeError:
            code = 0
        except Exception as exc:
            code = unexpected(exc, debug)
        finally:
            for runtime in OPENED.get() or []:
                with contextlib.suppress(Exception):
                    runtime.close()
            OPENED.reset(opened)
            LEFT_AT_REST.reset(left)
        code = code if isinstance(code, int) else 0
        code = flush_output(code)
    if interrupted:  # action threads may still run: do not wait for them at exit
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


_CONTROL = {c: f"\\x{c:02x}" for c in range(32)} | {0x7F: "\\x7f"}


def one_line(message: str) -> str:
    """An error message as one line: control characters (a newline in a damaged key) escaped."""
    return message.translate(_CONTROL)


def report(exc: BaseException, debug: bool) -> None:
    """One ``error:`` line (and the traceback with ``--debug``)."""
    if debug:
        import traceback

        traceback.print_exc()
    message = exc.message if isinstance(exc, TinyWFError) else str(exc)
    print(f"error: {one_line(message)}", file=sys.stderr)


def unexpected(exc: Exception, debug: bool) -> int:
    """An exception no command maps: a usage error from the parser (2), or a bug in tinywf (70)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `tinywf`: the help is the answer
        print(exc.format_message())  # type: ignore[attr-defined]
        return 0
    if _usage_error(exc):
        if debug:
            import traceback

            traceback.print_exc()
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        print(f"error: {message} ({usage_hint(exc)})", file=sys.stderr)
        return 2
    if debug:
        import traceback

        traceback.print_exc()
    print(f"error: internal error: {type(exc).__name__}: {one_line(str(exc))} (run with --debug for the traceback)",
          file=sys.stderr)
    return 70


def usage_hint(exc: Exception) -> str:
    """What to do about a usage error: put a VALUE like ``-5`` after ``--``, or read the help of the
    command it was for (``tinywf run --help``; ``tinywf --help`` when no command was named)."""
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "tinywf"
    option = getattr(exc, "option_name", None)
    if ctx is not None and isinstance(option, str) and not option.startswith("--"):
        names = [str(p.metavar or p.name).upper() for p in ctx.command.params if p.param_type_name == "argument"]
        if "VALUE" in names:
            before = " ".join(names[: names.index("VALUE")])
            return f"a VALUE that starts with '-' goes after `--`: `{command} {before} -- {option}`"
    return f"see `{command} --help`"


def flush_output(code: int) -> int:
    """Flush stdout now, so that a failure to write is reported here, not as a traceback at exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    except OutputError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return code or exc.exit_code
    else:
        return code
    # the reader went away: nothing more can be written, and Python must not try again at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(devnull, sys.__stdout__.fileno())  # type: ignore[union-attr]
    return code
