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
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import inspect
from collections.abc import Callable
from datetime import datetime, timedelta
from types import GeneratorType
from typing import Any, Literal, NoReturn, Protocol

from pydantic import ValidationError
from pydantic_core import to_json

from tinywf_cli.authoring.commands import Action, Child, Command, Parallel, Sleep, StartChild, WaitEvent
from tinywf_cli.authoring.loader import code_of
from tinywf_cli.authoring.workflow import Workflow, next_step_name
from tinywf_cli.clock import Clock, format_instant
from tinywf_cli.engine.signals import signal_caller
from tinywf_cli.engine.state import MigrationProblem, StateMismatch, dump_state, migrate, new_instance
from tinywf_cli.engine.values import (
    NotJSON,
    TextValue,
    adapter_for_type,
    describe_type,
    restore,
    return_adapter,
    strict_loads,
    to_json_value,
    validation_message,
)
from tinywf_cli.errors import (
    ActionFailed,
    ChildFailed,
    EventTimeout,
    FlowError,
    InvalidRunId,
    InvalidValue,
    NonDeterminismError,
    TinyWFError,
)
from tinywf_cli.interrupts import WATCHDOG, StepOverrun, is_interrupt
from tinywf_cli.model import ErrorInfo, PendingResume, Recovery, RunHead
from tinywf_cli.names import is_run_id
from tinywf_cli.stores.journal import AuditEntry, Entry, PartEntry, Slot, SlotEntry, VisitEntry

#: Recoveries from a dead process at the same point before the run is failed.
MAX_RECOVERIES = 5
#: Entries a run may gather in deferred commits (transitions) before one is made durable: a
#: loop of steps without actions would otherwise save nothing until it ends.
MAX_DEFERRED = 64

Save = Callable[[RunHead, list[Entry]], None]
Outcome = Literal["paused", "finished", "failed", "blocked", "ok"]


class _Stop(Exception):
    """Ends a pass over the step (paused, finished, failed, blocked); never reaches user code."""

    def __init__(self, outcome: Outcome, reason: str | None = None) -> None:
        self.outcome = outcome
        self.reason = reason


class _Throw:
    """An exception to raise in the step at its yield."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


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


def error_of(exc: BaseException) -> dict[str, str]:
    """``{"type", "message"}`` of an exception."""
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}


#: Results that are surely no awaitable (the common ones: no ABC check for them).
_NOT_AWAITABLE = frozenset({type(None), bool, int, float, str, list, dict, tuple})


def run_callable(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``fn``; when it returns an awaitable (``async def``), run it to completion."""
    result = fn(*args, **kwargs)
    if type(result) in _NOT_AWAITABLE or not inspect.isawaitable(result):
        return result
    import asyncio  # only flows with async actions pay for it

    async def wait() -> Any:
        return await result

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    # Called from inside an event loop (an embedding program): use a loop of our own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wait()).result()


