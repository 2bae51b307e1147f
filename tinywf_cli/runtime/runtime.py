"""``Runtime``: the library API under the CLI — start, resolve, send, signal, tick, and more.

Each call opens the run's session (its lock), loads it, makes one engine call, and returns
the pydantic document the CLI prints with ``--json``. Errors are the typed ``TinyWFError``
family. Runs never hold two locks in an order that could deadlock: a parent creates its
child while holding its own lock (nobody else can hold a lock of a run not yet created);
children are advanced, and parents woken, only after the session that asked for it closed.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywf_cli.clock import Clock, as_utc, clock_from_env, format_instant, parse_duration
from tinywf_cli.engine.values import NotJSON, TextValue, to_json_value
from tinywf_cli.errors import (
    BadInput,
    FlowLoadError,
    InvalidRunId,
    InvalidValue,
    NotAnEvent,
    NotFound,
    QueueFull,
    ResumeNotFound,
    RunExists,
    RunLocked,
    RunNotFound,
    RunsExistAtTarget,
    StatusConflict,
    StorageError,
    StoreUnavailable,
    TinyWFError,
)
from tinywf_cli.model import (
    ENDED,
    CheckReport,
    CheckResult,
    CopyReport,
    CopySkipped,
    ErrorInfo,
    FlowRef,
    LogEntry,
    PruneReport,
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
from tinywf_cli.names import is_run_id
from tinywf_cli.stores import open_store
from tinywf_cli.stores.base import LoadedRun, RunSession, Store, wakes_parent
from tinywf_cli.stores.files.fileio import UNCHANGED
from tinywf_cli.stores.journal import AuditEntry, Entry, SlotEntry, VisitEntry, fold_slots, shown_history

if TYPE_CHECKING:
    from tinywf_cli.authoring.commands import Child
    from tinywf_cli.authoring.loader import FlowLoader, WorkflowClass
    from tinywf_cli.authoring.workflow import Workflow
    from tinywf_cli.engine.engine import Engine

#: Early events a run keeps queued, all keys together; more are refused (exit 4).
MAX_QUEUED_EVENTS = 1000
#: Statuses ``prune`` may delete (``failed`` only when asked for by name).
PRUNABLE = frozenset({"finished", "cancelled", "failed"})

# The runs this call chain holds open, by (store, run id): a Runtime call on one of them from
# inside (an action or signal of that very run) would wait for itself; it is refused at once.
_HELD: contextvars.ContextVar[frozenset[tuple[str, str]]] = contextvars.ContextVar("tinywf_held",
                                                                                  default=frozenset())


class _Running:
    """What running flows need (the engine, pydantic), imported on first use: commands that
    only read runs never import it."""

    def __init__(self) -> None:
        from tinywf_cli.authoring.loader import code_of
        from tinywf_cli.authoring.workflow import Workflow
        from tinywf_cli.engine.engine import Engine
        from tinywf_cli.engine.state import encode_state_input

        self.Engine = Engine
        self.code_of = code_of
        self.encode_state_input = encode_state_input
        self.Workflow = Workflow


@functools.cache
def _running() -> _Running:
    """The one ``_Running``."""
    return _Running()


class _Held:
    """``Runtime._held``: while the block runs, this call chain holds the run ``key`` names."""

    __slots__ = ("key", "token")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.token: contextvars.Token[frozenset[tuple[str, str]]] | None = None

    def __enter__(self) -> None:
        key = self.key
        held = _HELD.get()
        if key in held:
            raise RunLocked(key[1], 0, reason=(
                f"run '{key[1]}' is being advanced by this very call: an action or signal of the run used "
                "Runtime on its own run, which would wait for itself; return the value from the action "
                "instead, or change the run from another process"))
        self.token = _HELD.set(held | {key})

    def __exit__(self, *exc: object) -> None:
        assert self.token is not None
        _HELD.reset(self.token)


#: Why ``tick`` skipped a run that another process of a shared store holds a live claim on.
CLAIMED_ELSEWHERE = "claimed by another worker"

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
    """Whether a run (read under its lock) is for ``tick``: left running by a dead process,
    waiting on something due by ``now``, or a child that ended and has yet to wake its parent."""
    if head.status == "running" or wakes_parent(head):
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


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as a timedelta (a bare number is refused: no unit to guess)."""
    return parse_duration(text, "age")


