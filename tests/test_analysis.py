"""Reading flows from their source (``tinywf_cli.analysis``): steps, transitions, keys, diagrams."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tinywf_cli import FlowDefinitionError, FlowLoadError
from tinywf_cli.analysis.flow import COMPUTED, END, FlowAnalysis, WorkflowInfo
from tinywf_cli.analysis.graph import RunTrace, flow_document, to_dot, to_mermaid
from tinywf_cli.analysis.source import analyze_source
from tinywf_cli.authoring.loader import FlowLoader, load_module
from tinywf_cli.testing import MemoryRuntime

FLOWS = Path(__file__).resolve().parent.parent / "flows"

# The state diagram of the interval payment example in the original project's docs
# (doc/example_intervalPayment.md), transitions only; our port must draw the same.
ORIGINAL_INTERVAL_PAYMENT = """
stateDiagram-v2
    [*] --> step_begin
    step_begin --> step_wait
    step_wait --> step_send_receipt: Current usages > 0
    step_wait --> step_cancel: Status != active
    step_send_receipt --> step_wait: Status = active
    step_send_receipt --> step_end: Status != active
    step_cancel --> step_send_receipt: Current usages > 0
    step_cancel --> step_end: No usages
    step_end --> [*]
"""


def read(source: str, name: str | None = None) -> WorkflowInfo:
    """The workflow of a flow written inline."""
    return analyze_source(textwrap.dedent(source), "flow.py").workflow(name)


def flow(file: str) -> WorkflowInfo:
    """An example flow, read from its source."""
    path = FLOWS / file
    return analyze_source(path.read_bytes(), str(path)).workflow()


def mermaid_edges(diagram: str) -> set[tuple[str, str]]:
    """``a --> b`` lines of a Mermaid state diagram, labels dropped."""
    return {(m[1], m[2]) for m in re.finditer(r"^\s*(\S+) --> ([^\s:]+)", diagram, re.MULTILINE)}


def commands(workflow: WorkflowInfo) -> dict[str, list[str]]:
    return {s.name: [c.describe() for c in s.commands] for s in workflow.steps}


# -- the six examples --------------------------------------------------------------------------


def test_interval_payment_draws_exactly_the_original_state_diagram() -> None:
    drawn = mermaid_edges(to_mermaid(flow("interval_payment.py")))
    assert drawn == mermaid_edges(ORIGINAL_INTERVAL_PAYMENT)
    assert len(drawn) == 9


EXPECTED_EDGES = {
    "simple.py": [(END, "step_begin"), ("step_begin", "step_compute"), ("step_compute", "step_end"),
                  ("step_end", END)],
    "guess_game.py": [(END, "step_begin"), ("step_begin", "step_play"), ("step_play", "step_end"),
                      ("step_end", END)],
    "guess_game_2.py": [(END, "step_begin"), ("step_begin", "step_ask"), ("step_ask", "step_check"),
                        ("step_check", "step_end"), ("step_check", "step_ask"), ("step_end", END)],
    "user_onboarding.py": [(END, "step_begin"), ("step_begin", "step_process"), ("step_process", "step_end"),
                           ("step_end", END)],
    "dag_task.py": [(END, "step_begin"), ("step_begin", "step_process"), ("step_process", "step_end"),
                    ("step_end", END)],
    "interval_payment.py": [(END, "step_begin"), ("step_begin", "step_wait"), ("step_wait", "step_cancel"),
                            ("step_wait", "step_send_receipt"), ("step_send_receipt", "step_wait"),
                            ("step_send_receipt", "step_end"), ("step_cancel", "step_send_receipt"),
                            ("step_cancel", "step_end"), ("step_end", END)],
}

EXPECTED_COMMANDS = {
    "simple.py": {"step_begin": [], "step_compute": ["action cache_computed"], "step_end": []},
    "guess_game.py": {"step_begin": ["action generate_num"], "step_play": ["wait_event ask_{count}"],
                      "step_end": []},
    "guess_game_2.py": {"step_begin": ["action generate_num"], "step_ask": ["wait_event guess"],
                        "step_check": [], "step_end": []},
    "user_onboarding.py": {
        "step_begin": [],
        "step_process": ["action send_email_welcome", "action pick_promotion_delay",
                         "sleep wait_before_promotion_email", "action send_email_promotion",
                         "action pick_end_delay", "sleep wait_before_end"],
        "step_end": [],
    },
    "dag_task.py": {
        "step_begin": [],
        "step_process": ["sleep start", "action start_{task.id}", "action poll_{task.id}_{rounds}",
                         "parallel calls", "sleep poll_{rounds}"],
        "step_end": [],
    },
    "interval_payment.py": {
        "step_begin": ["sleep start"],
        "step_wait": ["sleep_until wait_for_end_cycle_{cycle}"],
        "step_send_receipt": ["action send_receipt_email_{receipt.cycle}"],
        "step_cancel": [],
        "step_end": [],
    },
}


@pytest.mark.parametrize("file", sorted(EXPECTED_EDGES))
def test_example_transitions_match_their_code(file: str) -> None:
    workflow = flow(file)
    assert workflow.edges() == EXPECTED_EDGES[file]
    assert workflow.problems == ()
    assert workflow.complete


@pytest.mark.parametrize("file", sorted(EXPECTED_COMMANDS))
def test_example_actions_sleeps_and_waits_in_source_order(file: str) -> None:
    assert commands(flow(file)) == EXPECTED_COMMANDS[file]


@pytest.mark.parametrize("file", sorted(EXPECTED_EDGES))
def test_example_steps_and_start_agree_with_the_loaded_class(file: str) -> None:
    cls, _, _ = FlowLoader().load(str(FLOWS / file))
    workflow = flow(file)
    assert workflow.name == cls.__name__
    assert list(workflow.step_names) == list(cls.__tinywf_steps__)
    assert workflow.start == cls.__tinywf_start__
    assert list(workflow.signals) == list(cls.__tinywf_signals__)
    model = cls.__tinywf_model__
    assert workflow.model == (model.__name__ if model else None)


def test_every_transition_a_run_takes_is_drawn(rt: MemoryRuntime) -> None:
    run = rt.start(str(FLOWS / "guess_game_2.py"), input={"number": 40})
    for guess in (10, 70, 40):
        run = rt.resolve(run.run_id, "guess", guess)
    assert run.status == "finished"
    trace = RunTrace.of(rt.get(run.run_id))
    assert set(trace.taken) <= set(flow("guess_game_2.py").edges())
    assert trace.visits == {"step_begin": 1, "step_ask": 3, "step_check": 3, "step_end": 1}
    assert trace.taken[("step_check", "step_ask")] == 2
    assert trace.taken[("step_end", END)] == 1


# -- transitions -----------------------------------------------------------------------------------


def test_start_is_the_step_marked_start_else_the_first() -> None:
    marked = read("""
        from tinywf_cli import Workflow, step

        class Flow(Workflow):
            @step
            def a(self):
                return None

            @step(start=True)
            def b(self):
                return self.a
    """)
    assert marked.start == "b"
    assert marked.edges()[0] == (END, "b")
    assert [s.start for s in marked.steps] == [False, True]
    first = read("""
        from tinywf_cli import Workflow, step

        class Flow(Workflow):
            @step
            def a(self):
                return "b"

            @step
            def b(self):
                pass
    """)
    assert first.start == "a"
    assert first.edges() == [(END, "a"), ("a", "b"), ("b", END)]


def test_conditional_expressions_give_every_branch() -> None:
    workflow = read("""
        from tinywf_cli import Workflow, step

        class Flow(Workflow):
            @step
            def a(self):
                return self.b if self.state["x"] else ("c" if self.state["y"] else None)

            @step
            def b(self):
                return None

            @step
            def c(self):
                return
    """)
    assert workflow.step("a").next_steps == ("b", "c", END)
    assert workflow.step("c").next_steps == (END,)


@pytest.mark.parametrize(("body", "ends"), [
    ("return self.b", False),
    ("if self.state:\n    return self.b", True),
    ("if self.state:\n    return self.b\nelse:\n    return self.b", False),
    ("while True:\n    if self.state:\n        return self.b", False),
    ("while True:\n    if self.state:\n        break\nreturn self.b", False),
    ("while True:\n    if self.state:\n        break", True),
    ("while True:\n    for i in range(3):\n        break\n    return self.b", False),
    ("while self.state:\n    return self.b", True),
    ("for i in range(3):\n    return self.b\nelse:\n    return None", False),
    ("try:\n    return self.b\nexcept KeyError:\n    pass", True),
    ("try:\n    return self.b\nexcept KeyError:\n    raise", False),
    ("try:\n    x = 1\nfinally:\n    return self.b", False),
    ("with open('f') as f:\n    return self.b", False),
    ("match self.state:\n    case 1:\n        return self.b\n    case _:\n        return None", False),
    ("match self.state:\n    case 1:\n        return self.b", True),
    ("raise RuntimeError('no way on')", False),
    ("x = 1", True),
])
def test_falling_off_the_end_of_a_step_finishes_the_run(body: str, ends: bool) -> None:
    source = "from tinywf_cli import Workflow, step\n\nclass Flow(Workflow):\n    @step\n    def a(self):\n"
    source += textwrap.indent(body, " " * 8) + "\n\n    @step\n    def b(self):\n        return None\n"
    transitions = analyze_source(source).workflow().step("a").transitions
    falls_off = [t for t in transitions if t.source == "end of step"]
    assert bool(falls_off) is ends
    assert all(t.kind == "end" for t in falls_off)


def test_computed_transitions_are_shown_as_such_never_guessed() -> None:
    workflow = read("""
        from tinywf_cli import Workflow, step

        class Flow(Workflow):
            mode = "b"

            @step
            def a(self):
                name = "b"
                if self.state["x"]:
                    return name
                if self.state["y"]:
                    return self.pick()
                if self.state["z"]:
                    return getattr(self, self.state["next"])
                if self.state["w"]:
                    return self.mode
                return self.state.get("next") or self.b

            @step
            def b(self):
                def helper():
                    return "nowhere"  # a nested function's return is not the step's
                return None

            def pick(self):
                return "b"
    """)
    a = workflow.step("a")
    assert a.next_steps == (COMPUTED, "b")
    assert [t.source for t in a.transitions if t.kind == "computed"] == [
        "name", "self.pick()", "getattr(self, self.state['next'])", "self.mode", "self.state.get('next')"]
    assert workflow.step("b").next_steps == (END,)
    assert workflow.problems == ()
    diagram = to_mermaid(workflow)
    assert 'state "?" as a__next' in diagram
    assert "a --> a__next: name or self.pick() or getattr(self, self.state['next'])" in diagram


def test_odd_flows_are_read_without_crashing() -> None:
    workflow = read("""
        import tinywf_cli

        class Flow(tinywf_cli.Workflow[dict]):
            @tinywf_cli.step
            def a(self, *args):
                yield self.action()
                yield self.sleep(key=f"t_{self.state['n']:03d}_{self.run_id!r}", duration=1)
                yield self.wait_event(self.state["key"])
                yield self.parallel()
                yield self.parallel(dict(x=self.action("x", print)))
                yield [self.action("in_list", print) for _ in range(2)]
                return lambda: "b"

            @tinywf_cli.step
            def b():
                return (yield)

            @tinywf_cli.step
            async def c(self):
                return [][0]
    """)
    assert workflow.model is None
    assert commands(workflow)["a"] == [
        "action ?", "sleep t_{self.state['n']:03d}_{self.run_id!r}", "wait_event {self.state['key']}",
        "parallel ?", "parallel dict(x=self.action('x', print))", "action x", "action in_list"]
    assert workflow.step("a").next_steps == (COMPUTED,)
    assert workflow.step("b").next_steps == (COMPUTED,)
    assert workflow.step("c").next_steps == (COMPUTED,)
    assert to_mermaid(workflow) and to_dot(workflow)


# -- keys --------------------------------------------------------------------------------------------


def test_parallel_actions_written_inside_are_listed_once() -> None:
    workflow = read("""
        from tinywf_cli import Workflow, step

        class Flow(Workflow):
            @step
            def fan_out(self):
                both = yield self.parallel({"a": self.action("fetch_a", print), "b": self.action("fetch_b", print)})
                each = yield self.parallel({t: self.action(f"task_{t}", print) for t in self.state["tasks"]})
                return None
    """)
    assert commands(workflow)["fan_out"] == ["parallel fetch_a, fetch_b", "parallel task_{t}"]
    assert workflow.step("fan_out").commands[0].actions == ("fetch_a", "fetch_b")


def test_helpers_called_from_a_step_contribute_their_keys() -> None:
    workflow = read("""
        from tinywf_cli import Workflow, step

        class Flow(Workflow):
            @step
            def announce(self):
                yield from self.notify("owner")
                yield from self.notify("team")
                return self.done

            @step
            def done(self):
                return None

            def notify(self, prefix):
                msg_id = yield self.action(f"{prefix}_send", print)
                yield from self.notify(prefix)  # recursion is followed once
                return msg_id
    """)
    assert commands(workflow)["announce"] == ["action {prefix}_send (via notify)"] * 2


# -- classes ------------------------------------------------------------------------------------------


def test_workflows_deriving_from_a_workflow_of_the_same_file_inherit_its_steps() -> None:
    analysis = analyze_source(textwrap.dedent("""
        from pydantic import BaseModel
        from tinywf_cli import Workflow as Base, step as s, signal

        class Order(BaseModel):
            email: str = ""

        class Checkout(Base[Order]):
            @s
            def charge(self):
                return "ship"

            @s
            def ship(self):
                return None

            @s
            def audit(self):
                return None

        class Express(Checkout):
            @s(start=True)
            def ship(self):
                return self.notify

            @s
            def notify(self):
                return "finish"

            def audit(self):
                pass

            @s
            def finish(self):
                pass

            @signal
            def cancel(self):
                pass

        class NotAWorkflow:
            @s
            def stray(self):
                return "nothing"
    """), "shop.py")
    assert [w.name for w in analysis.workflows] == ["Checkout", "Express"]
    express = analysis.workflow("Express")
    assert list(express.step_names) == ["charge", "ship", "notify", "finish"]
    assert express.start == "ship"
    assert express.model == "Order"
    assert express.signals == ("cancel",)
    assert express.step("charge").defined_in == "Checkout"
    assert express.edges() == [(END, "ship"), ("charge", "ship"), ("ship", "notify"), ("notify", "finish"),
                               ("finish", END)]
    with pytest.raises(FlowLoadError, match=r"shop.py defines 2 workflows \(Checkout, Express\): name one"):
        analysis.workflow()
    with pytest.raises(FlowLoadError, match=r"no workflow class 'Nope' \(workflows: Checkout, Express\)"):
        analysis.workflow("Nope")


def test_a_file_without_workflows_names_none() -> None:
    with pytest.raises(FlowLoadError, match="defines no workflow"):
        analyze_source("class Plain:\n    pass\n", "plain.py").workflow()


def test_a_syntax_error_is_a_flow_load_error() -> None:
    with pytest.raises(FlowLoadError, match=r"broken.py:2: syntax error"):
        analyze_source("x = 1\ndef (:\n", "broken.py")


# -- names that are not steps --------------------------------------------------------------------------


TYPO = """
from tinywf_cli import Workflow, step

