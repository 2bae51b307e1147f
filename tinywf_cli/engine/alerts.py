"""``@on_failure`` methods: called once per failure (or block) of a run, as an action is.

A failure saves the names of the flow's hooks in the run (``head.alerts``) with the failure
itself, so the hooks are owed durably: the runtime calls them right after, under the run's
lock, one at a time, saving after each; a process killed in between leaves the rest (and the
one in flight) owed, and the failed run due, so ``tick`` calls them. A hook that raises is
logged and tried again per its ``Retry`` at a durable due time, like an action's attempt.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tinywf_cli.authoring.workflow import Workflow
from tinywf_cli.clock import Clock, format_instant
from tinywf_cli.engine.checkpoint import error_of
from tinywf_cli.engine.signals import SignalContext
from tinywf_cli.engine.state import new_instance
from tinywf_cli.engine.values import dumps, to_json_value
from tinywf_cli.interrupts import is_interrupt
from tinywf_cli.model import ErrorInfo, RunHead
from tinywf_cli.stores.base import owe_alerts
from tinywf_cli.stores.journal import AuditEntry, Entry


def call_next_alert(cls: type[Workflow[Any]], head: RunHead, clock: Clock, store_target: str) -> list[Entry]:
    """Call the first hook ``head.alerts`` owes and change ``head`` to what follows: the hook done
    (or given up on) and dropped from ``alerts``, or its next attempt's due time. The entries to
    save with that change."""
    name = head.alerts[0]
    at = format_instant(clock.now())
    spec = cls.__tinywf_on_failure__.get(name)
    if spec is None:  # no longer in the flow's code
        _done(head)
        return [AuditEntry(at, head.step, "on_failure_error", {
            "hook": name, "type": "FlowError", "message": f"{cls.__name__} has no @on_failure method '{name}' any more",
        })]
    attempt = head.alert_attempt + 1
    context = SignalContext(head.run_id, head.visit, head.step, store_target, scheduled_at=head.scheduled_at)
    try:
        wf = new_instance(cls, dumps(head.state), context)
        result = to_json_value(spec.fn(wf, head.error or ErrorInfo(type="Error", message="")))
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        retry = spec.retry
        again = attempt < retry.attempts and not isinstance(exc, retry.non_retryable)
        values: dict[str, Any] = {"hook": name, "attempt": attempt, **error_of(exc)}
        if again:
            due = clock.now() + timedelta(seconds=retry.delay_after(attempt))
            head.alert_attempt, head.alert_due = attempt, due
            values["retry_at"] = format_instant(due)
        else:
            _done(head)
        return [*(AuditEntry(at, head.step, t, v) for t, v in context.logs),
                AuditEntry(at, head.step, "on_failure_error", values)]
    _done(head)
    return [*(AuditEntry(at, head.step, t, v) for t, v in context.logs),
            AuditEntry(at, head.step, "on_failure", {"hook": name, "attempt": attempt, "result": result})]


def _done(head: RunHead) -> None:
    """The first owed hook is behind the run: the next (if any) is owed at once."""
    owe_alerts(head, head.alerts[1:])
