"""Advancing a run under its session, and what follows once the session closed: the child
runs it started (the engine's ``World``) and the parents of children that ended."""

from __future__ import annotations

from collections import deque
from contextlib import nullcontext, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywf_cli import telemetry
from tinywf_cli.engine.values import NotJSON, to_json_value
from tinywf_cli.errors import (
    FlowLoadError,
    InvalidValue,
    RunExists,
    RunNotFound,
    StatusConflict,
    StorageError,
    TinyWFError,
)
from tinywf_cli.model import ErrorInfo, FlowRef, PendingResume, RunDocument, RunHead, TickAdvanced
from tinywf_cli.runtime.base import RuntimeBase, _running, due_now, own_doc, start_values
from tinywf_cli.stores.base import LoadedRun, RunSession, owe_alerts, owes_alerts, wakes_parent
from tinywf_cli.stores.files.fileio import UNCHANGED
from tinywf_cli.stores.journal import Entry, VisitEntry
from tinywf_cli.stores.limits import Gates, cells_of
from tinywf_cli.telemetry import trace_id_of

if TYPE_CHECKING:
    from tinywf_cli.authoring.commands import Child
    from tinywf_cli.authoring.loader import WorkflowClass
    from tinywf_cli.engine.engine import Engine
    from tinywf_cli.engine.values import Answer


class _Follow:
    """What a command must do once a run's session closed: advance the children it started,
    wake the parent of a child that ended, and wake the runs it made room for under a limit
    (or that waited for a breaker it closed)."""

    def __init__(self) -> None:
        self.children: list[str] = []
        self.ended: list[str] = []
        self.woken: list[str] = []
        #: Runs to cancel, and why: the unfinished children of a run cancelled for its max_duration.
        self.cancel: list[tuple[str, str]] = []

    def after(self, engine: Engine | None, head: RunHead) -> None:
        """Take what an engine call left to do."""
        if engine is not None:
            self.children.extend(engine.started)
            self.woken.extend(r for r in engine.woken if r != head.run_id)
        if wakes_parent(head):
            self.ended.append(head.run_id)


#: Why a run that outlived its flow's ``max_duration`` was cancelled (and its children with it).
MAX_DURATION = "max_duration"


def deadline_of(cls: WorkflowClass, head: RunHead) -> datetime | None:
    """When a run of ``cls`` is cancelled if it has not ended: its creation plus the flow's
    ``max_duration`` (today's code decides, for runs started before it changed too)."""
    longest = cls.max_duration
    if longest is None:
        return None
    seconds = longest.total_seconds() if isinstance(longest, timedelta) else float(longest)
    try:
        return head.created_at + timedelta(seconds=seconds)
    except OverflowError:
        return None  # past what a date can hold: never


