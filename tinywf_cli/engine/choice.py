"""``self.first(**waits)``: whichever of several waits comes first — events, timers, child runs.

A first is recorded as one slot whose parts are its branches, each a slot of its own kind as
if it were waited for alone (an event's has its resume id, a timer's its due time, a child's
its run id). While the first waits, each branch is a pending resume of the run; the branch
that ends first wins, and the slot records its name (the slot's ``value``) and its outcome (its
part), then the step goes on. The others are withdrawn: nothing of them is pending any more,
a withdrawn child keeps running, and a value sent later for a withdrawn event finds no wait and
queues under its key, as an early event does. A replay answers from the record: the same winner.

Which branch wins when several could: the answer being given (``resolve``, ``send``), then a
value queued for one of its events (in the order the branches were passed), then whichever of
the timers that came due, the event deadlines that passed and the child runs that ended came
first in time (in the order passed when at the same instant).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tinywf_cli.authoring.commands import Child, First, Sleep, WaitEvent
from tinywf_cli.engine.checkpoint import _Throw
from tinywf_cli.engine.values import adapter_for_type
from tinywf_cli.engine.waits import Waits
from tinywf_cli.model import RunHead
from tinywf_cli.stores.journal import Slot


class Choice(Waits):
    """The engine's ``yield self.first(...)``."""

    def first(self, command: First, index: int, slot: Slot | None) -> Any:
        """``name, value = yield self.first(**waits)``."""
        if slot is None:
            slot = self.begin_first(command, index)
        if slot.status == "waiting":
            self.settle_first(command, slot)
        assert slot.parts is not None and isinstance(slot.value, str)
        name = slot.value
        part, wait = slot.parts[name], command.waits[name]  # the same branches: the key says so
        if type(wait) is WaitEvent:
            value = self.event_outcome(part, adapter_for_type(wait.type))
        elif type(wait) is Sleep:
            value = part.due()
        else:
            value = self.child_outcome(part)
        return value if type(value) is _Throw else (name, value)

    def begin_first(self, command: First, index: int) -> Slot:
        """Record the branches as they begin (a child branch's run is created now)."""
        head = self.head
        parts: dict[str, Slot] = {}
        children = False
        for name, wait in command.waits.items():
            if type(wait) is WaitEvent:  # ``Engine.handle`` counted its channel
                parts[name] = self.event_slot(wait, 0, self._channels.get(wait.key, 0))
            elif type(wait) is Sleep:
                parts[name] = self.timer_slot(wait, 0)
            else:
                assert isinstance(wait, Child)
                run_id = self.start_child_run(wait)
                parts[name] = Slot(0, "child", wait.key, "waiting", request={"run_id": run_id},
                                   resume_id=f"{wait.key}@{head.visit}")
                children = True
        slot = Slot(index, "first", command.key, "waiting", parts=parts)
        self.put(slot)
        for name, part in parts.items():
            if part.kind == "child":
                self.cp.log("child_started", {"key": part.key, "run_id": (part.request or {}).get("run_id"),
                                              "wait": True, "branch": name})
            else:
                self.cp.log("wait_begin", self.begun(part) | {"branch": name})
        if children:
            self.commit()  # the children exist and are recorded here before the step goes on
        return slot

    def settle_first(self, command: First, slot: Slot) -> None:
        """Let the branch that came first win, or wait for one."""
        parts = slot.parts
        assert parts is not None
        answer = self.resolving
        if answer is not None:
            for name, part in parts.items():
                wait = command.waits[name]
                if part.kind == "event" and part.resume_id == answer.resume_id and type(wait) is WaitEvent:
                    value = self.take_answer(wait.key, adapter_for_type(wait.type))
                    self.event_done(part, value, answer.via, also=self.won(slot, name), within=slot)
                    return
        for name, part in parts.items():
            wait = command.waits[name]
            if part.kind == "event" and type(wait) is WaitEvent:
                queued = self.take_queued(wait.key, adapter_for_type(wait.type))
                if queued is not None:
                    self.event_done(part, queued[0], queued[1], queued=True, also=self.won(slot, name),
                                    within=slot)
                    return
        came = self.came_first(parts)
        if came is None:
            self.pause(slot)
        name, child = came
        part = parts[name]
        also = self.won(slot, name)
        if part.kind == "sleep":
            self.timer_done(part, also=also, within=slot)
        elif part.kind == "event":
            self.event_timed_out(part, also=also, within=slot)
        else:
            self.child_done(part, child, also=also, within=slot)

    def came_first(self, parts: dict[str, Slot]) -> tuple[str, RunHead | None] | None:
        """Of the timers due, the event deadlines passed and the children ended, the one that came
        first (and the child's head); None when none has."""
        now = self.now()
        candidates: list[tuple[datetime, int, str, RunHead | None]] = []
        for position, (name, part) in enumerate(parts.items()):
            if part.kind == "child":
                ended, child = self.child_ended(part)
                if ended:
                    candidates.append((now if child is None else min(child.updated_at, now), position, name, child))
                continue
            due = part.due()
            if due is not None and due <= now:
                candidates.append((due, position, name, None))
        if not candidates:
            return None
        _, _, name, child = min(candidates, key=lambda c: (c[0], c[1]))
        return name, child

    def won(self, slot: Slot, name: str) -> dict[str, Any]:
        """Mark branch ``name`` the winner of the first ``slot``; the values its end's entry adds."""
        assert slot.parts is not None
        slot.status = "done"
        slot.value = name
        return {"branch": name, "withdrawn": [other for other in slot.parts if other != name]}
