"""Limits and breakers as the store keeps them: small shared documents, and the rules that change them.

Every store keeps, beside its runs, a few *cells*: one small JSON document per limit (and
per key of a keyed limit), per breaker, and per limit overridden by ``tinywf limit set``.
A store changes a cell atomically (``Cells.change_cell``: the file store under the cell's
own ``flock``, PostgreSQL by a write fenced by the row's version, the memory store under a
lock), so a limit is exact across every process that shares the store. The rules here are
pure functions of a cell, the time and the attempt asking; every store runs the same ones.

A limit's cell::

    {"name", "key", "rate": [N, seconds] | null, "concurrency": N | null,   # as last declared
     "tokens", "at",                                  # the bucket: its level at that instant
     "holders": [[ticket, run, visit, epoch, since]], # attempts (or whole runs) in flight
     "queue": [[ticket, run, due]],                   # waiting, first come first served
     "hold"}                                          # seconds an attempt holds a slot, on average

A *ticket* names what holds or waits: ``<run>:<visit>:<key>`` for an action's attempts (each
attempt of one action has the same ticket, so the attempt a recovered run makes again takes
over the slot its dead process held), ``<run>:run`` for a whole run. A holder that can no
longer be in flight — its run ended, moved on to another visit, or (PostgreSQL) its claim's
lease ran out — is dropped when room is looked for (``Cells.holder_alive``). A waiter that
never came back for its room is dropped ``GRACE`` seconds after it was due.

A breaker's cell::

    {"name", "failures", "within", "reset",           # as last declared
     "state": "closed" | "open", "recent": [times],   # failed attempts counted while closed
     "half_open_at", "probe": [ticket, run, visit, epoch, since] | null, "waiters": [runs]}
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from tinywf_cli.clock import format_instant, rate_text

T = TypeVar("T")

#: Seconds a waiter keeps its place after it was due without coming back for it.
GRACE = 60.0
#: Bounds on when a waiter for a slot is told to look again (a slot that frees wakes it sooner).
MIN_WAIT = 0.05
MAX_WAIT = 60.0
#: What an attempt is taken to hold a slot for before any was measured (seconds).
FIRST_HOLD = 1.0
#: Rounding slack on token counts.
EPSILON = 1e-9
#: Run statuses in which a run has ended: its whole-run slot is given back (a failed run keeps
#: it: ``tinywf retry`` takes it on from where it failed).
LET_GO = frozenset({"finished", "cancelled"})

CellKind = Literal["limit", "breaker", "override"]


class Cells(Protocol):
    """What a store offers to keep limits and breakers: small documents changed atomically."""

    def read_cell(self, kind: CellKind, name: str, key: str | None) -> dict[str, Any] | None:
        """The cell as last written (``None`` when there is none), read without its lock."""
        ...

    def change_cell(self, kind: CellKind, name: str, key: str | None,
                    change: Callable[[dict[str, Any]], T]) -> T:
        """Apply ``change`` to the cell (``{}`` when there is none) atomically, and write it when it
        changed; ``change``'s result. ``change`` may run more than once (it must be pure)."""
        ...

    def delete_cell(self, kind: CellKind, name: str, key: str | None) -> bool:
        """Remove a cell; whether there was one."""
        ...

    def all_cells(self, kind: CellKind) -> list[dict[str, Any]]:
        """Every cell of ``kind``."""
        ...

    def holder_alive(self, holder: list[Any]) -> bool:
        """Whether the attempt or run ``holder`` names may still be in flight (``alive_by_head``)."""
        ...


def alive_by_head(status: str | None, visit: int | None, holder: list[Any]) -> bool:
    """The holder rule of a store that keeps no claims: a whole run holds until it ends; an action's
    attempt while its run is in that visit and running (or waiting: it took the slot and has not
    saved that it runs yet). ``status`` ``None``: no such run."""
    if status is None:
        return False
    if holder[2] is None:
        return status not in LET_GO
    return status in ("running", "waiting") and visit == holder[2]


