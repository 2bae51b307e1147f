"""Where the step graph's boxes go and how its edges run between them: a layered drawing.

Every node gets a layer by the longest path from the top (a loop's edge back up is turned
round for this, so layers stay a ranking), and an edge that spans several layers gets a
*joint* in each layer between, a slot of its own that no box takes. Layers are ordered to
cross few edges (barycentres, a few sweeps down and up) and placed under the nodes they
connect. An edge is then drawn with straight lines only: down (or up, for a loop's edge) from
its own place on its box's side, across in the gap between two layers at a height no other
edge there uses, on down through its joints, into its own place on the next box. Boxes sit in
layers and edges run sideways only in the gaps between layers and down only through their
own box's column or their own joints, so no edge passes behind a box it does not end at.

Pure geometry: sizes in, positions and polylines out. ``svg.py`` draws them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

#: Space between two boxes of a layer, and between a box and a joint or two joints.
BOX_GAP = 36.0
JOINT_GAP = 16.0
#: The space above and below the lines that cross a gap between layers, and between two of them.
GAP_PAD = 22.0
TRACK = 10.0
#: Lines nearer than this look like one; an edge moved aside from another moves this far.
APART = 3.0
NUDGE = 7.0
#: How far apart two edges leave or enter one side of a box, at most.
PORT_SPACING = 30.0
#: How far above a dot an edge that meets it off its middle turns towards its centre.
DOT_LEAD = 12.0
#: How far a step's edge back to itself reaches out to the right of its box.
SELF_LOOP = 18.0
MARGIN = 24.0
#: Rounds of ordering and of placing.
SWEEPS = 8

Point = tuple[float, float]


@dataclass(frozen=True)
class Size:
    """What the layout needs of a node: its size, and whether it is a round dot."""

    width: float
    height: float
    round: bool = False


@dataclass
class Placed:
    """A node's box, once placed (``x``, ``y``: its top left corner)."""

    width: float
    height: float
    round: bool = False
    layer: int = 0
    x: float = 0.0
    y: float = 0.0

    @property
    def center(self) -> float:
        """The middle of the box, across."""
        return self.x + self.width / 2


@dataclass
class Layout:
    """The drawing: each node's box, each edge's polyline (from its source to its head), the size."""

    nodes: dict[str, Placed]
    routes: list[list[Point]]
    width: float
    height: float


@dataclass
class _Slot:
    """A node or a joint in a layer."""

    id: str
    width: float
    joint: bool
    layer: int
    order: float = 0.0
    x: float = 0.0
    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    #: Per edge above / below: the slot at its other end, where it leaves that slot and where it
    #: meets this one (offsets from the middles).
    pulls_up: list[tuple[str, float, float]] = field(default_factory=list)
    pulls_down: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def center(self) -> float:
        return self.x + self.width / 2


def _back_edges(ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> set[int]:
    """The edges that close a loop, found by a depth-first walk from each node in turn."""
    out: dict[str, list[tuple[int, str]]] = {node: [] for node in ids}
    for index, (source, head) in enumerate(edges):
        out[source].append((index, head))
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    back: set[int] = set()
    for root in ids:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(out[root]))]
        while stack:
            node, pending = stack[-1]
            step = next(pending, None)
            if step is None:
                state[node] = 2
                stack.pop()
                continue
            index, head = step
            if state.get(head) == 1:
                back.add(index)
            elif head not in state:
                state[head] = 1
                stack.append((head, iter(out[head])))
    return back


def _layers(ids: Sequence[str], ranked: Sequence[tuple[str, str]], top: str | None,
            bottom: str | None) -> dict[str, int]:
    """Longest-path layers over acyclic edges: ``top`` alone in layer 0, ``bottom`` below all."""
    preds: dict[str, list[str]] = {node: [] for node in ids}
    for source, head in ranked:
        preds[head].append(source)
    layer: dict[str, int] = {}

    def depth(node: str) -> int:
        stack = [node]
        while stack:
            current = stack[-1]
            waiting = [p for p in preds[current] if p not in layer]
            if waiting:
                stack.extend(waiting)
                continue
            stack.pop()
            least = 0 if current == top or top is None else 1
            layer[current] = max([least, *(layer[p] + 1 for p in preds[current])])
        return layer[node]

    for node in ids:
        if node != bottom:
            depth(node)
    if bottom is not None:
        layer[bottom] = max([0, *(layer[p] + 1 for p in preds[bottom]), *(v + 1 for v in layer.values())])
    return layer


