"""The engine: drives one run's current step visit against its records.

It replays the current step from its top, answering each yielded command from the
visit's slots, runs what is new, and hands every change to ``save`` (the store's commit)
before the step goes on. It never touches files and never reads the wall clock: the
runtime gives it a store callback and a clock.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from tinywf_cli.clock import Clock, format_instant
from tinywf_cli.errors import (
    EventTimeout,
    FlowError,
    InvalidValue,
    NonDeterminismError,
    SignalNotFound,
    TinyWFError,
)
from tinywf_cli.journal import AuditEntry, Entry, Slot, SlotEntry, VisitEntry
from tinywf_cli.model import ErrorInfo, PendingResume, Recovery, RunHead
from tinywf_cli.values import (
    NotJSON,
    adapter_for_type,
    describe_type,
    dumps,
    restore,
    return_adapter,
    to_json_value,
    validation_message,
)
from tinywf_cli.workflow import Action, Command, Parallel, Sleep, WaitEvent, Workflow, next_step_name

#: Recoveries from a dead process at the same point before the run is failed.
MAX_RECOVERIES = 5

Save = Callable[[RunHead, list[Entry]], None]
Outcome = Literal["continue", "paused", "finished", "failed"]


class _Stop(Exception):
    """Ends a pass over the step (paused or failed); never reaches user code."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


@dataclass
class _Throw:
    exc: BaseException


@dataclass
class _Context:
    """The ``RunContext`` a workflow instance talks to while its code runs."""

    engine: Engine | None
    run_id: str
    visit: int
    step: str | None
    calls: int = 0
    logs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def record_log(self, type_: str, values: dict[str, Any]) -> None:
        """Count the call; record it unless a previous pass of this visit already did."""
        try:
            stored = to_json_value(values)
        except NotJSON as exc:
            raise TypeError(f"self.log({type_!r}, ...): values must be JSON: {exc}") from None
        if self.engine is None:
            self.logs.append((type_, stored))
            return
        self.calls += 1
        if self.calls > self.engine.head.visit_logs:
            self.engine.head.visit_logs = self.calls
            self.engine.audit(type_, stored)


def new_instance(cls: type[Workflow[Any]], state_json: str, ctx: _Context) -> Workflow[Any]:
    """A workflow object with a private copy of the state, as its code should see it."""
    wf = cls()
    wf._tinywf = ctx
    model = cls.__tinywf_model__
    wf.state = model.model_validate_json(state_json) if model is not None else json.loads(state_json)
    return wf


def dump_state(cls: type[Workflow[Any]], state: Any) -> Any:
    """The JSON form of a workflow's live state; raises FlowError when it cannot be stored."""
    model = cls.__tinywf_model__
    try:
        if model is not None:
            if not isinstance(state, model):
                state = model.model_validate(state)
            return state.model_dump(mode="json")
        if not isinstance(state, dict):
            raise NotJSON(f"a plain Workflow's state must stay a dict, got {type(state).__name__}")
        return to_json_value(state)
    except (NotJSON, ValidationError, TypeError, ValueError) as exc:
        raise FlowError(f"the state of {cls.__name__} cannot be saved: {exc}") from None


def error_of(exc: BaseException) -> dict[str, str]:
    """``{"type", "message"}`` of an exception."""
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}


