"""`tinywf graph` and `tinywf schema` through the real command, and the load-time check via `tinywf run`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tinywf_cli.cli import main

ROOT = Path(__file__).resolve().parent.parent

UNTYPED = """
from tinywf_cli import Workflow, step

class Tally(Workflow):
    @step
    def count(self):
        self.state["n"] = self.state.get("n", 0) + 1
        return None
"""

TYPO = """
from tinywf_cli import Workflow, step

class GuessGame(Workflow):
    @step
    def ask(self):
        guess = yield self.wait_event("guess", type=int)
        self.state["guess"] = guess
        return self.check

    @step
    def check(self):
        if self.state["guess"] == 42:
            return None
        return "chek"
"""


@dataclass
class Result:
    code: int
    out: str
    err: str


Tinywf = Callable[..., Result]


@pytest.fixture
def tinywf(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Tinywf:
    """Run the ``tinywf`` command in this process, from the project folder, with a fresh state directory."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("TINYWF_STATE_DIR", raising=False)
    state = str(tmp_path / "state")

    def run(*args: str) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main([*args, "--state-dir", state])
        captured = capsys.readouterr()
        return Result(int(done.value.code or 0), captured.out, captured.err)

    return run


def write(folder: Path, name: str, source: str) -> str:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.code == 2
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# -- graph ---------------------------------------------------------------------------------------


def test_graph_prints_a_mermaid_state_diagram(tinywf: Tinywf) -> None:
    result = tinywf("graph", "flows/interval_payment.py")
    assert result.code == 0, result.err
    assert result.err == ""
    lines = result.out.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> step_begin" in lines
    assert "    step_wait --> step_send_receipt" in lines
    assert "    step_end --> [*]" in lines
    assert "      sleep_until wait_for_end_cycle_{cycle}" in lines


def test_graph_takes_a_class_name_and_a_path_without_py(tinywf: Tinywf) -> None:
    assert tinywf("graph", "flows/guess_game.py:GuessGame").out == tinywf("graph", "flows/guess_game").out


def test_graph_format_dot(tinywf: Tinywf) -> None:
    result = tinywf("graph", "flows/guess_game_2.py", "--format", "dot")
    assert result.code == 0, result.err
    assert result.out.startswith('digraph "GuessGame2" {')
    assert '"step_check" -> "step_ask";' in result.out
    assert result.out.rstrip().endswith("}")


def test_graph_refuses_an_unknown_format(tinywf: Tinywf) -> None:
    assert_one_error_line(tinywf("graph", "flows/simple.py", "--format", "svg"), "--format", "mermaid, dot")


def test_graph_marks_the_steps_a_run_visited(tinywf: Tinywf) -> None:
    started = tinywf("run", "flows/guess_game_2.py", "--run-id", "game-1", "--input", '{"number": 40}',
                     "--no-input", "--json")
    assert started.code == 0, started.err
    assert tinywf("resolve", "game-1", "guess", "10", "--no-input", "--json").code == 0

    mermaid = tinywf("graph", "flows/guess_game_2.py", "--run", "game-1")
    assert mermaid.code == 0, mermaid.err
    assert mermaid.err == ""
    assert "note right of step_ask\n      visited 2 times\n      wait_event guess\n    end note" in mermaid.out
    assert "class step_begin,step_check visited" in mermaid.out
    assert "class step_ask current" in mermaid.out

    dot = tinywf("graph", "flows/guess_game_2.py", "--run", "game-1", "--format", "dot")
    assert '"step_ask" [label="step_ask\\nwait_event guess\\nvisited 2 times", style="rounded,filled"' in dot.out
    assert '"step_end" [label="step_end"];' in dot.out

    document = json.loads(tinywf("graph", "flows/guess_game_2.py", "--run", "game-1", "--json").out)
    assert document["run"]["visits"] == {"step_begin": 1, "step_ask": 2, "step_check": 1}
    assert document["run"]["status"] == "waiting"


def test_graph_warns_when_the_run_is_of_another_workflow(tinywf: Tinywf) -> None:
    assert tinywf("run", "flows/simple.py", "--run-id", "s-1", "--json").code == 0
    result = tinywf("graph", "flows/guess_game.py", "--run", "s-1")
    assert result.code == 0
    assert "warning: run 's-1' is a run of flows/simple.py:Simple, not of GuessGame" in result.err


def test_graph_of_a_run_that_does_not_exist_exits_3(tinywf: Tinywf) -> None:
    result = tinywf("graph", "flows/simple.py", "--run", "nope")
    assert result.code == 3
    assert result.out == ""
    assert result.err.startswith("error: no run 'nope'")


def test_graph_json_is_the_analysis(tinywf: Tinywf) -> None:
    result = tinywf("graph", "flows/interval_payment.py", "--json")
    document = json.loads(result.out)
    assert document["workflow"] == "flows/interval_payment.py:IntervalPayment"
    assert [s["name"] for s in document["steps"]] == [
        "step_begin", "step_wait", "step_send_receipt", "step_cancel", "step_end"]
    assert document["steps"][2]["next"] == ["step_wait", "step_end"]
    assert document["problems"] == []
    assert document["run"] is None


