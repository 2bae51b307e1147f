"""``tinywf new``: the flow and test it writes run, draw the spec's transitions, pass their
own test, ruff and mypy --strict as written; bad input writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from clihelpers import REPO, TINYWF, InProcessCli, clean_env, describe

#: The spec of the issue: a wait with a timeout, a timer, a choice, a loop back.
INVOICE_SPEC = {
    "name": "invoice",
    "doc": "Draft an invoice, send it, get paid or remind.",
    "state": {"amount": "int", "customer": "str", "lines": "list[str]", "due": "datetime | None"},
    "steps": [
        {"name": "draft", "tasks": ["draft_invoice"], "next": ["send"]},
        {"name": "send", "tasks": ["send_invoice"],
         "wait": {"event": "paid", "type": "bool", "timeout": "7d"}, "next": ["remind", "close"]},
        {"name": "remind", "tasks": ["send_reminder"], "wait": {"timer": "1d12h"}, "next": ["send"]},
        {"name": "close", "next": []},
    ],
}
#: A flow that never ends: a task, then a timer, round again; its test walks one lap.
POLL_SPEC = {
    "steps": [
        {"name": "poll", "tasks": ["check_status"], "next": ["pause"]},
        {"name": "pause", "wait": {"timer": "90m"}, "next": ["poll"]},
    ],
}
#: Everything as wide as it may be: long names, every type, a three-way choice, a quoted doc.
WIDE_SPEC = {
    "name": "a_very_long_workflow_name_that_goes_on",
    "doc": 'A "quoted" doc with a backslash \\ that is long enough to be wrapped over lines, as it is.',
    "state": {"when": "date | None", "tags": "dict[str, list[int]]", "score": "float", "blob": "Any",
              "either": "int | str", "done": "bool"},
    "steps": [
        {"name": "first_step_with_a_quite_long_name_here", "tasks": ["a_task_with_a_really_quite_long_name",
                                                                     "another_task_with_a_long_name_too"],
         "wait": {"event": "an_event_key_with_a_long_name_too_zz", "type": "dict[str, list[int]] | None",
                  "timeout": "1.5h", "question": 'Is this "fine"?'},
         "next": ["second_step_with_a_quite_long_name_here", "third_step_with_a_quite_long_name_here",
                  "first_step_with_a_quite_long_name_here"]},
        {"name": "second_step_with_a_quite_long_name_here", "wait": {"event": "when_due", "type": "datetime"},
         "next": ["third_step_with_a_quite_long_name_here"]},
        {"name": "third_step_with_a_quite_long_name_here", "wait": {"event": "note"}, "next": []},
    ],
}
#: NAME -> the options of `tinywf new NAME` (a spec is written to NAME.json first).
VARIANTS: dict[str, list[str] | dict[str, Any]] = {
    "invoice": ["--steps", "draft,send,wait_payment,remind,close"],
    "billing": INVOICE_SPEC,
    "poll": POLL_SPEC,
    "wide": WIDE_SPEC,
    "hello": [],
}
#: The lint rules of this repository, at the width most projects keep (88).
RUFF = ["check", "--isolated", "--select", "E,F,W,I,B,UP,SIM,RUF", "--line-length", "88"]


def new(cli: InProcessCli, name: str, options: list[str] | dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``tinywf new NAME ...``, a spec written beside the flows first."""
    if isinstance(options, dict):
        (cli.workspace / f"{name}.json").write_text(json.dumps(options), encoding="utf-8")
        options = ["--from", f"{name}.json"]
    return cli("new", name, *options)