def run_callable(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``fn``; when it returns an awaitable (``async def``), run it to completion."""
    result = fn(*args, **kwargs)
    if not inspect.isawaitable(result):
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


class Engine:
    """Advances one run loaded from a store: ``Engine(...).advance()``."""

    def __init__(self, cls: type[Workflow[Any]], head: RunHead, slots: list[Slot],
                 clock: Clock, save: Save) -> None:
        self.cls = cls
        self.head = head
        self.slots = slots
        self.clock = clock
        self.save = save
        self.entries: list[Entry] = []
        self.wf: Workflow[Any] | None = None
        self.resolving: tuple[str, Any] | None = None
        self._visit_json: str | None = None
        self._stamp: tuple[datetime | None, str] = (None, "")

    # -- bookkeeping -------------------------------------------------------------

    def now(self) -> datetime:
        """The engine's clock."""
        return self.clock.now()

    def audit(self, type_: str, values: dict[str, Any]) -> None:
        """Queue an audit entry for the next commit."""
        now = self.now()
        if now is not self._stamp[0]:  # a manual clock hands out the same instant until moved
            self._stamp = (now, format_instant(now))
        self.entries.append(AuditEntry(self._stamp[1], self.head.step, type_, values))

    def put(self, slot: Slot) -> None:
        """Record a slot (new or changed) for the next commit."""
        if slot.index == len(self.slots):
            self.slots.append(slot)
        self.entries.append(SlotEntry(slot.to_json()))

    def commit(self) -> None:
        """Hand the head and queued entries to the store."""
        head = self.head
        if self.wf is not None:
            try:
                head.state = dump_state(self.cls, self.wf.state)
            except FlowError as exc:
                if head.status != "failed":  # a run failing for another reason keeps its last saved state
                    raise _Stop(self.fail(error_of(exc))) from None
        head.updated_at = self.now()
        head.progress += 1
        dues = [p.due_at for p in head.pending if p.due_at is not None]
        head.wake_at = min(dues) if dues and head.status == "waiting" else None
        entries, self.entries = self.entries, []
        self.save(head, entries)

    def set_running(self) -> None:
        """Mark a waiting run running (committed before any side effect runs)."""
        if self.head.status != "running":
            self.head.status = "running"
            self.head.pending = []
            self.commit()

    def fail(self, error: dict[str, str], outcome_log: dict[str, Any] | None = None) -> Outcome:
        """Fail the run with ``error`` and commit."""
        head = self.head
        head.status = "failed"
        head.error = ErrorInfo(**error)
        head.pending = []
        self.audit("error", dict(error, **(outcome_log or {})))
        self.commit()
        return "failed"

    def visit_state_json(self) -> str:
        """The state at the top of the current visit, as JSON text (cached per visit)."""
        if self._visit_json is None:
            self._visit_json = dumps(self.head.visit_state)
        return self._visit_json

    # -- driving -------------------------------------------------------------------

    def advance(self, *, resolving: tuple[str, Any] | None = None, recover: bool = False) -> RunHead:
        """Run the current step (and those it leads to) until the run pauses, ends or fails.

        ``resolving`` is ``(resume_id, value)`` of an event being answered: the value is
        validated when the replay reaches its wait, and ``InvalidValue`` leaves the run
        as it was. ``recover`` counts a recovery from a dead process first.
        """
        self.resolving = resolving
        if recover and self.recover() == "failed":
            return self.head
        outcome: Outcome = "continue"
        while outcome == "continue" and self.head.status in ("running", "waiting"):
            outcome = self.run_visit()
        return self.head

    def recover(self) -> Outcome:
        """Count a recovery at the current point; fail the run past ``MAX_RECOVERIES``."""
        head = self.head
        count = head.recovery.count + 1 if head.recovery.at == head.progress else 1
        if count > MAX_RECOVERIES:
            return self.fail({
                "type": "CrashLoop",
                "message": f"the process advancing this run died {MAX_RECOVERIES + 1} times in a row "
                           f"at step '{head.step}' (visit {head.visit}); stopped recovering it — fix the "
                           "cause, then `tinywf retry`",
            })
        head.recovery = Recovery(count=count, at=head.progress + 1)
        self.audit("recover", {"count": count})
        self.commit()
        return "continue"

    def run_visit(self) -> Outcome:
        """One pass over the current step: replay, then run what is new."""
        head = self.head
        spec = self.cls.__tinywf_steps__.get(head.step)
        if spec is None:
            return self.fail({"type": "FlowError",
                              "message": f"{self.cls.__name__} has no step '{head.step}' any more"})
        ctx = _Context(self, head.run_id, head.visit, head.step)
        try:
            self.wf = new_instance(self.cls, self.visit_state_json(), ctx)
            result = spec.fn(self.wf)
        except Exception as exc:
            return self.step_raised(exc)
        if not inspect.isgenerator(result):
            return self.transition(result, 0)
        gen = result
        keys: set[str] = set()
        index = 0
        reply: Any = None
        try:
            while True:
                try:
                    command = gen.throw(reply.exc) if isinstance(reply, _Throw) else gen.send(reply)
                except StopIteration as stop:
                    return self.transition(stop.value, index)
                except Exception as exc:
                    return self.step_raised(exc)
                try:
                    reply = self.handle(command, index, keys)
                except _Stop as stop:
                    return stop.outcome
                index += 1
        finally:
            # Closing a paused step runs its finally/with blocks; what they raise then (or a bare
            # `except:` ignoring GeneratorExit) cannot change what the pass recorded.
            with contextlib.suppress(Exception):
                gen.close()

    def step_raised(self, exc: Exception) -> Outcome:
        """The step's code raised: fail the run with what it raised."""
        if isinstance(exc, TinyWFError) and not isinstance(exc, EventTimeout):
            return self.fail(error_of(exc))
        message = f"step '{self.head.step}' raised {type(exc).__name__}: {exc}"
        return self.fail({"type": type(exc).__name__, "message": message})

    def transition(self, result: Any, index: int) -> Outcome:
        """The step returned: check it consumed its records, then move on or finish."""
        head = self.head
        if index < len(self.slots):
            return self.nondeterminism(index, self.slots[index], "a return from the step")
        try:
            name = next_step_name(self.cls, result)
        except ValueError as exc:
            return self.fail({"type": "InvalidTransition", "message": f"step '{head.step}' {exc}"})
        try:
            state = dump_state(self.cls, self.wf.state if self.wf is not None else head.state)
        except FlowError as exc:
            return self.fail(error_of(exc))
        self.wf = None
        head.state = state
        if name is None:
            head.status = "finished"
            head.pending = []
            self.audit("finish", {})
            self.commit()
            return "finished"
        self.audit("transition", {"from": head.step, "to": name, "visit": head.visit + 1})
        head.step = name
        head.visit += 1
        head.visit_state = state
        head.visit_logs = 0
        head.status = "running"
        head.pending = []
        self._visit_json = None
        self.slots = []
        self.entries.append(VisitEntry(head.visit, name, state))
        self.commit()
        return "continue"

    def nondeterminism(self, index: int, slot: Slot, current: str) -> Outcome:
        """Fail the run: the code no longer matches what the run recorded."""
        recorded = f"{slot.kind} '{slot.key}'" if slot.kind != "parallel" else f"parallel '{slot.key}'"
        exc = NonDeterminismError(self.head.run_id, self.head.step, index, recorded, current)
        return self.fail(error_of(exc))

    # -- commands ---------------------------------------------------------------------

    def handle(self, command: Any, index: int, keys: set[str]) -> Any:
        """Answer one yielded command: from the records, or by doing it now."""
        if not isinstance(command, Command):
            self.stop_failed(FlowError(
                f"step '{self.head.step}' yielded {command!r}, which is not a tinywf command; "
                "yield self.action(...), self.sleep(...), self.wait_event(...) or self.parallel(...)"))
        own = [a.key for a in command.actions.values()] if isinstance(command, Parallel) else [command.key]
        for key in own:
            if key in keys:
                self.stop_failed(FlowError(
                    f"step '{self.head.step}' uses the key '{key}' twice in one visit; keys must be "
                    "unique within a step visit (add an index or a prefix, e.g. f'charge_{i}')"))
            keys.add(key)
        slot = self.slots[index] if index < len(self.slots) else None
        if slot is not None and (slot.kind != command.kind or slot.key != command.key):
            raise _Stop(self.nondeterminism(index, slot, command.describe()))
        if slot is not None and slot.signals:
            self.replay_signals(slot)
        if isinstance(command, Action):
            return self.action(command, index, slot)
        if isinstance(command, Sleep):
            return self.sleep(command, index, slot)
        if isinstance(command, WaitEvent):
            return self.wait_event(command, index, slot)
        assert isinstance(command, Parallel)
        return self.parallel(command, index, slot)

    def replay_signals(self, slot: Slot) -> None:
        """Apply the signals the run received while paused at ``slot``, as they happened then."""
        assert self.wf is not None and slot.signals is not None
        live = self.wf._tinywf
        self.wf._tinywf = _Context(None, self.head.run_id, self.head.visit, self.head.step)  # logged already
        try:
            for received in slot.signals:
                spec = self.cls.__tinywf_signals__.get(received["name"])
                if spec is None:
                    raise _Stop(self.fail(error_of(FlowError(
                        f"signal '{received['name']}' received at {slot.kind} '{slot.key}' of step "
                        f"'{self.head.step}' is no longer a signal of {self.cls.__name__}"))))
                try:
                    signal_caller(spec.fn)(self.wf, **received["args"])
                except Exception as exc:
                    self.stop_failed(FlowError(
                        f"signal '{received['name']}' received at {slot.kind} '{slot.key}' of step "
                        f"'{self.head.step}' fails on replay: {type(exc).__name__}: {exc}"))
        finally:
            self.wf._tinywf = live

    def stop_failed(self, exc: TinyWFError) -> None:
        """Fail the run with a tinywf error and end the pass."""
        raise _Stop(self.fail(error_of(exc)))

    def pause(self) -> None:
        """Leave the run waiting on the current slot; commit only what changed."""
        head = self.head
        pending = self.pending_of(self.slots[-1])
        if head.status == "waiting" and not self.entries and pending == head.pending:
            raise _Stop("paused")
        head.status = "waiting"
        head.pending = pending
        last = self.slots[-1]
        head.expects = {last.resume_id: last.expects} if last.expects and last.resume_id else {}
        self.commit()
        raise _Stop("paused")

    def pending_of(self, slot: Slot) -> list[PendingResume]:
        """The pending resumes of a waiting slot."""
        def one(s: Slot, kind: Any) -> PendingResume:
            return PendingResume(resume_id=s.resume_id or s.key, kind=kind, key=s.key,
                                 request=s.request if kind == "event" else None, due_at=s.due())
        if slot.kind == "sleep":
            return [one(slot, "timer")]
        if slot.kind == "event":
            return [one(slot, "event")]
        if slot.kind == "action":
            return [one(slot, "retry")]
        assert slot.parts is not None
        return [one(p, "retry") for p in slot.parts.values() if p.status == "retrying"]

    # -- actions

    def attempt(self, action: Action, slot: Slot) -> None:
        """Run one attempt of ``action`` here and record its outcome in ``slot``."""
        try:
            result = run_callable(action.fn, action.args, action.kwargs)
        except Exception as exc:
            self.record_attempt(action, slot, error=exc)
        else:
            self.record_attempt(action, slot, result=result)

    def record_attempt(self, action: Action, slot: Slot, result: Any = None,
                       error: Exception | None = None) -> None:
        """Count one attempt and record its outcome in ``slot``: ``done`` (and audited), or on
        failure ``retrying`` (with its due time) or ``failed``; a result that is not JSON fails.
        The caller commits, and decides whether to wait or fail the run."""
        slot.attempt += 1
        if error is not None:
            self.record_failure(action, slot, error)
            return
        try:
            slot.value = to_json_value(result)
        except NotJSON as exc:
            slot.status = "failed"
            slot.error = {"type": "NotJSON", "message": str(exc)}
            return
        slot.status = "done"
        slot.error = None
        slot.due_at = None
        slot.resume_id = None
        self.audit("action", {"key": slot.key, "attempt": slot.attempt})

    def record_failure(self, action: Action, slot: Slot, exc: Exception) -> None:
        """Record a failed attempt: retry later, or out of attempts."""
        slot.error = error_of(exc)
        retry = action.retry
        if isinstance(exc, retry.non_retryable) or slot.attempt >= retry.attempts:
            slot.status = "failed"
            return
        due = self.now() + timedelta(seconds=retry.delay_after(slot.attempt))
        slot.status = "retrying"
        slot.due_at = format_instant(due)
        slot.resume_id = f"{slot.key}@{self.head.visit}.{slot.attempt + 1}"
        self.audit("retry", {"key": slot.key, "attempt": slot.attempt, "error": slot.error,
                             "due_at": slot.due_at})

    def action_failed(self, action: Action, slot: Slot) -> Outcome:
        """Fail the run because an action ran out of attempts (or its result is not JSON)."""
        assert slot.error is not None
        if slot.error["type"] == "NotJSON":
            message = f"action '{slot.key}' returned a value that cannot be stored as JSON: {slot.error['message']}"
        else:
            tries = f"{slot.attempt} attempt{'s' if slot.attempt != 1 else ''}"
            message = (f"action '{slot.key}' failed after {tries}: "
                       f"{slot.error['type']}: {slot.error['message']}")
        return self.fail({"type": slot.error["type"], "message": message},
                         {"key": slot.key, "attempt": slot.attempt})

    def action(self, action: Action, index: int, slot: Slot | None) -> Any:
        """``yield self.action(...)``."""
        if slot is None:
            slot = Slot(index, "action", action.key, "new")
        while slot.status != "done":
            if slot.status == "failed":
                raise _Stop(self.action_failed(action, slot))
            if slot.status == "retrying":
                due = slot.due()
                if due is not None and due > self.now():
                    self.pause()
            self.set_running()
            self.attempt(action, slot)
            self.put(slot)
            if slot.status == "done":
                self.commit()
            elif slot.status == "retrying" and (slot.due() or self.now()) <= self.now():
                self.commit()  # retry at once; a later delay is committed by the pause
        return self.restore_result(action, slot)

    def restore_result(self, action: Action, slot: Slot) -> Any:
        """The value the step receives for a stored result."""
        try:
            return restore(return_adapter(action.fn), slot.value)
        except ValidationError as exc:
            raise _Stop(self.fail({
                "type": "InvalidResult",
                "message": f"action '{slot.key}' returned a value that does not match its return "
                           f"annotation: {validation_message(exc)}",
            })) from None

    def parallel(self, command: Parallel, index: int, slot: Slot | None) -> Any:
        """``yield self.parallel({...})``: run the unfinished actions concurrently."""
        if slot is None:
            slot = Slot(index, "parallel", command.key, "running", parts={})
        parts = slot.parts
        assert parts is not None
        by_key = {a.key: a for a in command.actions.values()}
        while slot.status != "done":
            # Checked first: a process that died after saving the last part never marked the slot done.
            if len(parts) == len(by_key) and all(p.status == "done" for p in parts.values()):
                slot.status = "done"
                self.put(slot)
                self.commit()
                break
            failed = [p for p in parts.values() if p.status == "failed"]
            if failed:
                raise _Stop(self.action_failed(by_key[failed[0].key], failed[0]))
            now = self.now()
            # A part still "new" on record was in flight when its process died: run it again.
            todo = [a for a in by_key.values()
                    if a.key not in parts or parts[a.key].status == "new"
                    or (parts[a.key].status == "retrying" and (parts[a.key].due() or now) <= now)]
            if not todo:
                self.pause()
            self.set_running()
            self.run_concurrently(todo, slot)
        return {name: self.restore_result(a, parts[a.key]) for name, a in command.actions.items()}

    def run_concurrently(self, actions: list[Action], slot: Slot) -> None:
        """Run ``actions`` in threads; record each outcome from this thread as it arrives."""
        parts = slot.parts
        assert parts is not None
        for action in actions:
            parts.setdefault(action.key, Slot(0, "action", action.key, "new"))
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(actions)) as pool:
            futures = {pool.submit(run_callable, a.fn, a.args, a.kwargs): a for a in actions}
            for future in concurrent.futures.as_completed(futures):
                action = futures[future]
                exc = future.exception()
                if exc is not None and not isinstance(exc, Exception):
                    raise exc
                self.record_attempt(action, parts[action.key], None if exc else future.result(), exc)
                self.put(slot)
                self.commit()

    # -- timers

    def sleep(self, command: Sleep, index: int, slot: Slot | None) -> datetime:
        """``yield self.sleep(...)`` / ``self.sleep_until(...)``."""
        if slot is None:
            start = command.until or self.now() + timedelta(seconds=command.seconds or 0.0)
            slot = Slot(index, "sleep", command.key, "waiting", due_at=format_instant(start),
                        resume_id=f"{command.key}@{self.head.visit}")
            self.put(slot)
            self.audit("wait_begin", {"kind": "timer", "key": slot.key, "resume_id": slot.resume_id,
                                      "due_at": slot.due_at})
        due = slot.due()
        assert due is not None
        if slot.status == "waiting":
            if due > self.now():
                self.pause()
            slot.status = "done"
            self.put(slot)
            self.audit("wait_end", {"kind": "timer", "key": slot.key, "resume_id": slot.resume_id})
            self.head.status = "running"
            self.head.pending = []
            self.commit()
        return due

    # -- events

    def wait_event(self, command: WaitEvent, index: int, slot: Slot | None) -> Any:
        """``yield self.wait_event(...)``."""
        head = self.head
        adapter = adapter_for_type(command.type)
        if slot is None:
            deadline = None
            if command.timeout is not None:
                deadline = format_instant(self.now() + timedelta(seconds=command.timeout))
            try:
                request = to_json_value(command.request)
            except NotJSON as exc:
                self.stop_failed(FlowError(f"wait_event '{command.key}': request must be JSON: {exc}"))
            slot = Slot(index, "event", command.key, "waiting", due_at=deadline,
                        resume_id=f"{command.key}@{head.visit}", request=request,
                        expects=describe_type(command.type))
            self.put(slot)
            begun: dict[str, Any] = {"kind": "event", "key": slot.key, "resume_id": slot.resume_id}
            if deadline is not None:
                begun["due_at"] = deadline
            self.audit("wait_begin", begun)
        if slot.status == "waiting":
            self.settle_event(command, slot, adapter)
        if slot.status == "timed_out":
            return _Throw(EventTimeout(slot.key, slot.due_at or "its deadline"))
        try:
            return restore(adapter, slot.value)
        except ValidationError as exc:  # the wait's type changed under a recorded value
            self.stop_failed(FlowError(f"event '{slot.key}': recorded value no longer fits: "
                                       f"{validation_message(exc)}"))

    def settle_event(self, command: WaitEvent, slot: Slot, adapter: Any) -> None:
        """Resolve a waiting event from the answer being given, the queue, or its deadline."""
        head = self.head
        if self.resolving is not None and self.resolving[0] == slot.resume_id:
            _, raw = self.resolving
            self.resolving = None
            value = self.validate_event(command, raw, adapter)  # InvalidValue: nothing written yet
            self.event_done(slot, value, queued=False)
            return
        queue = head.inbox.get(slot.key)
        while queue:
            raw = queue.pop(0)
            if not queue:
                del head.inbox[slot.key]
            try:
                value = self.validate_event(command, raw, adapter)
            except InvalidValue as exc:
                self.audit("event_rejected", {"key": slot.key, "value": raw, "error": exc.message})
                continue
            self.event_done(slot, value, queued=True)
            return
        due = slot.due()
        if due is not None and due <= self.now():
            slot.status = "timed_out"
            self.put(slot)
            self.audit("wait_end", {"kind": "event", "key": slot.key, "resume_id": slot.resume_id,
                                    "timed_out": True})
            head.status = "running"
            head.pending = []
            self.commit()
            return
        self.pause()

    def validate_event(self, command: WaitEvent, raw: Any, adapter: Any) -> Any:
        """The JSON form of an event value, validated against the wait's ``type``."""
        try:
            value = raw if adapter is None else adapter.validate_python(raw)
            return to_json_value(value)
        except ValidationError as exc:
            raise InvalidValue(f"invalid value for event '{command.key}': {validation_message(exc)}") from None
        except NotJSON as exc:
            raise InvalidValue(f"invalid value for event '{command.key}': {exc}") from None

    def event_done(self, slot: Slot, value: Any, *, queued: bool) -> None:
        """Record an event's value and commit (the run is running again)."""
        slot.status = "done"
        slot.value = value
        self.put(slot)
        values: dict[str, Any] = {"kind": "event", "key": slot.key, "resume_id": slot.resume_id}
        if queued:
            values["queued"] = True
        self.audit("wait_end", values)
        self.head.status = "running"
        self.head.pending = []
        self.commit()