def _crossings(upper: Sequence[_Slot], slots: Mapping[str, _Slot]) -> int:
    """How many edges between a layer and the next cross each other, by the slots' order."""
    pairs = [(a.order, slots[b].order) for a in upper for b in a.down]
    return sum(1 for i, (a, b) in enumerate(pairs) for c, d in pairs[i + 1:] if (a - c) * (b - d) < 0)


def _order(layers: list[list[_Slot]], slots: Mapping[str, _Slot]) -> None:
    """Order each layer by the barycentres of its neighbours, keeping the order that crosses least."""

    def renumber(layer: list[_Slot]) -> None:
        for position, slot in enumerate(layer):
            slot.order = position

    def total() -> int:
        return sum(_crossings(layer, slots) for layer in layers[:-1])

    def sweep(downwards: bool) -> None:
        indices = range(1, len(layers)) if downwards else range(len(layers) - 2, -1, -1)
        for index in indices:
            layer = layers[index]
            for slot in layer:
                near = slot.up if downwards else slot.down
                if near:
                    slot.order = sum(slots[n].order for n in near) / len(near)
            layer.sort(key=lambda s: s.order)
            renumber(layer)

    for layer in layers:
        renumber(layer)
    best, kept = total(), [list(layer) for layer in layers]
    for round_number in range(SWEEPS):
        sweep(downwards=round_number % 2 == 0)
        found = total()
        if found < best:
            best, kept = found, [list(layer) for layer in layers]
    for index, layer in enumerate(kept):
        layers[index] = layer
        renumber(layer)


def _gap(left: _Slot, right: _Slot, loops: set[str]) -> float:
    gap = BOX_GAP if not (left.joint or right.joint) else JOINT_GAP
    return gap + (SELF_LOOP if left.id in loops else 0.0)


def _place_layer(layer: list[_Slot], wanted: Sequence[float], loops: set[str]) -> None:
    """Put each slot's centre as near ``wanted`` as the slots' order and gaps allow: the mean of
    packing from the left and packing from the right, which keeps every gap (both do)."""
    lefts = [centre - slot.width / 2 for slot, centre in zip(layer, wanted, strict=True)]
    from_left = list(lefts)
    for i in range(1, len(layer)):
        from_left[i] = max(lefts[i], from_left[i - 1] + layer[i - 1].width + _gap(layer[i - 1], layer[i], loops))
    from_right = list(lefts)
    for i in range(len(layer) - 2, -1, -1):
        from_right[i] = min(lefts[i], from_right[i + 1] - _gap(layer[i], layer[i + 1], loops) - layer[i].width)
    for slot, a, b in zip(layer, from_left, from_right, strict=True):
        slot.x = (a + b) / 2


def _place(layers: list[list[_Slot]], slots: Mapping[str, _Slot], loops: set[str]) -> None:
    """Across: each slot where its edges run straight to the slots they connect it to (on
    average), sweeping down and up."""
    for layer in layers:
        x = 0.0
        for i, slot in enumerate(layer):
            slot.x = x
            x += slot.width + (_gap(slot, layer[i + 1], loops) if i + 1 < len(layer) else 0.0)
    for round_number in range(SWEEPS):
        downwards = round_number % 2 == 0
        last = round_number == SWEEPS - 1
        order = layers[1:] if downwards else layers[-2::-1]
        for layer in order:
            wanted = []
            for slot in layer:
                pulls = slot.pulls_up + slot.pulls_down if last else (
                    slot.pulls_up if downwards else slot.pulls_down)
                wanted.append(sum(slots[n].center + theirs - mine for n, theirs, mine in pulls) / len(pulls)
                              if pulls else slot.center)
            _place_layer(layer, wanted, loops)


