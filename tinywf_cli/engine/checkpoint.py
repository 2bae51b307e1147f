"""A run's checkpoint: its head and the journal entries queued since the last commit.

Everything that changes a run goes through its :class:`Checkpoint`, which hands the head and
the queued entries to the store's session (a ``Save``). A pass over a step ends by raising
``_Stop`` (paused, finished, failed, blocked): control flow the step's code never sees. A
command answered with a failure replies ``_Throw``, raised in the step at its yield.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NoReturn

from tinywf_cli.clock import Clock, format_instant
from tinywf_cli.engine.values import Answer
from tinywf_cli.errors import FlowError
from tinywf_cli.model import ErrorInfo, PendingResume, RunHead
from tinywf_cli.stores.base import owe_alerts
from tinywf_cli.stores.journal import AuditEntry, Entry, Slot, SlotEntry

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


def error_of(exc: BaseException) -> dict[str, str]:
    """``{"type", "message"}`` of an exception."""
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}



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
        #: The answer being given (``resolve``), until its wait takes it: should the run stop
        #: before that (blocked, failed), it is kept in the run's queue for its key.
        self.answer: Answer | None = None
        #: ``(key, values queued there)`` once the answer was kept.
        self.kept: tuple[str, int] | None = None
        #: The whole-run limit the run held when it finished, to give back once that is saved.
        self.let_go: tuple[str, str | None] | None = None
        #: The flow's ``@on_failure`` methods: owed (``head.alerts``) from each failure or block.
        self.hooks: tuple[str, ...] = ()

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
            # a run's deadline (max_duration) wakes it too: tick cancels it then
            head.wake_at = min((p.due_at for p in head.pending if p.due_at is not None),
                               default=head.deadline)
            if head.deadline is not None and head.wake_at is not None:
                head.wake_at = min(head.wake_at, head.deadline)
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

    def keep_answer(self) -> None:
        """Keep the answer being given, which no wait took, first in the run's queue for its key
        (the wait takes it when the run gets there again): never lost without a word."""
        answer, self.answer = self.answer, None
        if answer is None:
            return
        queue = self.head.inbox.setdefault(answer.key, [])
        queue.insert(0, (*answer.form, answer.via))
        self.kept = (answer.key, len(queue))
        self.log("event_queued", {"key": answer.key, "resume_id": answer.resume_id, "kept": True})

    def pause(self, pending: list[PendingResume], expects: dict[str, str]) -> NoReturn:
        """Leave the run waiting on ``pending``; commit only what changed."""
        self.keep_answer()
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
        self.owe_alerts()
        self.log("error", dict(error, **(extra or {})))
        self.keep_answer()
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
        self.owe_alerts()
        self.log("blocked", {"type": kind, "message": message})
        self.keep_answer()
        self.commit()
        raise _Stop("blocked", message)

    def owe_alerts(self) -> None:
        """The run failed or was blocked: its ``@on_failure`` methods are owed, saved with that."""
        owe_alerts(self.head, self.hooks)

    def finish(self) -> NoReturn:
        """The run ended: its last step returned None."""
        head = self.head
        head.status = "finished"
        head.pending = []
        if head.held_limit is not None:
            self.let_go, head.held_limit = head.held_limit, None
        self.log("finish", {})
        self.keep_answer()
        self.commit()
        raise _Stop("finished")