class Checkpoint:
    """The run's head and the journal entries queued since the last commit: the one place a
    run is saved, resumed, paused, failed, blocked or finished."""

    def __init__(self, head: RunHead, save: Save, clock: Clock) -> None:
        self.head = head
        self.save = save
        self.clock = clock
        self.entries: list[Entry] = []
        #: The live state's JSON form while a step runs (raises FlowError when it cannot be stored).
        self.live: Callable[[], Any] | None = None
        #: Whether this engine call has committed anything (error messages say what was saved).
        self.saved = 0
        #: Entries of commits deferred to the next durable one (``None``: nothing deferred).
        self.deferred: list[Entry] | None = None

    def log(self, type_: str, values: dict[str, Any]) -> None:
        """Queue an audit entry."""
        self.entries.append(AuditEntry(format_instant(self.clock.now()), self.head.step, type_, values))

    def record(self, slot: Slot) -> None:
        """Queue a slot (new or changed)."""
        self.entries.append(SlotEntry(slot.to_json()))

    def commit(self, *, durable: bool = True) -> None:
        """Hand the head and the queued entries to the store.

        ``durable=False`` is for changes a replay re-derives (a transition: a pure function of
        the step's code and its recorded results): they ride with the next durable commit,
        so a step visit costs one write, its action's.
        """
        head = self.head
        if self.live is not None:
            try:
                head.state = self.live()
            except FlowError as exc:
                if head.status != "failed":  # a run failing for another reason keeps its last saved state
                    self.fail(error_of(exc))
        head.updated_at = self.clock.now()
        head.progress += 1
        if head.pending and head.status == "waiting":
            head.wake_at = min((p.due_at for p in head.pending if p.due_at is not None), default=None)
        else:
            head.wake_at = None
        entries, self.entries = self.entries, []
        if self.deferred is not None:
            self.deferred.extend(entries)
            entries = self.deferred
        if not durable and len(entries) < MAX_DEFERRED:
            self.deferred = entries
            return
        self.deferred = None
        self.save(head, entries)
        self.saved += 1

    def flush(self) -> None:
        """Make a deferred commit durable now (nothing to do when none is pending)."""
        if self.deferred is not None:
            entries, self.deferred = self.deferred, None
            self.save(self.head, entries)
            self.saved += 1

    def resume(self) -> None:
        """Mark a waiting run running, saved before any side effect runs."""
        if self.head.status != "running":
            self.head.status = "running"
            self.head.pending = []
            self.commit()

    def pause(self, pending: list[PendingResume], expects: dict[str, str]) -> NoReturn:
        """Leave the run waiting on ``pending``; commit only what changed."""
        head = self.head
        if not (head.status == "waiting" and not self.entries and self.deferred is None
                and pending == head.pending):
            head.status = "waiting"
            head.pending = pending
            head.expects = expects
            self.commit()
        raise _Stop("paused")

    def fail(self, error: dict[str, str], extra: dict[str, Any] | None = None) -> NoReturn:
        """Fail the run with ``error``."""
        head = self.head
        head.status = "failed"
        head.error = ErrorInfo(**error)
        head.pending = []
        self.log("error", dict(error, **(extra or {})))
        self.commit()
        raise _Stop("failed", error["message"])

    def block(self, kind: str, message: str) -> NoReturn:
        """Block the run: today's code cannot go on with it. Nothing of this pass is kept
        but the reason; the state stays as last saved."""
        head = self.head
        self.live = None
        # a migration applied in this pass stays (the head carries its result); nothing else
        # queued since the last commit does (a deferred commit went before this pass: it stays)
        self.entries = [e for e in self.entries if type(e) is AuditEntry and e.type == "migrated"]
        head.status = "blocked"
        head.error = ErrorInfo(type=kind, message=message)
        head.pending = []
        self.log("blocked", {"type": kind, "message": message})
        self.commit()
        raise _Stop("blocked", message)

    def finish(self) -> NoReturn:
        """The run ended: its last step returned None."""
        head = self.head
        head.status = "finished"
        head.pending = []
        self.log("finish", {})
        self.commit()
        raise _Stop("finished")


class _Context:
    """The ``RunContext`` a workflow instance talks to while its code runs."""

    __slots__ = ("calls", "engine", "run_id", "step", "store_target", "visit")

    def __init__(self, engine: Engine, head: RunHead, store_target: str) -> None:
        self.engine = engine
        self.run_id = head.run_id
        self.visit = head.visit
        self.step: str | None = head.step
        self.store_target = store_target
        self.calls = 0

    def record_log(self, type_: str, values: dict[str, Any]) -> None:
        """Count the call; record it unless a previous pass of this visit already did."""
        try:
            stored = to_json_value(values)
        except NotJSON as exc:
            raise TypeError(f"self.log({type_!r}, ...): values must be JSON: {exc}") from None
        self.calls += 1
        head = self.engine.head
        if self.calls > head.visit_logs:
            head.visit_logs = self.calls
            self.engine.cp.log(type_, stored)

    def patched(self, patch_id: str) -> bool:
        """``self.patched(id)`` at this point of the visit."""
        return self.engine.patched(patch_id)


class _Silent(_Context):
    """The context of signals replayed at a slot: their logs were recorded when they arrived."""

    __slots__ = ()

    def record_log(self, type_: str, values: dict[str, Any]) -> None:
        """Already recorded."""


def _discard(head: RunHead, entries: list[Entry]) -> None:
    """The save of a dry replay: nothing is kept."""


