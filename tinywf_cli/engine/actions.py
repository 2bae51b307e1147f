"""Actions: running one (and its retries), several at once (``parallel``), and giving the step
the result its record holds."""

from __future__ import annotations

import concurrent.futures
import contextvars
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from tinywf_cli import telemetry
from tinywf_cli.authoring.commands import Action, Parallel
from tinywf_cli.clock import format_instant
from tinywf_cli.engine.attempts import call_attempt
from tinywf_cli.engine.checkpoint import _Throw, error_of
from tinywf_cli.engine.gating import Gating, Verdict
from tinywf_cli.engine.values import NotJSON, restore, return_adapter, to_json_value, validation_message
from tinywf_cli.errors import ActionFailed
from tinywf_cli.interrupts import is_interrupt
from tinywf_cli.stores.journal import PartEntry, Slot


def heartbeat_of(slot: Slot) -> Any:
    """The details of the last heartbeat of the action's failed attempt before (None: none)."""
    return None if slot.error is None else slot.error.get("heartbeat")


def _counted(kind: str, key: str) -> None:
    """An attempt the audit log records, counted in the telemetry's metrics (when it is on)."""
    tel = telemetry.current()
    if tel is not None:
        tel.counted(kind, key)


class Actions(Gating):
    """The engine's actions: ``yield self.action(...)`` and ``yield self.parallel(...)``."""

    def attempt(self, action: Action, slot: Slot) -> None:
        """Run one attempt of ``action`` here and record its outcome in ``slot`` (its slot under a
        limit given back, its outcome counted by its breaker: before the caller commits)."""
        done = call_attempt(action, slot.attempt + 1, heartbeat_of(slot), self.inflight)
        if done.error is not None and is_interrupt(done.error):
            raise done.error
        self.record_attempt(action, slot, done.result, done.error, done.details)
        self.settle(action, ok=done.error is None)

    def record_attempt(self, action: Action, slot: Slot, result: Any = None,
                       error: BaseException | None = None, heartbeat: Any = None) -> None:
        """Count one attempt and record its outcome in ``slot``: ``done`` (and audited), or on
        failure ``retrying`` (with its due time) or ``failed``, with the details of the failed
        attempt's last ``heartbeat`` for the next; a result that is not JSON fails.
        The caller commits, and decides whether to wait, go on or fail the run."""
        slot.attempt += 1
        if error is not None:
            self.record_failure(action, slot, error, heartbeat)
            return
        try:
            slot.value = to_json_value(result)
        except NotJSON as exc:
            slot.status = "failed"
            slot.error = {"type": "NotJSON", "message": str(exc)}
            self.cp.log("action_failed", {"key": slot.key, "attempt": slot.attempt, "error": slot.error})
            _counted("action_failed", slot.key)
            return
        slot.status = "done"
        slot.error = None
        slot.due_at = None
        slot.resume_id = None
        self.cp.log("action", {"key": slot.key, "attempt": slot.attempt})
        _counted("action", slot.key)

    def record_failure(self, action: Action, slot: Slot, exc: BaseException, heartbeat: Any = None) -> None:
        """Record a failed attempt: retry later, or out of attempts (also at once for an error
        in ``non_retryable``, and for ``SystemExit`` and friends, which are no passing trouble);
        the details of its last ``heartbeat`` are kept for the next attempt."""
        slot.error = error_of(exc)
        if heartbeat is not None:
            slot.error["heartbeat"] = heartbeat
        retry = action.retry
        if (not isinstance(exc, Exception) or isinstance(exc, retry.non_retryable)
                or slot.attempt >= retry.attempts):
            slot.status = "failed"
            slot.due_at = None
            slot.resume_id = None
            self.cp.log("action_failed", {"key": slot.key, "attempt": slot.attempt, "error": slot.error})
            _counted("action_failed", slot.key)
            return
        due = self.now() + timedelta(seconds=retry.delay_after(slot.attempt))
        slot.status = "retrying"
        slot.due_at = format_instant(due)
        slot.resume_id = f"{slot.key}@{self.head.visit}.{slot.attempt + 1}"
        self.cp.log("retry", {"key": slot.key, "attempt": slot.attempt, "error": slot.error, "due_at": slot.due_at})
        _counted("retry", slot.key)

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
            verdict = self.admit(action, slot)
            if verdict is Verdict.WAIT:
                self.put(slot)
                self.pause(slot)
            if verdict is Verdict.GO:
                self.cp.resume()
                self.attempt(action, slot)
            else:
                self.record_attempt(action, slot, error=verdict)
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
        gated: set[str] = set()  # parts that wait for room (or their breaker) in this pass
        while True:
            now = self.now()
            # a part still "new" on record was in flight when its process died: run it again
            todo = [by_key[k] for k in order
                    if k not in parts or parts[k].status in ("new", "running")
                    or (parts[k].status == "retrying" and (parts[k].due() or now) <= now)
                    or (parts[k].status == "gated" and k not in gated)]
            if not todo:
                break
            admitted = self.admit_parts(todo, index, parts, gated)
            if admitted:
                self.cp.resume()
                fresh.update(a.key for a in admitted)
                self.run_concurrently(admitted, index, parts, command.max_workers)
        if any(parts[k].status in ("retrying", "gated") for k in order):
            self.pause(slot)
        for key in order:
            if parts[key].status == "failed":
                return self.failure_of(parts[key])
        return {name: self.restore_result(a, parts[a.key], a.key in fresh) for name, a in command.actions.items()}

    def admit_parts(self, actions: list[Action], index: int, parts: dict[str, Slot], gated: set[str]) -> list[Action]:
        """The parts that may make an attempt now; the others are gated (``gated`` notes them) or
        refused by their breaker, each recorded on its own."""
        admitted = []
        for action in actions:
            part = parts.setdefault(action.key, Slot(0, "action", action.key, "new"))
            verdict = self.admit(action, part)
            if verdict is Verdict.GO:
                admitted.append(action)
                continue
            if verdict is Verdict.WAIT:
                gated.add(action.key)
            else:
                self.record_attempt(action, part, error=verdict)
            self.cp.entries.append(PartEntry(index, part.to_json()))
        return admitted

    def run_concurrently(self, actions: list[Action], index: int, parts: dict[str, Slot], max_workers: int) -> None:
        """Run ``actions`` in at most ``max_workers`` threads; record outcomes from this thread as
        they arrive, each part on its own, all that finished together in one commit."""
        for action in actions:
            parts.setdefault(action.key, Slot(0, "action", action.key, "new"))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(len(actions), max_workers),
                                                     thread_name_prefix="tinywf-action")
        try:
            # each part runs in a copy of this context: a Runtime call on this very run is refused there too
            futures = {pool.submit(contextvars.copy_context().run, call_attempt, a, parts[a.key].attempt + 1,
                                   heartbeat_of(parts[a.key]), self.inflight): a
                       for a in actions}
            waiting = set(futures)
            while waiting:
                done, waiting = concurrent.futures.wait(waiting, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    action = futures[future]
                    attempt = future.result()
                    exc = attempt.error
                    if exc is not None and is_interrupt(exc):
                        raise exc
                    part = parts[action.key]
                    self.record_attempt(action, part, attempt.result, exc, attempt.details)
                    self.settle(action, ok=exc is None)
                    self.cp.entries.append(PartEntry(index, part.to_json()))
                self.commit()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # an interrupt must not wait for long actions
            raise
        pool.shutdown(wait=True)
