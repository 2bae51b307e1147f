"""Fuzzing every command's arguments and the contents of run records (hypothesis).

Whatever arrives — text that is no JSON, numbers that are no numbers, ids that are no ids,
records damaged field by field — tinywf answers with a document or one ``error:`` line and
the contract's exit code: never 70, never a traceback, and a refusal changes no byte.
The examples are derived from a fixed seed, so CI sees the same cases on every run;
``TINYWF_FUZZ_EXAMPLES`` asks for more.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from clihelpers import InProcessCli, describe, make_workspace, runs_workspace, snapshot
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("TINYWF_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

RUN_IDS = ["g1", "u1", "s1", "f1", "sub-1", "nosuch", "", "../g1", "g1\n", "ü", "x" * 200, "a/b", "-g1",
           "\udcff", "g1 "]
KEYS = ["ask_0", "ask_1", "approval", "wait_before_promotion_email@2", "", "\x00", "x" * 300, "note"]
TEXT = st.one_of(
    st.sampled_from(["5", "-5", "0042", "true", "null", "nan", "NaN", "inf", "-inf", "1e999", "1e308", "[]",
                     "{}", '{"a": 1}', '{"number": 5}', "[" * 3000, '"\\ud800"', "@nothing.json", "@deep.json",
                     "-", "--", "", " ", "9" * 5000, '{"x": NaN}', "\udcff\udcfe"]),
    st.text(max_size=30),
)
OPTIONS = st.sampled_from([
    [], ["--json"], ["--lock-timeout", "nan"], ["--lock-timeout", "0"], ["--lock-timeout", "-1"],
    ["--lock-timeout", "1e308"], ["--poll", "nan"], ["--limit", "0"], ["--limit", "3"], ["--status", "waiting"],
    ["--status", "sleeping"], ["--reason", "\udcff"], ["--input", "{"], ["--last", "-1"], ["--last", "2"],
    ["--at-visit", "0"], ["--at-visit", "99"], ["--older-than", "soon"], ["--older-than", "1d"], ["--dry-run"],
    ["--store", ""], ["--attach"], ["--format", "svg"], ["--expires", "forever"], ["--frobnicate"],
])

#: What each command takes: positional argument strategies.
COMMANDS: dict[str, list[st.SearchStrategy[Any]]] = {
    "run": [st.sampled_from(["flows/simple.py", "flows/guess_game.py", "flows/echo.py", "flows/nope.py",
                             "flows/broken.py", "flows", "flows/two.py:Second", "flows/echo.py:Nope", ""])],
    "resolve": [st.sampled_from(RUN_IDS), st.sampled_from(KEYS), TEXT],
    "send": [st.sampled_from(RUN_IDS), st.sampled_from(KEYS), TEXT],
    "signal": [st.sampled_from(RUN_IDS), st.sampled_from(["add_usage", "nosuch", "", "cancel_subscription"]),
               TEXT],
    "show": [st.sampled_from(RUN_IDS)],
    "list": [],
    "tick": [],
    "cancel": [st.sampled_from(RUN_IDS)],
    "retry": [st.sampled_from(RUN_IDS)],
    "pause": [st.sampled_from(RUN_IDS)],
    "resume": [st.sampled_from(RUN_IDS)],
    "fork": [st.sampled_from(RUN_IDS)],
    "prune": [],
    "check": [st.sampled_from(["flows/simple.py", "flows/nope.py", "flows/broken.py"])],
    "graph": [st.sampled_from(["flows/simple.py", "flows/nope.py", "flows/broken.py", "flows/deep.py"])],
    "schema": [st.sampled_from(["flows/simple.py", "flows/nope.py", "flows/broken.py"])],
    "link": [st.sampled_from(RUN_IDS), st.sampled_from(KEYS)],
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> InProcessCli:
    return runs_workspace(tmp_path_factory.mktemp("fuzz"))


def check_answer(cli: InProcessCli, args: list[str], before: dict[str, bytes | None]) -> None:
    result = cli(*args)
    assert result.returncode != 70, describe(result)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, describe(result)
    if result.returncode in (2, 3, 4, 5):
        assert result.stdout == "", describe(result)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), describe(result)
        assert snapshot(cli.state_dir) == before, f"{args} changed the state directory on refusal"
    else:
        assert result.returncode in (0, 1), describe(result)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    name = draw(st.sampled_from(sorted(COMMANDS)))
    args = [draw(strategy) for strategy in COMMANDS[name]]
    if draw(st.booleans()):  # sometimes an argument too few, or one too many
        args = args[:-1] if args and draw(st.booleans()) else [*args, draw(TEXT)]
    options = draw(OPTIONS)
    return [name, *options, *(["--"] if args and args[-1].startswith("-") else []), *args]


@seed(20260101)
@FUZZ
@given(line=command_lines())
def test_every_command_answers_any_arguments_cleanly(workspace: InProcessCli, line: list[str]) -> None:
    check_answer(workspace, line, snapshot(workspace.state_dir))


# -- damaged records ----------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=10), st.sampled_from(["not a time", "2026-01-01", "running", "nonsense", ""])),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children,
                                                                                 max_size=3)),
    max_leaves=6,
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_of(item, (*prefix, index))
    return found


def replaced(document: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    if delete and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> InProcessCli:
    cli = InProcessCli(make_workspace(tmp_path_factory.mktemp("records")))
    cli.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    cli.json("resolve", "g1", "ask_0", "10")
    return cli


@seed(20260102)
@FUZZ
@given(data=st.data())
def test_a_record_damaged_anywhere_is_refused_cleanly_by_every_command(records: InProcessCli, data: Any) -> None:
    state = records.state_dir
    pristine = state.parent / "pristine"
    if not pristine.exists():
        shutil.copytree(state, pristine)
    shutil.rmtree(state)
    shutil.copytree(pristine, state)
    path = state / "g1.json"
    document = json.loads(path.read_text())
    target = data.draw(st.sampled_from(paths_of(document)))
    damaged = replaced(document, target, data.draw(JSON_VALUES), data.draw(st.booleans()))
    text = json.dumps(damaged)
    if data.draw(st.booleans()):  # tokens Python's json writes but JSON has not
        text = text.replace("0", data.draw(st.sampled_from(["NaN", "Infinity", "1e999", "0"])), 1)
    Path(path).write_text(text)
    command = data.draw(st.sampled_from([["show", "g1"], ["show", "g1", "--json"], ["list"], ["tick"],
                                         ["resolve", "g1", "ask_1", "20"], ["send", "g1", "x", "1"],
                                         ["cancel", "g1"], ["retry", "g1"], ["pause", "g1"], ["fork", "g1"],
                                         ["check"], ["prune", "--older-than", "0s"]]))
    check_answer(records, command, snapshot(state))
