"""Limits and breakers, as the engine meets them: before an attempt (room under its limit, a way
through its breaker), after it (its slot given back, its outcome counted), and for a whole run
(``limit`` on the flow class: one slot from its first step to its end).

An attempt that must wait leaves its slot *gated*: the run waits durably (status ``waiting``,
a pending resume of kind ``limit`` or ``breaker`` with the time room is expected), holding no
lock, no thread and no slot, and ``tick`` takes it up when due — or sooner, when an attempt
that gives a slot back (or closes the breaker) wakes it (``woken``: the runtime brings their
due time forward once this run's session closed). A slot is given back *before* the attempt's
outcome is committed: a process killed in between makes the attempt again (as any attempt in
flight), and the slot it takes then is counted once.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, NoReturn

from tinywf_cli.authoring.commands import Action
from tinywf_cli.authoring.limits import Breaker, Limit
from tinywf_cli.clock import format_instant
from tinywf_cli.engine.base import EngineBase
from tinywf_cli.engine.checkpoint import error_of
from tinywf_cli.engine.state import new_instance
from tinywf_cli.errors import BreakerOpen, FlowError
from tinywf_cli.interrupts import is_interrupt
from tinywf_cli.model import PendingResume
from tinywf_cli.stores.journal import Slot
from tinywf_cli.stores.limits import BreakerSpec, Gates, LimitSpec


class Verdict(enum.Enum):
    """What ``Gating.admit`` decided for an attempt."""

    GO = "go"
    #: The attempt waits for room or for its breaker: its slot is gated.
    WAIT = "wait"


def limit_spec(limit: Limit) -> LimitSpec:
    """The store's view of a ``Limit``."""
    return LimitSpec(limit.name, limit.keyed, limit.tokens, limit.concurrency)


def breaker_spec(breaker: Breaker) -> BreakerSpec:
    """The store's view of a ``Breaker``."""
    return BreakerSpec(breaker.name, breaker.failures, breaker.within_seconds, breaker.reset_seconds,
                       breaker.on_open)


def limit_request(limit: Limit | LimitSpec) -> dict[str, Any]:
    """``{"limit": name}`` (and ``"key"``): the request of a pending ``limit`` resume."""
    key = limit.keyed if isinstance(limit, Limit) else limit.key
    return {"limit": limit.name} if key is None else {"limit": limit.name, "key": key}


