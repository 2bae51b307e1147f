"""The step graph of the run page, read back as geometry: every transition drawn once, from its
step's box to the next one's, and no edge through any other box.

The SVG is parsed as a reader's eye would take it: boxes (``rect``), dots (``circle``) and
diamonds (``polygon``) by their ``data-node``; edges (``path``) by their ``data-from`` and
``data-to``, their curves sampled into short segments. Every example flow is drawn, a few
shapes the examples lack (a step that loops on itself, long jumps back, branches to the end),
and random flows (seeded, so a failure can be drawn again).
"""

from __future__ import annotations

import math
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from itertools import pairwise

import pytest
from clihelpers import FLOWS

from tinywf_cli.analysis.flow import END, StepInfo, Transition, WorkflowInfo
from tinywf_cli.analysis.graph import RunTrace
from tinywf_cli.analysis.source import analyze_source
from tinywf_cli.web.svg import graph_svg

SVG = "{http://www.w3.org/2000/svg}"
#: How close a point must be to a box's outline to be on it (the SVG's coordinates have one decimal).
ON = 0.6
#: An edge passing nearer than this to a box that is not one of its ends seems to touch it.
CLEARANCE = 4.0

SHAPES = '''
from tinywf_cli import Workflow, step


class Shapes(Workflow):
    """A loop on one step, jumps back over several, branches to the end from every height."""

    @step
    def first(self):
        return self.second if self.state.get("a") else None

    @step
    def second(self):
        if self.state.get("again"):
            return self.second
        return self.third if self.state.get("b") else self.fifth

    @step
    def third(self):
        if self.state.get("back"):
            return self.first
        return self.fourth if self.state.get("c") else None

    @step
    def fourth(self):
        if self.state.get("back"):
            return self.second
        return self.fifth

    @step
    def fifth(self):
        if self.state.get("c"):
            return getattr(self, self.state["next"])
        if self.state.get("d"):
            return self.nowhere
        return self.first if self.state.get("e") else None

    @step
    def lonely(self):
        return self.fifth
'''


@dataclass(frozen=True)
class Box:
    """A node's outline: a rectangle, or a circle (``r`` > 0) inside it."""

    left: float
    top: float
    right: float
    bottom: float
    r: float = 0.0

    def holds(self, x: float, y: float, margin: float = 0.0) -> bool:
        """Whether (x, y) is inside the box grown by ``margin`` (shrunk, if negative)."""
        return self.left - margin < x < self.right + margin and self.top - margin < y < self.bottom + margin

    def on_outline(self, x: float, y: float) -> bool:
        """Whether (x, y) lies on the outline."""
        if self.r:
            cx, cy = (self.left + self.right) / 2, (self.top + self.bottom) / 2
            return abs(math.hypot(x - cx, y - cy) - self.r) <= ON
        inside = self.holds(x, y, ON)
        return inside and not self.holds(x, y, -ON)

    def crossed_by(self, a: tuple[float, float], b: tuple[float, float], margin: float) -> bool:
        """Whether segment a-b enters the box grown by ``margin`` (a dot: its circle; a box: by
        Liang-Barsky clipping)."""
        (x1, y1), (x2, y2) = a, b
        if self.r:
            cx, cy = (self.left + self.right) / 2, (self.top + self.bottom) / 2
            length = math.hypot(x2 - x1, y2 - y1) or 1.0
            t = max(0.0, min(1.0, ((cx - x1) * (x2 - x1) + (cy - y1) * (y2 - y1)) / length ** 2))
            return math.hypot(x1 + t * (x2 - x1) - cx, y1 + t * (y2 - y1) - cy) < self.r + margin
        low, high = 0.0, 1.0
        for p, q in ((x1 - x2, x1 - (self.left - margin)), (x2 - x1, (self.right + margin) - x1),
                     (y1 - y2, y1 - (self.top - margin)), (y2 - y1, (self.bottom + margin) - y1)):
            if p == 0:
                if q <= 0:
                    return False
                continue
            t = q / p
            if p < 0:
                low = max(low, t)
            else:
                high = min(high, t)
            if low >= high:
                return False
        return True


