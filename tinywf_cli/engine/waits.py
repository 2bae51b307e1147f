"""Waits: timers (``sleep``), events (``wait_event``) and child runs, each recorded when it
begins and settled when its time, its value or the child's end comes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from tinywf_cli.authoring.commands import Child, Sleep, StartChild, WaitEvent
from tinywf_cli.clock import format_instant
from tinywf_cli.engine.base import EngineBase
from tinywf_cli.engine.checkpoint import _Throw, error_of
from tinywf_cli.engine.values import (
    NO_JSON,
    NotJSON,
    TextValue,
    adapter_for_type,
    describe_type,
    json_of_text,
    restore,
    to_json_value,
    validation_message,
)
from tinywf_cli.errors import ChildFailed, EventTimeout, FlowError, InvalidRunId, InvalidValue, TinyWFError
from tinywf_cli.model import RunHead
from tinywf_cli.names import is_run_id
from tinywf_cli.stores.journal import Slot


class Waits(EngineBase):
    """The engine's waits: ``yield self.sleep(...)``, ``self.wait_event(...)`` and ``self.child(...)``."""

    # -- timers

    def due_in(self, seconds: float, what: str) -> datetime:
        """Now plus ``seconds``; fails the run when that lies past what a date can hold."""
        try:
            return self.now() + timedelta(seconds=seconds)
        except OverflowError:
            self.cp.fail(error_of(FlowError(f"{what} would end after the year 9999")))

    def sleep(self, command: Sleep, index: int, slot: Slot | None) -> datetime:
        """``yield self.sleep(...)`` / ``self.sleep_until(...)``."""
        if slot is None:
            slot = self.timer_slot(command, index)
            self.put(slot)
            self.cp.log("wait_begin", self.begun(slot))
        due = slot.due()
        assert due is not None
        if slot.status == "waiting":
            if due > self.now():
                self.pause(slot)
            self.timer_done(slot)
        return due

    def timer_done(self, slot: Slot, *, also: dict[str, Any] | None = None, within: Slot | None = None) -> None:
        """A timer came due: recorded (in ``within``, a first's slot, when it is a part of one) and
        committed; the run is running again."""
        slot.status = "done"
        self.put(within or slot)
        self.cp.log("wait_end", {"kind": "timer", "key": slot.key, "resume_id": slot.resume_id} | (also or {}))
        self.wait_ended()

    def timer_slot(self, command: Sleep, index: int) -> Slot:
        """The slot of a timer that begins now."""
        start = command.until or self.due_in(command.seconds or 0.0, f"sleep '{command.key}'")
        return Slot(index, "sleep", command.key, "waiting", due_at=format_instant(start),
                    resume_id=f"{command.key}@{self.head.visit}")

    @staticmethod
    def begun(slot: Slot) -> dict[str, Any]:
        """The values of a timer's or an event's ``wait_begin`` entry."""
        begun: dict[str, Any] = {"kind": "timer" if slot.kind == "sleep" else "event", "key": slot.key,
                                 "resume_id": slot.resume_id}
        if slot.due_at is not None:
            begun["due_at"] = slot.due_at
        return begun

    def wait_ended(self) -> None:
        """A wait ended: the run runs again, saved before the step goes on."""
        self.head.status = "running"
        self.head.pending = []
        self.commit()

    # -- events

    def wait_event(self, command: WaitEvent, index: int, slot: Slot | None) -> Any:
        """``yield self.wait_event(...)``; waiting on its key again in this visit takes the key's next
        channel (``key@visit.N``, counted by ``Engine.handle``)."""
        adapter = adapter_for_type(command.type)
        if slot is None:
            slot = self.event_slot(command, index, self._channels.get(command.key, 0))
            self.put(slot)
            self.cp.log("wait_begin", self.begun(slot))
        if slot.status == "waiting":
            self.settle_event(command, slot, adapter)
        return self.event_outcome(slot, adapter)

    def event_slot(self, command: WaitEvent, index: int, channel: int) -> Slot:
        """The slot of the ``channel``-th wait on an event's key that begins now."""
        deadline = command.deadline
        if deadline is None and command.timeout is not None:
            deadline = self.due_in(command.timeout, f"wait_event '{command.key}' timeout")
        try:
            request = to_json_value(command.request)
        except NotJSON as exc:
            self.cp.fail(error_of(FlowError(f"wait_event '{command.key}': request must be JSON: {exc}")))
        return Slot(index, "event", command.key, "waiting",
                    due_at=None if deadline is None else format_instant(deadline),
                    resume_id=event_resume_id(command.key, self.head.visit, channel), request=request,
                    expects=describe_type(command.type))

    def event_outcome(self, slot: Slot, adapter: Any) -> Any:
        """What the step gets for an event that ended: its value, or ``EventTimeout`` at the yield."""
        if slot.status == "timed_out":
            return _Throw(EventTimeout(slot.key, slot.due_at or "its deadline"))
        try:
            return restore(adapter, slot.value)
        except ValidationError as exc:
            self.block("InvalidEventValue",
                          f"event '{slot.key}' recorded a value that no longer fits the wait's type "
                          f"({validation_message(exc)}): the type changed under a live run; restore it, "
                          f"then `tinywf retry {self.head.run_id}`")

    def settle_event(self, command: WaitEvent, slot: Slot, adapter: Any) -> None:
        """Resolve a waiting event from the answer being given, the queue, or its deadline."""
        answer = self.resolving
        if answer is not None and answer.resume_id == slot.resume_id:
            self.event_done(slot, self.take_answer(command.key, adapter), answer.via)
            return
        queued = self.take_queued(command.key, adapter)
        if queued is not None:
            self.event_done(slot, queued[0], queued[1], queued=True)
            return
        due = slot.due()
        if due is not None and due <= self.now():
            self.event_timed_out(slot)
            return
        self.pause(slot)

    def event_timed_out(self, slot: Slot, *, also: dict[str, Any] | None = None,
                        within: Slot | None = None) -> None:
        """An event's deadline passed: recorded (in ``within`` when it is a part of a first) and
        committed; ``EventTimeout`` is raised at its yield."""
        slot.status = "timed_out"
        self.put(within or slot)
        self.cp.log("wait_end", {"kind": "event", "key": slot.key, "resume_id": slot.resume_id,
                                 "timed_out": True} | (also or {}))
        self.wait_ended()

    def take_answer(self, key: str, adapter: Any) -> Any:
        """The answer being given, validated for the wait on ``key`` that takes it (InvalidValue:
        nothing was written yet)."""
        answer = self.resolving
        assert answer is not None
        self.resolving = None
        value = validate_event(key, answer.value, adapter)
        self.cp.answer = None
        return value

    def take_queued(self, key: str, adapter: Any) -> tuple[Any, str | None] | None:
        """The oldest value queued for event ``key`` that the wait's type accepts, and how it came
        (those it refuses are dropped, logged as ``event_rejected``); None when there is none."""
        head = self.head
        queue = head.inbox.get(key)
        while queue:
            form, raw, *rest = queue.pop(0)
            via = rest[0] if rest else None  # queued before tinywf recorded how values came: unknown
            if not queue:
                del head.inbox[key]
            try:
                value = validate_event(key, TextValue(raw) if form == "text" else raw, adapter)
            except InvalidValue as exc:
                self.cp.log("event_rejected", {"key": key, "value": raw, "error": exc.message})
                continue
            return value, via
        return None

    def event_done(self, slot: Slot, value: Any, via: str | None, *, queued: bool = False,
                   also: dict[str, Any] | None = None, within: Slot | None = None) -> None:
        """Record an event's value (in the slot ``within``, a first's, when it is a part of one) and
        commit: the run is running again. The audit log says what was answered, and how it came
        (and ``also``)."""
        slot.status = "done"
        slot.value = value
        self.put(within or slot)
        values: dict[str, Any] = {"kind": "event", "key": slot.key, "resume_id": slot.resume_id, "value": value}
        if via is not None:
            values["via"] = via
        if queued:
            values["queued"] = True
        self.cp.log("wait_end", values | (also or {}))
        self.wait_ended()

    # -- child runs

    def child(self, command: Child, index: int, slot: Slot | None) -> Any:
        """``yield self.child(...)`` (wait for its end) or ``self.start_child(...)`` (its id)."""
        head = self.head
        if slot is None:
            run_id = self.start_child_run(command)
            if isinstance(command, StartChild):
                slot = Slot(index, "start_child", command.key, "done", value=run_id)
            else:
                slot = Slot(index, "child", command.key, "waiting", request={"run_id": run_id},
                            resume_id=f"{command.key}@{head.visit}")
            self.put(slot)
            self.cp.log("child_started", {"key": command.key, "run_id": run_id, "wait": command.wait})
            self.commit()  # the child exists and is recorded here before the step goes on
        if slot.kind == "start_child":
            return slot.value
        if slot.status == "waiting":
            self.settle_child(slot)
        return self.child_outcome(slot)

    @staticmethod
    def child_outcome(slot: Slot) -> Any:
        """What the step gets for a child that ended: its final state, or ``ChildFailed`` at the yield."""
        if slot.status == "failed":
            error = slot.error or {}
            return _Throw(ChildFailed(str(error.get("run_id")), str(error.get("status")),
                                      error.get("error")))
        return slot.value

    def start_child_run(self, command: Child) -> str:
        """Create the child run of ``command`` (not advanced yet: the runtime does once this run is
        saved) and note it among the run's children; returns its id. Fails the run when it cannot."""
        head = self.head
        run_id = command.run_id or f"{head.run_id}.{command.key}"
        if not is_run_id(run_id):
            self.cp.fail(error_of(FlowError(f"child '{command.key}': {InvalidRunId(run_id).message}")))
        if self.world is None:
            self.cp.fail(error_of(FlowError(f"child '{command.key}': this runtime cannot start child runs")))
        try:
            self.world.start_child(head, command, run_id)
        except TinyWFError as exc:
            self.cp.fail({"type": type(exc).__name__,
                          "message": f"child '{command.key}' could not be started: {exc.message}"})
        if run_id not in head.children:
            head.children.append(run_id)
        self.started.append(run_id)
        return run_id

    def settle_child(self, slot: Slot) -> None:
        """Take the child's outcome when it has ended; otherwise wait for it."""
        ended, child = self.child_ended(slot)
        if not ended:
            self.pause(slot)
        self.child_done(slot, child)

    def child_ended(self, slot: Slot) -> tuple[bool, RunHead | None]:
        """Whether the child run of ``slot`` has ended (one that no longer exists has), and its head."""
        run_id = str((slot.request or {}).get("run_id"))
        child = self.world.child_head(run_id) if self.world is not None else None
        return child is None or child.status in ("finished", "failed", "cancelled"), child

    def child_done(self, slot: Slot, child: RunHead | None, *, also: dict[str, Any] | None = None,
                   within: Slot | None = None) -> None:
        """Record how the child run of ``slot`` ended (in the slot ``within``, a first's, when it is
        a part of one) and commit: the run is running again."""
        run_id = str((slot.request or {}).get("run_id"))
        if child is not None and child.status == "finished":
            slot.status = "done"
            slot.value = child.state
            self.cp.log("child_ended", {"key": slot.key, "run_id": run_id, "status": "finished"} | (also or {}))
        else:
            status = child.status if child is not None else "missing"
            error = child.error.model_dump() if child is not None and child.error is not None else None
            if child is None:
                error = {"type": "RunNotFound", "message": f"the child run '{run_id}' no longer exists"}
            slot.status = "failed"
            slot.error = {"type": "ChildFailed", "message": f"child run '{run_id}' {status}",
                          "run_id": run_id, "status": status, "error": error}
            self.cp.log("child_ended", {"key": slot.key, "run_id": run_id, "status": status} | (also or {}))
        self.put(within or slot)
        self.wait_ended()