def _straighten(layers: list[list[_Slot]], slots: Mapping[str, _Slot], loops: set[str]) -> None:
    """Move slots, where their neighbours in the layer leave room, so that more of their edges
    run straight down: averages leave every edge of a slot a little crooked, which reads worse
    than one edge with a clear bend."""

    def straight(slot: _Slot, centre: float) -> tuple[int, int]:
        """How many of the slot's edges run straight with its centre there, and how firmly the slots
        they run to are held (by their own edges)."""
        count = firm = 0
        for other, theirs, mine in slot.pulls_up + slot.pulls_down:
            if abs(centre + mine - (slots[other].center + theirs)) < 0.5:
                count += 1
                firm += len(slots[other].pulls_up) + len(slots[other].pulls_down)
        return count, firm

    for _ in range(SWEEPS):
        moved = False
        for layer in layers:
            for i, slot in enumerate(layer):
                least = (layer[i - 1].x + layer[i - 1].width + _gap(layer[i - 1], slot, loops)) if i else -math.inf
                most = (layer[i + 1].x - _gap(slot, layer[i + 1], loops) - slot.width) if i + 1 < len(layer) \
                    else math.inf
                best, best_x = straight(slot, slot.center), slot.x
                for other, theirs, mine in slot.pulls_up + slot.pulls_down:
                    x = slots[other].center + theirs - mine - slot.width / 2
                    if least <= x <= most:
                        score = straight(slot, x + slot.width / 2)
                        if score > best:
                            best, best_x = score, x
                if best_x != slot.x:
                    slot.x, moved = best_x, True
        if not moved:
            return


def _ports(width: float, count: int) -> list[float]:
    """Offsets from a side's middle for ``count`` edges on it, in order from the left."""
    spacing = min(PORT_SPACING, width / (count + 1))
    return [(k - (count - 1) / 2) * spacing for k in range(count)]


def _on_side(node: Placed, offset: float, bottom: bool) -> Point:
    """The point ``offset`` from the middle of a node's top or bottom (on the circle, for a dot)."""
    x = node.center + offset
    half = node.height / 2
    rise = math.sqrt(max(0.0, half * half - offset * offset)) if node.round else half
    middle = node.y + half
    return (x, middle + rise if bottom else middle - rise)


def _between(x: float, one: float, other: float) -> bool:
    return min(one, other) < x < max(one, other)


def _tracks(jogs: list[tuple[int, float, float]]) -> dict[int, int]:
    """A height for each line that crosses one gap sideways, ``(id, from x, to x)``: no two share
    one, and the order crosses few others and never lays one's vertical over another's."""

    def cost(above: tuple[int, float, float], below: tuple[int, float, float]) -> float:
        (_, a_from, a_to), (_, b_from, b_to) = above, below
        if abs(a_to - b_from) < APART:  # above's way down would run along below's
            return 1000.0
        return float(_between(a_to, b_from, b_to)) + float(_between(b_from, a_from, a_to))

    order: list[tuple[int, float, float]] = []
    for jog in sorted(jogs, key=lambda j: (j[2] - j[1], j[1])):  # each where it adds the least cost
        under = [cost(jog, other) for other in order]  # jog above each of the others
        over = [cost(other, jog) for other in order]
        added = [sum(over[:at]) + sum(under[at:]) for at in range(len(order) + 1)]
        order.insert(added.index(min(added)), jog)
    return {jog[0]: track for track, jog in enumerate(order)}


def _straightened(points: list[Point]) -> list[Point]:
    """A polyline without repeated points or points in the middle of a straight stretch."""
    kept: list[Point] = []
    for point in points:
        if kept and abs(point[0] - kept[-1][0]) < 0.01 and abs(point[1] - kept[-1][1]) < 0.01:
            continue
        if len(kept) >= 2:
            (ax, ay), (bx, by) = kept[-2], kept[-1]
            if abs((bx - ax) * (point[1] - ay) - (by - ay) * (point[0] - ax)) < 0.01:
                kept[-1] = point
                continue
        kept.append(point)
    return kept


@dataclass
class _Segment:
    """One stretch of an edge, from a slot in one layer to a slot in the next."""

    edge: int
    upper: str
    lower: str
    #: Where it leaves the upper slot's bottom and meets the lower slot's top, from their middles.
    leaves: float = 0.0
    meets: float = 0.0
    #: The same, across the picture, once the slots are placed.
    start_x: float = 0.0
    end_x: float = 0.0
    #: Its height among the lines that cross its gap sideways (None: it runs straight down).
    track: int | None = None