def _points(d: str) -> list[tuple[float, float]]:
    """The points of a path's ``d`` (M, L, H, V and C; curves sampled), in absolute coordinates."""
    tokens = re.findall(r"[MLHVCZ]|-?\d+(?:\.\d+)?", d)
    points: list[tuple[float, float]] = []
    command, numbers = "", []
    for token in [*tokens, "Z"]:
        if token.isalpha():
            if command == "M" or command == "L":
                points += list(zip(numbers[0::2], numbers[1::2], strict=True))
            elif command == "H":
                points += [(x, points[-1][1]) for x in numbers]
            elif command == "V":
                points += [(points[-1][0], y) for y in numbers]
            elif command == "C":
                for i in range(0, len(numbers), 6):
                    (x0, y0), (x1, y1, x2, y2, x3, y3) = points[-1], numbers[i:i + 6]
                    for step in range(1, 33):
                        t = step / 32
                        u = 1 - t
                        points.append((u ** 3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t ** 3 * x3,
                                       u ** 3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t ** 3 * y3))
            command, numbers = token, []
        else:
            numbers.append(float(token))
    return points


@dataclass
class Drawing:
    """What an SVG shows: boxes by node, edges as (from, to, points), count labels, its size."""

    boxes: dict[str, Box]
    edges: list[tuple[str, str, list[tuple[float, float]]]]
    labels: list[tuple[float, float, str]]
    width: float
    height: float

    @classmethod
    def read(cls, svg: str) -> Drawing:
        """Parse an SVG ``graph_svg`` drew."""
        root = ET.fromstring(svg)
        boxes: dict[str, Box] = {}
        edges = []
        labels = []
        for group in root.iter(f"{SVG}g"):
            node = group.get("data-node")
            if node is not None:
                boxes[node] = _outline(group)
            if group.get("data-from") is not None:
                path = group.find(f"{SVG}path")
                assert path is not None
                edges.append((group.get("data-from", ""), group.get("data-to", ""), _points(path.get("d", ""))))
                for text in group.iter(f"{SVG}text"):
                    labels.append((float(text.get("x", 0)), float(text.get("y", 0)), text.text or ""))
        return cls(boxes, edges, labels, float(root.get("width", 0)), float(root.get("height", 0)))


def _outline(group: ET.Element) -> Box:
    # the first shape drawn is the outline (the end's ring comes before its dot)
    shape = next(e for e in group.iter() if e.tag in (f"{SVG}rect", f"{SVG}circle", f"{SVG}polygon"))
    if shape.tag == f"{SVG}rect":
        x, y = float(shape.get("x", 0)), float(shape.get("y", 0))
        return Box(x, y, x + float(shape.get("width", 0)), y + float(shape.get("height", 0)))
    if shape.tag == f"{SVG}circle":
        cx, cy, r = (float(shape.get(k, 0)) for k in ("cx", "cy", "r"))
        return Box(cx - r, cy - r, cx + r, cy + r, r)
    corners = [tuple(map(float, p.split(","))) for p in shape.get("points", "").split()]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return Box(min(xs), min(ys), max(xs), max(ys))


def _node_of(workflow: WorkflowInfo, source: str, target: str) -> str:
    """The ``data-node`` an edge ``(source, target)`` of ``workflow.edges()`` ends at."""
    if target == END:
        return "end"
    if target in workflow.step_names:
        return f"s:{target}"
    return f"?:{source}" if target == "?" else f"x:{source}:{target}"


def _workflows() -> list[tuple[str, WorkflowInfo]]:
    found = []
    for flow in sorted(FLOWS.glob("*.py")):
        for workflow in analyze_source(flow.read_text(encoding="utf-8"), flow.name).workflows:
            found.append((f"{flow.stem}:{workflow.name}", workflow))
    found += [("shapes:Shapes", analyze_source(SHAPES, "shapes.py").workflow())]
    return found


WORKFLOWS = _workflows()


def _every_edge_taken(workflow: WorkflowInfo) -> RunTrace:
    """A run that took every transition (so every edge carries a count) and now waits in the last step."""
    return RunTrace("r", workflow.name, "waiting", workflow.steps[-1].name,
                    {name: 3 for name in workflow.step_names}, {edge: 12 for edge in workflow.edges()})