# -- operations on a run that do not replay it ---------------------------------------


def apply_signal(cls: type[Workflow[Any]], head: RunHead, name: str, args: dict[str, Any],
                 clock: Clock, slots: list[Slot]) -> list[Entry]:
    """Run ``@signal`` method ``name`` against the run's latest state; returns the entries to commit.

    Its change must survive a replay of the current step visit. A run paused on a slot (a
    wait, a retry delay, a failed action) records the signal on that slot, and the replay
    calls it again when it gets there — where it first happened. Otherwise the signal also
    changes the state at the top of the visit. Raises InvalidValue (bad arguments, or the
    signal refused) with nothing changed.
    """
    spec = cls.__tinywf_signals__.get(name)
    if spec is None:
        raise SignalNotFound(cls.__name__, name, sorted(cls.__tinywf_signals__))
    try:
        stored = to_json_value(args)
    except NotJSON as exc:
        raise InvalidValue(f"signal '{name}': arguments must be JSON: {exc}") from None
    paused = slots[-1] if slots else None
    if paused is not None and not paused.open:
        paused = None
    targets = [head.state] if paused is not None else [head.state, head.visit_state]
    live = _Context(None, head.run_id, head.visit, head.step)
    states = [run_signal(cls, head, spec.fn, name, stored, state, ctx)
              for state, ctx in zip(targets, [live, _Context(None, head.run_id, head.visit, head.step)],
                                    strict=False)]
    entries: list[Entry] = []
    if paused is not None:
        paused.signals = [*(paused.signals or []), {"name": name, "args": stored}]
        entries.append(SlotEntry(paused.to_json()))
        head.state = states[0]
    else:
        head.state, head.visit_state = states[0], keep_signal_result(head.state, head.visit_state, *states)
    at = format_instant(clock.now())
    entries.append(AuditEntry(at, head.step, "signal", {"name": name, "args": stored}))
    entries += [AuditEntry(at, head.step, t, v) for t, v in live.logs]
    return entries


