"""Commands that start, answer and read runs: ``run``, ``resolve``, ``send``, ``signal``,
``show`` and ``list``."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from tinywf_cli.cli.app import (
    Debug,
    FlowFilter,
    Json,
    Lease,
    LockTimeout,
    NoInput,
    ReadLockTimeout,
    RunId,
    Since,
    StateDir,
    StoreTarget,
    Stuck,
    Tags,
    Wait,
    app,
    parse_object,
    parse_value,
)
from tinywf_cli.cli.prompts import drive, finish
from tinywf_cli.cli.session import DEFAULT_LOCK_TIMEOUT, Session
from tinywf_cli.errors import BadInput
from tinywf_cli.filters import parse_tag_options, run_filter


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
    tag: Annotated[list[str] | None, typer.Option("--tag", metavar="KEY=VALUE",
                                                  help="Tag the run (repeatable): `tinywf list --tag` finds it.")]
    = None,
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
        tinywf run flows/checkout.py --tag customer=acme --tag region=eu
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    data = parse_object(input, "--input")
    tags = parse_tag_options(tag or ())
    if attach and run_id is None:
        raise BadInput("--attach needs --run-id: it attaches to the run with that id")
    doc = session.call(lambda: session.runtime.start(flow, input=data, run_id=run_id, attach=attach,
                                                                tags=tags))
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
    doc = session.call(lambda: session.runtime.resolve(run_id, resume, parsed, via="cli"))
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
    finish(session, session.call(lambda: session.runtime.send(run_id, key, parsed, via="cli")))


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
    doc: Any = session.read(lambda source: source.show(run_id, limit))
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
    status: Annotated[str | None, typer.Option("--status", metavar="STATUS[,STATUS…]",
                                               help="Only runs in this status: " + ", ".join(STATUSES))] = None,
    tag: Tags = None,
    flow: FlowFilter = None,
    since: Since = None,
    stuck: Stuck = None,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: ReadLockTimeout = DEFAULT_LOCK_TIMEOUT,
    debug: Debug = False,
) -> None:
    """List runs, newest first: id, workflow, status, step, updated, tags.

    Filters combine with AND. A record that cannot be read is listed as unreadable, with a
    warning on stderr (not when filtering by tag, flow or time: it cannot be said to match).

    \b
    Example:
        tinywf list --status waiting
        tinywf list --tag customer=acme --status failed --since 1d
        tinywf list --stuck 2h --flow flows/checkout.py
    """
    session = Session(store, state_dir, as_json)
    select = run_filter(session.now(), tags=tag or (), status=status, flow=flow, since=since, stuck=stuck,
                        statuses=STATUSES)
    from tinywf_cli.reading import documents

    runs: Any = session.read(lambda source: source.list_runs(select))
    if runs is None:
        runs = session.runtime.select(select)
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