class Engine:
    """Advances one run loaded from a store: ``Engine(...).advance()``."""

    def __init__(self, cls: type[Workflow[Any]], head: RunHead, slots: list[Slot], clock: Clock, save: Save,
                 world: World | None = None, *, dry: bool = False) -> None:
        self.cls = cls
        self.cp = Checkpoint(head, _discard if dry else save, clock)
        #: The run being advanced (the checkpoint's head: one object for the engine's life).
        self.head = head
        self.slots = slots
        self.clock = clock
        self.world = world
        self.dry = dry
        self.wf: Workflow[Any] | None = None
        self.resolving: tuple[str, Any] | None = None
        #: How the last pass ended, and why when it did not go on.
        self.outcome: Outcome | None = None
        self.reason: str | None = None
        #: Child runs started by this call (the runtime advances them once this run is saved).
        self.started: list[str] = []
        self.index = 0
        self._keys: set[str] = set()
        self._channels: dict[str, int] = {}
        self._visit_json: bytes | None = None
        self._logs_at_start = head.visit_logs
        self._store_target = world.store_target if world is not None else ""

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

    # -- driving -------------------------------------------------------------------

    def advance(self, *, resolving: tuple[str, Any] | None = None, recover: bool = False) -> RunHead:
        """Run the current step (and those it leads to) until the run pauses, ends, fails or is blocked.

        ``resolving`` is ``(resume_id, value)`` of an event being answered: the value is
        validated when the replay reaches its wait, and ``InvalidValue`` leaves the run
        as it was. ``recover`` counts a recovery from a dead process first.
        """
        self.resolving = resolving
        try:
            if recover:
                self.recover()
            self.note_code()
            self.migrate()
            while self.head.status in ("running", "waiting"):
                self.run_visit()
        except _Stop as stop:
            self.outcome, self.reason = stop.outcome, stop.reason
            self.cp.flush()
        finally:
            self.cp.live = None
            self.wf = None
        return self.head

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

    def handle(self, command: Any) -> Any:
        """Answer one yielded command: from the records, or by doing it now."""
        if not isinstance(command, Command):
            self.cp.fail(error_of(FlowError(
                f"step '{self.head.step}' yielded {command!r}, which is not a tinywf command; yield "
                "self.action(...), self.sleep(...), self.wait_event(...), self.parallel(...) or self.child(...)")))
        channel = 0
        if type(command) is WaitEvent:  # an event key is a channel: waiting on it again takes the next value
            if command.key in self._keys:
                self.duplicate_key(command.key)
            channel = self._channels[command.key] = self._channels.get(command.key, 0) + 1
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
        if isinstance(command, Action):
            return self.action(command, index, slot)
        if isinstance(command, Sleep):
            return self.sleep(command, index, slot)
        if isinstance(command, WaitEvent):
            return self.wait_event(command, index, slot, channel)
        if isinstance(command, Child):
            return self.child(command, index, slot)
        assert isinstance(command, Parallel)
        return self.parallel(command, index, slot)

    def take_key(self, key: str) -> None:
        """Note a command's key used in this visit; fail the run when it already was."""
        if key in self._keys or key in self._channels:
            self.duplicate_key(key)
        self._keys.add(key)

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

    def pending_of(self, slot: Slot) -> list[PendingResume]:
        """The pending resumes of a slot the run waits on."""
        def one(s: Slot, kind: Any) -> PendingResume:
            return PendingResume(resume_id=s.resume_id or s.key, kind=kind, key=s.key,
                                 request=s.request if kind in ("event", "child") else None, due_at=s.due())
        if slot.kind == "sleep":
            return [one(slot, "timer")]
        if slot.kind == "event":
            return [one(slot, "event")]
        if slot.kind == "child":
            return [one(slot, "child")]
        if slot.kind == "action":
            return [one(slot, "retry")]
        assert slot.parts is not None
        return [one(p, "retry") for p in slot.parts.values() if p.status == "retrying"]

    def pause(self, slot: Slot) -> NoReturn:
        """Leave the run waiting on ``slot``."""
        expects = {slot.resume_id: slot.expects} if slot.expects and slot.resume_id else {}
        self.cp.pause(self.pending_of(slot), expects)

    # -- actions

    def attempt(self, action: Action, slot: Slot) -> None:
        """Run one attempt of ``action`` here and record its outcome in ``slot``."""
        try:
            result = run_callable(action.fn, action.args, action.kwargs)
        except BaseException as exc:
            if is_interrupt(exc):
                raise
            self.record_attempt(action, slot, error=exc)
        else:
            self.record_attempt(action, slot, result=result)

    def record_attempt(self, action: Action, slot: Slot, result: Any = None,
                       error: BaseException | None = None) -> None:
        """Count one attempt and record its outcome in ``slot``: ``done`` (and audited), or on
        failure ``retrying`` (with its due time) or ``failed``; a result that is not JSON fails.
        The caller commits, and decides whether to wait, go on or fail the run."""
        slot.attempt += 1
        if error is not None:
            self.record_failure(action, slot, error)
            return
        try:
            slot.value = to_json_value(result)
        except NotJSON as exc:
            slot.status = "failed"
            slot.error = {"type": "NotJSON", "message": str(exc)}
            self.cp.log("action_failed", {"key": slot.key, "attempt": slot.attempt, "error": slot.error})
            return
        slot.status = "done"
        slot.error = None
        slot.due_at = None
        slot.resume_id = None
        self.cp.log("action", {"key": slot.key, "attempt": slot.attempt})

    def record_failure(self, action: Action, slot: Slot, exc: BaseException) -> None:
        """Record a failed attempt: retry later, or out of attempts (also at once for an error
        in ``non_retryable``, and for ``SystemExit`` and friends, which are no passing trouble)."""
        slot.error = error_of(exc)
        retry = action.retry
        if (not isinstance(exc, Exception) or isinstance(exc, retry.non_retryable)
                or slot.attempt >= retry.attempts):
            slot.status = "failed"
            slot.due_at = None
            slot.resume_id = None
            self.cp.log("action_failed", {"key": slot.key, "attempt": slot.attempt, "error": slot.error})
            return
        due = self.now() + timedelta(seconds=retry.delay_after(slot.attempt))
        slot.status = "retrying"
        slot.due_at = format_instant(due)
        slot.resume_id = f"{slot.key}@{self.head.visit}.{slot.attempt + 1}"
        self.cp.log("retry", {"key": slot.key, "attempt": slot.attempt, "error": slot.error, "due_at": slot.due_at})

    def failure_of(self, slot: Slot) -> _Throw:
        """What the step gets for an action that finally failed: ``ActionFailed`` at its yield
        (an unstorable result fails the run instead)."""
        assert slot.error is not None
        if slot.error["type"] == "NotJSON":
            self.cp.fail({"type": "NotJSON", "message": f"action '{slot.key}' returned a value that cannot be "
                                                        f"stored as JSON: {slot.error['message']}"},
                         {"key": slot.key, "attempt": slot.attempt})
        return _Throw(ActionFailed(slot.key, slot.error["type"], slot.error["message"], slot.attempt))

    def action(self, action: Action, index: int, slot: Slot | None) -> Any:
        """``yield self.action(...)``."""
        fresh = slot is None or slot.status not in ("done", "failed")
        if slot is None:
            slot = Slot(index, "action", action.key, "new")
        while slot.status not in ("done", "failed"):
            if slot.status == "retrying":
                due = slot.due()
                if due is not None and due > self.now():
                    self.pause(slot)
            self.cp.resume()
            self.attempt(action, slot)
            self.put(slot)
            if slot.status != "retrying" or (slot.due() or self.now()) <= self.now():
                self.commit()  # a retry due later is committed by the pause
        if slot.status == "failed":
            return self.failure_of(slot)
        return self.restore_result(action, slot, fresh)

    def restore_result(self, action: Action, slot: Slot, fresh: bool) -> Any:
        """The value the step receives for a stored result: one that does not fit the action's
        return annotation fails the run when just returned, blocks it when replayed (the
        annotation changed under the run)."""
        try:
            return restore(return_adapter(action.fn), slot.value)
        except ValidationError as exc:
            if fresh:
                self.cp.fail({"type": "InvalidResult",
                              "message": f"action '{slot.key}' returned a value that does not match its return "
                                         f"annotation: {validation_message(exc)}"})
            self.block("InvalidResult",
                          f"action '{slot.key}' recorded a value that does not match its return annotation any "
                          f"more ({validation_message(exc)}): the annotation changed under a live run; "
                          f"restore it, then `tinywf retry {self.head.run_id}`")

    def parallel(self, command: Parallel, index: int, slot: Slot | None) -> Any:
        """``yield self.parallel({...})``: run the unfinished actions concurrently."""
        if slot is None:
            slot = Slot(index, "parallel", command.key, "running", parts={})
            self.put(slot)  # recorded once; then each part on its own (storage linear in the parts)
        parts = slot.parts
        assert parts is not None
        order = [a.key for a in command.actions.values()]
        by_key = {a.key: a for a in command.actions.values()}
        fresh: set[str] = set()
        while True:
            now = self.now()
            # a part still "new" on record was in flight when its process died: run it again
            todo = [by_key[k] for k in order
                    if k not in parts or parts[k].status in ("new", "running")
                    or (parts[k].status == "retrying" and (parts[k].due() or now) <= now)]
            if not todo:
                break
            self.cp.resume()
            fresh.update(a.key for a in todo)
            self.run_concurrently(todo, index, parts, command.max_workers)
        if any(parts[k].status == "retrying" for k in order):
            self.pause(slot)
        for key in order:
            if parts[key].status == "failed":
                return self.failure_of(parts[key])
        return {name: self.restore_result(a, parts[a.key], a.key in fresh) for name, a in command.actions.items()}

    def run_concurrently(self, actions: list[Action], index: int, parts: dict[str, Slot], max_workers: int) -> None:
        """Run ``actions`` in at most ``max_workers`` threads; record outcomes from this thread as
        they arrive, each part on its own, all that finished together in one commit."""
        for action in actions:
            parts.setdefault(action.key, Slot(0, "action", action.key, "new"))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(len(actions), max_workers),
                                                     thread_name_prefix="tinywf-action")
        try:
            # each part runs in a copy of this context: a Runtime call on this very run is refused there too
            futures = {pool.submit(contextvars.copy_context().run, run_callable, a.fn, a.args, a.kwargs): a
                       for a in actions}
            waiting = set(futures)
            while waiting:
                done, waiting = concurrent.futures.wait(waiting, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    action = futures[future]
                    exc = future.exception()
                    if exc is not None and is_interrupt(exc):
                        raise exc
                    part = parts[action.key]
                    self.record_attempt(action, part, None if exc else future.result(), exc)
                    self.cp.entries.append(PartEntry(index, part.to_json()))
                self.commit()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # an interrupt must not wait for long actions
            raise
        pool.shutdown(wait=True)

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
            start = command.until or self.due_in(command.seconds or 0.0, f"sleep '{command.key}'")
            slot = Slot(index, "sleep", command.key, "waiting", due_at=format_instant(start),
                        resume_id=f"{command.key}@{self.head.visit}")
            self.put(slot)
            self.cp.log("wait_begin", {"kind": "timer", "key": slot.key, "resume_id": slot.resume_id,
                                       "due_at": slot.due_at})
        due = slot.due()
        assert due is not None
        if slot.status == "waiting":
            if due > self.now():
                self.pause(slot)
            slot.status = "done"
            self.put(slot)
            self.cp.log("wait_end", {"kind": "timer", "key": slot.key, "resume_id": slot.resume_id})
            self.head.status = "running"
            self.head.pending = []
            self.commit()
        return due

    # -- events

    def wait_event(self, command: WaitEvent, index: int, slot: Slot | None, channel: int) -> Any:
        """``yield self.wait_event(...)``: the ``channel``-th wait on its key in this visit."""
        head = self.head
        adapter = adapter_for_type(command.type)
        if slot is None:
            deadline = command.deadline
            if deadline is None and command.timeout is not None:
                deadline = self.due_in(command.timeout, f"wait_event '{command.key}' timeout")
            try:
                request = to_json_value(command.request)
            except NotJSON as exc:
                self.cp.fail(error_of(FlowError(f"wait_event '{command.key}': request must be JSON: {exc}")))
            resume_id = f"{command.key}@{head.visit}" + (f".{channel}" if channel > 1 else "")
            slot = Slot(index, "event", command.key, "waiting",
                        due_at=None if deadline is None else format_instant(deadline),
                        resume_id=resume_id, request=request, expects=describe_type(command.type))
            self.put(slot)
            begun: dict[str, Any] = {"kind": "event", "key": slot.key, "resume_id": slot.resume_id}
            if slot.due_at is not None:
                begun["due_at"] = slot.due_at
            self.cp.log("wait_begin", begun)
        if slot.status == "waiting":
            self.settle_event(command, slot, adapter)
        if slot.status == "timed_out":
            return _Throw(EventTimeout(slot.key, slot.due_at or "its deadline"))
        try:
            return restore(adapter, slot.value)
        except ValidationError as exc:
            self.block("InvalidEventValue",
                          f"event '{slot.key}' recorded a value that no longer fits the wait's type "
                          f"({validation_message(exc)}): the type changed under a live run; restore it, "
                          f"then `tinywf retry {head.run_id}`")

    def settle_event(self, command: WaitEvent, slot: Slot, adapter: Any) -> None:
        """Resolve a waiting event from the answer being given, the queue, or its deadline."""
        head = self.head
        if self.resolving is not None and self.resolving[0] == slot.resume_id:
            _, raw = self.resolving
            self.resolving = None
            value = validate_event(command.key, raw, adapter)  # InvalidValue: nothing written yet
            self.event_done(slot, value, queued=False)
            return
        queue = head.inbox.get(slot.key)
        while queue:
            form, raw = queue.pop(0)
            if not queue:
                del head.inbox[slot.key]
            try:
                value = validate_event(command.key, TextValue(raw) if form == "text" else raw, adapter)
            except InvalidValue as exc:
                self.cp.log("event_rejected", {"key": slot.key, "value": raw, "error": exc.message})
                continue
            self.event_done(slot, value, queued=True)
            return
        due = slot.due()
        if due is not None and due <= self.now():
            slot.status = "timed_out"
            self.put(slot)
            self.cp.log("wait_end", {"kind": "event", "key": slot.key, "resume_id": slot.resume_id,
                                     "timed_out": True})
            head.status = "running"
            head.pending = []
            self.commit()
            return
        self.pause(slot)

    def event_done(self, slot: Slot, value: Any, *, queued: bool) -> None:
        """Record an event's value and commit (the run is running again)."""
        slot.status = "done"
        slot.value = value
        self.put(slot)
        values: dict[str, Any] = {"kind": "event", "key": slot.key, "resume_id": slot.resume_id}
        if queued:
            values["queued"] = True
        self.cp.log("wait_end", values)
        self.head.status = "running"
        self.head.pending = []
        self.commit()

    # -- child runs

    def child(self, command: Child, index: int, slot: Slot | None) -> Any:
        """``yield self.child(...)`` (wait for its end) or ``self.start_child(...)`` (its id)."""
        head = self.head
        if slot is None:
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
        if slot.status == "failed":
            error = slot.error or {}
            return _Throw(ChildFailed(str(error.get("run_id")), str(error.get("status")),
                                      error.get("error")))
        return slot.value

    def settle_child(self, slot: Slot) -> None:
        """Take the child's outcome when it has ended; otherwise wait for it."""
        run_id = str((slot.request or {}).get("run_id"))
        child = self.world.child_head(run_id) if self.world is not None else None
        if child is not None and child.status not in ("finished", "failed", "cancelled"):
            self.pause(slot)
        if child is not None and child.status == "finished":
            slot.status = "done"
            slot.value = child.state
            self.cp.log("child_ended", {"key": slot.key, "run_id": run_id, "status": "finished"})
        else:
            status = child.status if child is not None else "missing"
            error = child.error.model_dump() if child is not None and child.error is not None else None
            if child is None:
                error = {"type": "RunNotFound", "message": f"the child run '{run_id}' no longer exists"}
            slot.status = "failed"
            slot.error = {"type": "ChildFailed", "message": f"child run '{run_id}' {status}",
                          "run_id": run_id, "status": status, "error": error}
            self.cp.log("child_ended", {"key": slot.key, "run_id": run_id, "status": status})
        self.put(slot)
        self.head.status = "running"
        self.head.pending = []
        self.commit()


def validate_event(key: str, raw: Any, adapter: Any) -> Any:
    """The JSON form of an event value, validated against the wait's type.

    A ``TextValue`` (typed on a command line) is taken as JSON when it parses and fits the
    type, else as the text itself.
    """
    if isinstance(raw, TextValue):
        try:
            parsed = strict_loads(raw.text)
        except ValueError:
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
