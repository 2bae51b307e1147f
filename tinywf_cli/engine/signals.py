"""``@signal`` methods: external actions on a run's latest state, kept across replays.

A signal runs under the run's lock and does not advance the run. Its change must survive
a replay of the current step visit: a run paused on a slot (a wait, a retry delay, a failed
action) records the signal on that slot, and the replay calls it again when it gets there —
where it first happened. Otherwise the signal also changes the state at the top of the visit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tinywf_cli.authoring.workflow import Workflow
from tinywf_cli.clock import Clock, format_instant
from tinywf_cli.engine.state import dump_state, new_instance
from tinywf_cli.engine.values import NotJSON, dumps, to_json_value, validation_message
from tinywf_cli.errors import FlowError, InvalidValue, SignalNotFound, TinyWFError
from tinywf_cli.interrupts import is_interrupt
from tinywf_cli.model import RunHead
from tinywf_cli.stores.journal import AuditEntry, Entry, Slot, SlotEntry


@dataclass
class SignalContext:
    """What a signal method's ``self`` talks to: its logs are collected, it cannot patch."""

    run_id: str
    visit: int
    step: str | None
    store_target: str
    logs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    keep_logs: bool = True
    #: The slot a schedule started the run for (``self.scheduled_at``), if one did.
    scheduled_at: datetime | None = None

    def record_log(self, type_: str, values: dict[str, Any]) -> None:
        """Collect the entry (it is saved with the signal)."""
        try:
            stored = to_json_value(values)
        except NotJSON as exc:
            raise TypeError(f"self.log({type_!r}, ...): values must be JSON: {exc}") from None
        if self.keep_logs:
            self.logs.append((type_, stored))

    def record_tags(self, tags: dict[str, str]) -> None:
        """Tags are a step's to set."""
        raise TypeError("self.tag() belongs in a step, not in a signal method")

    def patched(self, patch_id: str) -> bool:
        """Signals are not replayed step code: there is nothing to patch."""
        raise TypeError("self.patched() belongs in a step, not in a signal method")


def signal_caller(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` wrapped to validate its arguments from their annotations (pydantic)."""
    from pydantic import validate_call

    cached = getattr(fn, "__tinywf_validated__", None)
    if cached is None:
        cached = validate_call(fn)
        fn.__tinywf_validated__ = cached  # type: ignore[attr-defined]
    return cached


def apply_signal(cls: type[Workflow[Any]], head: RunHead, name: str, args: dict[str, Any],
                 clock: Clock, slots: list[Slot], store_target: str) -> tuple[list[Entry], Any]:
    """Run ``@signal`` method ``name`` against the run's latest state; returns the entries to commit
    and what the method returned (its JSON form; ``None`` when it returned nothing).

    Raises SignalNotFound, or InvalidValue (bad arguments, the signal refused — a ``ValueError``
    is a signal's way to say no — or a result that is not JSON) with nothing changed.
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
    live = SignalContext(head.run_id, head.visit, head.step, store_target, scheduled_at=head.scheduled_at)
    state, result = run_signal(cls, spec.fn, name, stored, head.state, live)
    entries: list[Entry] = []
    if paused is not None:
        paused.signals = [*(paused.signals or []), {"name": name, "args": stored}]
        entries.append(SlotEntry(paused.to_json()))
        head.state = state
    else:
        quiet = SignalContext(head.run_id, head.visit, head.step, store_target, keep_logs=False,
                              scheduled_at=head.scheduled_at)
        visit_after, _ = run_signal(cls, spec.fn, name, stored, head.visit_state, quiet)
        head.state, head.visit_state = state, keep_signal_result(head.state, head.visit_state, state, visit_after)
    at = format_instant(clock.now())
    logged: dict[str, Any] = {"name": name, "args": stored}
    if result is not None:
        logged["result"] = result
    entries.append(AuditEntry(at, head.step, "signal", logged))
    entries += [AuditEntry(at, head.step, t, v) for t, v in live.logs]
    return entries, result


def run_signal(cls: type[Workflow[Any]], fn: Callable[..., Any], name: str, args: dict[str, Any], state: Any,
               ctx: SignalContext) -> tuple[Any, Any]:
    """Call a signal method on a copy of ``state``; returns the new state's JSON form and the
    JSON form of what the method returned."""
    wf = new_instance(cls, dumps(state), ctx)
    try:
        returned = signal_caller(fn)(wf, **args)
    except ValidationError as exc:
        raise InvalidValue(f"signal '{name}': {validation_message(exc)}") from None
    except TinyWFError:
        raise
    except ValueError as exc:  # the signal's own validation: its message is the answer
        raise InvalidValue(f"signal '{name}' refused: {exc or type(exc).__name__}") from None
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        raise InvalidValue(f"signal '{name}' refused: {type(exc).__name__}: {exc}") from None
    try:
        result = to_json_value(returned)
    except NotJSON as exc:
        raise InvalidValue(f"signal '{name}' returned a value that is not JSON: {exc}") from None
    try:
        return dump_state(cls, wf.state), result
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
