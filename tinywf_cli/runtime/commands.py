"""The commands on one run: start, resolve, send, signal, cancel, retry, pause, resume, advance."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywf_cli.clock import as_utc, format_instant
from tinywf_cli.engine.values import Answer, kept_form
from tinywf_cli.errors import (
    BadInput,
    FlowLoadError,
    NotAnEvent,
    QueueFull,
    ResumeNotFound,
    RunChanged,
    RunExists,
    RunNotFound,
    StatusConflict,
)
from tinywf_cli.filters import checked_tags
from tinywf_cli.model import FlowRef, Recovery, RunDocument, RunHead, SignalDocument, Via
from tinywf_cli.runtime.advancing import _Follow
from tinywf_cli.runtime.base import _running, check_run_id, due_now, new_run_id, own_doc, start_values
from tinywf_cli.runtime.limits import Limits
from tinywf_cli.stores.base import LoadedRun, owe_alerts, wakes_parent
from tinywf_cli.stores.journal import Entry, SlotEntry, VisitEntry, fold_slots
from tinywf_cli.telemetry import trace_id_of

if TYPE_CHECKING:
    from tinywf_cli.authoring.loader import WorkflowClass
    from tinywf_cli.authoring.workflow import Workflow
    from tinywf_cli.engine.engine import Engine


#: Early events a run keeps queued, all keys together; more are refused (exit 4).
MAX_QUEUED_EVENTS = 1000


class RunCommands(Limits):
    """The commands that change one run, each under its lock."""

    # -- starting and answering runs ---------------------------------------------

    def start(self, flow: str | Path | type[Workflow[Any]], input: dict[str, Any] | None = None,
              run_id: str | None = None, *, attach: bool = False,
              tags: Mapping[str, str] | None = None) -> RunDocument:
        """Create a run of ``flow`` (``path.py[:Class]`` or a class) and advance it until it waits or ends.

        With ``attach``, a run that already has ``run_id`` and the same workflow is advanced
        (if due) and returned instead of raising RunExists: an idempotent start (its tags are
        left as they are). ``tags``: ``{key: value}`` strings the run carries, for ``list``
        and the bulk commands to select it by.
        """
        try:
            given = checked_tags(tags or {}, "tags")
        except TypeError as exc:
            raise BadInput(str(exc)) from None
        running = _running()
        code_of = running.code_of
        if isinstance(flow, type):
            if not issubclass(flow, running.Workflow) or not flow.__tinywf_steps__:
                raise FlowLoadError(f"{flow!r} is not a workflow class with @step methods")
            cls: WorkflowClass = flow
            ref, shown = self.loader.register(cls)
        else:
            cls, ref, shown = self.loader.load(str(flow))
        if run_id is not None:
            check_run_id(run_id)
        state = running.encode_state_input(cls, input)
        start = cls.__tinywf_start__
        assert start is not None
        follow = _Follow()
        drawn = 0
        while True:
            rid = run_id or new_run_id(cls)
            now = self.clock.now()
            head = RunHead(run_id=rid, workflow=shown, flow=ref, doc=own_doc(cls), status="running",
                           step=start, state=state, visit_state=state, created_at=now, updated_at=now,
                           version=cls.version, code=code_of(cls), history_limit=cls.history_limit,
                           tags=dict(given), trace=trace_id_of(rid, now))
            try:
                with self._open(rid, create=True) as session:
                    session.create(head, [self._log(head, "start", start_values(shown, head)),
                                          VisitEntry(1, start, state, cls.version)])
                    self._started(head)
                    self._advance(session, LoadedRun(head), follow, cls=cls)
            except RunExists:
                if run_id is not None and attach:
                    return self._attach(run_id, ref)
                drawn += 1
                if run_id or drawn == 8:
                    raise
                continue  # a generated id that is taken: draw another
            return self._document(head, advanced=True, follow=follow)

    def _attach(self, run_id: str, ref: FlowRef) -> RunDocument:
        follow = _Follow()
        with self._open(run_id) as session:
            run = session.load()
            head = run.head
            if (head.flow.file, head.flow.module, head.flow.cls) != (ref.file, ref.module, ref.cls):
                raise RunExists(run_id)
            advanced = due_now(head, self.clock.now()) and not wakes_parent(head)
            if advanced:
                self._advance(session, run, follow, recover=head.status == "running")
        return self._document(head, advanced=advanced, follow=follow)

    def resolve(self, run_id: str, resume: str, value: Any, *, created_at: datetime | None = None,
                via: Via = "runtime") -> RunDocument:
        """Answer a pending event (by resume id or event key) and advance the run.

        ``value`` is any JSON value, or a ``TextValue`` (text from a command line: JSON when
        it parses and fits the event's type, else the text itself). With ``created_at``, only
        the run created at that instant is answered (a signed link's): a later run given the
        same id is RunNotFound, and unchanged. ``via`` says in the audit log how the answer
        came (``cli``, ``http``, ``link``; ``runtime`` for a library call). Should the run
        stop (blocked, failed) before its wait takes the answer, the answer is kept queued
        for that wait (the document's ``kept`` says so) and taken once ``retry`` gets there.
        """
        follow = _Follow()
        with self._open(run_id) as session:
            run = self._load_for(session, "resolve it")
            head = run.head
            if created_at is not None and as_utc(head.created_at) != as_utc(created_at):
                raise RunNotFound(run_id)
            if head.status == "paused":
                raise StatusConflict(run_id, "paused", "resolve it (`tinywf resume` it first; "
                                                       "`tinywf send` queues events meanwhile)")
            if head.status == "blocked":
                raise StatusConflict(run_id, "blocked", f"resolve it (fix the flow, then `tinywf retry {run_id}`)")
            pending = next((p for p in head.pending if p.resume_id == resume), None)
            if pending is None:  # an event's key, else (to refuse it clearly) a timer's or retry's
                pending = next((p for p in head.pending if p.kind == "event" and p.key == resume), None) \
                    or next((p for p in head.pending if p.key == resume), None)
            if pending is None:
                raise ResumeNotFound(run_id, resume, [p.resume_id for p in head.pending])
            if pending.kind != "event":
                when = (f"when due ({format_instant(pending.due_at)}); `tinywf tick` advances due runs"
                        if pending.due_at else "when its child run ends")
                raise NotAnEvent(f"'{resume}' is a {pending.kind}, not an event: it resumes by itself {when}")
            answer = Answer.of(pending.resume_id, pending.key, value, via)  # one tinywf cannot keep: exit 2
            cls = self._class_of(head)  # a flow that no longer loads: exit 2, the run as it was
            engine = self._advance(session, run, follow, resolving=answer, cls=cls)
        return self._answered(head, engine, follow)

    def _answered(self, head: RunHead, engine: Engine | None, follow: _Follow) -> RunDocument:
        """The document after an answer: saying so when the run stopped before its wait took it."""
        doc = self._document(head, advanced=True, follow=follow)
        if engine is not None and engine.cp.kept is not None:
            doc.queued, doc.kept = engine.cp.kept, True
        return doc

    def send(self, run_id: str, key: str, value: Any, *, via: Via = "runtime") -> RunDocument:
        """Deliver event ``key``: resolve its pending wait, or queue it for the wait to come.

        A run that is paused, blocked or failed only queues it. ``via`` as for ``resolve``.
        """
        follow = _Follow()
        with self._open(run_id) as session:
            run = self._load_for(session, "send an event to it")
            head = run.head
            pending = next((p for p in head.pending if p.kind == "event" and p.key == key), None)
            if pending is not None and head.status in ("waiting", "running"):
                answer = Answer.of(pending.resume_id, key, value, via)
                cls = self._class_of(head)
                engine = self._advance(session, run, follow, resolving=answer, cls=cls)
                return self._answered(head, engine, follow)
            if sum(len(q) for q in head.inbox.values()) >= MAX_QUEUED_EVENTS:
                raise QueueFull(run_id, MAX_QUEUED_EVENTS)
            form, kept = kept_form(key, value)
            head.inbox.setdefault(key, []).append((form, kept, via))
            self._commit(session, head, [self._log(head, "event_queued", {"key": key})])
        doc = self._document(head, advanced=False)
        doc.queued = (key, len(head.inbox[key]))
        return doc

    def signal(self, run_id: str, name: str, /, **args: Any) -> SignalDocument:
        """Call the ``@signal`` method ``name`` on the run's latest state, under its lock.

        The document's ``result`` is what the method returned (JSON; ``None`` when nothing). A
        method that raises ``ValueError`` refuses the signal: InvalidValue, nothing changed.
        """
        follow = _Follow()
        with self._open(run_id) as session:
            run = self._load_for(session, f"signal it (signal '{name}')")
            head = run.head
            cls = self._class_of(head)
            from tinywf_cli.engine.engine import Engine
            from tinywf_cli.engine.signals import apply_signal
            from tinywf_cli.engine.state import StateMismatch

            migrated: list[Entry] = []
            if head.version != cls.version:  # bring the state to today's shape first, as an advance would
                migrated = Engine(cls, head, run.slots, self.clock, session.commit, self).migrate_now()
                if head.status == "blocked":
                    return self._signalled(self._document(head, advanced=True, follow=follow))
            try:
                entries, result = apply_signal(cls, head, name, args, self.clock, run.slots, self.store_target)
            except StateMismatch as exc:
                self._block(session, head, "StateMismatch", f"{exc}; then `tinywf retry {run_id}`")
                return self._signalled(self._document(head, advanced=True, follow=follow))
            self._commit(session, head, migrated + entries)
        return self._signalled(self._document(head, advanced=False), result)

    @staticmethod
    def _signalled(doc: RunDocument, result: Any = None) -> SignalDocument:
        """A signal's document: the run's, and what the method returned."""
        signalled = SignalDocument.model_construct(**{name: getattr(doc, name) for name in type(doc).model_fields})
        signalled.result = result
        return signalled

    def cancel(self, run_id: str, reason: str | None = None, *, _seen: int | None = None) -> RunDocument:
        """Cancel a run that has not ended, and its unfinished children; nothing stays pending."""
        head, follow = self._cancel_tree(run_id, reason, f"its parent {run_id} was cancelled", _seen)
        return self._document(head, advanced=False, follow=follow)

    def retry(self, run_id: str, *, _seen: int | None = None) -> RunDocument:
        """Try a failed run again from its failed step visit (the action that failed gets a fresh
        set of attempts), or a blocked run under today's code; cached actions stay cached."""
        follow = _Follow()
        with self._open(run_id) as session:
            run = session.load()
            head = run.head
            if _seen is not None and head.progress != _seen:
                raise RunChanged(run_id)
            if head.status not in ("failed", "blocked"):
                raise StatusConflict(run_id, head.status, "retry it (only failed or blocked runs are retried)")
            from tinywf_cli.engine.engine import reset_failed_slots

            entries = reset_failed_slots(run.slots, self.clock.now()) if head.status == "failed" else []
            entries.append(self._log(head, "retried", {"visit": head.visit, "was": head.status}))
            head.status = "running"
            head.error = None
            head.recovery = Recovery()
            owe_alerts(head)  # a new failure owes them anew
            self._commit(session, head, entries)
            run.slots = fold_slots([SlotEntry(s.to_json()) for s in run.slots] + entries)
            self._advance(session, run, follow)
        return self._document(head, advanced=True, follow=follow)

    def pause(self, run_id: str, *, _seen: int | None = None) -> RunDocument:
        """Hold a run: nothing advances it (tick and worker skip it) until ``resume``; events
        sent meanwhile queue, timers that come due wait."""
        with self._open(run_id) as session:
            head = self._load_for(session, "pause it", _seen).head
            if head.status == "paused":
                raise StatusConflict(run_id, "paused", "pause it again (`tinywf resume` it)")
            head.paused_from = head.status
            head.status = "paused"
            self._commit(session, head, [self._log(head, "paused", {"was": head.paused_from})])
            self._give_back(run_id, head.pending, None, _Follow())
        return self._document(head, advanced=False)

    def resume(self, run_id: str, *, _seen: int | None = None) -> RunDocument:
        """Put a paused run back and advance it as ``tick`` would."""
        follow = _Follow()
        with self._open(run_id) as session:
            run = self._load_for(session, "resume it", _seen)
            head = run.head
            if head.status != "paused":
                raise StatusConflict(run_id, head.status, "resume it (only paused runs are resumed)")
            back = head.paused_from or "running"
            head.status = "running" if back in ("running", "waiting") else back
            head.paused_from = None
            self._commit(session, head, [self._log(head, "resumed", {"to": head.status})])
            advanced = head.status == "running"
            if advanced:
                self._advance(session, run, follow)
        return self._document(head, advanced=advanced, follow=follow)

    # -- due work -----------------------------------------------------------------------

    def advance(self, run_id: str, *, timeout: float | None = None) -> RunDocument:
        """Advance one run if it is due (or recover it if its process died); else leave it."""
        follow = _Follow()
        with self._open(run_id, timeout) as session:
            run = session.load()
            head = run.head
            advanced = due_now(head, self.clock.now()) and not wakes_parent(head)
            if advanced:
                self._advance(session, run, follow, recover=head.status == "running")
            else:
                follow.after(None, head)
        return self._document(head, advanced=advanced, follow=follow)
