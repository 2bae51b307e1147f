"""Render ``tinywf --help`` and ``tinywf COMMAND --help`` into the docs' CLI reference.

    python tools/cli_reference.py            # print the reference
    python tools/cli_reference.py --write    # update docs/reference.md between the markers
    python tools/cli_reference.py --check    # exit 1 when docs/reference.md is out of date

The help texts are rendered the way a reader sees them in a plain 100-column terminal
(``COLUMNS=100``, ``NO_COLOR=1``) by the command's own entry point; only the part of
docs/reference.md between ``<!-- cli-reference:start -->`` and ``<!-- cli-reference:end -->``
is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing: use its tinywf_cli
    sys.path.insert(0, str(ROOT))
PAGE = ROOT / "docs" / "reference.md"
PAGE_NAME = "docs/reference.md"
START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"
WRITE_COMMAND = "python tools/cli_reference.py --write"


def command_names() -> list[str]:
    """The names of the ``tinywf`` commands, in the order ``tinywf --help`` lists them; a group's
    commands by their whole name (``limit set``), in the order ``tinywf GROUP --help`` lists them."""
    import typer

    from tinywf_cli.cli import app

    def names(group: object, prefix: str) -> list[str]:
        found: list[str] = []
        for name, command in getattr(group, "commands", {}).items():
            if getattr(command, "hidden", False):
                continue
            if hasattr(command, "commands"):
                found.extend(names(command, f"{prefix}{name} "))
            else:
                found.append(f"{prefix}{name}")
        return found

    return names(typer.main.get_command(app), "")


def help_text(args: list[str]) -> str:
    """``tinywf ARGS --help`` as printed in a plain 100-column terminal."""
    from tinywf_cli.cli import main

    out = io.StringIO()
    with plain_terminal(), contextlib.redirect_stdout(out):
        try:
            main([*args, "--help"])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise SystemExit(f"`tinywf {' '.join(args)} --help` failed (exit {exc.code})") from None
    return "\n".join(line.rstrip() for line in out.getvalue().strip("\n").splitlines())


@contextlib.contextmanager
def plain_terminal() -> Iterator[None]:
    """The environment of a plain 100-column terminal, for the time of the ``with``."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith("TINYWF_") or n in ("FORCE_COLOR", "LINES")]:
        del os.environ[name]
    os.environ.update(COLUMNS="100", NO_COLOR="1", TERM="dumb")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def reference() -> str:
    """The CLI reference in Markdown: the main help, then each command's."""
    invocations = [[], *(name.split() for name in command_names())]
    parts = [f"Generated from `--help` by `{WRITE_COMMAND}`; edit the commands' docstrings, not this."]
    for args in invocations:
        parts.append(f"### `{' '.join(['tinywf', *args])}`\n\n```text\n{help_text(args)}\n```")
    return "\n\n".join(parts)


def with_reference(page: str, text: str) -> str:
    """``page`` with ``text`` between the markers (each must appear exactly once, start first)."""
    if page.count(START) != 1 or page.count(END) != 1 or page.index(START) > page.index(END):
        raise SystemExit(f"{PAGE_NAME} must hold {START} and then {END}, once each")
    head, rest = page.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{text}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """The command line of this tool."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"update {PAGE_NAME} in place")
    mode.add_argument("--check", action="store_true", help=f"exit 1 when {PAGE_NAME} is out of date")
    args = parser.parse_args(argv)
    text = reference()
    if not (args.write or args.check):
        print(text)
        return 0
    current = PAGE.read_text(encoding="utf-8")
    wanted = with_reference(current, text)
    if args.check:
        if wanted != current:
            print(f"{PAGE_NAME}'s CLI reference is out of date: run `{WRITE_COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        PAGE.write_text(wanted, encoding="utf-8")
        print(f"{PAGE_NAME}: CLI reference updated")
    else:
        print(f"{PAGE_NAME}: CLI reference already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
