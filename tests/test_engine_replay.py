"""Replay: the current visit re-runs from its top, from the state as it was there; records answer yields."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest
from pydantic import BaseModel

from tinywf_cli import Runtime, Workflow, signal, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]

# Module-level flows (found again by a new Runtime over the same state directory) report here.
EVENTS: list[str] = []


class Basket(BaseModel):
    items: list[str] = []
    note: str = ""


class Shopping(Workflow[Basket]):
    """Appends before and between yields; a signal edits the note while the run waits."""

    @step
    def fill(self) -> Steps:
        EVENTS.append("top")
        self.state.items.append("apple")
        picked = yield self.action("pick", pick, "pear")
        self.state.items.append(picked)
        extra = yield self.wait_event("extra", type=str)
        self.state.items.append(extra)
        EVENTS.append(f"note={self.state.note}")
        return "done"

    @step
    def done(self) -> None:
        self.state.items.append("paid")

    @signal
    def set_note(self, note: str) -> None:
        self.state.note = note


def pick(name: str) -> str:
    EVENTS.append(f"pick {name}")
    return name


@pytest.fixture(autouse=True)
def clear_events() -> None:
    EVENTS.clear()


def test_code_between_yields_reruns_but_actions_do_not(rt: MemoryRuntime) -> None:
    run = rt.start(Shopping)
    assert EVENTS == ["top", "pick pear"]
    rt.resolve(run.run_id, "extra", "fig")
    assert EVENTS == ["top", "pick pear", "top", "note="]


def test_replay_starts_from_the_state_at_the_top_of_the_visit(rt: MemoryRuntime) -> None:
    run = rt.start(Shopping)
    assert run.state["items"] == ["apple", "pear"]  # the document shows the last saved state
    run = rt.resolve(run.run_id, "extra", "fig")
    assert run.status == "finished"
    assert run.state["items"] == ["apple", "pear", "fig", "paid"]  # "apple" was not doubled


@pytest.mark.stores("file", "postgres")
def test_replay_from_a_file_store_after_a_restart(open_runtime: Callable[[], Runtime]) -> None:
    run = open_runtime().start(Shopping, run_id="basket")
    assert open_runtime().get("basket").state["items"] == ["apple", "pear"]
    run = open_runtime().resolve("basket", "extra", "fig")
    assert run.state["items"] == ["apple", "pear", "fig", "paid"]
    assert EVENTS.count("pick pear") == 1


def test_plain_state_append_before_a_yield_is_not_doubled_over_many_pauses(rt: MemoryRuntime) -> None:
    class Counter(Workflow):
        @step
        def only(self) -> Steps:
            self.state.setdefault("log", []).append("start")
            for i in range(3):
                self.state["log"].append(f"before {i}")
                yield self.wait_event(f"tick{i}")
            self.state["log"].append("end")

    run = rt.start(Counter)
    assert run.state == {"log": ["start", "before 0"]}
    run = rt.resolve(run.run_id, "tick0", None)
    assert run.state == {"log": ["start", "before 0", "before 1"]}
    rt.resolve(run.run_id, "tick1", None)
    run = rt.resolve(run.run_id, "tick2", None)
    assert run.state == {"log": ["start", "before 0", "before 1", "before 2", "end"]}


def test_a_signal_changes_live_and_replayed_state(rt: MemoryRuntime) -> None:
    run = rt.start(Shopping)
    run = rt.signal(run.run_id, "set_note", note="ring twice")
    assert run.state == {"items": ["apple", "pear"], "note": "ring twice"}
    assert run.status == "waiting"
    run = rt.resolve(run.run_id, "extra", "fig")
    assert EVENTS[-1] == "note=ring twice"  # the replayed code saw the signal's change
    assert run.state == {"items": ["apple", "pear", "fig", "paid"], "note": "ring twice"}


@pytest.mark.stores("file", "postgres")
def test_a_signal_survives_replay_with_the_file_store(open_runtime: Callable[[], Runtime]) -> None:
    open_runtime().start(Shopping, run_id="basket")
    open_runtime().signal("basket", "set_note", note="leave at door")
    run = open_runtime().resolve("basket", "extra", "fig")
    assert run.state == {"items": ["apple", "pear", "fig", "paid"], "note": "leave at door"}


def test_a_replayed_step_receives_recorded_values_in_order(rt: MemoryRuntime) -> None:
    received: list[Any] = []
    counter = iter(range(100))

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            a = yield self.action("a", lambda: next(counter))
            b = yield self.action("b", lambda: next(counter))
            received.append((a, b))
            yield self.wait_event("go")
            received.append("resumed")

    run = rt.start(Flow)
    rt.resolve(run.run_id, "go", 1)
    assert received == [(0, 1), (0, 1), "resumed"]


# -- non-determinism ------------------------------------------------------------------------------


def changing_flow(variant: dict[str, str]) -> type[Workflow[Any]]:
    """A flow whose first command depends on ``variant`` (as if its code changed under a live run)."""

    class Changing(Workflow):
        @step
        def work(self) -> Steps:
            if variant["first"] == "action":
                yield self.action(variant["key"], lambda: 1)
            else:
                yield self.sleep(variant["key"], 0)
            yield self.wait_event("go")

    return Changing


@pytest.mark.parametrize(
    ("change", "current"),
    [({"key": "fetch_v2"}, "action 'fetch_v2'"), ({"first": "sleep"}, "sleep 'fetch'")],
)
def test_a_changed_kind_or_key_blocks_the_run_with_a_nondeterminism_error(
    rt: MemoryRuntime, change: dict[str, str], current: str
) -> None:
    variant = {"first": "action", "key": "fetch"}
    flow = changing_flow(variant)
    run = rt.start(flow, run_id="live")
    assert run.status == "waiting"
    variant.update(change)
    run = rt.resolve("live", "go", True)
    assert run.status == "blocked"
    assert run.error is not None
    assert run.error.type == "NonDeterminismError"
    message = run.error.message
    assert "run 'live'" in message
    assert "step 'work'" in message
    assert "recorded action 'fetch'" in message
    assert f"now yields {current}" in message
    assert "new key or a new step" in message and "self.patched(" in message  # and says what to do
    assert "tinywf retry live" in message
    assert run.pending == []


def test_code_that_returns_before_its_records_blocks_as_nondeterministic(rt: MemoryRuntime) -> None:
    variant = {"wait": "yes"}

    class Flow(Workflow):
        @step
        def work(self) -> Steps:
            yield self.action("fetch", lambda: 1)
            if variant["wait"] == "yes":
                yield self.wait_event("go")

    run = rt.start(Flow)
    variant["wait"] = "no"
    run = rt.resolve(run.run_id, "go", 1)
    assert run.status == "blocked"
    assert run.error is not None
    assert run.error.type == "NonDeterminismError"
    assert "event 'go'" in run.error.message


def test_a_recorded_answer_is_never_given_to_a_different_command(rt: MemoryRuntime) -> None:
    variant = {"order": "ab"}
    got: list[Any] = []

    class Flow(Workflow):
        @step
        def work(self) -> Steps:
            for key in variant["order"]:
                got.append((key, (yield self.action(key, lambda k=key: k.upper()))))
            yield self.wait_event("go")

    run = rt.start(Flow)
    got.clear()
    variant["order"] = "ba"
    run = rt.resolve(run.run_id, "go", 1)
    assert run.status == "blocked"
    assert got == []  # nothing received the answer recorded for the other key


def test_a_key_repeated_within_one_visit_fails_clearly(rt: MemoryRuntime) -> None:
    calls: list[int] = []

    class Flow(Workflow):
        @step
        def work(self) -> Steps:
            yield self.action("charge", calls.append, 1)
            yield self.action("charge", calls.append, 2)

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "FlowError"
    assert "'charge' twice" in run.error.message
    assert "step 'work'" in run.error.message
    assert calls == [1]


def test_a_key_repeated_across_kinds_in_one_visit_fails(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def work(self) -> Steps:
            yield self.action("same", lambda: 1)
            yield self.sleep("same", 1)

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert "'same' twice" in run.error.message


def test_yielding_something_that_is_not_a_command_fails_clearly(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def work(self) -> Steps:
            yield 42

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert "not a tinywf command" in run.error.message


# -- state that cannot be saved -------------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize("pause", ["action", "wait"])
def test_state_that_cannot_be_saved_fails_the_run_clearly(rt: MemoryRuntime, pause: str) -> None:
    calls: list[int] = []

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            self.state["ok"] = 1
            self.state["handle"] = Opaque()
            if pause == "action":
                yield self.action("fetch", calls.append, 1)
            else:
                yield self.wait_event("go")

    run = rt.start(Flow, run_id="opaque")
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "FlowError"
    assert "cannot be saved" in run.error.message
    assert rt.get("opaque").status == "failed"
    assert run.state == {}  # the last state that could be saved
    assert calls == ([1] if pause == "action" else [])
    assert rt.tick().due == 0


def test_a_step_that_raises_with_unsaveable_state_reports_its_own_error(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            yield self.action("fetch", lambda: 1)
            self.state["handle"] = Opaque()
            raise LookupError("the real problem")

    run = rt.start(Flow)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "LookupError"
    assert run.state == {}


def test_cleanup_code_that_raises_at_a_pause_does_not_escape(rt: MemoryRuntime) -> None:
    closed: list[str] = []

    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            try:
                self.state["got"] = yield self.wait_event("go")
            finally:
                closed.append("cleanup")
                if "got" not in self.state:
                    raise ValueError("cleanup failed")

    run = rt.start(Flow)  # the step is closed at its pause: its finally block runs and raises
    assert (run.status, [p.key for p in run.pending]) == ("waiting", ["go"])
    run = rt.resolve(run.run_id, "go", 1)
    assert (run.status, run.state) == ("finished", {"got": 1})
    assert closed == ["cleanup", "cleanup"]


# Python itself reports the generator that refused to close when it is garbage collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_bare_except_in_a_step_does_not_break_pausing(rt: MemoryRuntime) -> None:
    class Flow(Workflow):
        @step
        def only(self) -> Steps:
            while True:
                try:
                    self.state["got"] = yield self.wait_event("go")
                    return None
                except:  # noqa: E722 - what careless step code does
                    self.state["swallowed"] = True

    run = rt.start(Flow)
    assert run.status == "waiting"
    run = rt.resolve(run.run_id, "go", 1)
    assert (run.status, run.state) == ("finished", {"got": 1})


class Shouting(BaseModel):
    """A state model whose own model_dump and model_validate_json the engine must go through."""

    word: str = "hi"

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        dumped = super().model_dump(**kwargs)
        dumped["word"] = dumped["word"].upper()
        return dumped

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Shouting:
        loaded = super().model_validate_json(json_data, **kwargs)
        loaded.word += "!"
        return loaded


class Shout(Workflow[Shouting]):
    """Saves its state through the model's own methods at every step."""

    @step
    def first(self) -> Steps:
        yield self.action("noop", pick, "x")
        return self.second

    @step
    def second(self) -> None:
        EVENTS.append(self.state.word)


class Whisper(Shouting):
    """A subclass: the override is inherited."""


class Whispering(Workflow[Whisper]):
    """As Shout, with a state model that inherits the overrides."""

    @step
    def only(self) -> None:
        EVENTS.append(self.state.word)


def test_a_state_model_overriding_dump_or_validate_is_called_through_its_overrides(rt: MemoryRuntime) -> None:
    run = rt.start(Shout)
    assert run.status == "finished"
    # saved upper-cased by model_dump, read back with a "!" by model_validate_json at each of the two visits
    assert EVENTS[-1] == "HI!!"
    assert run.state == {"word": "HI!!"}
    EVENTS.clear()
    assert rt.start(Whispering, input={"word": "psst"}).state == {"word": "PSST!"}
    assert EVENTS == ["PSST!"]
