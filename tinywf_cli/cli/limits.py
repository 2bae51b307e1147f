"""Commands on the limits and breakers runs share: ``limits``, ``limit set|reset``, ``breakers``,
``breaker reset``."""

from __future__ import annotations

from typing import Annotated

import typer

from tinywf_cli.cli.app import Debug, Json, Lease, LockTimeout, StateDir, StoreTarget, app
from tinywf_cli.cli.session import DEFAULT_LOCK_TIMEOUT, Session

limit_app = typer.Typer(help="Override a limit for every process of the store, or drop the override.",
                        no_args_is_help=True, add_completion=False)
breaker_app = typer.Typer(help="Close a circuit breaker by hand.", no_args_is_help=True, add_completion=False)
app.add_typer(limit_app, name="limit")
app.add_typer(breaker_app, name="breaker")

LimitName = Annotated[str, typer.Argument(metavar="NAME", show_default=False, help="The limit's name.")]
BreakerName = Annotated[str, typer.Argument(metavar="NAME", show_default=False, help="The breaker's name.")]


def show_limits(session: Session, name: str | None = None) -> None:
    """Print the limits (of ``name``, or all) as the session asks: JSON or a table."""
    limits = session.runtime.limits(name)
    if session.as_json:
        session.emit(limits)
        return
    from tinywf_cli.cli.render import limits_table

    session.console.print(limits_table(limits))


def show_breakers(session: Session, name: str | None = None) -> None:
    """Print the breakers (``name``, or all) as the session asks: JSON or a table."""
    breakers = session.runtime.breakers(name)
    if session.as_json:
        session.emit(breakers)
        return
    from tinywf_cli.cli.render import breakers_table

    session.console.print(breakers_table(breakers, session.runtime.clock.now()))


@app.command(name="limits")
def list_limits(
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Every limit the store has seen: what applies (rate, concurrency), attempts in flight, runs waiting.

    A keyed limit (`LIMIT.key(value)`) has a row per key. What applies is the code's
    word unless `tinywf limit set` overrode it.

    \b
    Example:
        tinywf limits
        tinywf limits --json
    """
    show_limits(Session(store, state_dir, as_json))


@limit_app.command(name="set")
def set_limit(
    name: LimitName,
    key: Annotated[str | None, typer.Option("--key", metavar="K", help="Only this key of a keyed limit.")] = None,
    rate: Annotated[str | None, typer.Option("--rate", metavar="R",
                                             help="N/s, N/m or N/h: at most N starts per period.")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", metavar="N",
                                                    help="At most N attempts in flight at once.")] = None,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Override what the code says of limit NAME, for every process of the store, until `limit reset`.

    Runs waiting for room under it look again at once. A rate or a concurrency not given
    stays as the code (or an earlier override) says.

    \b
    Example:
        tinywf limit set stripe --rate 10/s
        tinywf limit set sync --key acme --concurrency 2
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    session.runtime.set_limit(name, key=key, rate=rate, concurrency=concurrency)
    show_limits(session, name)


@limit_app.command(name="reset")
def reset_limit(
    name: LimitName,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Drop every override of limit NAME (each key's too): the code's word holds again.

    \b
    Example:
        tinywf limit reset stripe
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    session.runtime.reset_limit(name)
    show_limits(session, name)


@app.command(name="breakers")
def list_breakers(
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Every circuit breaker the store has seen: closed, open or half open, its failures, when it half opens.

    \b
    Example:
        tinywf breakers
        tinywf breakers --json
    """
    show_breakers(Session(store, state_dir, as_json))


@breaker_app.command(name="reset")
def reset_breaker(
    name: BreakerName,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Close breaker NAME by hand: its failures are forgotten and the runs waiting for it go on.

    \b
    Example:
        tinywf breaker reset payments
    """
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    session.runtime.reset_breaker(name)
    show_breakers(session, name)
