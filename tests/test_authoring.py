"""The authoring API (contract §2): state, input, steps and transitions, helpers, run facts, logs."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from pydantic import BaseModel

from tinywf_cli import FlowDefinitionError, InvalidValue, RunExists, Workflow, signal, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]


class Profile(BaseModel):
    name: str
    age: int = 0
    tags: list[str] = []


def log_types(rt: MemoryRuntime, run_id: str) -> list[str]:
    return [entry.type for entry in rt.get(run_id).logs]


# -- state ---------------------------------------------------------------------------------


def test_typed_workflow_state_is_a_model_instance(rt: MemoryRuntime) -> None:
    seen: list[object] = []

    class Typed(Workflow[Profile]):
        @step
        def only(self) -> None:
            seen.append(self.state)
            self.state.age += 1

    run = rt.start(Typed, input={"name": "ada", "age": 36})
    assert run.status == "finished"
    assert isinstance(seen[0], Profile)
    assert run.state == {"name": "ada", "age": 37, "tags": []}


def test_plain_workflow_state_is_a_dict(rt: MemoryRuntime) -> None:
    seen: list[object] = []

    class Plain(Workflow):
        @step
        def only(self) -> None:
            seen.append(type(self.state))
            self.state["count"] = self.state.get("count", 0) + 1

    run = rt.start(Plain, input={"count": 4, "anything": [1, 2]})
    assert seen == [dict]
    assert run.state == {"count": 5, "anything": [1, 2]}


def test_plain_workflow_without_input_starts_with_an_empty_dict(rt: MemoryRuntime) -> None:
    class Plain(Workflow):
        @step
        def only(self) -> None:
            self.state["empty"] = not self.state

    assert rt.start(Plain).state == {"empty": True}


def test_input_is_validated_against_the_model(rt: MemoryRuntime) -> None:
    class Typed(Workflow[Profile]):
        @step
        def only(self) -> None:
            pass

    with pytest.raises(InvalidValue, match="age"):
        rt.start(Typed, input={"name": "ada", "age": "old"})
    with pytest.raises(InvalidValue, match="name"):
        rt.start(Typed, input={})
    assert rt.list().runs == []


def test_unknown_input_keys_are_refused(rt: MemoryRuntime) -> None:
    class Typed(Workflow[Profile]):
        @step
        def only(self) -> None:
            pass

    with pytest.raises(InvalidValue, match="'nickname'") as caught:
        rt.start(Typed, input={"name": "ada", "nickname": "countess"})
    assert caught.value.exit_code == 2
    assert rt.list().runs == []


def test_input_that_is_not_an_object_is_refused(rt: MemoryRuntime) -> None:
    class Plain(Workflow):
        @step
        def only(self) -> None:
            pass

    with pytest.raises(InvalidValue, match="object"):
        rt.start(Plain, input=[1, 2])


def test_the_docstring_describes_the_run(rt: MemoryRuntime) -> None:
    class Documented(Workflow):
        """Say hello, then stop."""

        @step
        def only(self) -> None:
            pass

    run = rt.start(Documented)
    assert rt.get(run.run_id).doc == "Say hello, then stop."


# -- steps and where a run starts ------------------------------------------------------------


def test_first_step_is_the_start_without_a_marker(rt: MemoryRuntime) -> None:
    visited: list[str] = []

    class Flow(Workflow):
        @step
        def first(self) -> str:
            visited.append("first")
            return "second"

        @step
        def second(self) -> None:
            visited.append("second")

    rt.start(Flow)
    assert visited == ["first", "second"]


def test_start_true_marks_where_a_run_starts(rt: MemoryRuntime) -> None:
    visited: list[str] = []

    class Flow(Workflow):
        @step
        def cleanup(self) -> None:
            visited.append("cleanup")

        @step(start=True)
        def begin(self) -> str:
            visited.append("begin")
            return "cleanup"

    rt.start(Flow)
    assert visited == ["begin", "cleanup"]


def test_two_start_steps_are_rejected_when_the_class_is_defined() -> None:
    with pytest.raises(FlowDefinitionError, match="a run has one start"):

        class Twice(Workflow):
            @step(start=True)
            def one(self) -> None:
                pass

            @step(start=True)
            def two(self) -> None:
                pass


def test_a_step_named_like_the_api_is_rejected() -> None:
    with pytest.raises(FlowDefinitionError, match="'log'"):

        class Clash(Workflow):
            @step
            def log(self) -> None:
                pass


def test_an_async_step_is_rejected_with_a_fix() -> None:
    with pytest.raises(FlowDefinitionError, match="generator"):

        class Async(Workflow):
            @step
            async def only(self) -> None:
                pass


# -- transitions --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["method", "name"])
def test_a_step_names_the_next_step_by_method_or_name(rt: MemoryRuntime, how: str) -> None:
    class Flow(Workflow):
        @step
        def first(self) -> Any:
            self.state["path"] = ["first"]
            return self.second if how == "method" else "second"

        @step
        def second(self) -> None:
            self.state["path"].append("second")

    run = rt.start(Flow)
    assert run.status == "finished"
    assert run.step == "second"
    assert run.state == {"path": ["first", "second"]}
    transitions = [e.values for e in rt.get(run.run_id).logs if e.type == "transition"]
    assert transitions == [{"from": "first", "to": "second", "visit": 2}]


def test_returning_none_finishes_the_run(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> None:
            return None

        @step
        def never(self) -> None:
            raise AssertionError("not reached")

    run = rt.start(Flow)
    assert (run.status, run.step, run.pending, run.error) == ("finished", "only", [], None)
    assert log_types(rt, run.run_id)[-1] == "finish"


@pytest.mark.parametrize("target", ["nowhere", "helper_method", 42])
def test_returning_an_unknown_step_fails_the_run_clearly(rt: MemoryRuntime, target: object) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Any:
            return self.helper_method if target == "helper_method" else target

        def helper_method(self) -> None:
            pass

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "InvalidTransition"
    assert "step 'only'" in run.error.message
    assert "not a step" in run.error.message
    if target != 42:
        assert str(target) in run.error.message


def test_a_step_that_raises_fails_the_run_with_its_error(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.action("fine", lambda: 1)
            raise KeyError("missing")

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "KeyError"
    assert "step 'only' raised KeyError" in run.error.message


def test_plain_steps_that_yield_nothing_run(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def first(self) -> str:
            self.state["a"] = 1
            return "second"

        @step
        def second(self) -> Steps:
            value = yield self.action("double", lambda: self.state["a"] * 2)
            self.state["b"] = value
            return "third"

        @step
        def third(self) -> None:
            self.state["c"] = self.state["b"] + 1

    run = rt.start(Flow)
    assert run.status == "finished"
    assert run.state == {"a": 1, "b": 2, "c": 3}


def test_each_visit_of_a_step_is_a_fresh_cache_scope(rt: MemoryRuntime) -> None:
    calls: list[int] = []

    def fetch(n: int) -> int:
        calls.append(n)
        return n * 10

    class Loop(Workflow):
        @step
        def again(self) -> Steps:
            n = len(self.state.setdefault("seen", []))
            value = yield self.action("fetch", fetch, n)  # the same key on every visit
            self.state["seen"].append(value)
            return self.again if len(self.state["seen"]) < 3 else None

    run = rt.start(Loop)
    assert run.status == "finished"
    assert calls == [0, 1, 2]
    assert run.state == {"seen": [0, 10, 20]}


# -- run facts -------------------------------------------------------------------------------------


def test_run_id_is_the_runs_id(rt: MemoryRuntime) -> None:
    seen: list[str] = []

    class Flow(Workflow):
        @step
        def only(self) -> None:
            seen.append(self.run_id)

    run = rt.start(Flow, run_id="order-17")
    assert run.run_id == "order-17"
    assert seen == ["order-17"]
    generated = rt.start(Flow)
    assert seen[-1] == generated.run_id != "order-17"


def test_idempotency_key_is_run_visit_and_key(rt: MemoryRuntime) -> None:
    keys: list[str] = []

    def charge(idempotency_key: str) -> str:
        keys.append(idempotency_key)
        return "ok"

    class Flow(Workflow):
        @step
        def first(self) -> Steps:
            yield self.action("charge", charge, self.idempotency_key("charge"))
            return "second"

        @step
        def second(self) -> Steps:
            yield self.action("charge", charge, self.idempotency_key("charge"))
            n = self.state.setdefault("n", 0)
            self.state["n"] = n + 1
            return "second" if n == 0 else None

    rt.start(Flow, run_id="r1")
    assert keys == ["r1:1:charge", "r1:2:charge", "r1:3:charge"]


def test_idempotency_key_is_stable_across_replays(rt: MemoryRuntime) -> None:
    keys: list[str] = []

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            keys.append(self.idempotency_key("send"))
            yield self.wait_event("go")
            keys.append(self.idempotency_key("send"))

    rt.start(Flow, run_id="r2")
    rt.resolve("r2", "go", True)
    assert keys == ["r2:1:send"] * 3


# -- helpers with yield from -------------------------------------------------------------------------


def test_yield_from_helpers_work_with_key_prefixes(rt: MemoryRuntime) -> None:
    calls: list[str] = []

    def call(name: str) -> str:
        calls.append(name)
        return name.upper()

    class Flow(Workflow):
        def greet(self, prefix: str) -> Generator[Command, Any, str]:
            a = yield self.action(f"{prefix}.hello", call, f"{prefix}-hello")
            b = yield self.action(f"{prefix}.bye", call, f"{prefix}-bye")
            return f"{a}+{b}"

        @step
        def only(self) -> Steps:
            first = yield from self.greet("x")
            answer = yield self.wait_event("go")
            second = yield from self.greet("y")
            self.state["out"] = [first, answer, second]

    run = rt.start(Flow)
    assert run.status == "waiting"
    run = rt.resolve(run.run_id, "go", "ok")
    assert run.status == "finished"
    assert run.state == {"out": ["X-HELLO+X-BYE", "ok", "Y-HELLO+Y-BYE"]}
    assert calls == ["x-hello", "x-bye", "y-hello", "y-bye"]


def test_a_helper_reused_without_a_prefix_hits_the_duplicate_key_error(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        def fetch(self) -> Generator[Command, Any, Any]:
            return (yield self.action("fetch", lambda: 1))

        @step
        def only(self) -> Steps:
            yield from self.fetch()
            yield from self.fetch()

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert "'fetch' twice" in run.error.message


# -- the audit log -------------------------------------------------------------------------------------


def test_log_is_recorded_once_per_visit_however_often_the_code_reruns(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def ask(self) -> Steps:
            self.log("before", n=len(self.state.setdefault("answers", [])))
            first = yield self.wait_event("first")
            self.log("between", first=first)
            second = yield self.wait_event("second")
            self.log("after", second=second)
            self.state["answers"].append([first, second])
            return self.ask if len(self.state["answers"]) < 2 else None

    run = rt.start(Flow)
    rt.resolve(run.run_id, "first", 1)
    rt.resolve(run.run_id, "second", 2)
    rt.resolve(run.run_id, "first", 3)
    run = rt.resolve(run.run_id, "second", 4)
    assert run.status == "finished"
    custom = [(e.type, e.values) for e in rt.get(run.run_id).logs
              if e.type in ("before", "between", "after")]
    assert custom == [
        ("before", {"n": 0}), ("between", {"first": 1}), ("after", {"second": 2}),
        ("before", {"n": 1}), ("between", {"first": 3}), ("after", {"second": 4}),
    ]


def test_log_entries_carry_the_step_and_time(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> None:
            self.log("note", text="hi")

    run = rt.start(Flow)
    note = next(e for e in rt.get(run.run_id).logs if e.type == "note")
    assert note.step == "only"
    assert note.at == rt.clock.now()
    assert note.values == {"text": "hi"}


def test_engine_logs_its_own_entries(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def first(self) -> Steps:
            yield self.action("a", lambda: 1)
            yield self.wait_event("go")
            return "second"

        @step
        def second(self) -> None:
            pass

        @signal
        def poke(self) -> None:
            pass

    run = rt.start(Flow)
    rt.signal(run.run_id, "poke")
    rt.resolve(run.run_id, "go", 1)
    assert log_types(rt, run.run_id) == [
        "start", "action", "wait_begin", "signal", "wait_end", "transition", "finish",
    ]


def test_a_generated_run_id_that_is_taken_is_drawn_again(rt: MemoryRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinywf_cli.runtime import commands

    class Once(Workflow):
        @step
        def only(self) -> None:
            return None

    ids = iter(["once-taken", "once-taken", "once-fresh"])
    monkeypatch.setattr(commands, "new_run_id", lambda cls: next(ids))
    assert rt.start(Once).run_id == "once-taken"
    assert rt.start(Once).run_id == "once-fresh"  # the second draw collided, the third did not
    with pytest.raises(RunExists):
        rt.start(Once, run_id="once-taken")  # an id the user gave is never replaced


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"version": 0}, "version must be an integer >= 1"),
    ({"version": "2"}, "version must be an integer >= 1"),
    ({"version": 2, "migrations": {2: lambda s: s}}, "migrations[2]"),
    ({"version": 2, "migrations": {1: "not a function"}}, "must be a function"),
    ({"migrations": [1]}, "must be a dict"),
    ({"history_limit": 0}, "history_limit must be None or an integer >= 1"),
    ({"step_timeout": -1}, "step_timeout must be None or a number of seconds > 0"),
    ({"step_timeout": float("inf")}, "step_timeout"),
])
def test_class_settings_are_checked_when_the_class_is_defined(settings: dict[str, object], fragment: str) -> None:
    with pytest.raises(FlowDefinitionError) as caught:
        type("Bad", (Workflow,), {**settings, "only": step(lambda self: None)})
    assert fragment in caught.value.message


def test_a_step_named_like_the_new_api_is_refused() -> None:
    for name in ("child", "start_child", "patched", "store_target"):
        with pytest.raises(FlowDefinitionError, match="part of the Workflow API"):
            type("Bad", (Workflow,), {name: step(lambda self: None)})
