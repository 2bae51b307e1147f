"""``Runtime``: the library API under the CLI — start, resolve, send, signal, tick, and more.

Each call takes the run's lock, loads it, makes one engine call, and returns the pydantic
document the CLI prints with ``--json``. Errors are the typed ``TinyWFError`` family.
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywf_cli.clock import Clock, clock_from_env, format_instant
from tinywf_cli.errors import (
    FlowLoadError,
    InvalidRunId,
    InvalidValue,
    NotAnEvent,
    ResumeNotFound,
    RunExists,
    RunLocked,
    RunNotFound,
    RunsExistAtTarget,
    StatusConflict,
    StoreUnavailable,
    TinyWFError,
)
from tinywf_cli.journal import AuditEntry, Entry, SlotEntry, VisitEntry, fold_slots
from tinywf_cli.model import (
    ENDED,
    CopyReport,
    CopySkipped,
    LogEntry,
    Recovery,
    RunDocument,
    RunHead,
    RunList,
    RunSummary,
    ShowDocument,
    TickAdvanced,
    TickReport,
    TickSkipped,
)
from tinywf_cli.store import LoadedRun, RunSession, Store, is_run_id, open_store
from tinywf_cli.values import NotJSON, to_json_value

if TYPE_CHECKING:
    from tinywf_cli.engine import Engine
    from tinywf_cli.loader import FlowLoader, WorkflowClass
    from tinywf_cli.workflow import Workflow


#: The first pause of a worker whose store cannot be reached (doubling up to its poll).
MIN_BACKOFF = 0.5


def _itself(session: AbstractContextManager[RunSession]) -> AbstractContextManager[RunSession]:
    return session


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is in the contract's charset; raises InvalidRunId."""
    if not is_run_id(run_id):
        raise InvalidRunId(str(run_id))
    return run_id


@functools.lru_cache(maxsize=256)
def _run_id_prefix(class_name: str) -> str:
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()
    return re.sub(r"[^a-z0-9_]", "", name)[:40] or "run"


def new_run_id(cls: type) -> str:
    """A fresh run id: the workflow's name in snake case and 8 random hex digits."""
    import secrets  # only new runs need it

    return f"{_run_id_prefix(cls.__name__)}-{secrets.token_hex(4)}"


def due_now(head: RunHead, now: datetime) -> bool:
    """Whether a run (read under its lock) is for ``tick`` to advance: left running by a dead
    process, or waiting on something due by ``now``."""
    if head.status == "running":
        return True
    return head.status == "waiting" and head.wake_at is not None and head.wake_at <= now


def own_doc(cls: type) -> str | None:
    """The class's own docstring, cleaned (not one inherited from ``Workflow``)."""
    text = cls.__dict__.get("__doc__")
    return clean_doc(text) if isinstance(text, str) and text.strip() else None


@functools.lru_cache(maxsize=256)
def clean_doc(text: str) -> str:
    """``inspect.cleandoc``, remembered: a flow's docstring is stored with every run it starts."""
    return inspect.cleandoc(text)