def test_the_examples_are_all_drawn() -> None:
    assert len(WORKFLOWS) >= len(list(FLOWS.glob("*.py"))) + 1


def assert_drawn_between_boxes(workflow: WorkflowInfo, run: RunTrace | None) -> None:
    """Every transition drawn once, from its box's outline to the next one's, through no box."""
    drawing = Drawing.read(graph_svg(workflow, run))
    wanted = sorted(("start" if a == END else f"s:{a}", _node_of(workflow, a, b)) for a, b in workflow.edges())
    assert sorted((a, b) for a, b, _ in drawing.edges) == wanted
    for source, head, points in drawing.edges:
        edge = f"{source} -> {head}"
        assert len(points) >= 2, edge
        assert drawing.boxes[source].on_outline(*points[0]), f"{edge} does not start on {source}: {points[0]}"
        assert drawing.boxes[head].on_outline(*points[-1]), f"{edge} does not end on {head}: {points[-1]}"
        for a, b in pairwise(points):
            for node, box in drawing.boxes.items():
                own = node in (source, head)
                # its own ends it may touch, never cross; any other box it keeps clear of
                assert not box.crossed_by(a, b, -ON if own else CLEARANCE), f"{edge}: {a}-{b} crosses {node}"
            for x, y in (a, b):
                assert 0 <= x <= drawing.width and 0 <= y <= drawing.height, f"{edge}: {(x, y)} is off the picture"


def assert_no_two_edges_run_along_one_line(workflow: WorkflowInfo) -> None:
    """Two edges that share a stretch could be read as one: approve -> end along pay's would say
    approve -> pay -> end."""
    drawing = Drawing.read(graph_svg(workflow))
    stretches = []
    for source, head, points in drawing.edges:
        for a, b in pairwise(points):
            stretches.append((f"{source} -> {head}", a, b))
    for i, (one, a, b) in enumerate(stretches):
        for other, c, d in stretches[i + 1:]:
            if one != other:
                assert _shared_length(a, b, c, d) <= 1.0, f"{one} and {other} run along one line at {a}-{b}"


@pytest.mark.parametrize("traced", [False, True], ids=["plain", "traced"])
@pytest.mark.parametrize(("name", "workflow"), WORKFLOWS, ids=[name for name, _ in WORKFLOWS])
def test_every_transition_is_drawn_once_from_box_to_box_and_through_no_other(
        name: str, workflow: WorkflowInfo, traced: bool) -> None:
    assert_drawn_between_boxes(workflow, _every_edge_taken(workflow) if traced else None)


@pytest.mark.parametrize(("name", "workflow"), WORKFLOWS, ids=[name for name, _ in WORKFLOWS])
def test_no_two_edges_run_along_one_line(name: str, workflow: WorkflowInfo) -> None:
    assert_no_two_edges_run_along_one_line(workflow)


def random_workflow(seed: int) -> WorkflowInfo:
    """A workflow of up to 14 steps whose steps lead anywhere: to steps (themselves, earlier ones,
    later ones), to the end, somewhere computed, to names that are no step."""
    rng = random.Random(seed)
    names = [f"step_{i}" for i in range(rng.randint(1, 14))]
    steps = []
    for i, name in enumerate(names):
        transitions = []
        for _ in range(rng.randint(0, 4)):
            roll = rng.random()
            if roll < 0.15:
                transitions.append(Transition("end", None, "None", 1))
            elif roll < 0.2:
                transitions.append(Transition("computed", None, "self.next", 1))
            elif roll < 0.25:
                transitions.append(Transition("missing", f"nothing_{rng.randint(0, 2)}", "self.nothing", 1))
            else:
                transitions.append(Transition("step", rng.choice(names), "self.step", 1))
        steps.append(StepInfo(name, 1, i == 0, "Random", tuple(transitions), ()))
    return WorkflowInfo("Random", 1, None, None, names[0], tuple(steps), ())


