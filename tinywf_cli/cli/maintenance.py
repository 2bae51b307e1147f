"""Commands that look after the store as a whole: ``fork``, ``prune``, ``check`` and ``copy``."""

from __future__ import annotations

from typing import Annotated

import typer

from tinywf_cli.cli.app import (
    Debug,
    Json,
    Lease,
    LockTimeout,
    NoInput,
    ReadLockTimeout,
    RunId,
    StateDir,
    StoreTarget,
    Wait,
    app,
)
from tinywf_cli.cli.prompts import drive, finish
from tinywf_cli.cli.session import DEFAULT_LOCK_TIMEOUT, Session


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
                                                help="Leave runs whose id (and schedules whose name) "
                                                     "exists at TARGET alone, and report them, not exit 4.")] = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Copy every run of the store into another, and its schedules: a directory into PostgreSQL, or back.

    Records and whole histories are copied, so every document (`show --json`) reads the
    same in both; schedules as they stand (paused or not, next slot, last run). An id (or a
    schedule name) that exists at TARGET stops the copy before anything is copied (exit 4)
    unless --skip-existing. Each run is read under its lock; stop the workers
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
    schedules = report.schedules
    copied = len(schedules.copied)
    also = ""
    if copied or schedules.skipped:
        also = f"; {copied} schedule{'' if copied == 1 else 's'}"
        also += f", {len(schedules.skipped)} skipped (already there)" if schedules.skipped else ""
    session.console.print(Text(f"copied {count} run{'' if count == 1 else 's'} to {report.to}{skipped}{also}"),
                          soft_wrap=True)