# -- what asks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ticket:
    """The attempt (or whole run) that takes or waits for room: its ticket, run, visit (``None``
    for a whole run) and the epoch of its claim (PostgreSQL; else ``None``)."""

    ticket: str
    run: str
    visit: int | None
    epoch: int | None = None

    def holder(self, now: datetime) -> list[Any]:
        """The holder entry of this ticket, from ``now``."""
        return [self.ticket, self.run, self.visit, self.epoch, format_instant(now)]


@dataclass(frozen=True)
class LimitSpec:
    """A limit as the code declares it: name, key, ``(N, seconds)`` rate, concurrency."""

    name: str
    key: str | None
    rate: tuple[int, float] | None
    concurrency: int | None


@dataclass(frozen=True)
class BreakerSpec:
    """A breaker as the code declares it (seconds for ``within`` and ``reset``)."""

    name: str
    failures: int
    within: float
    reset: float
    on_open: str


@dataclass(frozen=True)
class Room:
    """The answer to an attempt asking a limit for room: go now (``held``: holding a slot, to give
    back after), or wait until ``due``."""

    go: bool
    due: datetime | None = None
    held: bool = False


@dataclass(frozen=True)
class Passage:
    """The answer to an attempt asking a breaker: go (``probe``: as the one half-open attempt), or
    not before ``due`` (the breaker is open)."""

    go: bool
    probe: bool = False
    due: datetime | None = None


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _after(now: datetime, seconds: float) -> datetime:
    # a due time rounded up to the next millisecond: the file store's due index keeps milliseconds
    # (rounded down), and a run woken a hair early would find its token not quite there yet
    when = now + timedelta(seconds=seconds)
    extra = 1000 - when.microsecond % 1000
    return when + timedelta(microseconds=extra if extra != 1000 else 0)


# -- limits ------------------------------------------------------------------------------------------


def effective(spec: LimitSpec, override: dict[str, Any] | None) -> LimitSpec:
    """The limit as it applies now: ``tinywf limit set`` wins over the code (a key's over the name's)."""
    if not override:
        return spec
    rate, concurrency = spec.rate, spec.concurrency
    for layer in (override.get("all"), (override.get("keys") or {}).get(spec.key) if spec.key is not None else None):
        if not layer:
            continue
        if "rate" in layer:
            rate = None if layer["rate"] is None else (int(layer["rate"][0]), float(layer["rate"][1]))
        if "concurrency" in layer:
            concurrency = layer["concurrency"]
    return LimitSpec(spec.name, spec.key, rate, concurrency)


def _fresh_limit(cell: dict[str, Any], spec: LimitSpec) -> None:
    cell.setdefault("name", spec.name)
    cell.setdefault("key", spec.key)
    cell.setdefault("holders", [])
    cell.setdefault("queue", [])
    cell.setdefault("hold", FIRST_HOLD)
    cell["rate"] = None if spec.rate is None else [spec.rate[0], spec.rate[1]]
    cell["concurrency"] = spec.concurrency


def _refill(cell: dict[str, Any], rate: tuple[int, float] | None, now: datetime) -> float:
    """The bucket's tokens at ``now`` (kept in the cell); ``inf`` without a rate."""
    if rate is None:
        cell.pop("tokens", None)
        cell.pop("at", None)
        return math.inf
    size, per = rate
    tokens, at = cell.get("tokens"), _instant(cell.get("at"))
    if tokens is None or at is None:
        level = float(size)  # a new bucket starts full
    elif now <= at:
        # another process, whose clock read came later, refilled it already: never count a span twice
        return float(tokens)
    else:
        level = min(float(size), float(tokens) + (now - at).total_seconds() * size / per)
    cell["tokens"], cell["at"] = level, format_instant(now)
    return level


