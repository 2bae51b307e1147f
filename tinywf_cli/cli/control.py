"""Commands that stop, hold and restart a run — or every run a filter picks: ``cancel``, ``retry``,
``pause`` and ``resume``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tinywf_cli.cli.app import (
    Debug,
    DryRun,
    FlowFilter,
    Json,
    Lease,
    LockTimeout,
    NoInput,
    RunOrFilter,
    Since,
    StateDir,
    StoreTarget,
    Stuck,
    Tags,
    Wait,
    app,
)
from tinywf_cli.cli.prompts import drive, finish
from tinywf_cli.cli.session import DEFAULT_LOCK_TIMEOUT, Session
from tinywf_cli.errors import BadInput
from tinywf_cli.filters import run_filter

if TYPE_CHECKING:
    from tinywf_cli.runtime.bulk import BulkCommand

#: What ``--status`` may name here (as ``list``, less ``unreadable``: such a record cannot be changed).
STATUSES = ("running", "waiting", "paused", "blocked", "finished", "failed", "cancelled")
#: The filter options' status help.
BulkStatus = Annotated[str | None, typer.Option("--status", metavar="STATUS[,STATUS…]", show_default=False,
                                                help="Runs in this status (instead of RUN).")]


def _bulk_or_one(command: BulkCommand, session: Session, run_id: str | None, tag: list[str] | None,
                 status: str | None, flow: str | None, since: str | None, stuck: str | None, dry_run: bool, *,
                 wait: bool = False, reason: str | None = None) -> str | None:
    """Given filters instead of RUN: apply ``command`` to every run they pick, print the report
    (exit 0) and return None; given RUN: return it, for the one-run command. BadInput for neither
    (the command never touches every run), both, ``--dry-run`` without filters, or ``--wait`` with
    them."""
    select = run_filter(session.now(), tags=tag or (), status=status, flow=flow, since=since, stuck=stuck,
                        statuses=STATUSES)
    if run_id is not None and not select.empty:
        raise BadInput(f"{command}: give RUN or filters, not both")
    if run_id is None and select.empty:
        raise BadInput(f"{command} needs RUN or a filter (--tag, --status, --flow, --since, --stuck); "
                       "it never touches every run")
    if run_id is not None:
        if dry_run:
            raise BadInput("--dry-run goes with filters: RUN names one run (`tinywf show` it)")
        return run_id
    if wait:
        raise BadInput("--wait goes with one RUN, not with filters")
    report = session.call(lambda: session.runtime.bulk(command, select, dry_run=dry_run, reason=reason))
    if session.as_json:
        session.emit(report)
        return None
    from tinywf_cli.cli.render import bulk_lines

    session.console.print(bulk_lines(report))
    return None


@app.command()
def cancel(
    run_id: RunOrFilter = None,
    reason: Annotated[str | None, typer.Option("--reason", metavar="TEXT", help="Why, for the audit log.")] = None,
    tag: Tags = None,
    status: BulkStatus = None,
    flow: FlowFilter = None,
    since: Since = None,
    stuck: Stuck = None,
    dry_run: DryRun = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Cancel RUN if it has not ended, and its unfinished child runs; nothing of it stays pending.

    Given filters instead of RUN, cancels every run they pick (AND), reporting those it
    skipped; --dry-run lists them and changes nothing.

    \b
    Example:
        tinywf cancel order-17 --reason "customer asked"
        tinywf cancel --tag customer=acme --stuck 7d --dry-run
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    one = _bulk_or_one("cancel", session, run_id, tag, status, flow, since, stuck, dry_run, reason=reason)
    if one is not None:
        finish(session, session.call(lambda: session.runtime.cancel(one, reason)))


@app.command()
def retry(
    run_id: RunOrFilter = None,
    tag: Tags = None,
    status: BulkStatus = None,
    flow: FlowFilter = None,
    since: Since = None,
    stuck: Stuck = None,
    dry_run: DryRun = False,
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

    Given filters instead of RUN, retries every failed or blocked run they pick, once: a
    run another command changed since it was picked is skipped. Failures are reported; the
    exit stays 0. --dry-run lists them and changes nothing.

    \b
    Example:
        tinywf retry order-17
        tinywf retry --status failed --tag customer=acme --since 1d
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    one = _bulk_or_one("retry", session, run_id, tag, status, flow, since, stuck, dry_run, wait=wait)
    if one is not None:
        doc = session.call(lambda: session.runtime.retry(one))
        finish(session, drive(session, doc, wait=wait, no_input=no_input))


@app.command()
def pause(
    run_id: RunOrFilter = None,
    tag: Tags = None,
    status: BulkStatus = None,
    flow: FlowFilter = None,
    since: Since = None,
    stuck: Stuck = None,
    dry_run: DryRun = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Hold RUN: nothing advances it until `tinywf resume`; tick and worker skip it.

    Events sent meanwhile queue; timers that come due wait. Exit 4 on runs that ended.
    Given filters instead of RUN, pauses every run they pick that has not ended.

    \b
    Example:
        tinywf pause order-17
        tinywf pause --flow flows/checkout.py --status waiting
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    one = _bulk_or_one("pause", session, run_id, tag, status, flow, since, stuck, dry_run)
    if one is not None:
        finish(session, session.call(lambda: session.runtime.pause(one)))


@app.command(name="resume")
def resume_command(
    run_id: RunOrFilter = None,
    tag: Tags = None,
    status: BulkStatus = None,
    flow: FlowFilter = None,
    since: Since = None,
    stuck: Stuck = None,
    dry_run: DryRun = False,
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

    Given filters instead of RUN, resumes every paused run they pick.

    \b
    Example:
        tinywf resume order-17
        tinywf resume --flow flows/checkout.py
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    one = _bulk_or_one("resume", session, run_id, tag, status, flow, since, stuck, dry_run, wait=wait)
    if one is not None:
        doc = session.call(lambda: session.runtime.resume(one))
        finish(session, drive(session, doc, wait=wait, no_input=no_input))
