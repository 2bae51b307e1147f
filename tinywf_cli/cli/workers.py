"""Commands that carry due runs on: ``tick`` (for cron) and ``worker`` (a loop that stops cleanly)."""

from __future__ import annotations

import signal as signals
import sys
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tinywf_cli import interrupts
from tinywf_cli.cli.app import (
    Debug,
    Json,
    Lease,
    LockTimeout,
    StateDir,
    StoreTarget,
    app,
    seconds_option,
)
from tinywf_cli.cli.output import one_line
from tinywf_cli.cli.session import DEFAULT_LOCK_TIMEOUT, Session
from tinywf_cli.errors import StoreUnavailable, TinyWFError

if TYPE_CHECKING:
    from tinywf_cli.model import TickReport

#: The longest poll interval `worker` accepts: a day.
MAX_POLL = 86400.0

Concurrency = Annotated[int, typer.Option(
    "--concurrency", min=1, metavar="N",
    help="Advance up to N runs at once, each in a thread of its own (1: one after the other). "
         "On PostgreSQL each thread holds a connection.")]

#: Runtime's default (``tinywf_cli.runtime.crew``), written here so that every command, which
#: imports this module, reads no runtime module (a test keeps the two equal).
DEFAULT_CONCURRENCY = 8


@app.command()
def tick(
    limit: Annotated[int | None, typer.Option("--limit", min=1, metavar="N",
                                              help="Advance at most N runs.")] = None,
    reindex: Annotated[bool, typer.Option("--reindex", help="First repair the due and tag indexes from the "
                                                            "runs themselves (after copying records in by hand).")]
    = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    concurrency: Concurrency = DEFAULT_CONCURRENCY,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Advance every run whose timer, retry delay or event timeout is due; recover dead runs.

    For cron. Safe to run concurrently with itself and other commands: runs locked by
    others are skipped and reported, and so is a run that cannot be read or loaded. On
    PostgreSQL a run another worker holds is left to it: not due here, and listed only
    with --json ("claimed by another worker"). Up to --concurrency runs are advanced at
    once, each held by one thread; "advanced" lists them in the order they finished.
    Failed and blocked runs are reported; the exit stays 0.

    \b
    Example:
        * * * * *  cd /srv/app && tinywf tick --concurrency 32 --json >> tick.log
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    if reindex:
        session.runtime.reindex()
    report = session.call(lambda: session.runtime.tick(limit, concurrency=concurrency))
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
    concurrency: Concurrency = DEFAULT_CONCURRENCY,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Run `tick` in a loop, sleeping until the next due time; stop cleanly on SIGINT/SIGTERM.

    Up to --concurrency runs are in flight at once; a run that comes due while others are
    in flight is taken as soon as a thread is free. With --json, prints one tick document
    per line (JSON Lines) for each pass that found due runs, once its runs have ended. On
    SIGINT/SIGTERM no run is taken any more and the runs in progress are finished, then
    the worker stops (exit 0); a second signal stops it at once, leaving those runs for
    `tinywf tick` to recover (exit 130). At start it repairs the due index. On a PostgreSQL store any
    number of workers on any number of hosts share the runs; a run changed anywhere wakes
    them at once (--poll is the fallback), and a database that cannot be reached is waited
    for. A pass that fails as a whole otherwise (the state directory cannot be listed) is
    reported on stderr and tried again.

    \b
    Example:
        tinywf worker --concurrency 16 --poll 10
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    rt = session.runtime
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set():  # the second signal: stop at once, the runs in progress are recovered later
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

        session.call(lambda: rt.work(stop, poll=poll, concurrency=concurrency, on_tick=show_tick,
                                     on_error=show_error, on_unavailable=unavailable))
    finally:
        for sig, handler in previous.items():
            signals.signal(sig, handler)
    if not as_json:
        session.console.print("[dim]worker: stopped[/dim]")