def expected_edges(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """The transitions a spec describes, as ``tinywf graph --json`` names their ends."""
    steps = spec["steps"]
    edges = {("[*]", steps[0]["name"])}
    for step in steps:
        edges |= {(step["name"], target) for target in step.get("next", [])} or {(step["name"], "[*]")}
    return edges


def drawn_edges(cli: InProcessCli, flow: str) -> set[tuple[str, str]]:
    result = cli("graph", flow, "--json", state_dir=False)
    assert result.returncode == 0, describe(result)
    document = json.loads(result.stdout)
    assert document["problems"] == []
    return {("[*]", document["start"])} | {(s["name"], n) for s in document["steps"] for n in s["next"]}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> InProcessCli:
    """A project folder with every variant written by `tinywf new`."""
    cli = InProcessCli(tmp_path_factory.mktemp("project"))
    for name, options in VARIANTS.items():
        result = new(cli, name, options)
        assert result.returncode == 0, describe(result)
        assert result.stderr == ""
    return cli


def test_each_variant_writes_a_flow_and_its_test(made: InProcessCli) -> None:
    assert sorted(p.name for p in (made.workspace / "flows").iterdir()) == sorted(f"{n}.py" for n in VARIANTS)
    assert sorted(p.name for p in (made.workspace / "tests").iterdir()) == sorted(f"test_{n}.py" for n in VARIANTS)
    flow = (made.workspace / "flows" / "billing.py").read_text(encoding="utf-8")
    assert "class Invoice(Workflow[InvoiceState]):" in flow
    assert "def send_invoice(state: InvoiceState) -> InvoiceState:" in flow
    assert flow.count("# TODO") == 4  # three tasks and a choice
    assert "    paid: bool | None = None" in flow  # the event's answer has a field of its own


@pytest.mark.parametrize("name", VARIANTS)
def test_the_graph_is_the_specs(made: InProcessCli, name: str) -> None:
    options = VARIANTS[name]
    if isinstance(options, dict):
        spec = options
    else:
        names = options[1].split(",") if options else ["start", "finish"]
        spec = {"steps": [{"name": n, "next": names[i + 1:i + 2]} for i, n in enumerate(names)]}
    assert drawn_edges(made, f"flows/{name}.py") == expected_edges(spec)


def test_the_flows_run(made: InProcessCli) -> None:
    for name, status, step in [("invoice", "finished", "close"), ("hello", "finished", "finish"),
                               ("billing", "waiting", "send"), ("poll", "waiting", "pause"),
                               ("wide", "waiting", "first_step_with_a_quite_long_name_here")]:
        doc = made.json("run", f"flows/{name}.py", "--no-input")
        assert (doc["status"], doc["step"]) == (status, step), name
    [checked] = made.json("check", "flows/billing.py")["runs"]  # the waiting run replays under the code
    assert checked["ok"] is True


def test_the_installed_command_runs_a_new_flow(tmp_path: Path) -> None:
    env = clean_env(TINYWF_NOW="2026-01-01T00:00:00Z")
    for argv in (["new", "hello"], ["run", "flows/hello.py"]):
        result = subprocess.run([TINYWF, *argv], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, describe(result)
    assert "finished at step finish" in result.stdout


def test_the_tests_pass_as_written(made: InProcessCli) -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=made.workspace, env=clean_env(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, describe(result)
    assert "7 passed" in result.stdout  # a walk through each of the five, and a timeout in two of them


def test_ruff_and_mypy_strict_pass_on_what_was_written(made: InProcessCli) -> None:
    lint = subprocess.run([sys.executable, "-m", "ruff", *RUFF, "flows", "tests"], cwd=made.workspace,
                          capture_output=True, text=True, timeout=60, check=False)
    assert lint.returncode == 0, describe(lint)
    env = {**clean_env(), "MYPYPATH": str(REPO)}  # an editable install hides tinywf_cli from mypy
    types = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(made.workspace / ".mypy"),
                            "flows", "tests"], cwd=made.workspace, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert types.returncode == 0, describe(types)


def test_in_tinywfs_own_checkout_its_import_is_first_party(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (tmp_path / "tinywf_cli").symlink_to(REPO / "tinywf_cli")
    cli = InProcessCli(tmp_path)
    assert new(cli, "billing", INVOICE_SPEC).returncode == 0
    assert "from pydantic import BaseModel\n\nfrom tinywf_cli import" in (tmp_path / "flows" / "billing.py").read_text()
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "flows", "tests"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert lint.returncode == 0, describe(lint)


def test_json_says_what_was_written(tmp_path: Path) -> None:
    doc = InProcessCli(tmp_path).json("new", "invoice", "--steps", "draft,send", "--dir", "src/flows")
    assert doc == {"flow": "src/flows/invoice.py", "test": "tests/test_invoice.py", "workflow": "Invoice",
                   "steps": ["draft", "send"]}
    test = (tmp_path / "tests" / "test_invoice.py").read_text(encoding="utf-8")
    assert 'FLOW = Path(__file__).resolve().parent.parent / "src" / "flows" / "invoice.py"' in test


# -- what is refused -----------------------------------------------------------------------


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("options", "spec", "message"), [
    (["--steps", "a,,b"], None, "give step names separated by commas"),
    (["--steps", "a,a"], None, "steps[2] 'a' is a duplicate step"),
    (["--steps", "a,sleep"], None, "'sleep' is part of the Workflow API"),
    (["--steps", "a,list"], None, "'list' is a name Python or the flow file already uses"),
    (["--steps", "a", "--from", "spec.json"], "{}", "give --steps or --from SPEC.json, not both"),
    (["--from", "missing.json"], None, "cannot read the spec 'missing.json'"),
    (["--from", "spec.json"], '{"steps": [', "spec.json is not valid JSON"),
    (["--from", "spec.json"], "[]", "must hold a JSON object"),
    (["--from", "spec.json"], '{"steps": []}', "spec.json has no steps"),
    (["--from", "spec.json"], '{"name": "x"}', "spec.json has no steps"),
    (["--from", "spec.json"], '{"steps": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}',
     "steps[3] 'a' is a duplicate step (steps[1] has that name)"),
    (["--from", "spec.json"], '{"steps": [{"name": "a", "next": ["b"]}, {"name": "c"}]}',
     "steps[1] 'a': next 'b' is not a step (steps: a, c)"),
    (["--from", "spec.json"], '{"steps": [{"name": "a", "nxt": []}]}', "unknown key 'nxt'"),
    (["--from", "spec.json"], '{"steps": [{"name": "a", "tasks": ["t", "t"]}]}', "\"tasks\" names 't' twice"),
    (["--from", "spec.json"], '{"steps": [{"name": "a", "tasks": ["e"], "wait": {"event": "e"}}]}',
     "'e' names two things in one step"),
    (["--from", "spec.json"], '{"steps": [{"name": "a", "wait": {"timer": "2x"}}]}',
     "steps[1] 'a': wait timer: invalid duration '2x'"),
    (["--from", "spec.json"], '{"steps": [{"name": "a", "wait": {"event": "e", "timer": "1d"}}]}',
     "\"wait\" is {\"event\": KEY"),
    (["--from", "spec.json"], '{"state": {"n": "Decimal"}, "steps": [{"name": "a"}]}', "names 'Decimal'"),
    (["--from", "spec.json"], '{"state": {"n": "list"}, "steps": [{"name": "a"}]}', "needs its item type"),
    (["--from", "spec.json"], '{"state": {"n": "datetime"}, "steps": [{"name": "a"}]}',
     'write "datetime | None"'),
    (["--from", "spec.json"], '{"state": {"ok": "int"}, "steps": [{"name": "a", "wait": {"event": "ok"}}]}',
     "state field 'ok' is int, but the event 'ok' that answers it gives str"),
    (["--from", "spec.json"], '{"steps": [{"name": "a", "next": ["b"]}, {"name": "b", "next": ["a"]}]}',
     "a run would go round a -> b -> a for ever without waiting"),
])
def test_a_bad_spec_is_exit_2_and_writes_nothing(tmp_path: Path, options: list[str], spec: str | None,
                                                message: str) -> None:
    if spec is not None:
        (tmp_path / "spec.json").write_text(spec, encoding="utf-8")
    before = files_of(tmp_path)
    result = InProcessCli(tmp_path)("new", "invoice", *options)
    assert result.returncode == 2, describe(result)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert files_of(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == sorted(["spec.json"] if spec is not None else [])


@pytest.mark.parametrize(("name", "message"), [
    ("bad-name", "invalid flow name 'bad-name'"),
    ("class", "invalid flow name 'class'"),
    ("json", "would hide the module json"),
    ("workflow", "the workflow class would be called Workflow"),
])
def test_a_bad_name_is_exit_2(tmp_path: Path, name: str, message: str) -> None:
    result = InProcessCli(tmp_path)("new", name)
    assert (result.returncode, result.stdout) == (2, ""), describe(result)
    assert message in result.stderr
    assert os.listdir(tmp_path) == []


def test_an_existing_file_is_kept_without_force(tmp_path: Path) -> None:
    cli = InProcessCli(tmp_path)
    assert cli("new", "invoice").returncode == 0
    (tmp_path / "flows" / "invoice.py").write_text("# mine\n")
    before = files_of(tmp_path)
    result = cli("new", "invoice", "--steps", "a,b")
    assert (result.returncode, result.stdout) == (4, ""), describe(result)
    assert result.stderr == "error: flows/invoice.py exists; nothing was written (--force replaces it)\n"
    assert files_of(tmp_path) == before
    (tmp_path / "flows" / "invoice.py").unlink()  # the test alone still stops it, and the flow is not written
    result = cli("new", "invoice")
    assert result.returncode == 4 and "tests/test_invoice.py exists" in result.stderr
    assert not (tmp_path / "flows" / "invoice.py").exists()
    assert cli("new", "invoice", "--steps", "a,b", "--force").returncode == 0
    assert "def b(self)" in (tmp_path / "flows" / "invoice.py").read_text()
    assert [p.name for p in (tmp_path / "flows").iterdir()] == ["invoice.py"]  # no temp file left


# -- the example made this way ---------------------------------------------------------------


def test_the_billing_example_is_what_its_spec_writes(tmp_path: Path) -> None:
    """flows/billing.py was written by `tinywf new billing --from flows/billing.json`, then its
    tasks and its choice filled in: its control flow and its test are still as written."""
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "billing.json").write_bytes((REPO / "flows" / "billing.json").read_bytes())
    assert InProcessCli(tmp_path)("new", "billing", "--from", "flows/billing.json").returncode == 0
    written = (tmp_path / "flows" / "billing.py").read_text(encoding="utf-8")
    example = (REPO / "flows" / "billing.py").read_text(encoding="utf-8")
    rule = "# -- the control flow"
    assert example[example.index(rule):] == written[written.index(rule):]
    assert (REPO / "tests" / "test_billing.py").read_text(encoding="utf-8") == \
        (tmp_path / "tests" / "test_billing.py").read_text(encoding="utf-8")
    assert "# TODO" not in example
    spec = json.loads((REPO / "flows" / "billing.json").read_text(encoding="utf-8"))
    assert drawn_edges(InProcessCli(REPO), "flows/billing.py") == expected_edges(spec)