def event_resume_id(key: str, visit: int, channel: int) -> str:
    """The resume id of the ``channel``-th wait on event ``key`` in ``visit``: ``key@visit``, then
    ``key@visit.N``."""
    return f"{key}@{visit}" + (f".{channel}" if channel > 1 else "")


def validate_event(key: str, raw: Any, adapter: Any) -> Any:
    """The JSON form of an event value, validated against the wait's type.

    A ``TextValue`` (typed on a command line) is taken as JSON when it parses and fits the
    type, else as the text itself; JSON that tinywf could not keep is refused.
    """
    if isinstance(raw, TextValue):
        try:
            parsed = json_of_text(raw.text)
        except NotJSON as exc:  # JSON that tinywf cannot keep is refused, never taken as a string
            raise InvalidValue(f"invalid value for event '{key}': {exc}") from None
        if parsed is NO_JSON:
            return validate_event(key, raw.text, adapter)
        try:
            return validate_event(key, parsed, adapter)
        except InvalidValue as first:
            try:
                return validate_event(key, raw.text, adapter)
            except InvalidValue:
                raise first from None
    try:
        value = raw if adapter is None else adapter.validate_python(raw)
        return to_json_value(value)
    except ValidationError as exc:
        raise InvalidValue(f"invalid value for event '{key}': {validation_message(exc)}") from None
    except NotJSON as exc:
        raise InvalidValue(f"invalid value for event '{key}': {exc}") from None