class Runtime:
    """Runs workflows stored in a state directory (or any ``Store``).

    Example::

        rt = Runtime("state")
        run = rt.start("flows/guess_game.py")
        run = rt.resolve(run.run_id, run.pending[0].resume_id, 42)
    """

    def __init__(self, store: str | Path | Store = "state", clock: Clock | None = None,
                 lock_timeout: float = 10, lease: float | None = None) -> None:
        #: ``lease``: how long a claim on a run outlives a process that stopped renewing it
        #: (PostgreSQL stores; default 30 s). A directory's locks are the OS's and need none.
        self.store: Store = open_store(store, lease=lease)
        self.lease = lease
        self.clock: Clock = clock if clock is not None else clock_from_env()
        self.lock_timeout = lock_timeout
        self._loader: FlowLoader | None = None

    @property
    def loader(self) -> FlowLoader:
        """Loads flow files and finds the class of a stored run (made on first use, so that
        reading runs never imports the engine)."""
        if self._loader is None:
            from tinywf_cli.loader import FlowLoader

            self._loader = FlowLoader()
        return self._loader

    # -- helpers -------------------------------------------------------------------

    @contextmanager
    def _open(self, run_id: str, timeout: float | None = None, *, create: bool = False) -> Iterator[RunSession]:
        check_run_id(run_id)
        with self.store.open(run_id, self.lock_timeout if timeout is None else timeout, create=create) as run:
            yield run

    def _class_of(self, head: RunHead) -> WorkflowClass:
        return self.loader.resolve(head.flow, head.run_id)

    def _engine(self, cls: WorkflowClass, run: LoadedRun, session: RunSession) -> Engine:
        from tinywf_cli.engine import Engine

        return Engine(cls, run.head, run.slots, self.clock, session.commit)

    def _commit(self, session: RunSession, head: RunHead, entries: list[Entry]) -> None:
        head.updated_at = self.clock.now()
        head.progress += 1
        session.commit(head, entries)

    def _log(self, head: RunHead, type_: str, values: dict[str, Any]) -> AuditEntry:
        return AuditEntry(format_instant(self.clock.now()), head.step, type_, values)

    def _load_for_change(self, session: RunSession, command: str) -> LoadedRun:
        run = session.load()
        if run.head.status in ENDED:
            raise StatusConflict(session.run_id, run.head.status, command)
        return run

    # -- starting and answering runs ---------------------------------------------

    def start(self, flow: str | Path | type[Workflow[Any]], input: dict[str, Any] | None = None,
              run_id: str | None = None) -> RunDocument:
        """Create a run of ``flow`` (``path.py[:Class]`` or a class) and advance it until it waits or ends."""
        from tinywf_cli.engine import encode_state_input
        from tinywf_cli.workflow import Workflow

        if isinstance(flow, type):
            if not issubclass(flow, Workflow) or not flow.__tinywf_steps__:
                raise FlowLoadError(f"{flow!r} is not a workflow class with @step methods")
            cls: WorkflowClass = flow
            ref, shown = self.loader.register(cls)
        else:
            cls, ref, shown = self.loader.load(str(flow))
        if run_id is not None:
            check_run_id(run_id)
        state = encode_state_input(cls, input)
        start = cls.__tinywf_start__
        assert start is not None
        drawn = 0
        while True:
            rid = run_id or new_run_id(cls)
            now = self.clock.now()
            head = RunHead(run_id=rid, workflow=shown, flow=ref, doc=own_doc(cls), status="running",
                           step=start, state=state, visit_state=state, created_at=now, updated_at=now)
            with self._open(rid, create=True) as session:
                try:
                    session.create(head, [self._log(head, "start", {"workflow": shown}),
                                          VisitEntry(1, start, state)])
                except RunExists:
                    drawn += 1
                    if run_id or drawn == 8:
                        raise
                    continue  # a generated id that is taken: draw another
                self._engine(cls, LoadedRun(head), session).advance()
            return RunDocument.of(head)

    def resolve(self, run_id: str, resume: str, value: Any) -> RunDocument:
        """Answer a pending event (by resume id or event key) and advance the run."""
        with self._open(run_id) as session:
            run = self._load_for_change(session, "resolve")
            head = run.head
            pending = next((p for p in head.pending if p.resume_id == resume), None)
            if pending is None:  # an event's key, else (to refuse it clearly) a timer's or retry's
                pending = next((p for p in head.pending if p.kind == "event" and p.key == resume), None) \
                    or next((p for p in head.pending if p.key == resume), None)
            if pending is None:
                raise ResumeNotFound(run_id, resume, [p.resume_id for p in head.pending])
            if pending.kind != "event":
                raise NotAnEvent(f"'{resume}' is a {pending.kind}, not an event: it resumes by itself "
                                 f"when due ({format_instant(pending.due_at) if pending.due_at else '?'}); "
                                 "`tinywf tick` advances due runs")
            self._engine(self._class_of(head), run, session).advance(resolving=(pending.resume_id, value))
        return RunDocument.of(head)

    def send(self, run_id: str, key: str, value: Any) -> RunDocument:
        """Deliver event ``key``: resolve its pending wait, or queue it for the wait to come."""
        with self._open(run_id) as session:
            run = self._load_for_change(session, "send an event to")
            head = run.head
            pending = next((p for p in head.pending if p.kind == "event" and p.key == key), None)
            if pending is not None:
                self._engine(self._class_of(head), run, session).advance(resolving=(pending.resume_id, value))
                return RunDocument.of(head)
            try:
                stored = to_json_value(value)
            except NotJSON as exc:
                raise InvalidValue(f"event '{key}': {exc}") from None
            head.inbox.setdefault(key, []).append(stored)
            self._commit(session, head, [self._log(head, "event_queued", {"key": key})])
        return RunDocument.of(head)

    def signal(self, run_id: str, name: str, /, **args: Any) -> RunDocument:
        """Call the ``@signal`` method ``name`` on the run's latest state, under its lock."""
        with self._open(run_id) as session:
            run = session.load()
            head = run.head
            if head.status in ENDED:
                raise StatusConflict(run_id, head.status, f"signal '{name}'")
            from tinywf_cli.engine import apply_signal

            entries = apply_signal(self._class_of(head), head, name, args, self.clock, run.slots)
            self._commit(session, head, entries)
        return RunDocument.of(head)

    def cancel(self, run_id: str, reason: str | None = None) -> RunDocument:
        """Cancel a run that has not ended; nothing stays pending."""
        with self._open(run_id) as session:
            head = session.load().head
            if head.status in ENDED:
                raise StatusConflict(run_id, head.status, "cancel")
            head.status = "cancelled"
            head.pending = []
            head.wake_at = None
            self._commit(session, head, [self._log(head, "cancel", {"reason": reason} if reason else {})])
        return RunDocument.of(head)

    def retry(self, run_id: str) -> RunDocument:
        """Restart a failed run from its failed step visit; cached actions stay cached."""
        with self._open(run_id) as session:
            run = session.load()
            head = run.head
            if head.status != "failed":
                raise StatusConflict(run_id, head.status, "retry")
            cls = self._class_of(head)
            from tinywf_cli.engine import reset_failed_slots

            entries = reset_failed_slots(run.slots, self.clock.now())
            head.status = "running"
            head.error = None
            head.recovery = Recovery()
            entries.append(self._log(head, "retried", {"visit": head.visit}))
            self._commit(session, head, entries)
            run.slots = fold_slots([SlotEntry(s.to_json()) for s in run.slots] + entries)
            self._engine(cls, run, session).advance()
        return RunDocument.of(head)

    # -- due work -----------------------------------------------------------------------

    def advance(self, run_id: str, *, timeout: float | None = None) -> RunDocument:
        """Advance one run if it is due (or recover it if its process died); else leave it."""
        with self._open(run_id, timeout) as session:
            run = session.load()
            if due_now(run.head, self.clock.now()):
                self._engine(self._class_of(run.head), run, session).advance(recover=run.head.status == "running")
        return RunDocument.of(run.head)

    def tick(self, limit: int | None = None, *, stop: threading.Event | None = None) -> TickReport:
        """Advance every due run (timers, retry delays, event timeouts) and recover dead ones.

        Runs locked by another process are skipped and reported, never waited for; so is a
        run that cannot be read or loaded: one bad run never stops the others. With
        ``stop``, the pass ends after the run in progress once it is set.
        """
        now = self.clock.now()
        report = TickReport(due=0)

        def done() -> bool:
            return (limit is not None and len(report.advanced) >= limit) or (stop is not None and stop.is_set())

        for run_id, opening in self._due_runs(now, done):
            counted = False
            try:
                with opening() as session:
                    try:
                        run = session.load()
                    except RunNotFound:  # a create that never committed left an index entry
                        continue
                    head = run.head
                    if not due_now(head, now):
                        continue  # a stale index entry: the session drops it
                    report.due += 1
                    counted = True
                    self._engine(self._class_of(head), run, session).advance(recover=head.status == "running")
                report.advanced.append(TickAdvanced(run_id=run_id, status=head.status))
            except RunLocked:
                report.due += 1
                report.skipped.append(TickSkipped(run_id=run_id, reason="locked by another process"))
            except TinyWFError as exc:
                report.due += 0 if counted else 1
                report.skipped.append(TickSkipped(run_id=run_id, reason=exc.message))
        return report

    def _due_runs(self, now: datetime, done: Callable[[], bool]
                  ) -> Iterator[tuple[str, Callable[[], AbstractContextManager[RunSession]]]]:
        """The runs due by ``now``, each with how to hold it, until ``done()``.

        A store that claims its next due run itself (PostgreSQL: ``claim_due``, one statement,
        skipping runs others are claiming) is asked run by run; what it never hands out (a run
        another process holds) comes after, from ``due``, to be reported as locked.
        """
        claim = getattr(self.store, "claim_due", None)
        seen: set[str] = set()
        while claim is not None and not done():
            session: Any = claim(now, seen)  # a session that releases the run when it exits
            if session is None:
                break
            seen.add(session.run_id)
            yield session.run_id, functools.partial(_itself, session)
        for run_id in self.store.due(now):
            if done():
                return
            if run_id not in seen:
                yield run_id, functools.partial(self.store.open, run_id, 0)

    def next_due(self) -> datetime | None:
        """When the earliest waiting run will be due (for ``worker``)."""
        return self.store.next_due()

    def work(self, stop: threading.Event, *, poll: float = 5.0,
             on_tick: Callable[[TickReport], None] | None = None,
             on_unavailable: Callable[[StoreUnavailable], None] | None = None) -> None:
        """Tick until ``stop`` is set, waiting on the runtime's clock until the next due time
        (at most ``poll`` seconds) between passes: ``tinywf worker`` is this loop.

        A pass ends after the run in progress once ``stop`` is set. ``on_tick`` receives the
        report of each pass that found due runs. A store that can wake workers (PostgreSQL:
        ``wait_for_work``) cuts the wait short when a run is released anywhere. A store that
        cannot be reached is waited for (``on_unavailable`` hears of it), never given up on.
        """
        wait = getattr(self.store, "wait_for_work", None)
        backoff = MIN_BACKOFF
        while not stop.is_set():
            try:
                started = self.clock.now()
                report = self.tick(stop=stop)
                if report.due and on_tick is not None:
                    on_tick(report)
                until = self.next_due()
                # a run that came due while the pass went on was not seen by it: go again at once
                # (a due time that had passed before the pass is a run it skipped: wait for it)
                if not stop.is_set() and not (until is not None and started < until <= self.clock.now()):
                    self.clock.idle(until, poll, stop, wait)
                backoff = MIN_BACKOFF
            except StoreUnavailable as exc:
                if on_unavailable is not None:
                    on_unavailable(exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, max(poll, MIN_BACKOFF))

    # -- copying ---------------------------------------------------------------------------

    def copy(self, to: str | Path | Store, *, skip_existing: bool = False) -> CopyReport:
        """Copy every run of this store into another (a directory, a URL or a store): heads and
        whole journals, so that every document reads the same there (``tinywf copy``).

        A run id that exists at the target raises RunsExistAtTarget before anything is copied,
        unless ``skip_existing``: then those runs are left alone and reported. Each run is
        read under its lock, so a run being advanced is copied whole, before or after.
        """
        target = open_store(to, lease=self.lease)
        try:
            ids = self.store.run_ids()
            taken: list[str] = []
            for run_id in ids:
                try:
                    target.head(run_id)
                    taken.append(run_id)
                except RunNotFound:
                    pass
            if taken and not skip_existing:
                raise RunsExistAtTarget(target.target, taken)
            report = CopyReport(to=target.target, skipped=[
                CopySkipped(run_id=r, reason=f"exists in {target.target}") for r in taken])
            for run_id in ids:
                if run_id in taken:
                    continue
                with self._open(run_id) as held:
                    head = held.load().head
                    entries = self.store.entries(run_id)
                    with target.open(run_id, self.lock_timeout, create=True) as session:
                        session.create(head, entries)
                report.copied.append(run_id)
            return report
        finally:
            if target is not to:
                target.close()

    def close(self) -> None:
        """Release what the store holds open (database connections); the runtime may be used again."""
        self.store.close()

    # -- reading ---------------------------------------------------------------------------

    def get(self, run_id: str) -> ShowDocument:
        """A run with its whole audit log (``tinywf show``)."""
        check_run_id(run_id)
        head = self.store.head(run_id)
        logs = [LogEntry.model_validate(e.document()) for e in self.store.history(run_id)]
        doc = RunDocument.of(head)
        return ShowDocument(**dict(doc), logs=logs, doc=head.doc)

    def list(self, status: str | None = None) -> RunList:
        """Every run, newest first; unreadable records are listed as such."""
        rows: list[tuple[datetime, RunSummary]] = []
        problems: list[str] = []
        for run_id in self.store.run_ids():
            try:
                head = self.store.head(run_id)
            except RunNotFound:
                continue  # removed meanwhile
            except TinyWFError as exc:
                problems.append(exc.message)
                if status in (None, "unreadable"):
                    rows.append((datetime.min.replace(tzinfo=None),
                                 RunSummary(run_id=run_id, workflow="?", status="unreadable", step=None,
                                            updated_at=None)))
                continue
            if status is None or head.status == status:
                rows.append((head.created_at.replace(tzinfo=None),
                             RunSummary(run_id=head.run_id, workflow=head.workflow, status=head.status,
                                        step=head.step, updated_at=head.updated_at)))
        rows.sort(key=lambda r: r[0], reverse=True)
        return RunList(runs=[r for _, r in rows], problems=problems)