@pytest.mark.parametrize("seed", range(60))
def test_random_flows_are_drawn_between_boxes_too(seed: int) -> None:
    workflow = random_workflow(seed)
    assert_drawn_between_boxes(workflow, None)
    assert_drawn_between_boxes(workflow, _every_edge_taken(workflow))
    assert_no_two_edges_run_along_one_line(workflow)
    assert_counts_outside_the_boxes(workflow)


def _shared_length(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float],
                   d: tuple[float, float]) -> float:
    """How long segments a-b and c-d lie on top of each other (0 unless they are collinear)."""
    (ax, ay), (bx, by), (cx, cy), (dx, dy) = a, b, c, d
    length = math.hypot(bx - ax, by - ay)
    if length == 0:
        return 0.0
    ux, uy = (bx - ax) / length, (by - ay) / length
    for px, py in (c, d):  # both ends of c-d on (or as near as looks the same) the line through a-b
        if abs((px - ax) * uy - (py - ay) * ux) > 2.0:
            return 0.0
    along = sorted(((cx - ax) * ux + (cy - ay) * uy, (dx - ax) * ux + (dy - ay) * uy))
    return max(0.0, min(length, along[1]) - max(0.0, along[0]))


@pytest.mark.parametrize(("name", "workflow"), WORKFLOWS, ids=[name for name, _ in WORKFLOWS])
def test_counts_on_edges_stay_out_of_the_boxes(name: str, workflow: WorkflowInfo) -> None:
    assert_counts_outside_the_boxes(workflow)


def assert_counts_outside_the_boxes(workflow: WorkflowInfo) -> None:
    """Each edge's count (every edge taken) is drawn where no box is."""
    drawing = Drawing.read(graph_svg(workflow, _every_edge_taken(workflow)))
    assert len(drawing.labels) == len(drawing.edges)
    for x, y, text in drawing.labels:
        label = Box(x, y - 9, x + 7 * len(text), y + 2)  # 11px text, its baseline at y
        for node, box in drawing.boxes.items():
            assert not (label.left < box.right and box.left < label.right and label.top < box.bottom
                        and box.top < label.bottom), f"{text} at {(x, y)} overlaps {node}"


def test_expense_approval_goes_round_pay_to_the_end() -> None:
    """The case that was read as approve -> pay -> end."""
    workflow = analyze_source((FLOWS / "expense_approval.py").read_text(encoding="utf-8"), "x.py").workflow()
    drawing = Drawing.read(graph_svg(workflow))
    (points,) = [p for a, b, p in drawing.edges if (a, b) == ("s:approve", "end")]
    pay = drawing.boxes["s:pay"]
    assert any(x < pay.left or x > pay.right for x, _ in points)  # beside pay, not behind it


def test_the_picture_fits_its_boxes() -> None:
    for _, workflow in WORKFLOWS:
        drawing = Drawing.read(graph_svg(workflow))
        for box in drawing.boxes.values():
            assert box.left >= 0 and box.right <= drawing.width and box.top >= 0 and box.bottom <= drawing.height


def test_a_path_is_read_as_drawn() -> None:
    assert _points("M0,0 L10,0 V5 H2") == [(0, 0), (10, 0), (10, 5), (2, 5)]
    curve = _points("M0,0 C0,10 10,10 10,0")
    assert curve[0] == (0, 0) and curve[-1] == (10, 0) and max(y for _, y in curve) == pytest.approx(7.5)
    assert Box(0, 0, 10, 10).crossed_by((-5, 5), (15, 5), 0)
    assert not Box(0, 0, 10, 10).crossed_by((-5, 12), (15, 12), 0)
    assert Box(0, 0, 10, 10).crossed_by((-5, 12), (15, 12), 4)
    assert Box(0, 0, 10, 10).on_outline(5, 10) and not Box(0, 0, 10, 10).on_outline(5, 5)
    dot = Box(0, 0, 18, 18, 9)
    assert dot.crossed_by((9, -5), (9, 5), 0) and not dot.crossed_by((16, -5), (16, 2), -ON)
    assert dot.on_outline(9 + 6, 9 - math.sqrt(81 - 36)) and not dot.on_outline(0, 0)
