"""The Typer ``app`` of the ``tinywf`` command and what its commands share: options defined
once as ``Annotated`` aliases, the parsing of VALUE and JSON-object arguments, ``--version``.

Each command module (``runs``, ``workers``, …) registers its commands on ``app`` when it is
imported; ``tinywf_cli.cli.main`` imports them in the order ``tinywf --help`` lists them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tinywf_cli import __version__
from tinywf_cli.errors import BadInput
from tinywf_cli.jsonio import TextValue, strict_loads

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


#: The longest lock wait accepted: a week.
MAX_LOCK_TIMEOUT = 7 * 86400.0

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
#: RUN where a filter may stand instead (``cancel``, ``retry``, ``pause``, ``resume``).
RunOrFilter = Annotated[str | None, typer.Argument(metavar="[RUN]", show_default=False,
                                                   help="The run id; or give filters (--tag, --status, …) instead.")]
# The filters of ``list`` and of the bulk commands (``tinywf_cli.filters``).
Tags = Annotated[list[str] | None, typer.Option("--tag", metavar="KEY=VALUE", show_default=False,
                                                help="Runs with this tag (repeatable: all must match).")]
FlowFilter = Annotated[str | None, typer.Option("--flow", metavar="FLOW", show_default=False,
                                                help="Runs of this workflow (its class name, or its file).")]
Since = Annotated[str | None, typer.Option("--since", metavar="AGE", show_default=False,
                                           help="Runs updated within AGE (30m, 12h, 7d).")]
Stuck = Annotated[str | None, typer.Option("--stuck", metavar="AGE", show_default=False,
                                           help="Runs running or waiting with no change for longer than AGE.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="With filters: list the runs it would touch; "
                                                        "change nothing.")]
NoInput = Annotated[bool, typer.Option("--no-input", help="Never prompt, even with a terminal on stdin.")]
Wait = Annotated[bool, typer.Option("--wait", help="Wait out timers and retry delays in this process, "
                                                    "with a countdown.")]


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
