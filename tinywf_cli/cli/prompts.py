"""After a command moved a run: ask for its pending events at the terminal, wait out its
timers with a countdown (``--wait``), then print where the run stands and exit (``finish``).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, NoReturn

import typer

from tinywf_cli.cli.app import parse_value
from tinywf_cli.cli.session import Session
from tinywf_cli.errors import InvalidValue

if TYPE_CHECKING:
    from rich.console import Console

    from tinywf_cli.model import RunDocument
    from tinywf_cli.runtime.runtime import Runtime


def finish(session: Session, doc: RunDocument) -> NoReturn:
    """Print a run document and exit: 1 when the command advanced the run and it failed or was blocked."""
    if session.as_json:
        session.emit(doc)
    else:
        from tinywf_cli.cli.render import run_outcome

        session.console.print(run_outcome(doc, session.runtime.clock.now(), session.state_hint), soft_wrap=True)
    raise typer.Exit(1 if doc.advanced and doc.status in ("failed", "blocked") else 0)


# -- interaction ------------------------------------------------------------------------


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
        answer_later = resolve_command(doc.run_id, pending, session.state_hint, placeholder_for(expects))
        # at rest from the question on: a Ctrl-C as soon as the prompt shows says how to answer later
        with at_rest(f"interrupted at the prompt; run {doc.run_id} is left waiting, answer it with "
                     f"`{answer_later}`"):
            err.print(line)
            # the prompt goes to stderr like the question: on a redirected stdout it would be
            # written into the output (and into the --json document)
            err.print("> ", end="")
            # not input(): it calls stdout's methods first (Python code, the guarded stream) and drops
            # what they raise, so a Ctrl-C landing there was lost and the prompt went on waiting.
            # At the end of input readline gives "", which leaves the run waiting like an empty answer.
            answer = sys.stdin.readline().removesuffix("\n")
        if not answer.strip():
            err.print(Text("left waiting; answer later with:", style="dim"))
            err.print(Text(answer_later), soft_wrap=True)
            return doc, True
        try:
            doc = session.call(partial(session.runtime.resolve, doc.run_id, pending.resume_id,
                                       parse_value(answer), via="cli"))
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