class Advancing(RuntimeBase):
    """Advance a loaded run with the engine, start child runs for it, and settle what follows."""

    def _engine(self, cls: WorkflowClass, run: LoadedRun, session: RunSession | None, *,
                dry: bool = False) -> Engine:
        save = session.commit if session is not None else (lambda head, entries: None)
        cells = cells_of(self.store)
        gates = None if cells is None else Gates(cells, getattr(session, "epoch", None))
        engine = _running().Engine(cls, run.head, run.slots, self.clock, save, self, dry=dry, gates=gates)
        pulse = getattr(session, "pulse", None)  # a claim kept while the run's actions show a sign of life
        if pulse is not None:
            pulse(engine.inflight.alive)
        return engine

    def _advance(self, session: RunSession, run: LoadedRun, follow: _Follow, *,
                 resolving: Answer | None = None, recover: bool = False,
                 cls: WorkflowClass | None = None) -> Engine | None:
        """Advance a loaded run; a flow file that no longer loads blocks it instead."""
        head = run.head
        if cls is None:
            try:
                cls = self._class_of(head)
            except FlowLoadError as exc:
                if owes_alerts(head):  # the run stays as it failed; the hooks cannot be called
                    self._give_up_alerts(session, head, exc.message)
                    return None
                self._block(session, head, "FlowLoadError", f"{exc.message}; fix the flow file, then "
                                                            f"`tinywf retry {head.run_id}`")
                return None
        if owes_alerts(head):  # failed or blocked earlier: only its @on_failure methods are due
            self._alert(session, head, cls)
            return None
        head.deadline = deadline_of(cls, head)
        if head.deadline is not None and head.deadline <= self.clock.now():
            self._cancel(session, head, MAX_DURATION, follow)
            follow.cancel.extend((child, MAX_DURATION) for child in head.children)
            return None
        engine = self._engine(cls, run, session)
        tel = telemetry.current()
        try:
            with nullcontext() if tel is None else tel.advance(head, head.parent_trace):
                engine.advance(resolving=resolving, recover=recover)
        except StorageError as exc:
            if engine.cp.saved and exc.problem.endswith(UNCHANGED):
                # "unchanged" holds for the last write only: say what the earlier ones kept
                saved = engine.cp.saved
                raise StorageError(exc.path, (
                    f"{exc.problem[:-len(UNCHANGED)]}this last change was not saved, but the "
                    f"{saved} change{'s' if saved != 1 else ''} this command made before it "
                    f"{'were' if saved != 1 else 'was'} (`tinywf show {head.run_id}`); "
                    "`tinywf tick` carries the run on")) from None
            raise
        if owes_alerts(head):
            self._alert(session, head, cls)
        follow.after(engine, head)
        return engine

    def _alert(self, session: RunSession, head: RunHead, cls: WorkflowClass) -> None:
        """Call the ``@on_failure`` methods the failed run owes, saving after each; stop at one
        that failed and is to be tried again later (its due time is saved)."""
        from tinywf_cli.engine.alerts import call_next_alert

        now = self.clock.now()
        while owes_alerts(head) and (head.alert_due is None or head.alert_due <= now):
            entries = call_next_alert(cls, head, self.clock, self.store_target)
            self._commit(session, head, entries)

    def _give_up_alerts(self, session: RunSession, head: RunHead, why: str) -> None:
        """Drop the ``@on_failure`` calls a failed run owes when its flow no longer loads (logged)."""
        entries: list[Entry] = [self._log(head, "on_failure_error", {"hook": name, "type": "FlowLoadError",
                                                                     "message": why}) for name in head.alerts]
        owe_alerts(head)
        self._commit(session, head, entries)

    def _block(self, session: RunSession, head: RunHead, kind: str, message: str) -> None:
        head.status = "blocked"
        head.error = ErrorInfo(type=kind, message=message)
        head.pending = []
        head.wake_at = None
        owe_alerts(head)  # its class, and so its hooks, cannot load
        self._commit(session, head, [self._log(head, "blocked", {"type": kind, "message": message})])
        tel = telemetry.current()
        if tel is not None:
            tel.run_ended(head)

    # -- what a run gives back ----------------------------------------------------------------

    def _give_back(self, run_id: str, pending: list[PendingResume], held: tuple[str, str | None] | None,
                   follow: _Follow) -> None:
        """A run cancelled or paused: leave the queues it waited in (``pending``) and give back the
        whole-run slot it ``held``. Called after its change was committed (a crash in between
        leaves a slot the next look for room finds no longer held)."""
        cells = cells_of(self.store)
        if cells is None:
            return
        gates = Gates(cells)
        try:
            for resume in pending:
                request = resume.request or {}
                if resume.kind == "limit" and isinstance(request.get("limit"), str):
                    gates.leave_queue(request["limit"], request.get("key"), run_id)
            if held is not None:
                name, key = held
                follow.woken.extend(gates.leave_limit(name, key, gates.ticket(run_id, None, None),
                                                      self.clock.now()))
        except TinyWFError:
            pass  # the next look for room drops what this run no longer holds

    def _cancel(self, session: RunSession, head: RunHead, reason: str | None, follow: _Follow) -> None:
        """Cancel the run held by ``session``: nothing of it stays pending (its children are the
        caller's to cancel, once the session closed)."""
        values: dict[str, Any] = {}
        if reason:
            try:
                values["reason"] = to_json_value(reason)
            except NotJSON as exc:
                raise InvalidValue(f"--reason: {exc}") from None
        waited, held = head.pending, head.held_limit
        head.status = "cancelled"
        head.pending = []
        head.wake_at = None
        head.paused_from = None
        head.held_limit = None
        self._commit(session, head, [self._log(head, "cancel", values)])
        tel = telemetry.current()
        if tel is not None:
            tel.run_ended(head)
        follow.after(None, head)
        self._give_back(head.run_id, waited, held, follow)

    def _cancel_tree(self, run_id: str, reason: str | None, children_reason: str,
                     seen: int | None = None) -> tuple[RunHead, _Follow]:
        """Cancel a run that has not ended (and not changed since its ``progress`` was ``seen``), then its
        unfinished children (``children_reason``); what follows (waking the parents of the runs
        cancelled) is the caller's to settle."""
        follow = _Follow()
        with self._open(run_id) as session:
            head = self._load_for(session, "cancel it", seen).head
            self._cancel(session, head, reason, follow)
        for child in head.children:
            try:
                _, more = self._cancel_tree(child, children_reason, children_reason)
            except (StatusConflict, RunNotFound):
                continue  # ended already, or gone
            follow.ended.extend(more.ended)
            follow.woken.extend(more.woken)
        return head, follow

    def _document(self, head: RunHead, *, advanced: bool, follow: _Follow | None = None) -> RunDocument:
        """The run's document; after the follow-ups (children, parents) ran, as they left it."""
        if follow is not None and follow.woken:
            self._wake_waiters(follow)
        if follow is not None and (follow.children or follow.ended or follow.cancel):
            self._settle(follow)
            with suppress(TinyWFError):
                head = self.store.head(head.run_id)
        doc = RunDocument.of(head)
        doc.advanced = advanced
        return doc

    # -- child runs (the engine's World) ----------------------------------------------

    def start_child(self, parent: RunHead, command: Child, run_id: str) -> None:
        """Create the child run ``run_id`` waiting to start (``tick`` or this call advances it), or
        accept it when it already is this parent's child (a replay after a crash)."""
        cls, ref, shown = self._child_flow(parent, command.flow)
        running = _running()
        code_of = running.code_of
        state = running.encode_state_input(cls, command.input)
        start = cls.__tinywf_start__
        assert start is not None
        now = self.clock.now()
        head = RunHead(run_id=run_id, workflow=shown, flow=ref, doc=own_doc(cls), status="waiting", step=start,
                       state=state, visit_state=state, created_at=now, updated_at=now, version=cls.version,
                       parent=parent.run_id, wake_at=now, code=code_of(cls), history_limit=cls.history_limit,
                       tags=dict(parent.tags), trace=trace_id_of(run_id, now), parent_trace=parent.trace)
        try:
            with self._open(run_id, create=True) as session:
                session.create(head, [self._log(head, "start", start_values(shown, head)),
                                      VisitEntry(1, start, state, cls.version)])
            self._started(head)
        except RunExists:
            if self.store.head(run_id).parent == parent.run_id:
                return
            raise RunExists(run_id) from None

    def _child_flow(self, parent: RunHead, flow: Any) -> tuple[WorkflowClass, FlowRef, str]:
        from tinywf_cli.authoring.workflow import Workflow

        if isinstance(flow, type):
            if not issubclass(flow, Workflow) or not flow.__tinywf_steps__:
                raise FlowLoadError(f"{flow!r} is not a workflow class with @step methods")
            ref, shown = self.loader.register(flow)
            return flow, ref, shown
        spec = str(flow)
        if parent.flow.file is not None and not Path(spec.rpartition(":")[0] or spec).is_absolute():
            beside = Path(parent.flow.file).parent / spec
            path_part = str(beside).rpartition(":")[0] if ":" in spec else str(beside)
            if Path(path_part).exists() or Path(path_part + ".py").exists():
                spec = str(beside)
        return self.loader.load(spec)

    def child_head(self, run_id: str) -> RunHead | None:
        """A child's head as last saved, or None when it no longer exists."""
        try:
            return self.store.head(run_id)
        except RunNotFound:
            return None

    def _settle(self, follow: _Follow) -> list[TickAdvanced]:
        """Advance started children and wake the parents of ended ones, until nothing is left to do.

        Each step takes one run's lock at a time, without waiting: a run locked by another
        process is left to it (or to the next ``tick``, for which it stays due).
        """
        done: list[TickAdvanced] = []
        for run_id, reason in follow.cancel:
            with suppress(TinyWFError):  # ended meanwhile, gone, or held past the lock timeout
                cancelled = self._cancel_tree(run_id, reason, reason)[1]
                follow.ended.extend(cancelled.ended)
                follow.woken.extend(cancelled.woken)
        self._wake_waiters(follow)
        children, ended = deque(follow.children), deque(follow.ended)
        follow.children, follow.ended, follow.cancel = [], [], []
        while children or ended:
            more = _Follow()
            if children:
                head = self._advance_if_due(children.popleft(), more)
            else:
                head = self._wake_parent(ended.popleft(), more)
            if head is not None:
                done.append(TickAdvanced(run_id=head.run_id, status=head.status))
            children.extend(more.children)
            ended.extend(more.ended)
            self._wake_waiters(more)
        return done

    def _wake_waiters(self, follow: _Follow) -> None:
        """Bring the due time of runs waiting for room (or a breaker) forward to now, that ``tick``
        takes them up at once: each under its own lock, without waiting (a run locked is being
        advanced already), never advanced here."""
        woken, follow.woken = follow.woken, []
        for run_id in dict.fromkeys(woken):
            try:
                with self._open(run_id, 0) as session:
                    head = session.load().head
                    now = self.clock.now()
                    if head.status != "waiting":
                        continue
                    changed = False
                    for pending in head.pending:
                        if pending.kind in ("limit", "breaker") and (pending.due_at is None or pending.due_at > now):
                            pending.due_at = now
                            changed = True
                    if changed:
                        head.wake_at = min((p.due_at for p in head.pending if p.due_at is not None), default=None)
                        self._commit(session, head, [])
            except TinyWFError:
                continue  # locked (being advanced), gone or unreadable: its own due time stands

    def _advance_if_due(self, run_id: str, follow: _Follow) -> RunHead | None:
        try:
            with self._open(run_id, 0) as session:
                run = session.load()
                if not due_now(run.head, self.clock.now()) or wakes_parent(run.head):
                    return None
                self._advance(session, run, follow, recover=run.head.status == "running")
                return run.head
        except TinyWFError:
            return None  # locked or unreadable: tick reports it

    def _wake_parent(self, child_id: str, follow: _Follow) -> RunHead | None:
        """A child ended: advance its parent if it waits on it, then note that the parent was woken."""
        try:
            child = self.store.head(child_id)
            parent_id = child.parent
            woken: RunHead | None = None
            if parent_id is not None:
                try:
                    with self._open(parent_id, 0) as session:
                        run = session.load()
                        if run.head.status == "waiting" and any(
                                p.kind == "child" and (p.request or {}).get("run_id") == child_id
                                for p in run.head.pending):
                            self._advance(session, run, follow)
                            woken = run.head
                except RunNotFound:
                    pass
            with self._open(child_id, 0) as session:
                head = session.load().head
                if wakes_parent(head):
                    head.parent_woken = True
                    self._commit(session, head, [])
            return woken
        except TinyWFError:
            return None  # locked or unreadable: the child stays due, tick tries again
