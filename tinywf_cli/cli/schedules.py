"""``tinywf schedule add|apply|list|show|pause|resume|trigger|backfill|remove``: recurring runs
kept in the store, whose slots ``tick`` and ``worker`` start."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from tinywf_cli.cli.app import Debug, Json, Lease, LockTimeout, StateDir, StoreTarget, app, parse_object
from tinywf_cli.cli.prompts import finish
from tinywf_cli.cli.session import DEFAULT_LOCK_TIMEOUT, Session

if TYPE_CHECKING:
    from tinywf_cli.model import ScheduleDocument

schedule_app = typer.Typer(
    help="Recurring runs kept in the store: `tinywf tick` (from cron) or `tinywf worker` starts each slot once.\n\n"
         "\b\nExample:\n    tinywf schedule add nightly flows/report.py --cron '0 2 * * *' --tz Europe/Paris\n"
         "    tinywf schedule list",
    no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(schedule_app, name="schedule")

Name = Annotated[str, typer.Argument(metavar="NAME", show_default=False, help="The schedule's name.")]


def when(text: str | None) -> datetime | None:
    """A WHEN option: an ISO 8601 instant (naive means UTC)."""
    if text is None:
        return None
    from tinywf_cli.clock import parse_instant

    return parse_instant(text)


def show_schedule(session: Session, doc: ScheduleDocument) -> None:
    """Print one schedule as the session asks: its JSON document, or the view for people."""
    if session.as_json:
        session.emit(doc)
        return
    from tinywf_cli.cli.render import schedule_view

    session.console.print(schedule_view(doc, session.runtime.clock.now()))


@schedule_app.command(name="add")
def add(
    name: Name,
    flow: Annotated[str, typer.Argument(metavar="FLOW", show_default=False,
                                        help="The flow to run: path.py or path.py:Class.")],
    cron: Annotated[str, typer.Option("--cron", metavar="EXPR", show_default=False,
                                      help="5 cron fields (minute hour day month weekday), or @hourly, @daily, "
                                           "@weekly, @monthly.")],
    tz: Annotated[str, typer.Option("--tz", metavar="ZONE", help="The IANA zone EXPR is read in.")] = "UTC",
    input_json: Annotated[str | None, typer.Option("--input", metavar="JSON|@file",
                                                   help="The input of every run it starts.")] = None,
    overlap: Annotated[str, typer.Option("--overlap", metavar="skip|buffer_one|allow_all|cancel_other",
                                         help="What a slot does while the previous run has not ended.")] = "skip",
    catch_up: Annotated[str, typer.Option("--catch-up", metavar="latest|all|none",
                                          help="Which slots missed while nothing ticked still run.")] = "latest",
    start: Annotated[str | None, typer.Option("--start", metavar="WHEN", show_default=False,
                                              help="No slot before WHEN (ISO 8601).")] = None,
    end: Annotated[str | None, typer.Option("--end", metavar="WHEN", show_default=False,
                                            help="No slot after WHEN (ISO 8601).")] = None,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Store schedule NAME: a run of FLOW at every slot of EXPR, started by `tick` or `worker`.

    Each slot's run is `NAME-<slot as YYYYMMDDTHHMMZ>` (UTC): started once, whichever
    process gets there. Daylight-saving changes go as in cron: a slot the clocks skip runs
    at the first instant after, a repeated hour runs once. A bad expression, zone or input,
    or a flow that does not load, is exit 2; a name already taken exit 4; nothing is written.

    \b
    Example:
        tinywf schedule add weekday-report flows/report.py --cron '0 9 * * MON-FRI' --tz Europe/Paris
        tinywf schedule add sync flows/sync.py --cron '*/15 * * * *' --overlap buffer_one
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    data = parse_object(input_json, "--input") if input_json is not None else None
    doc = session.call(lambda: session.runtime.add_schedule(
        name, flow, cron, tz=tz, input=data, overlap=overlap, catch_up=catch_up, start=when(start), end=when(end)))
    show_schedule(session, doc)


@schedule_app.command(name="apply")
def apply(
    flows: Annotated[list[str], typer.Argument(metavar="FLOW...", show_default=False,
                                               help="Flows whose `schedules = [Schedule(...)]` to store.")],
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Make the store's schedules of each FLOW match its code: add, change and remove them.

    Idempotent: run it at every deploy. Only schedules that came from these flows' code are
    changed or removed (not those of `schedule add`); a changed expression or zone starts
    the schedule afresh from now. Everything is checked before anything is written. --json:
    {"added", "changed", "removed", "unchanged"}, lists of names.

    \b
    Example:
        tinywf schedule apply flows/report.py flows/sync.py
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    changes = session.call(lambda: session.runtime.apply_schedules(list(flows)))
    if as_json:
        session.emit(changes)
        return
    from tinywf_cli.cli.render import apply_lines

    session.console.print(apply_lines(changes))


@schedule_app.command(name="list")
def list_schedules(
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Every schedule: its expression, zone, flow, next slot, last run, slots skipped and missed.

    \b
    Example:
        tinywf schedule list
        tinywf schedule list --json
    """
    session = Session(store, state_dir, as_json, lease=lease)
    schedules = session.runtime.list_schedules()
    if as_json:
        session.emit(schedules)
        return
    from tinywf_cli.cli.render import schedules_table

    session.console.print(schedules_table(schedules, session.runtime.clock.now()))


