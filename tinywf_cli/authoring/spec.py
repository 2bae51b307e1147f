"""The plan of a new flow, as ``tinywf new`` takes it: ``--from SPEC.json`` or ``--steps A,B,C``,
checked whole before a file is written.

A spec (contract section 13)::

    {"name": "invoice", "doc": "Draft, send, get paid.",
     "state": {"amount": "int", "paid": "bool | None"},
     "steps": [
        {"name": "draft", "tasks": ["draft_invoice"], "next": ["send"]},
        {"name": "send", "tasks": ["send_invoice"],
         "wait": {"event": "paid", "type": "bool", "timeout": "7d"}, "next": ["close", "remind"]},
        {"name": "remind", "tasks": ["send_reminder"], "wait": {"timer": "1d"}, "next": ["send"]},
        {"name": "close", "next": []}]}

The first step starts; an empty (or absent) ``next`` ends the run. ``name`` names the workflow
class (``invoice`` gives ``Invoice``; the file's name is the command's NAME); an event's answer
is kept in the state field named after its key (added as ``TYPE | None`` when the spec's
``state`` has no such field). Every mistake is a ``BadInput`` naming where it is:
``steps[3] 'remind': next 'sned' is not a step (steps: draft, send, remind, close)``.
"""

from __future__ import annotations

import ast
import builtins
import collections
import functools
import json
import keyword
import math
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tinywf_cli.clock import parse_duration
from tinywf_cli.errors import BadInput
from tinywf_cli.jsonio import strict_loads
from tinywf_cli.names import WORKFLOW_API

#: The steps of ``tinywf new NAME`` given neither ``--steps`` nor ``--from``.
DEFAULT_STEPS = ("start", "finish")

#: Names the generated flow file binds itself: nothing in a spec may take one of them.
FILE_NAMES = frozenset({
    "annotations", "Generator", "timedelta", "datetime", "date", "Any", "Literal", "BaseModel",
    "EventTimeout", "Workflow", "step", "Steps",
})
#: The type names a state field or an event may use (with ``list[T]``, ``dict[K, V]``, ``T | None``).
TYPE_NAMES = ("str", "int", "float", "bool", "datetime", "date", "Any")
TYPES_HINT = "str, int, float, bool, datetime, date, Any, list[T], dict[str, T] and T | None"
#: What a field of each type starts as, so that a run starts without input.
_EMPTY = {"str": '""', "int": "0", "float": "0.0", "bool": "False", "Any": "None", "list": "[]", "dict": "{}"}
#: A value of each type, for the test to answer an event with.
_SAMPLE = {"str": '"yes"', "int": "1", "float": "1.5", "bool": "True", "Any": '"yes"', "list": "[]", "dict": "{}",
           "datetime": '"2030-01-01T00:00:00Z"', "date": '"2030-01-01"'}
#: Modules a flow file's name must not hide (its folder is on the import path while it runs).
_HIDDEN = frozenset(sys.stdlib_module_names) | {"tinywf_cli", "pydantic", "pydantic_core", "typer", "rich",
                                                 "filelock", "tests", "flows"}
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}", re.ASCII)

_SPEC_KEYS = ("name", "doc", "state", "steps")
_STEP_KEYS = ("name", "tasks", "wait", "next")
_EVENT_KEYS = ("event", "type", "timeout", "question")
_TIMER_KEYS = ("timer",)


# -- what a spec says ------------------------------------------------------------------------


@dataclass(frozen=True)
class StateField:
    """A field of the state model: ``amount: int = 0``."""

    name: str
    #: The type as the file writes it (``bool | None``).
    type: str
    #: Its default, as Python source (``0``, ``None``, ``[]``): a run starts without input.
    default: str


@dataclass(frozen=True)
class EventWait:
    """A step's wait for an event: ``self.state.KEY = yield self.wait_event(KEY, ...)``."""

    key: str
    type: str
    timeout: timedelta | None
    question: str
    #: A value of ``type`` as Python source, for the generated test to answer with.
    sample: str


@dataclass(frozen=True)
class TimerWait:
    """A step's durable timer: ``yield self.sleep(KEY, duration)``."""

    key: str
    duration: timedelta


