"""What a flow is made of, as ``tinywf_cli.analysis.source`` reads it: workflows, steps,
transitions, commands, and the mistakes found. Frozen dataclasses, no imports of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tinywf_cli.errors import FlowLoadError

#: Where a run starts and finishes, in edges: Mermaid's ``[*]``.
END = "[*]"
#: The target of a transition that only the running code knows.
COMPUTED = "?"

#: The ``self.<kind>(key, ...)`` calls listed per step.
COMMAND_KINDS = ("action", "sleep", "sleep_until", "wait_event", "parallel", "child", "start_child")

#: How a step ends: at a step, at the end of the run, somewhere computed, or at a name that is no step.
TransitionKind = Literal["step", "end", "computed", "missing"]


# -- what a flow is made of ------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """Something a step yields, as written in its source: ``wait_event ask_{count}``."""

    #: ``action``, ``sleep``, ``sleep_until``, ``wait_event``, ``parallel``, ``child`` or ``start_child``.
    kind: str
    #: The key as written; f-string placeholders kept (``ask_{count}``); ``?`` when there is none.
    #: For ``parallel``: the keys of the actions written inside it, else its argument.
    key: str
    #: Line in the flow file.
    line: int
    #: The helper method (``yield from self.notify(...)``) the command is written in, if not the step.
    via: str | None = None
    #: ``parallel``: the keys of the actions written inside the call.
    actions: tuple[str, ...] = ()

    def describe(self) -> str:
        """``action send_receipt_email_{receipt.cycle}``, with ``(via helper)`` when in a helper."""
        text = f"{self.kind} {self.key}"
        return f"{text} (via {self.via})" if self.via else text


@dataclass(frozen=True)
class Transition:
    """One way a step can end: to a step, to the end of the run, or to a name known only at run time."""

    #: ``step`` (names a step), ``end`` (finishes the run), ``computed`` (not readable from the
    #: source) or ``missing`` (names something that is not a step: the run would fail).
    kind: TransitionKind
    #: The step named (``step``) or the name that is no step (``missing``); ``None`` otherwise.
    target: str | None
    #: The returned expression as written (``self.step_end``, ``None``), or ``end of step``.
    source: str
    #: Line in the flow file.
    line: int

    @property
    def to(self) -> str:
        """The target as an edge end: the step, ``[*]`` for the end, ``?`` when computed, or the bad name."""
        if self.kind == "end":
            return END
        if self.kind == "computed":
            return COMPUTED
        return self.target or COMPUTED


@dataclass(frozen=True)
class StepInfo:
    """A step of a workflow: where it may lead and what it yields, in source order."""

    name: str
    #: Line of its ``def``.
    line: int
    #: Whether runs start here.
    start: bool
    #: The class that defines it (a base class, for an inherited step).
    defined_in: str
    transitions: tuple[Transition, ...]
    commands: tuple[Command, ...]

    @property
    def next_steps(self) -> tuple[str, ...]:
        """Where the step may lead, each once, in source order: step names, ``[*]``, ``?``."""
        return tuple(dict.fromkeys(t.to for t in self.transitions))


@dataclass(frozen=True)
class Problem:
    """A mistake the source shows for sure: a step returning a name that is not a step."""

    line: int
    #: ``step 'check' returns 'chek', which is not a step of GuessGame``.
    message: str


@dataclass(frozen=True)
class WorkflowInfo:
    """A workflow class as its source shows it."""

    name: str
    #: Line of its ``class``.
    line: int
    #: The first line of its docstring.
    doc: str | None
    #: The state model as written in ``Workflow[...]`` (``None`` for a plain ``Workflow``).
    model: str | None
    #: The step runs start at: the one marked ``start=True``, else the first.
    start: str | None
    steps: tuple[StepInfo, ...]
    #: Its ``@signal`` methods.
    signals: tuple[str, ...]
    #: Workflow classes of the same file it derives from.
    bases: tuple[str, ...] = ()
    #: False when a base or decorator from elsewhere may add steps the source does not show.
    complete: bool = True
    problems: tuple[Problem, ...] = ()

    def step(self, name: str) -> StepInfo:
        """The step called ``name``; KeyError when there is none."""
        for info in self.steps:
            if info.name == name:
                return info
        raise KeyError(name)

    @property
    def step_names(self) -> tuple[str, ...]:
        """The steps' names, in order."""
        return tuple(s.name for s in self.steps)

    def edges(self) -> list[tuple[str, str]]:
        """Every transition once: ``("[*]", start)``, then ``(step, next)`` in source order."""
        found: dict[tuple[str, str], None] = {}
        if self.start is not None:
            found[(END, self.start)] = None
        for info in self.steps:
            for target in info.next_steps:
                found[(info.name, target)] = None
        return list(found)


@dataclass(frozen=True)
class FlowAnalysis:
    """Everything read from one flow file."""

    #: The file, as shown in messages.
    path: str
    #: Its workflow classes (those with steps), in definition order.
    workflows: tuple[WorkflowInfo, ...]

    def workflow(self, name: str | None = None) -> WorkflowInfo:
        """The workflow ``name``, or the file's only one; FlowLoadError naming the choices otherwise."""
        if name is not None:
            for info in self.workflows:
                if info.name == name:
                    return info
            known = ", ".join(w.name for w in self.workflows) or "none"
            raise FlowLoadError(f"{self.path} has no workflow class '{name}' (workflows: {known})")
        if not self.workflows:
            raise FlowLoadError(f"{self.path} defines no workflow (a Workflow subclass with @step methods)")
        if len(self.workflows) > 1:
            names = ", ".join(w.name for w in self.workflows)
            raise FlowLoadError(f"{self.path} defines {len(self.workflows)} workflows ({names}): "
                                f"name one, e.g. {self.path}:{self.workflows[0].name}")
        return self.workflows[0]

    def problems(self) -> list[Problem]:
        """Mistakes that fail runs, in workflows no other class of the file derives from.

        A base class may return a step only its subclasses define; the subclasses, which
        inherit the step, are checked instead.
        """
        derived = {base for info in self.workflows for base in info.bases}
        found = [p for info in self.workflows if info.name not in derived for p in info.problems]
        return sorted(dict.fromkeys(found), key=lambda p: p.line)
