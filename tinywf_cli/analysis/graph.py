"""A flow drawn: Mermaid ``stateDiagram-v2``, Graphviz DOT, and ``graph --json``, each with
what one run did on it (``RunTrace``) when asked. Pure: what ``source`` read in, text out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tinywf_cli.analysis.flow import COMPUTED, END, WorkflowInfo

if TYPE_CHECKING:
    from tinywf_cli.model import ShowDocument

# Step names Mermaid would read as a keyword (its lexer ignores case; "default" even as a prefix).
_MERMAID_WORDS = frozenset({"note", "state", "class", "classdef", "scale", "direction", "hide", "end", "click",
                            "style", "linkstyle", "acctitle", "accdescr"})
_MERMAID_PREFIXES = ("default", "statediagram")


# -- what a run did ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTrace:
    """What one run did, to draw on its flow: visits per step and transitions taken."""

    run_id: str
    #: The run's workflow, as runs show it (``flows/guess_game.py:GuessGame``).
    workflow: str
    status: str
    #: The step the run is at (its last step, once ended).
    step: str | None
    #: Visits per step, from the audit log's start and transitions.
    visits: Mapping[str, int]
    #: How often each ``(from, to)`` was taken; ``(step, "[*]")`` once the run finished.
    taken: Mapping[tuple[str, str], int]

    @classmethod
    def of(cls, doc: ShowDocument) -> RunTrace:
        """The trace of a run as ``Runtime.get`` shows it."""
        visits: Counter[str] = Counter()
        taken: Counter[tuple[str, str]] = Counter()
        for entry in doc.logs:
            if entry.type == "start" and entry.step:
                visits[entry.step] += 1
                taken[(END, entry.step)] += 1
            elif entry.type == "transition":
                source, target = entry.values.get("from"), entry.values.get("to")
                if isinstance(target, str):
                    visits[target] += 1
                    if isinstance(source, str):
                        taken[(source, target)] += 1
        if doc.status == "finished" and doc.step:
            taken[(doc.step, END)] += 1
        return cls(doc.run_id, doc.workflow, doc.status, doc.step, dict(visits), dict(taken))

    @property
    def active(self) -> str | None:
        """The step the run is in, while it has not finished or been cancelled."""
        return self.step if self.status in ("running", "waiting", "failed") else None

    def mismatches(self, workflow: WorkflowInfo) -> list[str]:
        """Why this run may not be a run of ``workflow``: a different class, steps it does not have."""
        found = []
        run_class = self.workflow.rpartition(":")[2]
        if run_class and run_class != workflow.name:
            found.append(f"run '{self.run_id}' is a run of {self.workflow}, not of {workflow.name}")
        unknown = [name for name in self.visits if name not in workflow.step_names]
        if unknown:
            found.append(f"run '{self.run_id}' visited steps {workflow.name} does not define: {', '.join(unknown)}")
        return found

    def document(self) -> dict[str, Any]:
        """The trace as JSON: ``{"run_id", "workflow", "status", "step", "visits", "transitions"}``."""
        return {
            "run_id": self.run_id, "workflow": self.workflow, "status": self.status, "step": self.step,
            "visits": dict(self.visits),
            "transitions": [{"from": a, "to": b, "count": n} for (a, b), n in self.taken.items()],
        }


def visits_text(count: int) -> str:
    """``visited once`` / ``visited 3 times``."""
    return "visited once" if count == 1 else f"visited {count} times"


def _json_fields(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    """Dataclass fields as JSON values: tuples become lists."""
    return {name: list(value) if isinstance(value, tuple) else value for name, value in fields}


def flow_document(workflow: WorkflowInfo, shown: str, run: RunTrace | None = None) -> dict[str, Any]:
    """What ``tinywf graph --json`` prints: the workflow as read, and the run's trace if any."""
    steps = []
    for step in workflow.steps:
        document = asdict(step, dict_factory=_json_fields)
        document["next"] = list(step.next_steps)
        steps.append(document)
    return {
        "workflow": shown, "class": workflow.name, "doc": workflow.doc, "model": workflow.model,
        "start": workflow.start, "complete": workflow.complete, "signals": list(workflow.signals),
        "steps": steps, "problems": [asdict(p) for p in workflow.problems],
        "run": run.document() if run is not None else None,
    }