@dataclass(frozen=True)
class PlannedStep:
    """A step of the new flow: its tasks in order, then its wait, then where it goes."""

    name: str
    tasks: tuple[str, ...]
    wait: EventWait | TimerWait | None
    #: The steps it may go to; empty: it ends the run.
    next: tuple[str, ...]

    @property
    def choice(self) -> str | None:
        """The function that picks the next step, when there are several: ``next_after_send``."""
        return f"next_after_{self.name}" if len(self.next) > 1 else None


@dataclass(frozen=True)
class Walk:
    """The way a run goes through the new flow with its stubs as written: what its test follows."""

    #: The steps visited, in order (the first is the start).
    steps: tuple[str, ...]
    #: The steps where the run waits on the way, each with its wait.
    stops: tuple[PlannedStep, ...]
    #: True when the run finishes; False when it comes back to a step it waited in (the last of
    #: ``steps``), where it waits again.
    ends: bool


@dataclass(frozen=True)
class FlowSpec:
    """A new flow, checked: its names, state fields and steps."""

    #: The file's name (``invoice``: ``flows/invoice.py``).
    name: str
    #: The workflow class (``Invoice``); its state model is ``InvoiceState``.
    workflow: str
    doc: str
    fields: tuple[StateField, ...]
    steps: tuple[PlannedStep, ...]
    #: The options of ``tinywf new`` it was made with (``--from spec.json``), for the file to say.
    options: str = ""

    @property
    def state_model(self) -> str:
        """The state model's class name."""
        return f"{self.workflow}State"

    def step(self, name: str) -> PlannedStep:
        """The step called ``name``."""
        return self._by_name[name]

    @functools.cached_property
    def _by_name(self) -> dict[str, PlannedStep]:
        return {s.name: s for s in self.steps}

    def tasks(self) -> dict[str, list[str]]:
        """Every task once, in the order first called, with the steps that call it."""
        found: dict[str, list[str]] = {}
        for planned in self.steps:
            for task in planned.tasks:
                found.setdefault(task, []).append(planned.name)
        return found

    def default_next(self, planned: PlannedStep) -> str | None:
        """Where a step's choice stub goes as written: the next step closest to the end (the first
        listed among equals), so that the stubs as written finish a run when any way does."""
        if not planned.next:
            return None
        distance = self._distances
        return min(planned.next, key=lambda name: distance.get(name, math.inf))

    @functools.cached_property
    def _distances(self) -> dict[str, float]:
        """How many transitions each step is from the end of a run (absent: the run never ends
        from there), found backwards from the steps that end it."""
        before: dict[str, list[str]] = {}
        for planned in self.steps:
            for target in planned.next:
                before.setdefault(target, []).append(planned.name)
        queue = collections.deque(s.name for s in self.steps if not s.next)
        distance = dict.fromkeys(queue, 0.0)
        while queue:
            current = queue.popleft()
            for earlier in before.get(current, []):
                if earlier not in distance:
                    distance[earlier] = distance[current] + 1
                    queue.append(earlier)
        return distance

    def walk(self) -> Walk:
        """The way a run goes with the stubs as written; BadInput when it would go round without
        ever waiting (a run that never stops)."""
        steps: list[str] = []
        stops: dict[str, PlannedStep] = {}
        since_wait: dict[str, None] = {}  # the steps passed since the last wait, in order
        current: str | None = self.steps[0].name
        while current is not None:
            planned = self.step(current)
            steps.append(current)
            if planned.wait is not None:
                if current in stops:
                    return Walk(tuple(steps), tuple(stops.values()), ends=False)
                stops[current] = planned
                since_wait = {}
            elif current in since_wait:
                lap = [*list(since_wait)[list(since_wait).index(current):], current]
                raise BadInput(f"a run would go round {' -> '.join(lap)} for ever without waiting: "
                               "give one of these steps a wait, or a next that leads to the end")
            else:
                since_wait[current] = None
            current = self.default_next(planned)
        return Walk(tuple(steps), tuple(stops.values()), ends=True)


# -- reading a spec --------------------------------------------------------------------------