def enter_limit(cell: dict[str, Any], declared: LimitSpec, override: dict[str, Any] | None, ticket: Ticket,
                now: datetime, alive: Callable[[list[Any]], bool]) -> Room:
    """Take room for ``ticket`` (a token and a slot, as the limit has them now: ``declared`` by the
    code, under its ``override``), or queue it.

    First come, first served: a waiter takes room only when enough is left for every waiter
    queued before it. A ticket that holds a slot already (its process died in the attempt,
    and the recovered run asks again) gives it back and asks first in line.
    """
    _fresh_limit(cell, declared)
    spec = effective(declared, override)
    holders: list[list[Any]] = cell["holders"]
    queue: list[list[Any]] = cell["queue"]
    stale = now - timedelta(seconds=GRACE)
    queue[:] = [q for q in queue if q[0] == ticket.ticket or datetime.fromisoformat(q[2]) >= stale]
    mine = [h for h in holders if h[0] == ticket.ticket]
    if mine:
        holders[:] = [h for h in holders if h[0] != ticket.ticket]
    place = next((i for i, q in enumerate(queue) if q[0] == ticket.ticket), None)
    position = place if place is not None else (0 if mine else len(queue))
    tokens = _refill(cell, spec.rate, now)
    concurrency = spec.concurrency
    room = math.inf if concurrency is None else concurrency - len(holders)
    if position >= room:
        kept = [h for h in holders if alive(h)]
        if len(kept) != len(holders):
            holders[:] = kept
            room = math.inf if concurrency is None else concurrency - len(holders)
    if position < room and tokens >= position + 1 - EPSILON:
        if place is not None:
            del queue[place]
        if concurrency is not None:
            holders.append(ticket.holder(now))
        if spec.rate is not None:
            cell["tokens"] = tokens - 1
        return Room(True, held=concurrency is not None)
    wait = 0.0
    if spec.rate is not None and tokens < position + 1 - EPSILON:
        size, per = spec.rate
        wait = (position + 1 - tokens) * per / size
    if concurrency is not None and position >= room:
        behind = int(position - max(room, 0)) // concurrency + 1
        # slots held by whole runs are held for as long as runs live: look again rarely (the run
        # that ends wakes the first waiter anyway)
        hold = MAX_WAIT if holders and all(h[2] is None for h in holders) else float(cell["hold"])
        wait = max(wait, min(MAX_WAIT, max(MIN_WAIT, hold * behind)))
    due = _after(now, max(wait, 0.001))
    entry = [ticket.ticket, ticket.run, format_instant(due)]
    if place is not None:
        queue[place] = entry
    else:
        queue.insert(position, entry)
    return Room(False, due)


def leave_limit(cell: dict[str, Any], override: dict[str, Any] | None, ticket: Ticket, now: datetime) -> list[str]:
    """Give back the slot ``ticket`` holds; the runs of the waiters that now have room, to wake
    (their due time is brought to ``now``)."""
    holders: list[list[Any]] = cell.get("holders") or []
    mine = [h for h in holders if h[0] == ticket.ticket]
    if not mine:
        return []
    cell["holders"] = holders = [h for h in holders if h[0] != ticket.ticket]
    since = _instant(mine[0][4])
    if since is not None and ticket.visit is not None:
        held = max(0.0, (now - since).total_seconds())
        cell["hold"] = round(0.8 * float(cell.get("hold", FIRST_HOLD)) + 0.2 * held, 6)
    concurrency = effective(_declared(cell), override).concurrency
    free = len(cell.get("queue") or []) if concurrency is None else concurrency - len(holders)
    woken: list[str] = []
    when = format_instant(now)
    for entry in (cell.get("queue") or [])[:max(free, 0)]:
        if datetime.fromisoformat(entry[2]) > now:
            entry[2] = when
            woken.append(entry[1])
    return woken


def leave_queue(cell: dict[str, Any], run_id: str) -> None:
    """Take every waiter of ``run_id`` out of the queue (the run was cancelled or paused)."""
    if cell.get("queue"):
        cell["queue"] = [q for q in cell["queue"] if q[1] != run_id]


def _declared(cell: dict[str, Any]) -> LimitSpec:
    """The limit as its code last declared it, from its cell."""
    rate = cell.get("rate")
    return LimitSpec(cell["name"], cell.get("key"), None if rate is None else (int(rate[0]), float(rate[1])),
                     cell.get("concurrency"))


