"""The README's examples run as a new user would paste them, and print what the README shows.

``docexamples`` says how a page is read (what is compared, what is loose, the two markers);
this file runs README.md with it and checks the runner itself on small pages, a broken example
among them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clihelpers import REPO
from docexamples import Report, difference, parse, run_page


def test_readme_examples_run_and_print_what_the_readme_shows(tmp_path: Path) -> None:
    report = run_page(REPO / "README.md", REPO, tmp_path / "workspace")
    print(report.summary())
    assert report.failures == [], report.summary()
    assert report.count("compared") >= 8, report.summary()
    skipped = [outcome for outcome in report.outcomes if outcome.what == "skipped"]
    assert all(outcome.detail for outcome in skipped), report.summary()
    marked = [outcome for outcome in skipped if outcome.block.marker]
    assert len(marked) <= 2, f"keep `<!-- example: skip: ... -->` rare:\n{report.summary()}"


# -- the runner, on pages of its own -----------------------------------------------------------


def page(tmp_path: Path, text: str) -> Report:
    """Run a small page in a workspace of the repository's flows."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    return run_page(path, REPO, tmp_path / "workspace")


GOOD = """\
# A page

```console
$ tinywf run flows/simple.py --run-id s1
...
run s1 (flows/simple.py:Simple) finished at step ...
  state: {"start_hit": true, ...}
$ tinywf show s1 --json | python -c 'import json, sys; print(json.load(sys.stdin)["status"])'
finished
$ tinywf resolve s1 nothing 1
error: ...
$ echo $?
4
```

<!-- example: skip: shows a command that needs a mail server -->
```sh
mail -s hello grace@example.com
```

```python
from tinywf_cli import Runtime

assert Runtime("state").get("s1").status == "finished"
```

```python
x = yield self.action("a", f)
```
"""


def test_a_page_whose_examples_hold_passes_and_says_what_it_ran(tmp_path: Path) -> None:
    report = page(tmp_path, GOOD)
    assert report.failures == [], report.summary()
    assert [outcome.what for outcome in report.outcomes] == ["compared", "skipped", "ran", "fragment"]
    summary = report.summary()
    assert "page.md:17 sh: skipped: shows a command that needs a mail server" in summary
    assert "page.md:27 python: fragment: compiled as a step's body, not run" in summary


def test_a_broken_example_fails_naming_its_page_line(tmp_path: Path) -> None:
    broken = GOOD.replace("finished\n$ tinywf resolve", "waiting\n$ tinywf resolve")
    report = page(tmp_path, broken)
    [failure] = report.failures
    assert failure.startswith("page.md:8: `tinywf show s1 --json | python -c"), failure
    assert "line 9 shows 'waiting'; came instead (output line 1): 'finished'" in failure


def test_a_failing_command_the_page_does_not_show_failing_fails(tmp_path: Path) -> None:
    report = page(tmp_path, "```console\n$ tinywf show nosuchrun\n$ echo done\ndone\n```\n\n"
                            "```sh\ntinywf run flows/nosuchflow.py\n```\n")
    assert len(report.failures) == 3, report.summary()
    assert report.failures[0].startswith("page.md:2: `tinywf show nosuchrun` (console block at page.md:1) "
                                         "prints other than shown: line 1 of the output is more")
    assert report.failures[1].startswith("page.md:2: `tinywf show nosuchrun` (console block at page.md:1) "
                                         "exited 3, and the page does not show it failing")
    assert report.failures[2].startswith("page.md:8: `tinywf run flows/nosuchflow.py` (sh block at page.md:7) "
                                         "exited 2")


def test_python_that_fails_names_the_line_that_raised(tmp_path: Path) -> None:
    report = page(tmp_path, "```python\nx = 1\nundefined_name(x)\n```\n")
    [failure] = report.failures
    assert failure.startswith("page.md:3: the python block at page.md:1 exited 1"), failure
    assert "NameError: name 'undefined_name' is not defined" in failure


def test_an_excerpt_must_be_the_files_lines_in_order(tmp_path: Path) -> None:
    good = "```python\n# flows/simple.py\nfrom tinywf_cli import Workflow, step\n```\n"
    assert page(tmp_path / "a", good).failures == []
    drifted = "```python\n# flows/simple.py\nfrom tinywf_cli import Workflow, step, signal\n```\n"
    [failure] = page(tmp_path / "b", drifted).failures
    assert failure.startswith("page.md:3: this line of the excerpt of flows/simple.py"), failure


def test_a_block_saved_under_a_new_name_is_there_for_the_next(tmp_path: Path) -> None:
    saved = "```python\n# tests/test_mine.py\ndef test_it():\n    assert 1 + 1 == 2\n```\n\n"
    ran = "```console\n$ pytest -p no:cacheprovider tests/test_mine.py\n...\n1 passed in ...\n```\n"
    report = page(tmp_path, saved + ran)
    assert report.failures == [], report.summary()
    assert [outcome.what for outcome in report.outcomes] == ["saved", "compared"]


def test_a_prompt_gets_the_answers_typed_after_it(tmp_path: Path) -> None:
    asks = "echo 'Name?'; read -p '> ' a; echo 'Really?'; read -p '> ' b; echo \"$a, $b\""
    report = page(tmp_path, f"```console\n$ {asks}\nName?\n> Ada\nReally?\n>\nAda,\n```\n")
    assert report.failures == [], report.summary()


def test_markers_need_a_reason_and_a_known_name(tmp_path: Path) -> None:
    [failure] = page(tmp_path, "<!-- example: skip: -->\n```sh\ntrue\n```\n").failures
    assert failure.startswith("page.md:1: unknown example marker 'skip:'")
    [failure] = page(tmp_path, "<!-- example: ignore -->\n```sh\ntrue\n```\n").failures
    assert "unknown example marker 'ignore'" in failure


@pytest.mark.parametrize(("shown", "printed"), [
    (["created 2026-11-22T09:14:02Z (3m ago)"], ["created   2030-01-01T00:00:00.5Z (now)"]),
    (["╭─ game-1 ───╮"], ["╭─ game-1 ─────────────────╮"]),
    (["    2  step_play  2026-11-22T09:14:02Z  2m 38s  ████"], ["    2  step_play  2026-11-22T09:14:02Z  0s  █"]),
    (["advanced onboard-... -> waiting", "...", "3 due"], ["advanced onboard-7 -> waiting", "a", "b", "3 due"]),
    (["...", "end"], ["end"]),
])
def test_what_is_loose_in_a_comparison(shown: list[str], printed: list[str]) -> None:
    assert difference(list(enumerate(shown)), printed) is None


@pytest.mark.parametrize(("shown", "printed"), [
    (["10 due, 10 advanced"], ["10 due, 9 advanced"]),
    (["advanced onboard-0 -> finished"], ["advanced onboard-0 -> waiting"]),
    (["a b"], ["ab"]),
    (["...", "end"], ["end", "more"]),
    (["one"], []),
])
def test_what_is_not(shown: list[str], printed: list[str]) -> None:
    assert difference(list(enumerate(shown)), printed) is not None


def test_console_blocks_tell_continuations_from_answers() -> None:
    from docexamples import console_commands

    [block] = parse("```console\n$ for i in 1 2; do\n>   echo $i\n> done\n1\n2\n$ ask\nQuestion?\n> 42\n```\n")
    loop, ask = console_commands(block)
    assert loop.text == "for i in 1 2; do\n  echo $i\ndone" and loop.answers == []
    assert [text for _, text in loop.expected] == ["1", "2"]
    assert ask.answers == ["42"] and [line for line, _ in ask.expected] == [8, 9]