class Gating(EngineBase):
    """The engine's limits and breakers."""

    def require_gates(self, what: str) -> Gates:
        """The store's gates; fails the run when its store keeps none."""
        if self.gates is None:
            self.cp.fail(error_of(FlowError(f"{what}: this store keeps no limits or breakers")))
        return self.gates

    # -- an action's attempts

    def admit(self, action: Action, slot: Slot) -> Verdict | BreakerOpen:
        """Before an attempt of ``action``: go, gate its slot, or refuse it (an open breaker with
        ``on_open="fail"``: the error to record as the attempt's)."""
        if action.limit is None and action.breaker is None:
            return Verdict.GO
        gates = self.require_gates(f"action '{action.key}'")
        ticket = gates.ticket(self.head.run_id, self.head.visit, action.key)
        now = self.now()
        probe = False
        if action.breaker is not None:
            spec = breaker_spec(action.breaker)
            passage = gates.enter_breaker(spec, ticket, now)
            if not passage.go:
                due = passage.due or now
                if spec.on_open == "fail":
                    return BreakerOpen(spec.name, format_instant(due))
                self.gate(slot, None, due)
                return Verdict.WAIT
            probe = passage.probe
        if action.limit is not None:
            room = gates.enter_limit(limit_spec(action.limit), ticket, now)
            if not room.go:
                if probe:
                    assert action.breaker is not None
                    gates.leave_probe(breaker_spec(action.breaker), ticket)
                self.gate(slot, limit_request(action.limit), room.due or now)
                return Verdict.WAIT
            if room.held:
                self.holding.add(action.key)
        if probe:
            self.probing.add(action.key)
        if slot.status == "gated":
            self.cp.log("wait_end", {"kind": "limit" if slot.request else "breaker", "key": slot.key,
                                     "resume_id": slot.resume_id})
            slot.status, slot.request, slot.due_at = "new", None, None
        return Verdict.GO

    def gate(self, slot: Slot, request: dict[str, Any] | None, due: datetime) -> None:
        """Leave ``slot`` waiting for room (``request`` names the limit) or for its breaker (``None``)."""
        began = slot.status != "gated" or (slot.request is None) != (request is None)
        slot.status = "gated"
        slot.request = request
        slot.due_at = format_instant(due)
        slot.resume_id = f"{slot.key}@{self.head.visit}" + (f".{slot.attempt + 1}" if slot.attempt else "")
        if began:
            values: dict[str, Any] = {"kind": "breaker" if request is None else "limit", "key": slot.key,
                                      "resume_id": slot.resume_id, "due_at": slot.due_at}
            if request is not None:
                values.update(request)
            self.cp.log("wait_begin", values)

    def settle(self, action: Action, ok: bool) -> None:
        """After an attempt of ``action`` (``ok``: its function returned): give its slot back and
        count its outcome, logging a breaker it opened or closed."""
        if action.limit is None and action.breaker is None:
            return
        gates = self.require_gates(f"action '{action.key}'")
        ticket = gates.ticket(self.head.run_id, self.head.visit, action.key)
        now = self.now()
        if action.limit is not None and action.key in self.holding:
            self.holding.discard(action.key)
            self.woken.extend(gates.leave_limit(action.limit.name, action.limit.keyed, ticket, now))
        if action.breaker is not None:
            probe = action.key in self.probing
            self.probing.discard(action.key)
            change, woken = gates.breaker_outcome(breaker_spec(action.breaker), ticket, ok, now, probe)
            if change is not None:
                self.cp.log(f"breaker_{change}", {"breaker": action.breaker.name, "key": action.key})
            self.woken.extend(woken)

    # -- a whole run

    def hold_run_limit(self) -> None:
        """Before the run goes on: take its slot of the flow's ``limit`` if it holds none yet, or
        wait for one (a ``limit`` pending resume, before any of its code runs)."""
        head = self.head
        declared = getattr(self.cls, "limit", None)
        # only a run that has not begun its first step takes one: a run already under way when the
        # flow gained its limit goes on as it began (and a resolve on its way is never dropped)
        if (declared is None or head.held_limit is not None or head.visit != 1 or self.slots
                or head.status not in ("running", "waiting") or self.dry):
            return
        limit = declared if isinstance(declared, Limit) else self.run_limit_of()
        if limit is None:
            return
        gates = self.require_gates(f"{self.cls.__name__}.limit")
        room = gates.enter_limit(limit_spec(limit), gates.ticket(head.run_id, None, None), self.now())
        request = limit_request(limit)
        resume_id = f"{limit.name}@{head.visit}"
        waited = any(p.kind == "limit" and p.resume_id == resume_id for p in head.pending)
        if not room.go:
            if not waited:
                self.cp.log("wait_begin", dict(request, kind="limit", key=limit.name, resume_id=resume_id,
                                               due_at=format_instant(room.due or self.now())))
            self.cp.pause([PendingResume(resume_id=resume_id, kind="limit", key=limit.name, request=request,
                                         due_at=room.due)], {})
        head.held_limit = (limit.name, limit.keyed)
        if waited:
            self.cp.log("wait_end", {"kind": "limit", "key": limit.name, "resume_id": resume_id})
        if head.status == "waiting" and not head.pending:
            head.status = "running"  # a child run not yet started: it starts now
        self.cp.resume()

    def run_limit_of(self) -> Limit | None:
        """What the flow's ``def limit(self)`` gives for this run (asked on its state as it is)."""
        try:
            wf = new_instance(self.cls, self.visit_state_json(), self.new_context())
            value = wf.limit()  # type: ignore[misc,operator]
        except BaseException as exc:
            if is_interrupt(exc):
                raise
            self.run_limit_failed(f"raised {type(exc).__name__}: {exc}")
        if value is not None and not isinstance(value, Limit):
            self.run_limit_failed(f"returned {value!r}, not a Limit (or None)")
        return value

    def run_limit_failed(self, what: str) -> NoReturn:
        """Fail the run: its ``limit()`` method could not say which limit it holds."""
        self.cp.fail(error_of(FlowError(f"{self.cls.__name__}.limit() {what}")))

    def let_go_run_limit(self) -> None:
        """The run finished: give its whole-run slot back (``Checkpoint.finish`` let go of it)."""
        held = self.cp.let_go
        if held is None or self.gates is None:
            return
        self.cp.let_go = None
        ticket = self.gates.ticket(self.head.run_id, None, None)
        self.woken.extend(self.gates.leave_limit(held[0], held[1], ticket, self.now()))
