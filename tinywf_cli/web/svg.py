"""The step graph of a workflow as an SVG, drawn from ``tinywf graph``'s analysis.

Steps are laid out in rows by their distance from the start (a breadth-first walk of the
transitions); a transition to a later row is drawn downwards, one back to an earlier row
(a loop) curves round on the right. With a run's trace, visited steps are filled green
with their visit count, the current step yellow (red when the run failed), and the
transitions the run took are drawn bold with how often. Colours are presentation
attributes, so the picture needs no stylesheet. A pure function: analysis in, markup out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinywf_cli.analysis.flow import COMPUTED, END, WorkflowInfo
from tinywf_cli.analysis.graph import RunTrace, visits_text
from tinywf_cli.web.html import Html, h

CHAR_WIDTH = 7.2
LINE_HEIGHT = 16
ROW_GAP = 56
NODE_GAP = 36
MARGIN = 24
#: A step's box lists at most this many of its actions and waits.
MAX_COMMANDS = 4

FILLS = {"visited": "#dff0d8", "current": "#fcf8e3", "failed": "#f2dede", None: "#ffffff"}
STROKES = {"visited": "#3c763d", "current": "#8a6d3b", "failed": "#a94442", None: "#555555"}
TAKEN = "#3c763d"


@dataclass
class _Node:
    """A box (a step, a computed ``?``, a name that is no step) or a start or end dot."""

    id: str
    lines: list[str]
    shape: str = "box"  # box, start, end, diamond, missing
    state: str | None = None
    row: int = 0
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0
    height: float = 0.0
    out: list[str] = field(default_factory=list)

    def measure(self) -> None:
        """Set the node's size from its shape and its lines of text."""
        if self.shape in ("start", "end"):
            self.width = self.height = 18
        elif self.shape == "diamond":
            self.width, self.height = 44, 36
        else:
            self.width = max(96.0, max(len(line) for line in self.lines) * CHAR_WIDTH + 24)
            self.height = 12 + LINE_HEIGHT * len(self.lines)


def _step_lines(workflow: WorkflowInfo, name: str, run: RunTrace | None) -> list[str]:
    step = workflow.step(name)
    lines = [name, *(c.describe() for c in step.commands[:MAX_COMMANDS])]
    if len(step.commands) > MAX_COMMANDS:
        lines.append(f"… {len(step.commands) - MAX_COMMANDS} more")
    if run is not None and run.visits.get(name):
        lines.append(visits_text(run.visits[name]))
    return lines


def _states(workflow: WorkflowInfo, run: RunTrace | None) -> dict[str, str]:
    if run is None:
        return {}
    states = {name: "visited" for name in workflow.step_names if run.visits.get(name)}
    if run.active in workflow.step_names:
        states[run.active] = "failed" if run.status == "failed" else "current"
    return states


def _nodes(workflow: WorkflowInfo, run: RunTrace | None) -> tuple[dict[str, _Node], list[tuple[str, str, str]]]:
    """The nodes and the edges ``(from node, to node, transition target)`` to draw."""
    states = _states(workflow, run)
    nodes: dict[str, _Node] = {"start": _Node("start", [], "start")}
    for name in workflow.step_names:
        nodes[f"s:{name}"] = _Node(f"s:{name}", _step_lines(workflow, name, run), state=states.get(name))
    edges: list[tuple[str, str, str]] = []
    if workflow.start is not None:
        edges.append(("start", f"s:{workflow.start}", workflow.start))
    for step in workflow.steps:
        for target in step.next_steps:
            if target == END:
                nodes.setdefault("end", _Node("end", [], "end"))
                head = "end"
            elif target == COMPUTED:
                head = f"?:{step.name}"
                nodes[head] = _Node(head, ["?"], "diamond")
            elif target in workflow.step_names:
                head = f"s:{target}"
            else:
                head = f"x:{step.name}:{target}"
                nodes[head] = _Node(head, [target, "(not a step)"], "missing")
            edges.append((f"s:{step.name}", head, target))
    for source, head, _ in edges:
        nodes[source].out.append(head)
    return nodes, edges


def _layout(nodes: dict[str, _Node]) -> tuple[float, float]:
    """Rows by breadth-first distance from the start; returns the picture's width and height."""
    rows: dict[str, int] = {"start": 0}
    queue = ["start"]
    while queue:
        current = queue.pop(0)
        for head in nodes[current].out:
            if head not in rows:
                rows[head] = rows[current] + 1
                queue.append(head)
    last = max(rows.values())
    for node_id in nodes:  # steps nothing leads to (from the source), below the rest
        if node_id not in rows and node_id != "end":
            last += 1
            rows[node_id] = last
    if "end" in nodes:
        rows["end"] = max(rows.values()) + 1
    by_row: dict[int, list[_Node]] = {}
    for node_id, node in nodes.items():
        node.row = rows[node_id]
        node.measure()
        by_row.setdefault(node.row, []).append(node)
    widths = [sum(n.width for n in row) + NODE_GAP * (len(row) - 1) for row in by_row.values()]
    width = max(widths) + 2 * MARGIN + 140  # room on the right for loops
    y: float = MARGIN
    for row_index in sorted(by_row):
        row = by_row[row_index]
        x = (width - 140 - (sum(n.width for n in row) + NODE_GAP * (len(row) - 1))) / 2
        tallest = max(n.height for n in row)
        for node in row:
            node.x, node.y = x, y + (tallest - node.height) / 2
            x += node.width + NODE_GAP
        y += tallest + ROW_GAP
    return width, y - ROW_GAP + MARGIN


