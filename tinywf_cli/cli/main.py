"""The entry point of the ``tinywf`` command, and the one place errors become exit codes.

``main`` runs the app (built with only the command named, ``app_for``) and maps what a
command raises to one ``error:`` line and the contract's exit code: ``TinyWFError`` to its
own, a usage error to 2, an interrupt to 130, a bug to 70. The commands themselves live in
the modules imported below, one per group; each parses its arguments, makes one ``Runtime``
call and renders the result.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import typer

from tinywf_cli import interrupts
from tinywf_cli.cli.app import app
from tinywf_cli.cli.output import OutputError, guard_streams, one_line
from tinywf_cli.cli.prompts import LEFT_AT_REST
from tinywf_cli.cli.session import OPENED
from tinywf_cli.errors import TinyWFError

# isort: off
# Importing a command module registers its commands on ``app``: `tinywf --help` lists them in
# the order of these imports, so this order is the help's, not the alphabet's.
from tinywf_cli.cli import runs  # noqa: F401
from tinywf_cli.cli import waiting  # noqa: F401
from tinywf_cli.cli import workers  # noqa: F401
from tinywf_cli.cli import control  # noqa: F401
from tinywf_cli.cli import maintenance  # noqa: F401
from tinywf_cli.cli import flows  # noqa: F401
from tinywf_cli.cli import serving  # noqa: F401
from tinywf_cli.cli import limits  # noqa: F401
from tinywf_cli.cli import schedules  # noqa: F401
from tinywf_cli.cli import scaffold  # noqa: F401
# isort: on

__all__ = ["app", "main"]


# -- the one place errors become exit codes ------------------------------------------------


def _usage_error(exc: Exception) -> bool:
    """A command-line usage error (unknown option, missing argument...), raised by Typer's parser."""
    return callable(getattr(exc, "format_message", None)) and getattr(exc, "exit_code", None) == 2


def caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt lies behind ``exc`` (its cause or context, however deep)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


INTERRUPTED = "error: interrupted; a run being advanced is left running, and `tinywf tick` recovers it"


def interrupted_line() -> str:
    """The ``error:`` line for an interrupt: what it left, as the place it came in knows."""
    message = LEFT_AT_REST.get()
    return INTERRUPTED if message is None else f"error: {message}"


def app_for(args: list[str]) -> typer.Typer:
    """The app that runs ``args``: when they start with a command's name, a copy of ``app`` that
    holds only that command (Typer builds the parser of every command it holds at each start,
    about 20 ms for this CLI); otherwise ``app`` itself (``tinywf --help`` lists them all)."""
    import copy

    from typer.main import get_command_name

    name = args[0] if args else None
    found = [info for info in app.registered_commands
             if (info.name or get_command_name(getattr(info.callback, "__name__", ""))) == name]
    if len(found) != 1:
        return app
    single = copy.copy(app)
    single.registered_commands = found
    return single


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tinywf`` command: run the app, map errors to exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    options = args[: args.index("--")] if "--" in args else args
    debug = "--debug" in options or bool(os.environ.get("TINYWF_DEBUG"))
    code: Any = 0
    interrupted = False
    opened = OPENED.set([])
    left = LEFT_AT_REST.set(None)
    with guard_streams(), interrupts.handling():
        try:
            code = app_for(args)(args=args, prog_name="tinywf", standalone_mode=False)
            if interrupts.seen():  # typer turns a KeyboardInterrupt into a return of 130
                print(interrupted_line(), file=sys.stderr)
                code, interrupted = 130, True
        except typer.Exit as exc:
            code = exc.exit_code
            if interrupts.seen() or caused_by_interrupt(exc):
                print(interrupted_line(), file=sys.stderr)
                interrupted = True
        except typer.Abort:
            print("error: aborted", file=sys.stderr)
            code = 130
        except TinyWFError as exc:
            report(exc, debug)
            code = exc.exit_code
        except KeyboardInterrupt:
            print(interrupted_line(), file=sys.stderr)
            code = 130
            interrupted = True
        except BrokenPipeError:
            code = 0
        except Exception as exc:
            code = unexpected(exc, debug)
        finally:
            for runtime in OPENED.get() or []:
                with contextlib.suppress(Exception):
                    runtime.close()
            OPENED.reset(opened)
            LEFT_AT_REST.reset(left)
        code = code if isinstance(code, int) else 0
        code = flush_output(code)
    if interrupted:  # action threads may still run: do not wait for them at exit
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def report(exc: BaseException, debug: bool) -> None:
    """One ``error:`` line (and the traceback with ``--debug``)."""
    if debug:
        import traceback

        traceback.print_exc()
    message = exc.message if isinstance(exc, TinyWFError) else str(exc)
    print(f"error: {one_line(message)}", file=sys.stderr)


def unexpected(exc: Exception, debug: bool) -> int:
    """An exception no command maps: a usage error from the parser (2), or a bug in tinywf (70)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `tinywf`: the help is the answer
        print(exc.format_message())  # type: ignore[attr-defined]
        return 0
    if _usage_error(exc):
        if debug:
            import traceback

            traceback.print_exc()
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        print(f"error: {message} ({usage_hint(exc)})", file=sys.stderr)
        return 2
    if debug:
        import traceback

        traceback.print_exc()
    print(f"error: internal error: {type(exc).__name__}: {one_line(str(exc))} (run with --debug for the traceback)",
          file=sys.stderr)
    return 70


def usage_hint(exc: Exception) -> str:
    """What to do about a usage error: put a VALUE like ``-5`` after ``--``, or read the help of the
    command it was for (``tinywf run --help``; ``tinywf --help`` when no command was named)."""
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "tinywf"
    option = getattr(exc, "option_name", None)
    if ctx is not None and isinstance(option, str) and not option.startswith("--"):
        names = [str(p.metavar or p.name).upper() for p in ctx.command.params if p.param_type_name == "argument"]
        if "VALUE" in names:
            before = " ".join(names[: names.index("VALUE")])
            return f"a VALUE that starts with '-' goes after `--`: `{command} {before} -- {option}`"
    return f"see `{command} --help`"


def flush_output(code: int) -> int:
    """Flush stdout now, so that a failure to write is reported here, not as a traceback at exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    except OutputError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return code or exc.exit_code
    else:
        return code
    # the reader went away: nothing more can be written, and Python must not try again at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(devnull, sys.__stdout__.fileno())  # type: ignore[union-attr]
    return code