def run_signal(cls: type[Workflow[Any]], head: RunHead, fn: Callable[..., Any], name: str,
               args: dict[str, Any], state: Any, ctx: _Context) -> Any:
    """Call a signal method on a copy of ``state``; returns the new state's JSON form."""
    wf = new_instance(cls, dumps(state), ctx)
    try:
        signal_caller(fn)(wf, **args)
    except ValidationError as exc:
        raise InvalidValue(f"signal '{name}': {validation_message(exc)}") from None
    except TinyWFError:
        raise
    except Exception as exc:
        raise InvalidValue(f"signal '{name}' refused: {type(exc).__name__}: {exc}") from None
    try:
        return dump_state(cls, wf.state)
    except FlowError as exc:
        raise InvalidValue(f"signal '{name}': {exc.message}") from None


def keep_signal_result(live: Any, visit: Any, live_after: Any, visit_after: Any) -> Any:
    """The visit's starting state after a signal, agreeing with what the live state shows.

    Fields the visit's code has not changed yet take the signal's result on the live state,
    so a signal that reads the clock or derives a field from others keeps the value the
    run's document showed; a field the visit already changed keeps the signal's result on
    the starting state, which the replay then changes again.
    """
    if not all(isinstance(s, dict) for s in (live, visit, live_after, visit_after)):
        return visit_after
    kept = dict(visit_after)
    missing = object()
    for key in live.keys() | live_after.keys():
        if visit.get(key, missing) == live.get(key, missing):
            if key in live_after:
                kept[key] = live_after[key]
            else:
                kept.pop(key, None)
    return kept