class GuessGame(Workflow):
    @step
    def ask(self):
        return self.check

    @step
    def check(self):
        if self.state["right"]:
            return None
        return "chek"
"""


def test_a_returned_name_that_is_not_a_step_is_a_problem() -> None:
    analysis = analyze_source(TYPO, "game.py")
    assert [(p.line, p.message) for p in analysis.problems()] == [
        (13, "step 'check' returns 'chek', which is not a step of GuessGame")]
    check = analysis.workflow().step("check")
    assert check.transitions[-1].kind == "missing"
    assert 'state "chek (not a step)" as check__chek' in to_mermaid(analysis.workflow())


@pytest.mark.parametrize(("returned", "problem"), [
    ("self.chek", True),  # no such attribute
    ("self.helper", True),  # a plain method is not a step
    ("self.poke", True),  # nor is a signal
    ("'helper'", True),
    ("self.chosen", False),  # assigned on the instance: known at run time only
    ("self.mode", False),  # a class attribute: could hold anything
    ("'mode'", False),
    ("self.state", False),
    ("self.ask", False),
])
def test_only_names_that_surely_are_no_step_are_problems(returned: str, problem: bool) -> None:
    source = f"""
        from tinywf_cli import Workflow, step, signal

        class Flow(Workflow):
            mode = "ask"

            @step
            def ask(self):
                self.chosen = "ask"
                return {returned}

            def helper(self):
                pass

            @signal
            def poke(self):
                pass
    """
    assert bool(analyze_source(textwrap.dedent(source)).problems()) is problem


def test_names_are_not_problems_when_the_source_cannot_show_every_step() -> None:
    open_base = """
        from tinywf_cli import Workflow, step
        from elsewhere import Mixin

        class Flow(Workflow, Mixin):
            @step
            def a(self):
                return "from_mixin"
    """
    workflow = read(open_base)
    assert not workflow.complete
    assert workflow.problems == ()
    assert workflow.step("a").next_steps == (COMPUTED,)
    abstract_base = """
        from tinywf_cli import Workflow, step

        class Base(Workflow):
            @step
            def a(self):
                return "b"

        class Concrete(Base):
            @step
            def b(self):
                pass
    """
    analysis = analyze_source(textwrap.dedent(abstract_base))
    assert analysis.workflow("Base").problems  # drawn with a warning
    assert analysis.problems() == []  # but the file loads: Concrete has the step


def test_loading_a_flow_with_a_typo_fails_naming_the_step_and_the_name(tmp_path: Path) -> None:
    path = tmp_path / "game.py"
    path.write_text(TYPO)
    with pytest.raises(FlowDefinitionError) as caught:
        load_module(path)
    assert caught.value.exit_code == 2
    assert caught.value.message.endswith(":13: step 'check' returns 'chek', which is not a step of GuessGame")


def test_a_flow_with_a_computed_transition_loads(tmp_path: Path) -> None:
    path = tmp_path / "computed.py"
    path.write_text(TYPO.replace('"chek"', 'self.state["next"]'))
    assert load_module(path).GuessGame.__tinywf_steps__


# -- diagrams -----------------------------------------------------------------------------------------


def test_mermaid_diagram_of_a_flow() -> None:
    assert to_mermaid(flow("simple.py")) == textwrap.dedent("""\
        stateDiagram-v2
            [*] --> step_begin
            step_begin --> step_compute
            step_compute --> step_end
            step_end --> [*]

            note right of step_compute
              action cache_computed
            end note
    """)


def test_mermaid_keeps_step_names_it_would_misread_apart() -> None:
    workflow = read("""
        from tinywf_cli import Workflow, step

        class Flow(Workflow):
            @step
            def default_path(self):
                return self.note

            @step
            def note(self):
                yield self.action("x: y; #1 %% end note", print)
                return self.end

            @step
            def end(self):
                return None

            @step
            def unreachable(self):
                raise RuntimeError
    """)
    diagram = to_mermaid(workflow)
    assert 'state "default_path" as s_default_path' in diagram
    assert "s_default_path --> s_note" in diagram
    assert "s_end --> [*]" in diagram
    assert "note right of s_note\n      action x: y; #1 %% end-note\n    end note" in diagram
    assert diagram.rstrip().count("end note") == 1
    assert "\n    unreachable\n" in diagram  # a step no transition reaches still appears


def test_dot_diagram_lists_steps_with_their_commands() -> None:
    dot = to_dot(flow("guess_game.py"))
    assert dot.startswith('digraph "GuessGame" {')
    assert '"step_play" [label="step_play\\nwait_event ask_{count}"];' in dot
    assert '"[*] start" -> "step_begin";' in dot
    assert '"step_play" -> "step_end";' in dot
    assert '"step_end" -> "[*] end";' in dot
    assert dot.count("{") - dot.count("}") == 0


def test_a_run_marks_the_steps_it_visited(rt: MemoryRuntime) -> None:
    run = rt.start(str(FLOWS / "guess_game_2.py"), input={"number": 40})
    rt.resolve(run.run_id, "guess", 10)
    trace = RunTrace.of(rt.get(run.run_id))
    assert trace.active == "step_ask"
    workflow = flow("guess_game_2.py")
    diagram = to_mermaid(workflow, trace)
    assert "note right of step_ask\n      visited 2 times\n      wait_event guess\n    end note" in diagram
    assert "class step_begin,step_check visited" in diagram
    assert "class step_ask current" in diagram
    assert "classDef failed" not in diagram
    dot = to_dot(workflow, trace)
    assert '"step_check" [label="step_check\\nvisited once", style="rounded,filled"' in dot
    assert 'penwidth=3' in dot
    assert '"step_check" -> "step_ask" [color="#3c763d", penwidth=2, label="1\u00d7"];' in dot
    assert trace.mismatches(workflow) == []
    assert trace.mismatches(flow("simple.py")) == [
        f"run '{run.run_id}' is a run of {run.workflow}, not of Simple",
        f"run '{run.run_id}' visited steps Simple does not define: step_ask, step_check"]


def test_json_document_of_a_flow() -> None:
    document = flow_document(flow("interval_payment.py"), "flows/interval_payment.py:IntervalPayment")
    assert document["workflow"] == "flows/interval_payment.py:IntervalPayment"
    assert document["class"] == "IntervalPayment"
    assert document["model"] == "Subscription"
    assert document["start"] == "step_begin"
    assert document["signals"] == ["add_usage", "cancel_subscription"]
    wait = document["steps"][1]
    assert wait["name"] == "step_wait"
    assert wait["next"] == ["step_cancel", "step_send_receipt"]
    assert wait["commands"][0] == {"kind": "sleep_until", "key": "wait_for_end_cycle_{cycle}",
                                   "line": wait["commands"][0]["line"], "via": None, "actions": []}
    assert document["run"] is None


def test_analysis_is_plain_data() -> None:
    analysis = analyze_source((FLOWS / "simple.py").read_bytes(), "flows/simple.py")
    assert isinstance(analysis, FlowAnalysis)
    assert analysis == analyze_source((FLOWS / "simple.py").read_text(), "flows/simple.py")