def limit_row(cell: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """One row of ``tinywf limits``: what applies now (an override, else the code), and the counts."""
    now_applies = effective(_declared(cell), override)
    return {"name": cell["name"], "key": cell.get("key"),
            "rate": None if now_applies.rate is None else rate_text(*now_applies.rate),
            "concurrency": now_applies.concurrency, "in_flight": len(cell.get("holders") or []),
            "waiting": len(cell.get("queue") or [])}


# -- breakers ------------------------------------------------------------------------------------------


def _fresh_breaker(cell: dict[str, Any], spec: BreakerSpec) -> None:
    cell.setdefault("name", spec.name)
    cell.setdefault("state", "closed")
    cell.setdefault("recent", [])
    cell.setdefault("half_open_at", None)
    cell.setdefault("probe", None)
    cell.setdefault("waiters", [])
    cell["failures"], cell["within"], cell["reset"] = spec.failures, spec.within, spec.reset


def breaker_state(cell: dict[str, Any] | None, now: datetime) -> str:
    """``closed``, ``open`` or ``half_open`` at ``now``."""
    if not cell or cell.get("state", "closed") == "closed":
        return "closed"
    half = _instant(cell.get("half_open_at"))
    return "half_open" if cell.get("probe") is not None or (half is not None and half <= now) else "open"


def enter_breaker(cell: dict[str, Any], spec: BreakerSpec, ticket: Ticket, now: datetime,
                  alive: Callable[[list[Any]], bool]) -> Passage:
    """Let ``ticket``'s attempt through a breaker: always while closed; once half open, as the one
    probe; otherwise not (the run, when it waits, is noted to be woken when the breaker closes)."""
    _fresh_breaker(cell, spec)
    if cell["state"] == "closed":
        return Passage(True)
    probe = cell["probe"]
    if probe is not None and probe[0] == ticket.ticket:
        cell["probe"] = ticket.holder(now)  # the same attempt again (its process died in it)
        return Passage(True, probe=True)
    if probe is not None and not alive(probe):
        cell["probe"] = probe = None
    half = _instant(cell["half_open_at"]) or now
    if probe is None and half <= now:
        cell["probe"] = ticket.holder(now)
        return Passage(True, probe=True)
    due = half if half > now else _after(now, spec.reset)
    if spec.on_open == "wait" and ticket.run not in cell["waiters"]:
        cell["waiters"].append(ticket.run)
    return Passage(False, due=due)


def breaker_outcome(cell: dict[str, Any], spec: BreakerSpec, ticket: Ticket, ok: bool,
                    now: datetime) -> tuple[str | None, list[str]]:
    """Count an attempt's outcome: the change it made (``"opened"``, ``"closed"`` or ``None``) and,
    when it closed the breaker, the runs waiting for it, to wake."""
    _fresh_breaker(cell, spec)
    probe = cell["probe"]
    if probe is not None and probe[0] == ticket.ticket:
        cell["probe"] = None
        if ok:
            woken = cell["waiters"]
            cell.update(state="closed", recent=[], half_open_at=None, waiters=[])
            return "closed", woken
        cell["half_open_at"] = format_instant(now + timedelta(seconds=spec.reset))
        return "opened", []
    if ok or cell["state"] != "closed":
        return None, []
    since = now - timedelta(seconds=spec.within)
    recent = [t for t in cell["recent"] if datetime.fromisoformat(t) > since] + [format_instant(now)]
    cell["recent"] = recent[-spec.failures:]
    if len(recent) < spec.failures:
        return None, []
    cell.update(state="open", half_open_at=format_instant(now + timedelta(seconds=spec.reset)))
    return "opened", []


def leave_probe(cell: dict[str, Any], ticket: Ticket) -> None:
    """Give up the probe ``ticket`` took without an outcome (its attempt did not start)."""
    probe = cell.get("probe")
    if probe is not None and probe[0] == ticket.ticket:
        cell["probe"] = None


def reset_breaker(cell: dict[str, Any]) -> list[str]:
    """Close a breaker by hand; the runs waiting for it, to wake."""
    woken = list(cell.get("waiters") or [])
    cell.update(state="closed", recent=[], half_open_at=None, probe=None, waiters=[])
    return woken


def breaker_row(cell: dict[str, Any], now: datetime) -> dict[str, Any]:
    """One row of ``tinywf breakers``."""
    state = breaker_state(cell, now)
    within = float(cell.get("within") or 0)
    since = now - timedelta(seconds=within)
    failures = sum(1 for t in cell.get("recent") or [] if datetime.fromisoformat(t) > since)
    return {"name": cell["name"], "state": state, "failures": failures,
            "half_open_at": None if state == "closed" else cell.get("half_open_at")}


def snapshot(cell: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a cell (what a store compares with after a change, to write only a changed one)."""
    return copy.deepcopy(cell)


# -- the store's limits and breakers, for the engine and the runtime ----------------------------------


class Gates:
    """The limits and breakers of one store (its ``cells``), as a run held under ``epoch`` (the claim
    of a PostgreSQL session; ``None`` elsewhere) asks them."""

    def __init__(self, cells: Cells, epoch: int | None = None) -> None:
        self.cells = cells
        self.epoch = epoch

    def ticket(self, run_id: str, visit: int | None, key: str | None) -> Ticket:
        """The ticket of action ``key`` in ``visit`` of the run (``visit`` ``None``: the whole run)."""
        name = f"{run_id}:run" if visit is None else f"{run_id}:{visit}:{key}"
        return Ticket(name, run_id, visit, self.epoch)

    def override(self, name: str) -> dict[str, Any] | None:
        """What ``tinywf limit set`` says about limit ``name`` (all its keys, and each key)."""
        return self.cells.read_cell("override", name, None)

    def enter_limit(self, spec: LimitSpec, ticket: Ticket, now: datetime) -> Room:
        """Take room under a limit for ``ticket``, or queue it (``enter_limit``)."""
        override = self.override(spec.name)
        alive = self.cells.holder_alive
        return self.cells.change_cell("limit", spec.name, spec.key,
                                      lambda cell: enter_limit(cell, spec, override, ticket, now, alive))

    def leave_limit(self, name: str, key: str | None, ticket: Ticket, now: datetime) -> list[str]:
        """Give back ``ticket``'s slot; the runs to wake."""
        override = self.override(name)
        return self.cells.change_cell("limit", name, key, lambda cell: leave_limit(cell, override, ticket, now))

    def leave_queue(self, name: str, key: str | None, run_id: str) -> None:
        """Take ``run_id`` out of a limit's queue."""
        self.cells.change_cell("limit", name, key, lambda cell: leave_queue(cell, run_id))

    def enter_breaker(self, spec: BreakerSpec, ticket: Ticket, now: datetime) -> Passage:
        """Let an attempt through a breaker, or not (``enter_breaker``); a closed breaker is only read."""
        seen = self.cells.read_cell("breaker", spec.name, None)
        if seen is not None and seen.get("state") == "closed" and _same_breaker(seen, spec):
            return Passage(True)
        alive = self.cells.holder_alive
        return self.cells.change_cell("breaker", spec.name, None,
                                      lambda cell: enter_breaker(cell, spec, ticket, now, alive))

    def breaker_outcome(self, spec: BreakerSpec, ticket: Ticket, ok: bool, now: datetime,
                        probe: bool) -> tuple[str | None, list[str]]:
        """Count an attempt's outcome (``breaker_outcome``); a success through a closed breaker writes nothing."""
        if ok and not probe:
            return None, []
        return self.cells.change_cell("breaker", spec.name, None,
                                      lambda cell: breaker_outcome(cell, spec, ticket, ok, now))

    def leave_probe(self, spec: BreakerSpec, ticket: Ticket) -> None:
        """Give up the probe ``ticket`` took (its attempt waits for a limit instead)."""
        self.cells.change_cell("breaker", spec.name, None, lambda cell: leave_probe(cell, ticket))


def _same_breaker(cell: dict[str, Any], spec: BreakerSpec) -> bool:
    return (cell.get("failures"), cell.get("within"), cell.get("reset")) == (spec.failures, spec.within, spec.reset)


def cells_of(store: object) -> Cells | None:
    """The cells of a store (``store.cells``), or ``None`` for a store that keeps none."""
    cells = getattr(store, "cells", None)
    return cells if cells is not None and hasattr(cells, "change_cell") else None
