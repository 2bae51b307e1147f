"""Every command is documented with an example, and the docs' CLI reference (docs/reference.md)
is what ``python tools/cli_reference.py --write`` would write from the commands' help."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

import pytest
import typer
from clihelpers import REPO

from tinywf_cli.cli import app


def load_tool() -> ModuleType:
    """``tools/cli_reference.py`` as a module."""
    spec = importlib.util.spec_from_file_location("cli_reference", REPO / "tools" / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return load_tool()


@pytest.fixture(scope="module")
def reference(tool: ModuleType) -> str:
    text = tool.reference()
    assert isinstance(text, str)
    return text


def registered() -> list[tuple[str, typer.models.CommandInfo]]:
    """(name, info) of every command registered on the app, then of each group's (``limit set``)."""
    found = []
    for info in app.registered_commands:
        assert info.callback is not None
        found.append((info.name or info.callback.__name__.replace("_", "-"), info))
    for group in app.registered_groups:
        assert group.typer_instance is not None
        for info in group.typer_instance.registered_commands:
            assert info.callback is not None
            found.append((f"{group.name} {info.name or info.callback.__name__.replace('_', '-')}", info))
    return found


@pytest.mark.parametrize(("name", "info"), registered(), ids=[name for name, _ in registered()])
def test_every_command_has_help_with_an_example(name: str, info: typer.models.CommandInfo) -> None:
    doc = info.help or (info.callback.__doc__ if info.callback else None)
    assert doc and doc.strip(), f"`tinywf {name}` has no help text"
    first = doc.strip().splitlines()[0]
    assert first.endswith(".") and len(first) > 20, f"`tinywf {name}`: say what it does in one sentence"
    example = re.search(r"^[ \t]*Example:\n[ \t]+(.+)$", doc, re.MULTILINE)
    assert example is not None, f"`tinywf {name}` has no `Example:` block"
    assert "tinywf " in example.group(1), f"`tinywf {name}`: the example should show the command"


def test_the_tool_knows_every_registered_command(tool: ModuleType) -> None:
    assert tool.command_names() == [name for name, _ in registered()]


def test_help_shows_each_example_as_written(reference: str) -> None:
    sections = re.split(r"^### ", reference, flags=re.MULTILINE)[1:]
    assert len(sections) == len(registered()) + 1  # the main help, then each command
    for section in sections:
        title = section.splitlines()[0]
        lines = section.splitlines()
        assert "  Example:" in lines, f"{title}: no Example: block in --help"
        after = lines[lines.index("  Example:") + 1]
        assert after.startswith("      ") and after.strip(), f"{title}: the example was rewrapped: {after!r}"


def test_the_docs_cli_reference_is_up_to_date(tool: ModuleType, reference: str) -> None:
    page = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    assert page == tool.with_reference(page, reference), (
        "docs/reference.md's CLI reference is out of date: run `python tools/cli_reference.py --write`")


def test_the_tool_only_touches_the_text_between_the_markers(tool: ModuleType) -> None:
    readme = f"# title\n\nbefore\n\n{tool.START}\nold\n{tool.END}\n\nafter\n"
    assert tool.with_reference(readme, "new") == f"# title\n\nbefore\n\n{tool.START}\nnew\n{tool.END}\n\nafter\n"
    with pytest.raises(SystemExit):
        tool.with_reference("no markers here\n", "new")


def test_every_public_name_is_in_the_docs() -> None:
    import tinywf_cli
    from tinywf_cli.names import WORKFLOW_API

    docs = "\n".join(path.read_text(encoding="utf-8") for path in sorted((REPO / "docs").glob("*.md")))
    missing = [name for name in tinywf_cli.__all__ if name not in docs]
    assert missing == [], f"not in docs/: {missing}"
    api = [name for name in WORKFLOW_API if f"self.{name}" not in docs and f"{name} =" not in docs]
    assert api == [], f"Workflow API not shown in docs/: {api}"


def test_every_public_name_has_a_docstring() -> None:
    import inspect

    import tinywf_cli

    undocumented = [name for name in tinywf_cli.__all__ if not name.startswith("__")
                    and not inspect.getdoc(getattr(tinywf_cli, name))]
    assert undocumented == []
