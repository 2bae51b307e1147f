"""The examples of the README and of every page of docs/ run as a new user would paste them,
and print what the pages show.

``docexamples`` says how a page is read (what is compared, what is loose, the two markers);
this file runs every page with it, checks the pages' links and the contributing note's count of
examples, and checks the runner itself on small pages, a broken example among them.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from clihelpers import REPO
from docexamples import (
    CENSUS_END,
    CENSUS_START,
    Report,
    census,
    census_table,
    difference,
    pages_of,
    parse,
    run_page,
)

PAGES = pages_of(REPO)
#: How many blocks of all the pages may be marked `<!-- example: skip: ... -->`.
MARKED_SKIPS = 4


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(REPO)) for page in PAGES])
def test_the_pages_examples_run_and_print_what_the_page_shows(page: Path, tmp_path: Path) -> None:
    report = run_page(page, REPO, tmp_path / "workspace")
    print(report.summary())
    assert report.failures == [], report.summary()
    skipped = [outcome for outcome in report.outcomes if outcome.what == "skipped"]
    assert all(outcome.detail for outcome in skipped), report.summary()


def test_blocks_marked_not_to_run_are_few() -> None:
    marked = [f"{block.where}: {block.marker}" for page in PAGES
              for block in parse(page.read_text(encoding="utf-8"), page.name)
              if block.marker is not None and block.marker.startswith("skip:")]
    assert len(marked) <= MARKED_SKIPS, "keep `<!-- example: skip: ... -->` rare:\n" + "\n".join(marked)


def test_the_contributing_note_counts_the_examples() -> None:
    note = (REPO / "docs" / "contributing.md").read_text(encoding="utf-8")
    counts = census(PAGES, REPO)
    assert counts["console"] >= 15 and counts["python"] + counts["excerpt"] + counts["saved"] >= 12, counts
    shown = note.split(CENSUS_START)[1].split(CENSUS_END)[0].strip()
    assert shown == census_table(counts, len(PAGES)), (
        "docs/contributing.md's count of examples is out of date: run `python tests/docexamples.py --census`")


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    [first, *_] = [block for block in parse(readme, "README.md") if block.lang == "sh"]
    assert first.body[0].startswith("pip install -e . && tinywf run flows/guess_game.py ")
    assert first.body[1].startswith('pip install -e ".[test]" && pytest ')


def test_every_page_is_in_the_sites_nav() -> None:
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (REPO / "mkdocs.yml").read_text(encoding="utf-8"), re.MULTILINE)
    assert sorted(nav) == sorted(page.name for page in PAGES if page.parent.name == "docs")


def slug(heading: str) -> str:
    """The anchor the site gives a heading (Python-Markdown's ``toc`` slugify)."""
    text = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def headings(page: Path) -> set[str]:
    """The anchors of the headings of ``page`` (those outside its fenced blocks)."""
    text = page.read_text(encoding="utf-8").splitlines()
    inside = {line for block in parse("\n".join(text), page.name)
              for line in range(block.line, block.line + len(block.body) + 2)}
    return {slug(line.lstrip("#").strip()) for number, line in enumerate(text, 1)
            if line.startswith("#") and number not in inside}


def test_the_readmes_links_into_the_docs_name_pages_and_headings_that_exist() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(docs/([\w.-]+\.md)(?:#([\w-]+))?\)", readme)
    assert len(links) >= 15
    for name, anchor in links:
        page = REPO / "docs" / name
        assert page.is_file(), f"README.md links to docs/{name}, which does not exist"
        if anchor:
            assert anchor in headings(page), f"README.md links to docs/{name}#{anchor}: no such heading"


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