def signal_caller(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` wrapped to validate its arguments from their annotations (pydantic)."""
    from pydantic import validate_call

    cached = getattr(fn, "__tinywf_validated__", None)
    if cached is None:
        cached = validate_call(fn)
        fn.__tinywf_validated__ = cached  # type: ignore[attr-defined]
    return cached


def reset_failed_slots(slots: list[Slot], now: datetime) -> list[Entry]:
    """For ``tinywf retry``: give failed actions of the visit a fresh set of attempts, due now."""
    entries: list[Entry] = []
    for slot in slots:
        targets = list(slot.parts.values()) if slot.parts is not None else [slot]
        changed = False
        for target in targets:
            if target.kind == "action" and target.status == "failed":
                target.status = "retrying"
                target.attempt = 0
                target.due_at = format_instant(now)
                changed = True
        if changed:
            entries.append(SlotEntry(slot.to_json()))
    return entries


def encode_state_input(cls: type[Workflow[Any]], data: Any) -> Any:
    """Validate input for a new run against the state model; returns its JSON form."""
    model = cls.__tinywf_model__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidValue(f"input must be a JSON object, got {type(data).__name__}")
    if model is None:
        try:
            return to_json_value(data)
        except NotJSON as exc:
            raise InvalidValue(f"input: {exc}") from None
    if model.model_config.get("extra") != "allow":
        unknown = sorted(set(data) - input_keys(model))
        if unknown:
            raise InvalidValue(
                f"input key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                f"{'are' if len(unknown) > 1 else 'is'} not {'fields' if len(unknown) > 1 else 'a field'} "
                f"of {model.__name__} (fields: {', '.join(sorted(model.model_fields))})")
    try:
        state: BaseModel = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidValue(f"input does not fit {model.__name__}: {validation_message(exc)}") from None
    return state.model_dump(mode="json")


@functools.lru_cache(maxsize=256)
def input_keys(model: type[BaseModel]) -> frozenset[str]:
    """The keys a model's input may use: its field names and their aliases."""
    fields = model.model_fields
    return frozenset(fields) | {f.alias for f in fields.values() if f.alias}
