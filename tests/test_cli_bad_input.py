"""Bad input of every kind a user can type: one ``error:`` line on stderr, the right exit
code, nothing on stdout, no traceback, and nothing changed on disk.

The whole matrix runs through ``main`` in this process against one shared state
directory (bad input must leave it as it was, so sharing it is part of the check); a
sample of every kind runs through the installed command as well.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clihelpers import Cli, InProcessCli, assert_error, make_workspace, runs_workspace, snapshot

CASES: list[tuple[str, tuple[str, ...], int, str]] = [
    # malformed JSON and values that fail validation
    ("input-not-json", ("run", "flows/guess_game.py", "--input", "{number: 1}"), 2, "--input is not valid JSON"),
    ("input-not-object", ("run", "flows/guess_game.py", "--input", "[1, 2]"), 2, "JSON object"),
    ("input-nan", ("run", "flows/guess_game.py", "--input", '{"number": NaN}'), 2, "--input"),
    ("input-wrong-type", ("run", "flows/guess_game.py", "--input", '{"number": "many"}'), 2, "number"),
    ("input-out-of-range", ("run", "flows/guess_game.py", "--input", '{"number": 500}'), 2, "number"),
    ("input-unknown-key", ("run", "flows/guess_game.py", "--input", '{"numbr": 7}'), 2, "numbr"),
    ("input-missing-file", ("run", "flows/guess_game.py", "--input", "@nothing.json"), 2, "nothing.json"),
    ("resolve-wrong-type", ("resolve", "g1", "ask_0", "many"), 2, "ask_0"),
    ("resolve-out-of-range", ("resolve", "g1", "ask_0", "101"), 2, "ask_0"),
    ("resolve-object", ("resolve", "g1", "ask_0", '{"guess": 5}'), 2, "ask_0"),
    ("resolve-negative-without-dashes", ("resolve", "g1", "ask_0", "-5"), 2, "-5"),
    ("resolve-negative-after-dashes", ("resolve", "g1", "ask_0", "--", "-5"), 2, "greater than or equal"),
    ("send-wrong-type", ("send", "g1", "ask_0", "many"), 2, "ask_0"),
    ("resolve-timer-id", ("resolve", "u1", "wait_before_promotion_email@2", "1"), 2, "timer"),
    # not found
    ("unknown-resume", ("resolve", "g1", "ask_7", "5"), 3, "ask_7"),
    ("show-unknown-run", ("show", "nosuch"), 3, "nosuch"),
    ("unknown-signal", ("signal", "sub-1", "refund"), 3, "refund"),
    # signal arguments
    ("signal-args-not-json", ("signal", "sub-1", "add_usage", "{item}"), 2,
     "the argument object of signal 'add_usage' is not valid JSON"),
    ("signal-args-not-object", ("signal", "sub-1", "add_usage", "[1]"), 2, "JSON object"),
    ("signal-arg-missing", ("signal", "sub-1", "add_usage", '{"item": "api"}'), 2, "amount"),
    ("signal-arg-wrong-type", ("signal", "sub-1", "add_usage", '{"item": "api", "amount": "lots"}'), 2, "amount"),
    ("signal-arg-unknown", ("signal", "sub-1", "add_usage", '{"item": "a", "amount": 1, "tax": 2}'), 2, "tax"),
    # run ids
    ("run-id-slash", ("run", "flows/simple.py", "--run-id", "bad/id"), 2, "invalid run id"),
    ("run-id-not-ascii", ("run", "flows/simple.py", "--run-id", "ünï"), 2, "invalid run id"),
    ("run-id-newline", ("run", "flows/simple.py", "--run-id", "s2\n"), 2, "invalid run id"),
    ("run-id-dot-first", ("run", "flows/simple.py", "--run-id", ".hidden"), 2, "invalid run id"),
    ("run-id-too-long", ("run", "flows/simple.py", "--run-id", "r" * 129), 2, "invalid run id"),
    ("show-parent-path", ("show", "../g1"), 2, "invalid run id"),
    ("resolve-run-id-space", ("resolve", "g1 ", "ask_0", "5"), 2, "invalid run id"),
    # flow files
    ("flow-missing", ("run", "flows/missing.py"), 2, "not found"),
    ("flow-syntax-error", ("run", "flows/broken.py"), 2, "syntax error"),
    ("flow-import-raises", ("run", "flows/raises.py"), 2, "flow import went wrong"),
    ("flow-two-workflows", ("run", "flows/two.py"), 2, "First, Second"),
    ("flow-class-missing", ("run", "flows/two.py:Third"), 2, "Third"),
    ("flow-without-workflow", ("run", "flows/empty.py"), 2, "no workflow"),
    ("flow-is-a-directory", ("run", "flows"), 2, "flows"),
    # usage
    ("unknown-command", ("frobnicate",), 2, "frobnicate"),
    ("missing-argument", ("show",), 2, "RUN"),
    ("missing-argument-points-at-the-command", ("run",), 2, "Missing argument 'FLOW'. (see `tinywf run --help`)"),
    ("unknown-command-points-at-the-commands", ("frobnicate",), 2, "(see `tinywf --help`)"),
    ("resolve-value-like-an-option", ("resolve", "g1", "ask_0", "-5"), 2,
     "No such option: -5 (a VALUE that starts with '-' goes after `--`: `tinywf resolve RUN RESUME -- -5`)"),
    ("send-value-like-an-option", ("send", "g1", "ask_0", "-5"), 2, "`tinywf send RUN KEY -- -5`"),
    ("unknown-option", ("show", "g1", "--colour"), 2, "--colour"),
    ("bad-status", ("list", "--status", "sleeping"), 2, "sleeping"),
    ("bad-limit", ("tick", "--limit", "0"), 2, "--limit"),
    ("bad-lock-timeout", ("cancel", "g1", "--lock-timeout", "-1"), 2, "--lock-timeout"),
    ("bad-poll", ("worker", "--poll", "0"), 2, "--poll"),
    # a duration is a number and a unit: a bare number leaves the unit to guess
    ("prune-age-bare-number", ("prune", "--older-than", "30"), 2,
     "invalid age '30': add a unit: 30s, 30m, 30h, 30d or 30w"),
    ("prune-age-bare-decimal", ("prune", "--older-than", "1.5"), 2, "add a unit"),
    ("link-expiry-bare-number", ("link", "g1", "ask_0", "--expires", "7"), 2, "invalid duration '7': add a unit"),
    # numbers that are no numbers of seconds, values that could not be stored or read back
    ("poll-nan", ("worker", "--poll", "nan"), 2, "--poll"),
    ("poll-inf", ("worker", "--poll", "inf"), 2, "--poll"),
    ("poll-huge", ("worker", "--poll", "1e308"), 2, "--poll"),
    ("lock-timeout-nan", ("cancel", "g1", "--lock-timeout", "nan"), 2, "--lock-timeout"),
    ("lock-timeout-inf", ("resolve", "g1", "ask_0", "5", "--lock-timeout", "inf"), 2, "--lock-timeout"),
    ("input-nested-100k-deep", ("run", "flows/echo.py", "--input", "@deep.json"), 2, "--input"),
    ("input-lone-surrogate", ("run", "flows/echo.py", "--input", '{"x": "\\ud800"}'), 2, "surrogate"),
    ("input-number-too-large", ("run", "flows/echo.py", "--input", '{"computed": 1e999}'), 2, "--input"),
    ("input-integer-too-large", ("run", "flows/echo.py", "--input", '{"n": ' + "9" * 5000 + "}"), 2, "digits"),
    ("value-not-unicode", ("resolve", "g1", "ask_0", "\udcff\udcfe"), 2, "ask_0"),
    ("send-not-unicode", ("send", "g1", "later", "\udcff\udcfe"), 2, "Unicode"),
    ("reason-not-unicode", ("cancel", "g1", "--reason", "\udcff\udcfe"), 2, "Unicode"),
    ("store-empty", ("show", "g1", "--store", ""), 2, "--store is empty"),
    ("run-id-10k", ("show", "x/" * 5000), 2, "10,000 characters"),
    ("flow-nested-too-deeply-run", ("run", "flows/deep.py"), 2, "nested too deeply"),
    ("flow-nested-too-deeply-graph", ("graph", "flows/deep.py"), 2, "nested too deeply"),
    ("flow-nested-too-deeply-schema", ("schema", "flows/deep.py"), 2, "nested too deeply"),
    ("flow-nested-too-deeply-check", ("check", "flows/deep.py"), 2, "nested too deeply"),
]

#: Commands on a run that does not exist (exit 3).
UNKNOWN_RUN_CASES = [
    ("resolve", "nosuch", "ask_0", "5"),
    ("send", "nosuch", "ask_0", "5"),
    ("signal", "nosuch", "add_usage"),
    ("cancel", "nosuch"),
    ("retry", "nosuch"),
]

#: One case of each kind, through the installed command.
INSTALLED = ["input-not-json", "input-unknown-key", "resolve-wrong-type", "resolve-timer-id", "unknown-resume",
             "unknown-signal", "signal-arg-wrong-type", "run-id-slash", "flow-missing", "flow-syntax-error",
             "flow-two-workflows", "unknown-option", "prune-age-bare-number", "link-expiry-bare-number",
             "missing-argument-points-at-the-command", "resolve-value-like-an-option", "signal-args-not-json"]


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> InProcessCli:
    """A workspace with one run of each kind: waiting on an event (``g1``) or a timer
    (``u1``), finished (``s1``), failed (``f1``), a subscription (``sub-1``)."""
    return runs_workspace(tmp_path_factory.mktemp("bad-input"))


@pytest.fixture(scope="module")
def cli(fast: InProcessCli) -> Cli:
    return Cli(fast.workspace, fast.state_dir)


def check(cli: Cli, args: tuple[str, ...], code: int, fragment: str) -> None:
    """Run a bad command; one error line with ``fragment``, and the state directory as it was."""
    before = snapshot(cli.state_dir)
    assert_error(cli(*args), code, fragment)
    assert snapshot(cli.state_dir) == before


@pytest.mark.parametrize(("args", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_changes_nothing(fast: InProcessCli, args: tuple[str, ...], code: int,
                                                         fragment: str) -> None:
    check(fast, args, code, fragment)


@pytest.mark.parametrize("args", UNKNOWN_RUN_CASES, ids=[a[0] for a in UNKNOWN_RUN_CASES])
def test_a_command_on_an_unknown_run_exits_3_and_changes_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    fast = InProcessCli(make_workspace(tmp_path))
    fast.start("flows/simple.py", "s1")  # a state directory that exists
    check(fast, args, 3, "no run 'nosuch'")


def test_a_command_on_an_unknown_run_leaves_no_state_directory_behind(tmp_path: Path) -> None:
    fast = InProcessCli(make_workspace(tmp_path))
    assert_error(fast("show", "nosuch"), 3, "nosuch")
    assert_error(fast("run", "flows/two.py"), 2, "First, Second")
    assert not fast.state_dir.exists()


@pytest.mark.parametrize("name", INSTALLED)
def test_bad_input_through_the_installed_command(cli: Cli, name: str) -> None:
    [(args, code, fragment)] = [c[1:] for c in CASES if c[0] == name]
    check(cli, args, code, fragment)


def test_a_bad_clock_is_bad_input(fast: InProcessCli) -> None:
    before = snapshot(fast.state_dir)
    assert_error(fast("show", "g1", now="yesterday"), 2, "$TINYWF_NOW")
    assert_error(fast("tick", now="2026-13-01T00:00:00Z"), 2, "$TINYWF_NOW")
    assert_error(fast("run", "flows/user_onboarding.py", now="9999-12-31T23:59:59Z"), 2, "out of range")
    assert_error(fast("tick", now="1960-01-01T00:00:00Z"), 2, "out of range")
    assert snapshot(fast.state_dir) == before


def test_an_empty_state_dir_is_bad_usage(fast: InProcessCli) -> None:
    before = snapshot(fast.state_dir)
    assert_error(fast("show", "g1", "--state-dir", "", state_dir=False), 2, "--state-dir is empty")
    assert_error(fast("run", "flows/simple.py", "--state-dir", "", state_dir=False), 2, "--state-dir is empty")
    assert snapshot(fast.state_dir) == before
    assert not (fast.workspace / "s1.json").exists()  # nothing was written in the working directory


def test_a_deeply_nested_value_on_stdin_is_bad_input(fast: InProcessCli) -> None:
    before = snapshot(fast.state_dir)
    for depth in (990, 5000):
        assert_error(fast("resolve", "g1", "ask_0", "-", input="[" * depth + "]" * depth), 2, "ask_0")
    assert snapshot(fast.state_dir) == before


def test_an_error_line_names_a_huge_run_id_in_short(fast: InProcessCli) -> None:
    line = assert_error(fast("show", "x/" * 5000), 2, "invalid run id")
    assert len(line) < 300


def test_a_signal_that_refuses_its_call_is_bad_input(fast: InProcessCli) -> None:
    fast.json("run", "flows/interval_payment.py", "--run-id", "sub-2")
    fast.json("signal", "sub-2", "cancel_subscription")
    before = snapshot(fast.state_dir)
    assert_error(fast("signal", "sub-2", "cancel_subscription"), 2, "already cancelled")
    assert snapshot(fast.state_dir) == before


def test_bad_input_never_prompts_or_waits(fast: InProcessCli) -> None:
    assert_error(fast("resolve", "g1", "ask_0", "-", input="not a number\n"), 2, "ask_0")
    assert fast.json("show", "g1")["state"]["answers"] == []