# -- Mermaid ---------------------------------------------------------------------------------------------


def _mermaid_keyword(name: str) -> bool:
    lower = name.lower()
    return lower in _MERMAID_WORDS or lower.startswith(_MERMAID_PREFIXES)


class _Ids:
    """Mermaid node ids: a step's name unless Mermaid would misread it, and fresh ids for extra nodes."""

    def __init__(self, names: Iterable[str]) -> None:
        names = tuple(names)
        self.taken: set[str] = {n for n in names if not _mermaid_keyword(n)}
        self.ids: dict[str, str] = {}
        for name in names:
            self.ids[name] = name if name in self.taken else self.fresh(f"s_{name}")

    def fresh(self, wanted: str) -> str:
        """An unused id like ``wanted``."""
        candidate = wanted
        while candidate in self.taken or _mermaid_keyword(candidate):
            candidate = "s_" + candidate + "_"
        self.taken.add(candidate)
        return candidate

    def __getitem__(self, name: str) -> str:
        return self.ids[name]


def _mermaid_label(text: str) -> str:
    """Text safe after ``:`` on a Mermaid transition (no ``:``, ``;``, ``#``, ``%`` or newline)."""
    return " ".join("".join(" " if c in ":;#%\n\r" else c for c in text).split())


def _note_line(text: str) -> str:
    """A line safe inside a Mermaid note."""
    return " ".join(text.replace("\n", " ").split()).replace("end note", "end-note").replace("END NOTE", "END-NOTE")


def to_mermaid(workflow: WorkflowInfo, run: RunTrace | None = None) -> str:
    """A Mermaid ``stateDiagram-v2`` of the workflow, its steps' actions and waits in notes.

    With ``run``, the steps it visited are styled (``classDef visited``), its current step
    too, and each note says how often the step was visited.
    """
    names = workflow.step_names
    ids = _Ids(names)
    declarations: list[str] = [f'    state "{n}" as {ids[n]}' for n in names if ids[n] != n]
    edges: list[str] = []
    mentioned: set[str] = set()
    if workflow.start is not None:
        edges.append(f"    [*] --> {ids[workflow.start]}")
        mentioned.add(workflow.start)
    for step in workflow.steps:
        source = ids[step.name]
        computed = [t.source for t in step.transitions if t.kind == "computed"]
        for target in step.next_steps:
            mentioned.add(step.name)
            if target == END:
                edges.append(f"    {source} --> [*]")
            elif target == COMPUTED:
                node = ids.fresh(f"{source}__next")
                declarations.append(f'    state "?" as {node}')
                label = _mermaid_label(" or ".join(dict.fromkeys(computed)))
                edges.append(f"    {source} --> {node}" + (f": {label}" if label else ""))
            elif target in names:
                mentioned.add(target)
                edges.append(f"    {source} --> {ids[target]}")
            else:
                node = ids.fresh(f"{source}__{target}")
                declarations.append(f'    state "{target} (not a step)" as {node}')
                edges.append(f"    {source} --> {node}")
    lines = ["stateDiagram-v2", *declarations, *edges]
    lines += [f"    {ids[n]}" for n in names if n not in mentioned]
    for step in workflow.steps:
        body = [c.describe() for c in step.commands]
        if run is not None and run.visits.get(step.name):
            body.insert(0, visits_text(run.visits[step.name]))
        if body:
            lines += ["", f"    note right of {ids[step.name]}"]
            lines += [f"      {_note_line(text)}" for text in body]
            lines.append("    end note")
    if run is not None:
        lines += _mermaid_classes(workflow, run, ids)
    return "\n".join(lines) + "\n"