def read_spec(text: str | bytes, name: str, where: str) -> FlowSpec:
    """The flow a SPEC.json text describes, for the file ``name``; BadInput naming what is wrong
    (``where`` is the spec's file, as shown in messages)."""
    check_flow_name(name)
    try:
        document = strict_loads(text)
    except ValueError as exc:
        raise BadInput(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadInput(f"{where} must hold a JSON object with \"steps\", not {_kind(document)}")
    _known_keys(document, _SPEC_KEYS, where)
    workflow = class_name(_text(document, "name", where) or name, where)
    steps = document.get("steps")
    if steps is None or steps == []:
        raise BadInput(f"{where} has no steps: give \"steps\": [{{\"name\": \"first\", \"next\": []}}, ...]")
    if not isinstance(steps, list):
        raise BadInput(f"{where}: \"steps\" must be a list of steps, not {_kind(steps)}")
    state = document.get("state", {})
    if not isinstance(state, dict):
        raise BadInput(f"{where}: \"state\" must be an object of field names and types, not {_kind(state)}")
    declared = dict(_read_fields(state, where))
    planned = tuple(_read_steps(steps, where))
    return _checked(name, workflow, _text(document, "doc", where), declared, planned, where, f"--from {where}")


def steps_spec(name: str, steps: str | None = None) -> FlowSpec:
    """The flow ``--steps A,B,C`` describes: each step does one task of its own name and goes to
    the next; the last ends the run (``DEFAULT_STEPS`` without ``--steps``)."""
    check_flow_name(name)
    names = DEFAULT_STEPS if steps is None else tuple(part.strip() for part in steps.split(","))
    if any(not part for part in names):
        raise BadInput(f"--steps {steps!r}: give step names separated by commas, e.g. --steps draft,send,close")
    planned = tuple(PlannedStep(step_name, (step_name,), None, tuple(names[index + 1:index + 2]))
                    for index, step_name in enumerate(names))
    return _checked(name, class_name(name, "NAME"), None, {}, planned, "--steps",
                    "" if steps is None else f"--steps {','.join(names)}")


def check_flow_name(name: str) -> None:
    """Refuse a NAME that makes no flow file: not an identifier, a keyword, or a module it would hide."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or keyword.iskeyword(name):
        raise BadInput(f"invalid flow name {name!r}: use a letter, then letters, digits and _ "
                       "(at most 40), e.g. invoice or user_onboarding")
    if name in _HIDDEN:
        raise BadInput(f"invalid flow name {name!r}: a file {name}.py would hide the module {name} "
                       "that Python or tinywf imports; choose another name")


def class_name(name: str, where: str) -> str:
    """``invoice`` -> ``Invoice``, ``late_payment`` -> ``LatePayment``, ``LatePayment`` kept."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    shown = "".join(w[0].upper() + w[1:] for w in words)
    if not shown or not shown.isidentifier() or not shown[0].isalpha() or not shown.isascii():
        raise BadInput(f"{where}: no class name can be made of {name!r}: use letters, digits and _")
    if shown in FILE_NAMES or f"{shown}State" in FILE_NAMES:
        raise BadInput(f"{where}: the workflow class would be called {shown}, a name the flow file "
                       "imports; choose another name")
    return shown


# -- the parts ---------------------------------------------------------------------------------


def _read_steps(steps: list[Any], where: str) -> Iterator[PlannedStep]:
    for index, item in enumerate(steps, 1):
        at = f"{where}: steps[{index}]"
        if not isinstance(item, dict):
            raise BadInput(f"{at} must be an object with \"name\", not {_kind(item)}")
        name = item.get("name")
        if not isinstance(name, str):
            raise BadInput(f"{at} has no \"name\" (a string)")
        at = f"{at} '{name}'"
        _known_keys(item, _STEP_KEYS, at)
        tasks = tuple(_names(item.get("tasks", []), at, "tasks", "task"))
        next_steps = tuple(_names(item.get("next", []), at, "next", "step"))
        yield PlannedStep(name, tasks, _read_wait(item.get("wait"), name, at), next_steps)


def _read_wait(wait: Any, step: str, at: str) -> EventWait | TimerWait | None:
    if wait is None:
        return None
    if not isinstance(wait, dict) or ("event" in wait) == ("timer" in wait):
        raise BadInput(f"{at}: \"wait\" is {{\"event\": KEY, \"type\": \"bool\", \"timeout\": \"2d\"}} "
                       f"or {{\"timer\": \"1d\"}}, not {_short(wait)}")
    if "timer" in wait:
        _known_keys(wait, _TIMER_KEYS, f"{at}: wait")
        return TimerWait(f"{step}_timer", _duration(wait["timer"], f"{at}: wait timer"))
    _known_keys(wait, _EVENT_KEYS, f"{at}: wait")
    key = wait["event"]
    if not isinstance(key, str):
        raise BadInput(f"{at}: the wait's \"event\" must be a key (a string), not {_kind(key)}")
    _identifier(key, f"{at}: event", "event key (it names the state field its answer goes to)")
    _field_name(key, f"{at}: event")
    type_text = wait.get("type", "str")
    type_node = _type(type_text, f"{at}: event '{key}'")
    timeout = wait.get("timeout")
    question = wait.get("question", key.replace("_", " ").capitalize() + "?")
    if not isinstance(question, str) or not question.strip():
        raise BadInput(f"{at}: the wait's \"question\" must be text")
    return EventWait(key, ast.unparse(type_node),
                     None if timeout is None else _duration(timeout, f"{at}: wait timeout"),
                     " ".join(question.split()), _value_of(type_node, _SAMPLE) or "None")


def _read_fields(state: Mapping[str, Any], where: str) -> Iterator[tuple[str, StateField]]:
    for name, type_text in state.items():
        at = f"{where}: state field '{name}'"
        _identifier(name, at, "field name")
        _field_name(name, at)
        node = _type(type_text, at)
        default = _value_of(node, _EMPTY)
        if default is None:
            raise BadInput(f"{at}: a {ast.unparse(node)} has no empty value to start a run with; "
                           f"write \"{ast.unparse(node)} | None\"")
        yield name, StateField(name, ast.unparse(node), default)


def _checked(name: str, workflow: str, doc: str | None, declared: dict[str, StateField],
             steps: tuple[PlannedStep, ...], where: str, options: str) -> FlowSpec:
    """The spec, once its steps and names fit together."""
    seen: dict[str, int] = {}
    for index, planned in enumerate(steps, 1):
        at = f"{where}: steps[{index}] '{planned.name}'"
        _identifier(planned.name, at, "step name")
        if planned.name in WORKFLOW_API:
            raise BadInput(f"{at}: '{planned.name}' is part of the Workflow API (self.{planned.name}); "
                           "give the step another name")
        if planned.name in seen:
            raise BadInput(f"{at} is a duplicate step (steps[{seen[planned.name]}] has that name)")
        seen[planned.name] = index
    names = ", ".join(seen)
    taken = {workflow: "the workflow class", f"{workflow}State": "the state model",
             **{p.choice: f"the choice of step '{p.name}'" for p in steps if p.choice}}
    for index, planned in enumerate(steps, 1):
        at = f"{where}: steps[{index}] '{planned.name}'"
        for target in planned.next:
            if target not in seen:
                raise BadInput(f"{at}: next '{target}' is not a step (steps: {names})")
        for task in planned.tasks:
            _identifier(task, at, "task name")
            if task in taken:
                raise BadInput(f"{at}: task '{task}' has the name of {taken[task]}; choose another")
        keys = [*planned.tasks, *([planned.wait.key] if planned.wait else [])]
        twice = next((key for key in keys if keys.count(key) > 1), None)
        if twice is not None:
            raise BadInput(f"{at}: '{twice}' names two things in one step (its tasks and its wait each "
                           "need a key of their own)")
    fields = dict(declared)
    for planned in steps:
        wait = planned.wait
        if isinstance(wait, EventWait):
            field = fields.get(wait.key)
            if field is None:
                optional = wait.type if _optional(wait.type) else f"{wait.type} | None"
                fields[wait.key] = StateField(wait.key, optional, "None")
            elif field.type not in (wait.type, f"{wait.type} | None"):
                raise BadInput(f"{where}: state field '{wait.key}' is {field.type}, but the event '{wait.key}' "
                               f"that answers it gives {wait.type}: make them the same type")
    flow = FlowSpec(name, workflow, " ".join((doc or _doc_of(steps)).split()), tuple(fields.values()), steps,
                    options)
    flow.walk()  # refuses a flow whose runs would never stop
    return flow


def _doc_of(steps: tuple[PlannedStep, ...]) -> str:
    """``Draft, send, wait payment, close.``: the steps, in words."""
    words = ", ".join(s.name.replace("_", " ") for s in steps)
    return words[0].upper() + words[1:] + "."


def _identifier(name: str, at: str, what: str) -> None:
    if not _IDENTIFIER.fullmatch(name) or keyword.iskeyword(name):
        raise BadInput(f"{at}: invalid {what} {name!r}: use a letter, then letters, digits and _ (at most 40)")
    if name in FILE_NAMES or hasattr(builtins, name):
        raise BadInput(f"{at}: {name!r} is a name Python or the flow file already uses; choose another")


def _field_name(name: str, at: str) -> None:
    from pydantic import BaseModel

    if name.startswith("model_") or hasattr(BaseModel, name):
        raise BadInput(f"{at}: {name!r} is a name of pydantic's BaseModel; choose another field name")


def _names(value: Any, at: str, key: str, what: str) -> Iterator[str]:
    if not isinstance(value, list):
        raise BadInput(f"{at}: \"{key}\" must be a list of {what} names, not {_kind(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise BadInput(f"{at}: \"{key}\" holds {_short(item)}, not a {what} name")
        if item in value[:index]:
            raise BadInput(f"{at}: \"{key}\" names '{item}' twice")
        yield item


def _type(text: Any, at: str) -> ast.expr:
    """A type as written in a spec, checked: only what the file can write without more imports."""
    if not isinstance(text, str):
        raise BadInput(f"{at}: the type must be a string like \"int\", not {_kind(text)}")
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        node = None
    problem = "is not a type" if node is None else _type_problem(node)
    if problem is not None:
        raise BadInput(f"{at}: type {text!r} {problem}: use {TYPES_HINT}")
    assert node is not None
    return node


def _type_problem(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Name):
        if node.id == "list":
            return "needs its item type (list[str], say)"
        if node.id == "dict":
            return "needs its key and value types (dict[str, int], say)"
        return None if node.id in TYPE_NAMES else f"names '{node.id}', which tinywf new does not know"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _type_problem(node.left) or _type_problem(node.right)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ("list", "dict"):
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if len(items) != (1 if node.value.id == "list" else 2):
            return f"gives {node.value.id} {len(items)} item type(s)"
        return next((p for p in map(_type_problem, items) if p), None)
    return "is not a type tinywf new can write"


def _members(node: ast.expr) -> list[ast.expr]:
    """The members of a union type (``a | b | None``), in order."""
    if isinstance(node, ast.BinOp):
        return [*_members(node.left), *_members(node.right)]
    return [node]


def _optional(text: str) -> bool:
    return any(isinstance(m, ast.Constant) for m in _members(ast.parse(text, mode="eval").body))


def _value_of(node: ast.expr, values: dict[str, str]) -> str | None:
    """A value for a type from ``values`` (by the first member's name); ``None`` for optionals
    when picking empty values; None when there is none."""
    members = _members(node)
    if values is _EMPTY and any(isinstance(m, ast.Constant) for m in members):
        return "None"
    for member in members:
        if isinstance(member, ast.Subscript) and isinstance(member.value, ast.Name):
            return values.get(member.value.id)
        if isinstance(member, ast.Name):
            return values.get(member.id)
    return None


def _duration(value: Any, at: str) -> timedelta:
    if not isinstance(value, str):
        raise BadInput(f"{at} must be a duration like \"2d\", \"12h\" or \"1d12h\", not {_kind(value)}")
    try:
        return parse_duration(value)
    except BadInput as exc:
        raise BadInput(f"{at}: {exc.message}") from None


def _text(document: dict[str, Any], key: str, where: str) -> str | None:
    value = document.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise BadInput(f"{where}: \"{key}\" must be text, not {_short(value)}")
    return value


def _known_keys(document: dict[str, Any], keys: tuple[str, ...], at: str) -> None:
    unknown = [key for key in document if key not in keys]
    if unknown:
        raise BadInput(f"{at}: unknown key {unknown[0]!r} (the keys are {', '.join(keys)})")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false"}.get(
        type(value), "null" if value is None else "a number")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
