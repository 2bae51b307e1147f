"""``tinywf wait``: block until a run ended (or waits for an event), from any process or host."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tinywf_cli.cli.app import Debug, Json, ReadLockTimeout, RunId, StateDir, StoreTarget, app, seconds_option
from tinywf_cli.cli.prompts import at_rest
from tinywf_cli.cli.session import DEFAULT_LOCK_TIMEOUT, Session
from tinywf_cli.errors import BadInput

#: The longest ``--timeout`` accepted (about 100 years).
MAX_TIMEOUT = 100 * 366 * 86400.0

#: The exit code of ``wait`` for the status the run was found in.
EXIT_FOR = {"finished": 0, "waiting": 0, "failed": 1, "blocked": 1, "cancelled": 4}


@app.command()
def wait(
    run_id: RunId,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", metavar="SECONDS", callback=lambda v: v if v is None else seconds_option(
            "--timeout", 0, MAX_TIMEOUT)(v),
        help="Give up after this long: exit 6, nothing on stdout. Default: wait for as long as it takes.")] = None,
    until: Annotated[str, typer.Option(
        "--for", metavar="ended|waiting",
        help="ended: until the run finished, failed, was blocked or cancelled; waiting: also stop once it "
             "waits for an event.")] = "ended",
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: ReadLockTimeout = DEFAULT_LOCK_TIMEOUT,
    debug: Debug = False,
) -> None:
    """Block until RUN ended (or, with --for waiting, waits for an event), then print its document.

    Whatever advances the run — a worker, cron's tick, another host — this only watches it,
    holding no lock, and wakes as soon as the run changes. Exit 0 when it finished or waits,
    1 when it failed or is blocked, 4 when it was cancelled, 6 when --timeout passed first.

    \b
    Example:
        tinywf run flows/checkout.py --run-id order-17 --no-input && tinywf wait order-17
        tinywf wait order-17 --for waiting --timeout 60 --json
    """
    if until not in ("ended", "waiting"):
        raise BadInput(f"--for must be ended or waiting, not {until!r}")
    session = Session(store, state_dir, as_json)
    with at_rest(f"interrupted; run {run_id} is as it was (`tinywf wait` only watches it)"):
        doc = session.runtime.wait(run_id, timeout=timeout, until="waiting" if until == "waiting" else "ended")
    if as_json:
        session.emit(doc)
    else:
        from tinywf_cli.cli.render import run_outcome

        session.console.print(run_outcome(doc, session.now(), session.state_hint), soft_wrap=True)
    code = EXIT_FOR.get(doc.status, 0)
    if code == 4:
        print(f"error: run '{doc.run_id}' was cancelled", file=sys.stderr)
    raise typer.Exit(code)
