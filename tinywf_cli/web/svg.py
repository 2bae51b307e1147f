"""The step graph of a workflow as an SVG, drawn from ``tinywf graph``'s analysis.

Steps are laid out by ``layout.py``: in layers from the start down to the end, each
transition a line of straight stretches that runs between the boxes, never behind one, and
enters its step's box at a place of its own (a loop's transition back up enters from below).
With a run's trace, visited steps are filled green with their visit count, the current step
yellow (red when the run failed), and the transitions the run took are drawn bold with how
often. Colours are presentation attributes, so the picture needs no stylesheet. A pure
function: analysis in, markup out.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinywf_cli.analysis.flow import COMPUTED, END, WorkflowInfo
from tinywf_cli.analysis.graph import RunTrace, visits_text
from tinywf_cli.web.html import Html, h
from tinywf_cli.web.layout import Layout, Placed, Point, Size, layout

CHAR_WIDTH = 7.2
LINE_HEIGHT = 16
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

    def size(self) -> Size:
        """The node's size, from its shape and its lines of text."""
        if self.shape in ("start", "end"):
            return Size(18, 18, round=True)
        if self.shape == "diamond":
            return Size(44, 36)
        return Size(max(96.0, max(len(line) for line in self.lines) * CHAR_WIDTH + 24),
                    12 + LINE_HEIGHT * len(self.lines))


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
    return nodes, edges


def _node_markup(node: _Node, box: Placed) -> Html:
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    centre = {"cx": f"{cx:.1f}", "cy": f"{cy:.1f}"}
    if node.shape == "start":
        return h("g", {"data-node": node.id}, h("circle", {**centre, "r": 9, "fill": "#222"}))
    if node.shape == "end":
        return h("g", {"data-node": node.id},
                 h("circle", {**centre, "r": 9, "fill": "none", "stroke": "#222", "stroke-width": 2}),
                 h("circle", {**centre, "r": 5, "fill": "#222"}))
    if node.shape == "diamond":
        points = f"{cx:.1f},{box.y:.1f} {box.x + box.width:.1f},{cy:.1f} {cx:.1f},{box.y + box.height:.1f} " \
                 f"{box.x:.1f},{cy:.1f}"
        return h("g", {"data-node": node.id},
                 h("polygon", {"points": points, "fill": "#fff", "stroke": "#777", "stroke-dasharray": "4 3"}),
                 h("text", {"x": f"{cx:.1f}", "y": f"{cy + 5:.1f}", "text-anchor": "middle", "fill": "#555"}, "?"))
    missing = node.shape == "missing"
    outline = h("rect", {"x": f"{box.x:.1f}", "y": f"{box.y:.1f}", "width": f"{box.width:.1f}",
                         "height": f"{box.height:.1f}", "rx": 8,
                         "fill": "#fff" if missing else FILLS[node.state],
                         "stroke": "#a94442" if missing else STROKES[node.state],
                         "stroke-width": 3 if node.state in ("current", "failed") else 1.4,
                         "stroke-dasharray": "5 3" if missing else None})
    texts = []
    for index, line in enumerate(node.lines):
        first = index == 0
        texts.append(h("text", {"x": f"{cx:.1f}", "y": f"{box.y + 6 + LINE_HEIGHT * (index + 1) - 3:.1f}",
                                "text-anchor": "middle", "font-weight": "bold" if first else None,
                                "font-size": 13 if first else 11,
                                "fill": "#a94442" if missing else ("#222" if first else "#555")}, line))
    title = h("title", {}, node.lines[0] + ("" if node.state is None else f" ({node.state})"))
    return h("g", {"class_": f"step {node.state or ''}".strip(), "data-node": node.id,
                   "data-step": None if missing else node.lines[0]}, title, outline, *texts)


def _label_at(points: list[Point]) -> Point:
    """Where an edge's count goes: beside its first stretch, just clear of the box it leaves."""
    (x1, y1), (x2, y2) = points[0], points[1]
    if y1 == y2:  # a step's transition to itself leaves sideways
        return max(x1, x2) + 4, (y1 + points[2][1]) / 2 + 4
    return x1 + 5, y1 + 14 if y2 > y1 else y1 - 6


def _edge_markup(source: str, head: str, points: list[Point], count: int) -> Html:
    color, width = (TAKEN, 2.6) if count else ("#888", 1.3)
    marker = "url(#arrow-taken)" if count else "url(#arrow)"
    path = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points)
    parts = [h("path", {"d": path, "fill": "none", "stroke": color, "stroke-width": width, "marker-end": marker,
                        "stroke-linejoin": "round"})]
    if count:
        label_x, label_y = _label_at(points)
        parts.append(h("text", {"x": f"{label_x:.1f}", "y": f"{label_y:.1f}", "font-size": 11, "fill": TAKEN,
                                "font-weight": "bold"}, f"{count}\u00d7"))
    return h("g", {"class_": "edge taken" if count else "edge", "data-from": source, "data-to": head}, *parts)


def _drawn(nodes: dict[str, _Node], edges: list[tuple[str, str, str]]) -> Layout:
    return layout({node_id: node.size() for node_id, node in nodes.items()},
                  [(source, head) for source, head, _ in edges], top="start",
                  bottom="end" if "end" in nodes else None)


def graph_svg(workflow: WorkflowInfo, run: RunTrace | None = None) -> Html:
    """The workflow's steps and transitions as an inline ``<svg>``, the run's path marked if given."""
    nodes, edges = _nodes(workflow, run)
    drawing = _drawn(nodes, edges)
    drawn = []
    for (source_id, head_id, target), points in zip(edges, drawing.routes, strict=True):
        key = (END if source_id == "start" else source_id[2:], END if head_id == "end" else target)
        count = run.taken.get(key, 0) if run is not None else 0
        drawn.append(_edge_markup(source_id, head_id, points, count))
    arrow = [h("marker", {"id": name, "viewBox": "0 0 10 10", "refX": 9, "refY": 5, "markerWidth": 9,
                          "markerHeight": 9, "markerUnits": "userSpaceOnUse", "orient": "auto-start-reverse"},
               h("path", {"d": "M0,0 L10,5 L0,10 z", "fill": color}))
             for name, color in (("arrow", "#888"), ("arrow-taken", TAKEN))]
    width, height = drawing.width, drawing.height
    return h("svg", {"xmlns": "http://www.w3.org/2000/svg", "class_": "graph", "role": "img",
                     "aria-label": f"steps of {workflow.name}", "width": f"{width:.0f}", "height": f"{height:.0f}",
                     "viewBox": f"0 0 {width:.0f} {height:.0f}", "font-family": "system-ui, sans-serif"},
             h("defs", {}, *arrow), *drawn,
             *(_node_markup(node, drawing.nodes[node_id]) for node_id, node in nodes.items()))
