"""Commands that stop, hold and restart one run: ``cancel``, ``retry``, ``pause`` and ``resume``."""

from __future__ import annotations

from typing import Annotated

import typer

from tinywf_cli.cli.app import (
    Debug,
    Json,
    Lease,
    LockTimeout,
    NoInput,
    RunId,
    StateDir,
    StoreTarget,
    Wait,
    app,
)
from tinywf_cli.cli.prompts import drive, finish
from tinywf_cli.cli.session import DEFAULT_LOCK_TIMEOUT, Session


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