def test_graph_never_runs_the_flow(tinywf: Tinywf, tmp_path: Path) -> None:
    path = write(tmp_path, "loud.py", """
        print("module code ran")
        raise SystemExit(9)

        from tinywf_cli import Workflow, step

        class Loud(Workflow):
            @step
            def only(self):
                return None
    """)
    result = tinywf("graph", path)
    assert result.code == 0
    assert "module code ran" not in result.out + result.err
    assert "only --> [*]" in result.out
    assert tinywf("schema", path).code == 2  # schema must import it


def test_graph_of_a_flow_with_a_typo_draws_it_and_warns(tinywf: Tinywf, tmp_path: Path) -> None:
    result = tinywf("graph", write(tmp_path, "game.py", TYPO))
    assert result.code == 0
    assert 'state "chek (not a step)" as check__chek' in result.out
    assert result.err.startswith("warning: ")
    assert "step 'check' returns 'chek', which is not a step of GuessGame" in result.err


def test_graph_of_a_file_with_several_workflows_names_them(tinywf: Tinywf, tmp_path: Path) -> None:
    path = write(tmp_path, "two.py", UNTYPED + UNTYPED.replace("Tally", "Other").split("\n", 2)[2])
    assert_one_error_line(tinywf("graph", path), "defines 2 workflows (Tally, Other): name one")
    assert tinywf("graph", f"{path}:Other").code == 0


# -- schema ----------------------------------------------------------------------------------------


def test_schema_of_a_typed_flow_is_its_models_json_schema(tinywf: Tinywf) -> None:
    result = tinywf("schema", "flows/interval_payment.py")
    assert result.code == 0, result.err
    schema = json.loads(result.out)
    assert schema["title"] == "Subscription"
    assert {"user_email", "payment_interval", "status", "receipts"} <= set(schema["properties"])
    assert schema["properties"]["status"]["enum"] == ["active", "cancel"]
    assert "UsageItem" in schema["$defs"]
    document = json.loads(tinywf("schema", "flows/interval_payment.py", "--json").out)
    assert document == {"workflow": "flows/interval_payment.py:IntervalPayment", "schema": schema}


def test_schema_of_an_untyped_flow_says_so(tinywf: Tinywf, tmp_path: Path) -> None:
    path = write(tmp_path, "tally.py", UNTYPED)
    result = tinywf("schema", path)
    assert result.code == 0
    assert len(result.out.splitlines()) == 1
    assert "is an untyped Workflow: its state is a plain dict, with no schema" in result.out
    document = json.loads(tinywf("schema", path, "--json").out)
    assert document["schema"] is None
    assert document["workflow"].endswith("tally.py:Tally")


def test_schema_keeps_the_flows_prints_off_stdout(tinywf: Tinywf, tmp_path: Path) -> None:
    path = write(tmp_path, "chatty.py", 'print("hello from the flow")\n' + UNTYPED)
    result = tinywf("schema", path, "--json")
    assert json.loads(result.out)["schema"] is None
    assert "hello from the flow" in result.err


# -- errors: one line, exit 2 ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["graph", "schema"])
@pytest.mark.parametrize(("name", "source", "fragment"), [
    ("missing.py", None, "flow file"),
    ("broken.py", "from tinywf_cli import Workflow\nclass Broken(Workflow:\n", "broken.py:2: syntax error"),
    ("nothing.py", "x = 1\n", "defines no workflow"),
])
def test_unreadable_flows_exit_2_with_one_error_line(tinywf: Tinywf, tmp_path: Path, command: str, name: str,
                                                     source: str | None, fragment: str) -> None:
    path = tmp_path / name
    if source is not None:
        path.write_text(source)
    assert_one_error_line(tinywf(command, str(path)), fragment)


def test_the_installed_command_fails_cleanly_without_a_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("class Broken(:\n")
    for command in ("graph", "schema"):
        done = subprocess.run([sys.executable, "-m", "tinywf_cli", command, str(broken)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 2
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
        assert "Traceback" not in done.stderr


# -- the load-time check ---------------------------------------------------------------------------


def test_run_refuses_a_flow_returning_a_name_that_is_not_a_step(tmp_path: Path) -> None:
    path = write(tmp_path, "game.py", TYPO)
    done = subprocess.run([sys.executable, "-m", "tinywf_cli", "run", path, "--no-input",
                           "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert done.stderr.rstrip().endswith(":15: step 'check' returns 'chek', which is not a step of GuessGame")
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").glob("*.json"))


def test_run_accepts_the_same_flow_once_the_typo_is_fixed(tinywf: Tinywf, tmp_path: Path) -> None:
    path = write(tmp_path, "game.py", TYPO.replace('"chek"', '"ask"'))
    result = tinywf("run", path, "--no-input", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["status"] == "waiting"


def test_the_docs_show_what_graph_prints(tinywf: Tinywf) -> None:
    page = (ROOT / "docs" / "authoring.md").read_text()
    section = page[page.index("## Seeing a flow"):]
    shown = section[section.index("```mermaid\n") + len("```mermaid\n"):]
    assert tinywf("graph", "flows/interval_payment.py").out == shown[:shown.index("```\n")]