class _Follow:
    """What a command must do once a run's session closed: advance the children it started,
    wake the parent of a child that ended."""

    def __init__(self) -> None:
        self.children: list[str] = []
        self.ended: list[str] = []

    def after(self, engine: Engine | None, head: RunHead) -> None:
        """Take what an engine call left to do."""
        if engine is not None:
            self.children.extend(engine.started)
        if wakes_parent(head):
            self.ended.append(head.run_id)


class Runtime:
    """Runs workflows stored in a state directory, a PostgreSQL database, or any ``Store``.

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
        # a store may keep a clock (MemoryRuntime's): a Runtime opened on it by its target keeps the same time
        kept: Clock | None = getattr(self.store, "clock", None)
        self.clock: Clock = clock if clock is not None else kept if kept is not None else clock_from_env()
        self.lock_timeout = lock_timeout
        self._loader: FlowLoader | None = None

    @property
    def loader(self) -> FlowLoader:
        """Loads flow files and finds the class of a stored run (made on first use, so that
        reading runs never imports the engine)."""
        if self._loader is None:
            from tinywf_cli.authoring.loader import FlowLoader

            self._loader = FlowLoader()
        return self._loader

    @property
    def store_target(self) -> str:
        """The store, as flow code sees it (``self.store_target``)."""
        return self.store.target

    # -- helpers -------------------------------------------------------------------

    def _held(self, run_id: str) -> _Held:
        """Note that this call chain holds ``run_id``; refuse at once when it already does."""
        return _Held((self.store.target, run_id))

    @contextmanager
    def _open(self, run_id: str, timeout: float | None = None, *, create: bool = False) -> Iterator[RunSession]:
        check_run_id(run_id)
        with self._held(run_id), self.store.open(run_id, self.lock_timeout if timeout is None else timeout,
                                                 create=create) as session:
            yield session

    def _class_of(self, head: RunHead) -> WorkflowClass:
        return self.loader.resolve(head.flow, head.run_id)

    def _engine(self, cls: WorkflowClass, run: LoadedRun, session: RunSession | None, *,
                dry: bool = False) -> Engine:
        save = session.commit if session is not None else (lambda head, entries: None)
        return _running().Engine(cls, run.head, run.slots, self.clock, save, self, dry=dry)

    def _commit(self, session: RunSession, head: RunHead, entries: list[Entry]) -> None:
        head.updated_at = self.clock.now()
        head.progress += 1
        session.commit(head, entries)

    def _log(self, head: RunHead, type_: str, values: dict[str, Any]) -> AuditEntry:
        return AuditEntry(format_instant(self.clock.now()), head.step, type_, values)

    def _load_for(self, session: RunSession, command: str) -> LoadedRun:
        """Load a run to change it; refuse it (exit 4) when it has ended."""
        run = session.load()
        if run.head.status in ENDED:
            raise StatusConflict(session.run_id, run.head.status, command)
        return run

    def _advance(self, session: RunSession, run: LoadedRun, follow: _Follow, *,
                 resolving: tuple[str, Any] | None = None, recover: bool = False,
                 cls: WorkflowClass | None = None) -> Engine | None:
        """Advance a loaded run; a flow file that no longer loads blocks it instead."""
        head = run.head
        if cls is None:
            try:
                cls = self._class_of(head)
            except FlowLoadError as exc:
                self._block(session, head, "FlowLoadError", f"{exc.message}; fix the flow file, then "
                                                            f"`tinywf retry {head.run_id}`")
                return None
        engine = self._engine(cls, run, session)
        try:
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
        follow.after(engine, head)
        return engine

    def _block(self, session: RunSession, head: RunHead, kind: str, message: str) -> None:
        head.status = "blocked"
        head.error = ErrorInfo(type=kind, message=message)
        head.pending = []
        head.wake_at = None
        self._commit(session, head, [self._log(head, "blocked", {"type": kind, "message": message})])

    def _document(self, head: RunHead, *, advanced: bool, follow: _Follow | None = None) -> RunDocument:
        """The run's document; after the follow-ups (children, parents) ran, as they left it."""
        if follow is not None and (follow.children or follow.ended):
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
                       parent=parent.run_id, wake_at=now, code=code_of(cls), history_limit=cls.history_limit)
        try:
            with self._open(run_id, create=True) as session:
                session.create(head, [self._log(head, "start", start_values(shown, head)),
                                      VisitEntry(1, start, state, cls.version)])
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
        children, ended = deque(follow.children), deque(follow.ended)
        follow.children, follow.ended = [], []
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
        return done

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

    # -- starting and answering runs ---------------------------------------------

    def start(self, flow: str | Path | type[Workflow[Any]], input: dict[str, Any] | None = None,
              run_id: str | None = None, *, attach: bool = False) -> RunDocument:
        """Create a run of ``flow`` (``path.py[:Class]`` or a class) and advance it until it waits or ends.

        With ``attach``, a run that already has ``run_id`` and the same workflow is advanced
        (if due) and returned instead of raising RunExists: an idempotent start.
        """
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
                           version=cls.version, code=code_of(cls), history_limit=cls.history_limit)
            try:
                with self._open(rid, create=True) as session:
                    session.create(head, [self._log(head, "start", start_values(shown, head)),
                                          VisitEntry(1, start, state, cls.version)])
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

    def resolve(self, run_id: str, resume: str, value: Any, *, created_at: datetime | None = None) -> RunDocument:
        """Answer a pending event (by resume id or event key) and advance the run.

        ``value`` is any JSON value, or a ``TextValue`` (text from a command line: JSON when
        it parses and fits the event's type, else the text itself). With ``created_at``, only
        the run created at that instant is answered (a signed link's): a later run given the
        same id is RunNotFound, and unchanged.
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
            cls = self._class_of(head)  # a flow that no longer loads: exit 2, the run as it was
            self._advance(session, run, follow, resolving=(pending.resume_id, value), cls=cls)
        return self._document(head, advanced=True, follow=follow)

    def send(self, run_id: str, key: str, value: Any) -> RunDocument:
        """Deliver event ``key``: resolve its pending wait, or queue it for the wait to come.

        A run that is paused, blocked or failed only queues it.
        """
        follow = _Follow()
        with self._open(run_id) as session:
            run = self._load_for(session, "send an event to it")
            head = run.head
            pending = next((p for p in head.pending if p.kind == "event" and p.key == key), None)
            if pending is not None and head.status in ("waiting", "running"):
                cls = self._class_of(head)
                self._advance(session, run, follow, resolving=(pending.resume_id, value), cls=cls)
                return self._document(head, advanced=True, follow=follow)
            if sum(len(q) for q in head.inbox.values()) >= MAX_QUEUED_EVENTS:
                raise QueueFull(run_id, MAX_QUEUED_EVENTS)
            if isinstance(value, TextValue):
                try:
                    to_json_value(value.text)
                except NotJSON as exc:
                    raise InvalidValue(f"event '{key}': {exc}") from None
                item: tuple[Any, Any] = ("text", value.text)
            else:
                try:
                    item = ("value", to_json_value(value))
                except NotJSON as exc:
                    raise InvalidValue(f"event '{key}': {exc}") from None
            head.inbox.setdefault(key, []).append(item)
            self._commit(session, head, [self._log(head, "event_queued", {"key": key})])
        doc = self._document(head, advanced=False)
        doc.queued = (key, len(head.inbox[key]))
        return doc

    def signal(self, run_id: str, name: str, /, **args: Any) -> RunDocument:
        """Call the ``@signal`` method ``name`` on the run's latest state, under its lock."""
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
                    return self._document(head, advanced=True, follow=follow)
            try:
                entries = apply_signal(cls, head, name, args, self.clock, run.slots, self.store_target)
            except StateMismatch as exc:
                self._block(session, head, "StateMismatch", f"{exc}; then `tinywf retry {run_id}`")
                return self._document(head, advanced=True, follow=follow)
            self._commit(session, head, migrated + entries)
        return self._document(head, advanced=False)

    def cancel(self, run_id: str, reason: str | None = None) -> RunDocument:
        """Cancel a run that has not ended, and its unfinished children; nothing stays pending."""
        follow = _Follow()
        with self._open(run_id) as session:
            head = self._load_for(session, "cancel it").head
            values: dict[str, Any] = {}
            if reason:
                try:
                    values["reason"] = to_json_value(reason)
                except NotJSON as exc:
                    raise InvalidValue(f"--reason: {exc}") from None
            head.status = "cancelled"
            head.pending = []
            head.wake_at = None
            head.paused_from = None
            self._commit(session, head, [self._log(head, "cancel", values)])
            follow.after(None, head)
        for child in head.children:
            try:
                self.cancel(child, reason=f"its parent {run_id} was cancelled")
            except (StatusConflict, RunNotFound):
                continue  # ended already, or gone
        return self._document(head, advanced=False, follow=follow)

    def retry(self, run_id: str) -> RunDocument:
        """Try a failed run again from its failed step visit (the action that failed gets a fresh
        set of attempts), or a blocked run under today's code; cached actions stay cached."""
        follow = _Follow()
        with self._open(run_id) as session:
            run = session.load()
            head = run.head
            if head.status not in ("failed", "blocked"):
                raise StatusConflict(run_id, head.status, "retry it (only failed or blocked runs are retried)")
            from tinywf_cli.engine.engine import reset_failed_slots

            entries = reset_failed_slots(run.slots, self.clock.now()) if head.status == "failed" else []
            entries.append(self._log(head, "retried", {"visit": head.visit, "was": head.status}))
            head.status = "running"
            head.error = None
            head.recovery = Recovery()
            self._commit(session, head, entries)
            run.slots = fold_slots([SlotEntry(s.to_json()) for s in run.slots] + entries)
            self._advance(session, run, follow)
        return self._document(head, advanced=True, follow=follow)

    def pause(self, run_id: str) -> RunDocument:
        """Hold a run: nothing advances it (tick and worker skip it) until ``resume``; events
        sent meanwhile queue, timers that come due wait."""
        with self._open(run_id) as session:
            head = self._load_for(session, "pause it").head
            if head.status == "paused":
                raise StatusConflict(run_id, "paused", "pause it again (`tinywf resume` it)")
            head.paused_from = head.status
            head.status = "paused"
            self._commit(session, head, [self._log(head, "paused", {"was": head.paused_from})])
        return self._document(head, advanced=False)

    def resume(self, run_id: str) -> RunDocument:
        """Put a paused run back and advance it as ``tick`` would."""
        follow = _Follow()
        with self._open(run_id) as session:
            run = self._load_for(session, "resume it")
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

    def tick(self, limit: int | None = None, *, stop: threading.Event | None = None) -> TickReport:
        """Advance every due run (timers, retry delays, event timeouts), recover dead ones, and
        wake the parents of children that ended.

        Runs locked by another process are skipped and reported, never waited for; so is a
        run that cannot be read or loaded: one bad run never stops the others. On a store
        that claims runs (PostgreSQL), a run another process holds a live claim on is
        another worker's: skipped as ``claimed by another worker`` and not counted as due.
        With ``stop``, the pass ends after the run in progress once it is set.
        """
        now = self.clock.now()
        report = TickReport(due=0)
        claims = hasattr(self.store, "claim_due")

        def done() -> bool:
            return (limit is not None and len(report.advanced) >= limit) or (stop is not None and stop.is_set())

        for run_id, opening in self._due_runs(now, done):
            counted = False
            follow = _Follow()
            try:
                with self._held(run_id), opening() as session:
                    try:
                        run = session.load()
                    except RunNotFound:  # a create that never committed left an index entry
                        continue
                    head = run.head
                    if not due_now(head, now):
                        continue  # a stale index entry: the session drops it
                    report.due += 1
                    counted = True
                    if wakes_parent(head):
                        follow.after(None, head)
                    else:
                        self._advance(session, run, follow, recover=head.status == "running")
                        report.advanced.append(TickAdvanced(run_id=run_id, status=head.status))
                report.advanced.extend(self._settle(follow))
            except RunLocked:
                if claims:  # a live claim: another worker advances it; not due for this one
                    report.skipped.append(TickSkipped(run_id=run_id, reason=CLAIMED_ELSEWHERE, elsewhere=True))
                else:  # a directory's lock: its holder may be stuck, so it is reported
                    report.due += 0 if counted else 1
                    report.skipped.append(TickSkipped(run_id=run_id, reason="locked by another process"))
            except TinyWFError as exc:
                report.due += 0 if counted else 1
                report.skipped.append(TickSkipped(run_id=run_id, reason=exc.message))
            except Exception as exc:  # a fault of tinywf's own with this run: the others still go on
                report.due += 0 if counted else 1
                report.skipped.append(TickSkipped(run_id=run_id,
                                                  reason=f"internal error: {type(exc).__name__}: {exc}"))
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
             on_error: Callable[[TinyWFError], None] | None = None,
             on_unavailable: Callable[[StoreUnavailable], None] | None = None) -> None:
        """Tick until ``stop`` is set, waiting on the runtime's clock until the next due time
        (at most ``poll`` seconds) between passes: ``tinywf worker`` is this loop.

        A pass ends after the run in progress once ``stop`` is set. ``on_tick`` receives the
        report of each pass that found due runs. A store that can wake workers (PostgreSQL:
        ``wait_for_work``) cuts the wait short when a run is released anywhere. A store that
        cannot be reached is waited for (``on_unavailable`` hears of it), never given up on; a
        pass that fails as a whole otherwise (a directory that cannot be listed) goes to
        ``on_error`` and the loop goes on after ``poll``.
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
            except TinyWFError as exc:
                if on_error is None:
                    raise
                on_error(exc)
                stop.wait(poll)

    def reindex(self) -> int:
        """Repair the store's due index from the runs themselves (after records were copied in by
        hand); how many entries were added."""
        repair = getattr(self.store, "reindex", None)
        return int(repair()) if repair is not None else 0

    # -- changing flows under live runs -------------------------------------------------

    def check(self, flow: str | Path | None = None) -> CheckReport:
        """Would every unfinished run (of ``flow``, or all) replay under today's code?

        Each run is loaded without its lock, migrated in memory and its current visit
        replayed against its records: no action runs, nothing is written, no lock is waited for.
        """
        only: Path | None = None
        if flow is not None:
            from tinywf_cli.authoring.loader import flow_path

            only = flow_path(str(flow))[0]
            self.loader.module(only)  # a flow that does not load is exit 2, not a verdict
        results: list[CheckResult] = []
        for run_id in sorted(self.store.run_ids()):
            try:
                head = self.store.head(run_id)
            except RunNotFound:
                continue
            except TinyWFError as exc:
                results.append(CheckResult(run_id=run_id, ok=False, reason=exc.message))
                continue
            if head.status in ENDED:
                continue
            if only is not None and (head.flow.file is None or Path(head.flow.file) != only):
                continue
            results.append(self._check_one(run_id))
        return CheckReport(runs=results)

    def _check_one(self, run_id: str) -> CheckResult:
        try:
            run = self.store.load(run_id)
            cls = self._class_of(run.head)
        except TinyWFError as exc:
            return CheckResult(run_id=run_id, ok=False, reason=exc.message)
        head = run.head
        if head.status not in ("running", "waiting"):
            head.status = "running"  # replay a failed, paused or blocked run as a retry or resume would
        engine = self._engine(cls, run, None, dry=True)
        try:
            engine.advance()
        except InvalidValue as exc:
            return CheckResult(run_id=run_id, ok=False, reason=exc.message)
        if engine.outcome in ("ok", "paused", "finished"):
            return CheckResult(run_id=run_id, ok=True, reason=None)
        return CheckResult(run_id=run_id, ok=False, reason=engine.reason or engine.outcome)

    def fork(self, run_id: str, at_visit: int | None = None, new_run_id: str | None = None) -> RunDocument:
        """A new run from the state at the start of visit ``at_visit`` of ``run_id`` (default: its
        current visit), starting at that visit's step; the original is untouched."""
        head = self.store.load(check_run_id(run_id)).head  # the whole record is checked, not just its head
        if new_run_id is not None:
            check_run_id(new_run_id)
        visit = head.visit if at_visit is None else at_visit
        if visit < 1 or visit > head.visit:
            raise BadInput(f"--at-visit must be between 1 and {head.visit} (the visits of run '{run_id}')")
        if visit == head.visit:
            step, state, version = head.step, head.visit_state, head.version
        else:
            found = next((e for e in self.store.entries(run_id) if type(e) is VisitEntry and e.n == visit), None)
            if found is None:
                raise NotFound(f"visit {visit} of run '{run_id}' is no longer in its history (history_limit)")
            if found.step is None:
                raise NotFound(f"visit {visit} of run '{run_id}' was recorded by tinywf 0.1, which kept no state "
                               "for it: fork at the current visit instead")
            step, state, version = found.step, found.state, found.version or head.version
        cls = self._class_of(head)
        rid = new_run_id or f"{run_id[:100]}-fork-{new_run_id_suffix()}"
        now = self.clock.now()
        fork = RunHead(run_id=rid, workflow=head.workflow, flow=head.flow, doc=head.doc, status="running",
                       step=step, state=state, visit_state=state, created_at=now, updated_at=now, version=version)
        follow = _Follow()
        with self._open(rid, create=True) as session:
            session.create(fork, [self._log(fork, "forked", {"from": run_id, "visit": visit}),
                                  VisitEntry(1, step, state, version)])
            self._advance(session, LoadedRun(fork), follow, cls=cls)
        return self._document(fork, advanced=True, follow=follow)

    def prune(self, older_than: timedelta | str, statuses: Iterable[str] = ("finished", "cancelled"),
              dry_run: bool = False) -> PruneReport:
        """Delete runs that ended (or failed, when named) and were last updated before now -
        ``older_than``, with all their files. Locked runs are skipped; never a run that has not ended."""
        age = parse_age(older_than) if isinstance(older_than, str) else older_than
        wanted = set(statuses)
        refused = sorted(wanted - PRUNABLE)
        if refused:
            raise BadInput(f"prune deletes runs that ended (finished, cancelled) or failed, not {', '.join(refused)}")
        cutoff = self.clock.now() - age
        report = PruneReport(pruned=[])
        for run_id in sorted(self.store.run_ids()):
            try:
                head = self.store.head(run_id)
            except TinyWFError:
                continue
            if head.status not in wanted or head.updated_at >= cutoff:
                continue
            if dry_run:
                report.pruned.append(run_id)
                continue
            try:
                with self._open(run_id, 0) as session:
                    head = session.load().head
                    if head.status not in wanted or head.updated_at >= cutoff:
                        continue
                    session.delete()
                report.pruned.append(run_id)
            except RunLocked:
                report.skipped.append(TickSkipped(run_id=run_id, reason="locked by another process"))
            except RunNotFound:
                continue
            except TinyWFError as exc:
                report.skipped.append(TickSkipped(run_id=run_id, reason=exc.message))
        return report

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

    def get(self, run_id: str, last: int | None = None) -> ShowDocument:
        """A run with its audit log (``tinywf show``); ``last`` keeps only the newest entries."""
        check_run_id(run_id)
        head = self.store.head(run_id)
        history = self.store.history(run_id)
        history, omitted = shown_history(history, head.dropped_logs, head.history_limit, last)
        logs = [LogEntry.model_validate(e.document()) for e in history]
        doc = RunDocument.of(head)
        return ShowDocument(**dict(doc), logs=logs, doc=head.doc, omitted=omitted)

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


def start_values(shown: str, head: RunHead) -> dict[str, Any]:
    """The values of a run's ``start`` entry: its workflow, and its parent and code when known."""
    values: dict[str, Any] = {"workflow": shown}
    if head.parent is not None:
        values["parent"] = head.parent
    if head.code is not None:
        values["code"] = head.code
    return values


def new_run_id_suffix() -> str:
    """Eight random hex digits."""
    import secrets

    return secrets.token_hex(4)
