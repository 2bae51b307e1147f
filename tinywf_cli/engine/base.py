"""What every part of the engine shares: the run being advanced, its checkpoint, the clock,
and the world of other runs; recording a slot, pausing on one, blocking the run."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn, Protocol

from pydantic_core import to_json

from tinywf_cli.authoring.commands import Child
from tinywf_cli.authoring.workflow import RunContext, Workflow
from tinywf_cli.clock import Clock
from tinywf_cli.engine.attempts import InFlight
from tinywf_cli.engine.checkpoint import Checkpoint, Outcome, Save
from tinywf_cli.engine.state import dump_state
from tinywf_cli.engine.values import Answer
from tinywf_cli.model import PendingResume, RunHead
from tinywf_cli.stores.journal import Entry, Slot
from tinywf_cli.stores.limits import Gates


class World(Protocol):
    """What the engine asks of the runtime beyond the run itself: other runs of its store."""

    @property
    def store_target(self) -> str:
        """The store the run lives in (``self.store_target`` in flow code)."""
        ...

    def start_child(self, parent: RunHead, command: Child, run_id: str) -> None:
        """Create the child run ``run_id`` (not advanced yet), or accept it when it is already
        this parent's child; raises a TinyWFError saying why it cannot be started."""
        ...

    def child_head(self, run_id: str) -> RunHead | None:
        """The child run's head as last saved (``None`` when it no longer exists)."""
        ...


def _discard(head: RunHead, entries: list[Entry]) -> None:
    """The save of a dry replay: nothing is kept."""


class EngineBase:
    """The state every part of the engine shares, and what they all do with it."""

    def __init__(self, cls: type[Workflow[Any]], head: RunHead, slots: list[Slot], clock: Clock, save: Save,
                 world: World | None = None, *, dry: bool = False, gates: Gates | None = None) -> None:
        self.cls = cls
        self.cp = Checkpoint(head, _discard if dry else save, clock)
        self.cp.hooks = tuple(cls.__tinywf_on_failure__)
        #: The run being advanced (the checkpoint's head: one object for the engine's life).
        self.head = head
        self.slots = slots
        self.clock = clock
        self.world = world
        self.dry = dry
        self.wf: Workflow[Any] | None = None
        #: The answer being given to an event, until its wait takes it.
        self.resolving: Answer | None = None
        #: How the last pass ended, and why when it did not go on.
        self.outcome: Outcome | None = None
        self.reason: str | None = None
        #: Child runs started by this call (the runtime advances them once this run is saved).
        self.started: list[str] = []
        #: The store's limits and breakers (``None``: a store that keeps none), and what this pass
        #: holds of them: the actions holding a slot, those that are a breaker's probe.
        self.gates = gates
        self.holding: set[str] = set()
        self.probing: set[str] = set()
        #: Runs waiting for room (or a breaker) that this call made room for: the runtime wakes
        #: them once this run is saved.
        self.woken: list[str] = []
        #: The attempts of actions in flight now, and whether they show a sign of life (the
        #: runtime hands ``inflight.alive`` to a session that renews a claim: PostgreSQL's).
        self.inflight = InFlight()
        self.index = 0
        self._keys: set[str] = set()
        self._channels: dict[str, int] = {}
        self._visit_json: bytes | None = None
        self._logs_at_start = head.visit_logs
        self._store_target = world.store_target if world is not None else ""

    def new_context(self) -> RunContext:
        """The context a workflow object of this run talks to (the engine's own)."""
        raise NotImplementedError

    def block(self, kind: str, message: str) -> NoReturn:
        """Block the run (see ``Checkpoint.block``); log calls counted in this pass were not kept."""
        self.head.visit_logs = self._logs_at_start
        self.cp.block(kind, message)

    def now(self) -> datetime:
        """The engine's clock."""
        return self.clock.now()

    def put(self, slot: Slot) -> None:
        """Record a slot (new or changed) for the next commit."""
        if slot.index == len(self.slots):
            self.slots.append(slot)
        self.cp.record(slot)

    def commit(self) -> None:
        """Save the run now."""
        self.cp.commit()

    def live_state(self) -> Any:
        """The JSON form of the step's live state."""
        assert self.wf is not None
        return dump_state(self.cls, self.wf.state)

    def visit_state_json(self) -> bytes:
        """The state at the top of the current visit, as JSON (cached per visit; pydantic's
        encoder: the text only goes to ``new_instance``, and a stored state is plain JSON)."""
        if self._visit_json is None:
            self._visit_json = to_json(self.head.visit_state)
        return self._visit_json


    def pending_of(self, slot: Slot) -> list[PendingResume]:
        """The pending resumes of a slot the run waits on."""
        def one(s: Slot, kind: Any) -> PendingResume:
            if s.status == "gated":
                kind = "breaker" if s.request is None else "limit"
            return PendingResume(resume_id=s.resume_id or s.key, kind=kind, key=s.key,
                                 request=s.request if kind in ("event", "child", "limit") else None, due_at=s.due())
        if slot.kind == "sleep":
            return [one(slot, "timer")]
        if slot.kind == "event":
            return [one(slot, "event")]
        if slot.kind == "child":
            return [one(slot, "child")]
        if slot.kind == "action":
            return [one(slot, "retry")]
        assert slot.parts is not None
        if slot.kind == "first":  # each branch, as if it were waited for alone
            return [pending for part in slot.parts.values() for pending in self.pending_of(part)]
        return [one(p, "retry") for p in slot.parts.values() if p.status in ("retrying", "gated")]

    def pause(self, slot: Slot) -> NoReturn:
        """Leave the run waiting on ``slot``."""
        waits = list(slot.parts.values()) if slot.kind == "first" and slot.parts is not None else [slot]
        expects = {s.resume_id: s.expects for s in waits if s.expects and s.resume_id}
        self.cp.pause(self.pending_of(slot), expects)