def _node_markup(node: _Node) -> Html:
    cx, cy = node.x + node.width / 2, node.y + node.height / 2
    if node.shape == "start":
        return h("circle", {"cx": f"{cx:.1f}", "cy": f"{cy:.1f}", "r": 9, "fill": "#222"})
    if node.shape == "end":
        return h("g", {}, h("circle", {"cx": f"{cx:.1f}", "cy": f"{cy:.1f}", "r": 9, "fill": "none",
                                        "stroke": "#222", "stroke-width": 2}),
                 h("circle", {"cx": f"{cx:.1f}", "cy": f"{cy:.1f}", "r": 5, "fill": "#222"}))
    if node.shape == "diamond":
        points = f"{cx:.1f},{node.y:.1f} {node.x + node.width:.1f},{cy:.1f} {cx:.1f},{node.y + node.height:.1f} " \
                 f"{node.x:.1f},{cy:.1f}"
        return h("g", {}, h("polygon", {"points": points, "fill": "#fff", "stroke": "#777",
                                         "stroke-dasharray": "4 3"}),
                 h("text", {"x": f"{cx:.1f}", "y": f"{cy + 5:.1f}", "text-anchor": "middle", "fill": "#555"}, "?"))
    missing = node.shape == "missing"
    box = h("rect", {"x": f"{node.x:.1f}", "y": f"{node.y:.1f}", "width": f"{node.width:.1f}",
                     "height": f"{node.height:.1f}", "rx": 8,
                     "fill": "#fff" if missing else FILLS[node.state],
                     "stroke": "#a94442" if missing else STROKES[node.state],
                     "stroke-width": 3 if node.state in ("current", "failed") else 1.4,
                     "stroke-dasharray": "5 3" if missing else None})
    texts = []
    for index, line in enumerate(node.lines):
        first = index == 0
        texts.append(h("text", {"x": f"{node.x + node.width / 2:.1f}",
                                "y": f"{node.y + 6 + LINE_HEIGHT * (index + 1) - 3:.1f}",
                                "text-anchor": "middle", "font-weight": "bold" if first else None,
                                "font-size": 13 if first else 11,
                                "fill": "#a94442" if missing else ("#222" if first else "#555")}, line))
    title = h("title", {}, node.lines[0] + ("" if node.state is None else f" ({node.state})"))
    return h("g", {"class_": f"step {node.state or ''}".strip(), "data-step": None if missing else node.lines[0]},
             title, box, *texts)


def _edge_markup(source: _Node, head: _Node, loop_index: int, count: int) -> Html:
    color, width = (TAKEN, 2.6) if count else ("#888", 1.3)
    marker = "url(#arrow-taken)" if count else "url(#arrow)"
    if head.row > source.row:
        x1, y1 = source.x + source.width / 2, source.y + source.height
        x2, y2 = head.x + head.width / 2, head.y
        bend = (y2 - y1) / 2
        path = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} {x2:.1f},{y2:.1f}"
        label_x, label_y = (x1 + x2) / 2 + 6, (y1 + y2) / 2
    else:  # a loop back (or sideways): round the right-hand side
        x1, y1 = source.x + source.width, source.y + source.height / 2
        x2, y2 = head.x + head.width, head.y + head.height / 2
        reach: float = max(x1, x2) + 40 + 18 * loop_index
        if source is head:
            y1, y2 = source.y + source.height * 0.3, source.y + source.height * 0.7
        path = f"M{x1:.1f},{y1:.1f} C{reach:.1f},{y1:.1f} {reach:.1f},{y2:.1f} {x2 + 2:.1f},{y2:.1f}"
        label_x, label_y = reach - 6, (y1 + y2) / 2
    parts = [h("path", {"d": path, "fill": "none", "stroke": color, "stroke-width": width, "marker-end": marker})]
    if count:
        parts.append(h("text", {"x": f"{label_x:.1f}", "y": f"{label_y:.1f}", "font-size": 11, "fill": TAKEN,
                                "font-weight": "bold"}, f"{count}\u00d7"))
    return h("g", {"class_": "edge taken" if count else "edge"}, *parts)


def graph_svg(workflow: WorkflowInfo, run: RunTrace | None = None) -> Html:
    """The workflow's steps and transitions as an inline ``<svg>``, the run's path marked if given."""
    nodes, edges = _nodes(workflow, run)
    width, height = _layout(nodes)
    loops = 0
    drawn = []
    for source_id, head_id, target in edges:
        source, head = nodes[source_id], nodes[head_id]
        key = (END if source_id == "start" else source_id[2:], END if head_id == "end" else target)
        count = run.taken.get(key, 0) if run is not None else 0
        backwards = head.row <= source.row
        drawn.append(_edge_markup(source, head, loops, count))
        loops += backwards
    arrow = [h("marker", {"id": name, "viewBox": "0 0 10 10", "refX": 9, "refY": 5, "markerWidth": 9,
                          "markerHeight": 9, "markerUnits": "userSpaceOnUse", "orient": "auto-start-reverse"},
               h("path", {"d": "M0,0 L10,5 L0,10 z", "fill": color}))
             for name, color in (("arrow", "#888"), ("arrow-taken", TAKEN))]
    return h("svg", {"xmlns": "http://www.w3.org/2000/svg", "class_": "graph", "role": "img",
                     "aria-label": f"steps of {workflow.name}", "width": f"{width:.0f}", "height": f"{height:.0f}",
                     "viewBox": f"0 0 {width:.0f} {height:.0f}", "font-family": "system-ui, sans-serif"},
             h("defs", {}, *arrow), *drawn, *(_node_markup(n) for n in nodes.values()))