@schedule_app.command(name="show")
def show(
    name: Name,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Schedule NAME: its policies, coming slots, last run, counts, and its log.

    The log says which slots started, were skipped, buffered or missed, and when it was
    paused or could not start a slot. An unknown NAME is exit 3.

    \b
    Example:
        tinywf schedule show weekday-report
    """
    session = Session(store, state_dir, as_json, lease=lease)
    show_schedule(session, session.runtime.get_schedule(name))


@schedule_app.command(name="pause")
def pause(
    name: Name,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Start no slot of NAME until `schedule resume` (runs it started go on). Exit 4 if paused already.

    \b
    Example:
        tinywf schedule pause weekday-report
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    show_schedule(session, session.runtime.pause_schedule(name))


@schedule_app.command(name="resume")
def resume(
    name: Name,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Start the slots of NAME again, after `schedule pause`.

    The slots that passed while it was paused follow its catch-up policy at the next tick.
    Exit 4 if it is not paused.

    \b
    Example:
        tinywf schedule resume weekday-report
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    show_schedule(session, session.runtime.resume_schedule(name))


@schedule_app.command(name="trigger")
def trigger(
    name: Name,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Start one run of NAME now, and advance it as `tinywf run` does.

    Paused or not, whatever its overlap policy. Its id is NAME-<now, to the minute>: a
    second trigger within the same minute is exit 4. Prints the run's document (exit 1 if
    it failed).

    \b
    Example:
        tinywf schedule trigger weekday-report
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    finish(session, session.call(lambda: session.runtime.trigger_schedule(name)))


@schedule_app.command(name="backfill")
def backfill(
    name: Name,
    start: Annotated[str, typer.Option("--from", metavar="WHEN", show_default=False,
                                       help="The first instant (ISO 8601) whose slots to run.")],
    end: Annotated[str, typer.Option("--to", metavar="WHEN", show_default=False,
                                     help="The last instant (ISO 8601; not in the future).")],
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Start the slots of NAME from --from to --to (both included) that have not run.

    Oldest first, each advanced before the next is decided under the overlap policy. --json:
    {"schedule", "started": [{"run_id", "status"}], "existing": [run ids], "skipped": [{"slot", "reason"}]}.

    \b
    Example:
        tinywf schedule backfill weekday-report --from 2026-03-02T00:00:00Z --to 2026-03-06T23:59:00Z
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    first, last = when(start), when(end)
    assert first is not None and last is not None
    report = session.call(lambda: session.runtime.backfill_schedule(name, first, last))
    if as_json:
        session.emit(report)
        return
    from tinywf_cli.cli.render import backfill_lines

    session.console.print(backfill_lines(report))


@schedule_app.command(name="remove")
def remove(
    name: Name,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Remove schedule NAME; the runs it started stay. Prints what it was.

    \b
    Example:
        tinywf schedule remove weekday-report
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    show_schedule(session, session.runtime.remove_schedule(name))