_RUN_STYLES = {
    "visited": ("fill:#dff0d8,stroke:#3c763d", "#dff0d8"),
    "current": ("fill:#fcf8e3,stroke:#8a6d3b,stroke-width:3px", "#fcf8e3"),
    "failed": ("fill:#f2dede,stroke:#a94442,stroke-width:3px", "#f2dede"),
}


def _run_classes(workflow: WorkflowInfo, run: RunTrace) -> dict[str, str]:
    """Style class per step the run touched: ``visited``, and ``current`` / ``failed`` for where it is."""
    classes = {name: "visited" for name in workflow.step_names if run.visits.get(name)}
    if run.active in workflow.step_names:
        classes[run.active] = "failed" if run.status == "failed" else "current"
    return classes


def _mermaid_classes(workflow: WorkflowInfo, run: RunTrace, ids: _Ids) -> list[str]:
    classes = _run_classes(workflow, run)
    lines: list[str] = []
    for style in _RUN_STYLES:
        members = [ids[name] for name, c in classes.items() if c == style]
        if members:
            lines += [f"    classDef {style} {_RUN_STYLES[style][0]}", f"    class {','.join(members)} {style}"]
    return ["", *lines] if lines else []


# -- Graphviz DOT ---------------------------------------------------------------------------------------


_TIMES = "\u00d7"  # the multiplication sign, after a count of transitions taken


def _dot_string(text: str) -> str:
    """A DOT quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(workflow: WorkflowInfo, run: RunTrace | None = None) -> str:
    """A Graphviz ``digraph`` of the workflow; each step's label lists its actions and waits.

    With ``run``, visited steps are filled and labelled with their visit count, the run's
    current step stands out, and the transitions it took are drawn bold with their count.
    """
    start_node, end_node = "[*] start", "[*] end"
    lines = [f"digraph {_dot_string(workflow.name)} {{",
             '    node [shape=box, style="rounded", fontname="Helvetica"];',
             '    edge [fontname="Helvetica", fontsize=10];',
             f'    {_dot_string(start_node)} [shape=circle, style=filled, fillcolor=black, label="", width=0.2];']
    classes = _run_classes(workflow, run) if run is not None else {}
    for step in workflow.steps:
        label = [step.name, *(c.describe() for c in step.commands)]
        if run is not None and run.visits.get(step.name):
            label.append(visits_text(run.visits[step.name]))
        attributes = [f"label={_dot_string(chr(10).join(label))}"]
        style = classes.get(step.name)
        if style is not None:
            attributes += ['style="rounded,filled"', f'fillcolor="{_RUN_STYLES[style][1]}"']
        if style in ("current", "failed"):
            attributes.append("penwidth=3")
        lines.append(f"    {_dot_string(step.name)} [{', '.join(attributes)}];")
    if any(END in s.next_steps for s in workflow.steps):
        lines.append(f'    {_dot_string(end_node)} [shape=doublecircle, style=filled, fillcolor=black, label="", '
                     "width=0.15];")
    for source, target in workflow.edges():
        tail = start_node if source == END else source
        attributes = []
        if target == END:
            head = end_node
        elif target == COMPUTED:
            head = f"{source} ?"
            computed = [t.source for t in workflow.step(source).transitions if t.kind == "computed"]
            lines.append(f'    {_dot_string(head)} [label="?", shape=diamond, style=dashed];')
            attributes.append(f"label={_dot_string(' or '.join(dict.fromkeys(computed)))}")
        elif target in workflow.step_names:
            head = target
        else:
            head = f"{source} -> {target}"
            lines.append(f"    {_dot_string(head)} [label={_dot_string(target + chr(10) + '(not a step)')}, "
                         'color=red, fontcolor=red, style="rounded,dashed"];')
            attributes.append("color=red")
        count = run.taken.get((source, target), 0) if run is not None else 0
        if count:
            attributes += ['color="#3c763d"', "penwidth=2", f"label={_dot_string(str(count) + _TIMES)}"]
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"    {_dot_string(tail)} -> {_dot_string(head)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"