class _Drawing:
    """The stages of ``layout``, over what they share: slots by id, layers, each edge's segments."""

    def __init__(self, sizes: Mapping[str, Size], edges: Sequence[tuple[str, str]], top: str | None,
                 bottom: str | None) -> None:
        self.sizes, self.edges = sizes, edges
        ids = list(sizes)
        self.back = _back_edges(ids, edges)
        self.loops = {source for source, head in edges if source == head}
        ranked = [(h, s) if i in self.back else (s, h) for i, (s, h) in enumerate(edges) if s != h]
        layer_of = _layers(ids, ranked, top, bottom)
        self.slots = {n: _Slot(n, sizes[n].width, False, layer_of[n]) for n in ids}
        self.segments: list[_Segment] = []
        for index, (source, head) in enumerate(edges):
            if source != head:
                self._chain(index, *((head, source) if index in self.back else (source, head)))
        self.layers: list[list[_Slot]] = [[] for _ in range(max(layer_of.values(), default=0) + 1)]
        for slot in self.slots.values():  # nodes in the order given, joints after; both then sorted
            self.layers[slot.layer].append(slot)
        self.band_top: list[float] = []
        self.gap_top: list[float] = []
        self.placed: dict[str, Placed] = {}

    def _chain(self, index: int, upper: str, lower: str) -> None:
        """The segments of edge ``index`` from ``upper`` down to ``lower``, a joint in every layer between."""
        chain = [upper]
        for depth in range(self.slots[upper].layer + 1, self.slots[lower].layer):
            joint = _Slot(f"joint:{index}:{depth}", 0.0, True, depth)
            self.slots[joint.id] = joint
            chain.append(joint.id)
        chain.append(lower)
        for a, b in pairwise(chain):
            self.slots[a].down.append(b)
            self.slots[b].up.append(a)
            self.segments.append(_Segment(index, a, b))

    def ports(self) -> None:
        """Each segment's place on the sides of its slots, in the order of the slots at the other
        ends (so that they need not cross there); a dot's slot widens for the edges around it."""
        below: dict[str, list[tuple[float, int]]] = {}
        above: dict[str, list[tuple[float, int]]] = {}
        for number, segment in enumerate(self.segments):
            below.setdefault(segment.upper, []).append((self.slots[segment.lower].order, number))
            above.setdefault(segment.lower, []).append((self.slots[segment.upper].order, number))
        for on_side, leaving in ((below, True), (above, False)):
            for slot_id, attached in on_side.items():
                attached.sort()
                slot = self.slots[slot_id]
                if slot.joint:
                    offsets = [0.0] * len(attached)
                elif self.sizes[slot_id].round:
                    offsets = _ports(math.inf, len(attached))
                    slot.width = max(slot.width, PORT_SPACING * (len(attached) - 1) + self.sizes[slot_id].width)
                else:
                    offsets = _ports(slot.width, len(attached))
                for (_, number), offset in zip(attached, offsets, strict=True):
                    if leaving:
                        self.segments[number].leaves = offset
                    else:
                        self.segments[number].meets = offset
        for segment in self.segments:
            self.slots[segment.upper].pulls_down.append((segment.lower, segment.meets, segment.leaves))
            self.slots[segment.lower].pulls_up.append((segment.upper, segment.leaves, segment.meets))

    def across(self) -> None:
        """Every slot placed across the picture, and every segment's ends with it."""
        _place(self.layers, self.slots, self.loops)
        _straighten(self.layers, self.slots, self.loops)
        least = min((s.x for s in self.slots.values()), default=0.0)
        for slot in self.slots.values():
            slot.x += MARGIN - least
        for segment in self.segments:
            segment.start_x = self.slots[segment.upper].center + segment.leaves
            segment.end_x = self.slots[segment.lower].center + segment.meets

    def tracks(self) -> list[int]:
        """A track for every segment that crosses its gap sideways, gap by gap from the top; the
        number of tracks in each gap."""
        counts = []
        for index in range(len(self.layers)):
            jogs = [(n, s.start_x, s.end_x) for n, s in enumerate(self.segments)
                    if self.slots[s.upper].layer == index and abs(s.start_x - s.end_x) >= 0.5]
            tracks = _tracks(jogs)
            for number, track in tracks.items():
                self.segments[number].track = track
            counts.append(len(jogs))
            self._untangle(sorted(jogs, key=lambda jog: tracks[jog[0]]))
        return counts

    def _untangle(self, jogs: list[tuple[int, float, float]]) -> None:
        """Two lines each leaving a column the other enters (crossed over two aligned slots) run
        along each other whichever crosses higher: the higher one enters its slot a little aside
        (a joint moves aside, taking the next segment's start with it)."""
        moved: set[str] = set()
        for i, (higher, _, higher_to) in enumerate(jogs):
            for _, lower_from, _ in jogs[i + 1:]:
                segment = self.segments[higher]
                if abs(higher_to - lower_from) >= APART or segment.lower in moved:
                    continue
                segment.end_x += NUDGE
                if self.slots[segment.lower].joint:
                    moved.add(segment.lower)
                    for after in self.segments:
                        if after.upper == segment.lower:
                            after.start_x += NUDGE
                higher_to = segment.end_x

    def heights(self, tracks: Sequence[int]) -> float:
        """Each layer as tall as its tallest node, each gap as tall as its tracks need; each node
        placed in the middle of its layer's height. Returns the picture's height."""
        y = MARGIN
        for index, layer in enumerate(self.layers):
            self.band_top.append(y)
            y += max((self.sizes[s.id].height for s in layer if not s.joint), default=0.0)
            self.gap_top.append(y)
            y += 2 * GAP_PAD + TRACK * max(0, tracks[index] - 1)
        for node, size in self.sizes.items():
            slot = self.slots[node]
            band = self.gap_top[slot.layer] - self.band_top[slot.layer]
            self.placed[node] = Placed(size.width, size.height, size.round, slot.layer, slot.center - size.width / 2,
                                       self.band_top[slot.layer] + (band - size.height) / 2)
        return self.gap_top[-1] + MARGIN

    def _side(self, slot_id: str, x: float, bottom: bool) -> list[Point]:
        """Where a segment leaves (``bottom``) or meets a slot at ``x``, from the slot outwards."""
        slot = self.slots[slot_id]
        if slot.joint:  # a joint's line runs the whole height of its layer
            return [(x, self.gap_top[slot.layer] if bottom else self.band_top[slot.layer])]
        box = self.placed[slot_id]
        if box.round and abs(x - box.center) > 0.01:  # the last stretch runs to the dot's centre
            lead = (x, box.y + box.height + DOT_LEAD if bottom else box.y - DOT_LEAD)
            r, cy = box.height / 2, box.y + box.height / 2
            distance = math.hypot(lead[0] - box.center, lead[1] - cy)
            return [(box.center + r * (lead[0] - box.center) / distance, cy + r * (lead[1] - cy) / distance), lead]
        return [_on_side(box, x - box.center, bottom)]

    def routes(self) -> list[list[Point]]:
        """Each edge's polyline, from its source to its head."""
        lines: dict[int, list[Point]] = {}
        for segment in self.segments:
            start = self._side(segment.upper, segment.start_x, bottom=True)
            end = self._side(segment.lower, segment.end_x, bottom=False)[::-1]
            middle: list[Point] = []
            if segment.track is not None:
                cross = self.gap_top[self.slots[segment.upper].layer] + GAP_PAD + TRACK * segment.track
                middle = [(start[-1][0], cross), (end[0][0], cross)]
            lines.setdefault(segment.edge, []).extend([*start, *middle, *end])
        routes: list[list[Point]] = []
        for index, (source, head) in enumerate(self.edges):
            if source == head:
                box = self.placed[source]
                right, reach = box.x + box.width, box.x + box.width + SELF_LOOP
                high, low = box.y + box.height * 0.3, box.y + box.height * 0.7
                routes.append([(right, high), (reach, high), (reach, low), (right, low)])
            else:
                points = _straightened(lines[index])
                routes.append(points[::-1] if index in self.back else points)
        return routes

    def width(self) -> float:
        """The picture's width."""
        right = max((s.x + s.width + (SELF_LOOP if s.id in self.loops else 0.0) for s in self.slots.values()),
                    default=0.0)
        return right + MARGIN


def layout(sizes: Mapping[str, Size], edges: Sequence[tuple[str, str]], *, top: str | None = None,
           bottom: str | None = None) -> Layout:
    """Place ``sizes``' nodes in layers and route ``edges`` (``(source, head)``, each once) round
    them; ``top`` goes alone in the first layer, ``bottom`` below all others."""
    drawing = _Drawing(sizes, edges, top, bottom)
    _order(drawing.layers, drawing.slots)
    drawing.ports()
    drawing.across()
    height = drawing.heights(drawing.tracks())
    return Layout(drawing.placed, drawing.routes(), drawing.width(), height)
