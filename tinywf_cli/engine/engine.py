"""The engine: replays a run's current step visit against its records, and records what is new.

A pass runs the current step from its top. Each command the step yields is answered from
the visit's slot at that position when there is one (a replay), or done now and recorded
(the frontier). Everything that changes a run goes through its :class:`Checkpoint`, which
hands the head and the queued journal entries to the store's session: the engine never
touches files and never reads the wall clock.

A run that can no longer go on under today's code (its records and the code disagree, a
step or a migration is missing, the code is older than the run) is *blocked*: nothing is
executed, nothing recorded but the reason. ``dry=True`` replays without executing or
recording anything, for ``tinywf check``.

The engine's parts: the checkpoint and the pass's control flow (``checkpoint``), the state
they share (``base``), actions and their retries (``actions``), timers, events and child
runs (``waits``); this module drives a visit and answers each command it yields.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from types import GeneratorType
from typing import Any, ClassVar, NoReturn

from tinywf_cli import telemetry
from tinywf_cli.authoring.commands import Command, First, Parallel, WaitEvent
from tinywf_cli.authoring.loader import code_of
from tinywf_cli.authoring.workflow import next_step_name
from tinywf_cli.clock import format_instant
from tinywf_cli.engine.actions import Actions
from tinywf_cli.engine.attempts import run_callable
from tinywf_cli.engine.base import World
from tinywf_cli.engine.checkpoint import MAX_DEFERRED, Checkpoint, Outcome, Save, _Stop, _Throw, error_of
from tinywf_cli.engine.choice import Choice
from tinywf_cli.engine.signals import signal_caller
from tinywf_cli.engine.state import MigrationProblem, StateMismatch, migrate, new_instance
from tinywf_cli.engine.values import Answer, NotJSON, to_json_value
from tinywf_cli.engine.waits import Waits, validate_event
from tinywf_cli.errors import ActionFailed, EventTimeout, FlowError, NonDeterminismError, TinyWFError
from tinywf_cli.interrupts import WATCHDOG, StepOverrun, is_interrupt
from tinywf_cli.model import Recovery, RunHead
from tinywf_cli.stores.journal import Entry, Slot, SlotEntry, VisitEntry

#: The engine's names, wherever in the engine they live (``tinywf_cli.engine.engine`` is
#: where the runtime and the tests import them from).
__all__ = [
    "MAX_DEFERRED",
    "MAX_RECOVERIES",
    "Checkpoint",
    "Engine",
    "Outcome",
    "Save",
    "World",
    "error_of",
    "reset_failed_slots",
    "run_callable",
    "validate_event",
]

#: Recoveries from a dead process at the same point before the run is failed.
MAX_RECOVERIES = 5


class _Context:
    """The ``RunContext`` a workflow instance talks to while its code runs."""

    __slots__ = ("calls", "engine", "run_id", "scheduled_at", "step", "store_target", "visit")

    def __init__(self, engine: Engine, head: RunHead, store_target: str) -> None:
        self.engine = engine
        self.run_id = head.run_id
        self.scheduled_at = head.scheduled_at
        self.visit = head.visit
        self.step: str | None = head.step
        self.store_target = store_target
        self.calls = 0

    def record_log(self, type_: str, values: dict[str, Any]) -> bool:
        """Count the call; record it unless a previous pass of this visit already did (then False)."""
        try:
            stored = to_json_value(values)
        except NotJSON as exc:
            raise TypeError(f"self.log({type_!r}, ...): values must be JSON: {exc}") from None
        self.calls += 1
        head = self.engine.head
        if self.calls > head.visit_logs:
            head.visit_logs = self.calls
            self.engine.cp.log(type_, stored)
            return True
        return False

    def record_tags(self, tags: dict[str, str]) -> None:
        """``self.tag(...)``: a ``tag`` entry, and the tags on the run, once per visit (the head that
        carries them is written with the entry)."""
        from tinywf_cli.filters import checked_tags

        head = self.engine.head
        checked_tags(tags, "self.tag()", have=head.tags)  # the run's tags and these within the limit
        if self.record_log("tag", tags):
            head.tags.update(tags)

    def patched(self, patch_id: str) -> bool:
        """``self.patched(id)`` at this point of the visit."""
        return self.engine.patched(patch_id)


class _Silent(_Context):
    """The context of signals replayed at a slot: their logs were recorded when they arrived."""

    __slots__ = ()

    def record_log(self, type_: str, values: dict[str, Any]) -> bool:
        """Already recorded."""
        return False


class Engine(Actions, Choice):
    """Advances one run loaded from a store: ``Engine(...).advance()``."""

    # -- driving -------------------------------------------------------------------

    def advance(self, *, resolving: Answer | None = None, recover: bool = False) -> RunHead:
        """Run the current step (and those it leads to) until the run pauses, ends, fails or is blocked.

        ``resolving`` is the answer to an event: the value is validated when the replay
        reaches its wait, and ``InvalidValue`` leaves the run as it was; a run that stops
        before its wait takes it keeps it queued (``Checkpoint.keep_answer``). ``recover``
        counts a recovery from a dead process first.
        """
        self.resolving = self.cp.answer = resolving
        try:
            if recover:
                self.recover()
            self.note_code()
            self.migrate()
            self.hold_run_limit()
            tel = telemetry.current()
            while self.head.status in ("running", "waiting"):
                if tel is None:
                    self.run_visit()
                else:
                    with tel.visit(self.head.step, self.head.visit):
                        self.run_visit()
        except _Stop as stop:
            self.outcome, self.reason = stop.outcome, stop.reason
            self.cp.flush()
        finally:
            self.cp.live = None
            self.wf = None
        self.let_go_run_limit()
        return self.head

    def new_context(self) -> _Context:
        """The context a workflow object of this run talks to."""
        return _Context(self, self.head, self._store_target)

    def note_code(self) -> None:
        """Name in the run's history the flow code it runs with, when it changed; keep its history_limit."""
        head = self.head
        head.history_limit = self.cls.history_limit
        code = code_of(self.cls)
        if code is not None and code != head.code:
            if head.code is not None:
                self.cp.log("code", {"from": head.code, "to": code})
            head.code = code

    def migrate_now(self) -> list[Entry]:
        """Apply pending migrations outside an advance (before a signal); returns the entries to
        commit with the change, or blocks the run (``outcome`` says so)."""
        try:
            self.migrate()
        except _Stop as stop:
            self.outcome, self.reason = stop.outcome, stop.reason
        entries, self.cp.entries = self.cp.entries, []
        return entries

    def recover(self) -> None:
        """Count a recovery at the current point; fail the run past ``MAX_RECOVERIES``."""
        head = self.head
        count = head.recovery.count + 1 if head.recovery.at == head.progress else 1
        if count > MAX_RECOVERIES:
            self.cp.fail({
                "type": "CrashLoop",
                "message": f"the process advancing this run died {MAX_RECOVERIES + 1} times in a row "
                           f"at step '{head.step}' (visit {head.visit}); stopped recovering it — fix the "
                           "cause, then `tinywf retry`",
            })
        head.recovery = Recovery(count=count, at=head.progress + 1)
        self.cp.log("recover", {"count": count})
        self.commit()

    def migrate(self) -> None:
        """Bring a run recorded at an older version of the flow to today's, before anything else."""
        head, cls = self.head, self.cls
        if head.version == cls.version:
            return
        if head.version > cls.version:
            self.block("CodeOlderThanRun",
                          f"the run is at version {head.version} of {cls.__name__}, but the code is at version "
                          f"{cls.version}: deploy the code the run was recorded with (or a newer one), then "
                          f"`tinywf retry {head.run_id}`")
        try:
            state = migrate(cls, head.state, head.version)
            visit_state = migrate(cls, head.visit_state, head.version)
        except MigrationProblem as exc:
            self.block("MigrationMissing", f"{exc}; then `tinywf retry {head.run_id}`")
        self.cp.log("migrated", {"from": head.version, "to": cls.version})
        head.version = cls.version
        head.state, head.visit_state = state, visit_state
        self._visit_json = None

    def run_visit(self) -> None:
        """One pass over the current step: replay, then run what is new. Returns after a transition."""
        head = self.head
        spec = self.cls.__tinywf_steps__.get(head.step)
        if spec is None:
            self.block("StepRemoved", f"{self.cls.__name__} has no step '{head.step}' any more, and the run is "
                                         f"in it (visit {head.visit}): add the step back (it may return the "
                                         f"step to go on with), then `tinywf retry {head.run_id}`")
        ctx = _Context(self, head, self._store_target)
        try:
            self.wf = new_instance(self.cls, self.visit_state_json(), ctx)
        except StateMismatch as exc:
            self.block("StateMismatch", f"{exc}; then `tinywf retry {head.run_id}`")
        self.cp.live = self.live_state
        self._logs_at_start = head.visit_logs
        self.index = 0
        self._keys = set()
        self._channels = {}
        result = self.step_code(spec.fn, self.wf)
        if type(result) is not GeneratorType:
            self.transition(result)
            return
        gen = result
        reply: Any = None
        try:
            while True:
                try:
                    if type(reply) is _Throw:
                        command = self.step_code(gen.throw, reply.exc)
                    else:
                        command = self.step_code(gen.send, reply)
                except StopIteration as stop:
                    self.transition(stop.value)
                    return
                reply = self.handle(command)
        finally:
            if gen.gi_frame is not None:  # paused (not run to its end): close it
                # Closing a paused step runs its finally/with blocks; what they raise then (or a bare
                # `except:` ignoring GeneratorExit) cannot change what the pass recorded.
                with contextlib.suppress(Exception, StepOverrun), WATCHDOG.watching(self.cls.step_timeout):
                    gen.close()

    def step_code(self, call: Callable[[Any], Any], arg: Any) -> Any:
        """Run the step's own code, ``call(arg)`` (up to its next yield), under the step watchdog."""
        try:
            armed = WATCHDOG.arm(self.cls.step_timeout)
            try:
                return call(arg)
            finally:
                if armed:
                    WATCHDOG.disarm()
        except StopIteration:
            raise
        except StepOverrun as exc:
            self.cp.fail({"type": "StepTimeout",
                          "message": f"step '{self.head.step}' {exc} (its step_timeout); a step must be quick "
                                     "between yields: put slow work in an action"})
        except BaseException as exc:
            if is_interrupt(exc):
                raise
            self.step_raised(exc)

    def step_raised(self, exc: BaseException) -> NoReturn:
        """The step's code raised: fail the run with what it raised."""
        if isinstance(exc, ActionFailed):
            self.cp.fail({"type": exc.error_type, "message": exc.failure}, {"key": exc.key, "attempt": exc.attempts})
        if isinstance(exc, TinyWFError) and not isinstance(exc, EventTimeout):
            self.cp.fail(error_of(exc))
        message = f"step '{self.head.step}' raised {type(exc).__name__}: {exc}"
        self.cp.fail({"type": type(exc).__name__, "message": message})

    def transition(self, result: Any) -> None:
        """The step returned: check it consumed its records, then move on or finish."""
        head = self.head
        if self.index < len(self.slots):
            rest = [s for s in self.slots[self.index:] if s.kind != "patch"]
            if rest:
                self.nondeterminism(rest[0], "a return from the step")
        if self.dry:
            raise _Stop("ok")
        try:
            name = next_step_name(self.cls, result)
        except ValueError as exc:
            self.cp.fail({"type": "InvalidTransition", "message": f"step '{head.step}' {exc}"})
        try:
            state = self.live_state()
        except FlowError as exc:
            self.cp.fail(error_of(exc))
        self.cp.live = None
        self.wf = None
        head.state = state
        if name is None:
            self.cp.finish()
        self.cp.log("transition", {"from": head.step, "to": name, "visit": head.visit + 1})
        head.step = name
        head.visit += 1
        head.visit_state = state
        head.visit_logs = 0
        head.status = "running"
        head.pending = []
        self._visit_json = None
        self.slots = []
        self.cp.entries.append(VisitEntry(head.visit, name, state, head.version))
        self.cp.commit(durable=False)  # re-derived by a replay: rides with the next durable commit

    def nondeterminism(self, slot: Slot, current: str) -> NoReturn:
        """Block the run: the code no longer matches what the run recorded."""
        recorded = f"{slot.kind} '{slot.key}'"
        exc = NonDeterminismError(self.head.run_id, self.head.step, slot.index, recorded, current)
        self.block("NonDeterminismError", exc.message)

    # -- commands ---------------------------------------------------------------------

    #: How each kind of command is answered, ``(engine, command, index, slot) -> reply``: the
    #: reply the step gets at its yield (a ``_Throw`` is raised there).
    APPLY: ClassVar[dict[str, Callable[[Any, Any, int, Slot | None], Any]]] = {
        "action": Actions.action,
        "parallel": Actions.parallel,
        "sleep": Waits.sleep,
        "event": Waits.wait_event,
        "child": Waits.child,
        "start_child": Waits.child,
        "first": Choice.first,
    }

    def handle(self, command: Any) -> Any:
        """Answer one yielded command: from the records, or by doing it now."""
        if not isinstance(command, Command):
            self.cp.fail(error_of(FlowError(
                f"step '{self.head.step}' yielded {command!r}, which is not a tinywf command; yield "
                "self.action(...), self.sleep(...), self.wait_event(...), self.first(...), self.parallel(...) or "
                "self.child(...)")))
        if type(command) is WaitEvent:
            self.take_channel(command.key)
        elif type(command) is First:  # each branch takes its key (an event's channel) as if waited for alone
            for wait in command.waits.values():
                if type(wait) is WaitEvent:
                    self.take_channel(wait.key)
                else:
                    self.take_key(wait.key)
        elif isinstance(command, Parallel):
            if not command.actions:
                return {}
            for key in [a.key for a in command.actions.values()]:
                self.take_key(key)
        else:
            self.take_key(command.key)
        while self.index < len(self.slots) and self.slots[self.index].kind == "patch":
            self.index += 1  # a patch the code no longer asks about: it takes the patched path anyway
        index = self.index
        slot = self.slots[index] if index < len(self.slots) else None
        if slot is not None and (slot.kind != command.kind or slot.key != command.key):
            self.nondeterminism(slot, command.describe())
        if slot is not None and slot.signals:
            self.replay_signals(slot)
        if self.dry and (slot is None or slot.open):
            raise _Stop("ok")
        self.index += 1
        return self.APPLY[command.kind](self, command, index, slot)

    def take_key(self, key: str) -> None:
        """Note a command's key used in this visit; fail the run when it already was."""
        if key in self._keys or key in self._channels:
            self.duplicate_key(key)
        self._keys.add(key)

    def take_channel(self, key: str) -> None:
        """Note a wait on event ``key``: an event key is a channel, and waiting on it again in the
        visit takes its next value (another command with that key fails the run)."""
        if key in self._keys:
            self.duplicate_key(key)
        self._channels[key] = self._channels.get(key, 0) + 1

    def duplicate_key(self, key: str) -> NoReturn:
        """Fail the run: a key used twice in one visit."""
        self.cp.fail(error_of(FlowError(
            f"step '{self.head.step}' uses the key '{key}' twice in one visit; keys must be unique within a "
            "step visit (add an index or a prefix, e.g. f'charge_{i}'); only wait_event may wait on a key again")))

    def patched(self, patch_id: str) -> bool:
        """``self.patched(id)``: True on fresh code (recording a marker) or where the marker was recorded."""
        index = self.index
        if index < len(self.slots):
            slot = self.slots[index]
            if slot.kind == "patch" and slot.key == patch_id:
                self.index += 1
                return True
            return False  # a visit recorded before the patch: the old path
        if not self.dry:
            self.put(Slot(index, "patch", patch_id, "done"))
        self.index += 1
        return True

    def replay_signals(self, slot: Slot) -> None:
        """Apply the signals the run received while paused at ``slot``, as they happened then."""
        assert self.wf is not None and slot.signals is not None
        wf = self.wf
        live = wf._tinywf
        wf._tinywf = _Silent(self, self.head, live.store_target)
        try:
            for received in slot.signals:
                name = received["name"]
                where = f"signal '{name}' received at {slot.kind} '{slot.key}' of step '{self.head.step}'"
                spec = self.cls.__tinywf_signals__.get(name)
                if spec is None:
                    self.block("SignalRemoved", f"{where} is no longer a signal of {self.cls.__name__}: add it "
                                                f"back, then `tinywf retry {self.head.run_id}`")
                try:
                    with WATCHDOG.watching(self.cls.step_timeout):
                        signal_caller(spec.fn)(wf, **received["args"])
                except BaseException as exc:
                    if is_interrupt(exc):
                        raise
                    self.cp.fail(error_of(FlowError(f"{where} fails on replay: {type(exc).__name__}: {exc}")))
        finally:
            wf._tinywf = live



def reset_failed_slots(slots: list[Slot], now: datetime) -> list[Entry]:
    """For ``tinywf retry``: give the action that failed the run a fresh set of attempts, due now.

    Only the visit's last slot (where the run stopped): failures caught earlier in the visit
    stay as they were recorded, so the replay takes the same path to this point.
    """
    if not slots:
        return []
    slot = slots[-1]
    targets = list(slot.parts.values()) if slot.parts is not None else [slot]
    changed = False
    for target in targets:
        if target.kind == "action" and target.status == "failed":
            target.status = "retrying"
            target.attempt = 0
            target.due_at = format_instant(now)
            changed = True
    return [SlotEntry(slot.to_json())] if changed else []
