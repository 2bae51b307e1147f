"""What every part of ``Runtime`` stands on: the store, clock and loader, a run's session
(its lock, and the refusal of a run this call chain already holds), and small helpers for
run ids and a run's start."""

from __future__ import annotations

import contextvars
import functools
import inspect
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywf_cli.clock import Clock, clock_from_env, format_instant
from tinywf_cli.errors import InvalidRunId, RunChanged, RunLocked, StatusConflict
from tinywf_cli.model import ENDED, RunHead
from tinywf_cli.names import is_run_id
from tinywf_cli.stores import open_store
from tinywf_cli.stores.base import LoadedRun, RunSession, Store, owes_alerts, wakes_parent
from tinywf_cli.stores.journal import AuditEntry, Entry

if TYPE_CHECKING:
    from tinywf_cli.authoring.loader import FlowLoader, WorkflowClass


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


_made: list[_Running] = []
#: Held while what running flows need is first imported, and while a runtime makes its loader:
#: threads that advance runs at once (``tick --concurrency``) share one of each.
_MAKING = threading.Lock()


def _running() -> _Running:
    """The one ``_Running``."""
    if not _made:
        with _MAKING:
            if not _made:
                _made.append(_Running())
    return _made[0]


class _Hands:
    """Which threads of one runtime are in a run's session right now, by run id: a thread of a
    ``tick`` that finds a run locked by another of the same tick's threads waits for it to let
    go, rather than report it as another process's."""

    def __init__(self) -> None:
        self._let_go = threading.Condition()
        self._holders: dict[str, list[int]] = {}

    def enter(self, run_id: str) -> None:
        """This thread opens the run's session (it may yet find the run locked)."""
        with self._let_go:
            self._holders.setdefault(run_id, []).append(threading.get_ident())

    def leave(self, run_id: str) -> None:
        """This thread's session of the run ended."""
        with self._let_go:
            holders = self._holders.get(run_id)
            if holders is not None:
                holders.remove(threading.get_ident())
                if not holders:
                    del self._holders[run_id]
            self._let_go.notify_all()

    def wait_for(self, run_id: str, threads: set[int]) -> bool:
        """Wait while one of ``threads`` (not this one) is in a session of the run; whether one was."""
        me = threading.get_ident()
        waited = False
        with self._let_go:
            while any(t != me and t in threads for t in self._holders.get(run_id, ())):
                waited = True
                self._let_go.wait()
        return waited


class _Held:
    """``Runtime._held``: while the block runs, this call chain holds the run ``key`` names."""

    __slots__ = ("hands", "key", "token")

    def __init__(self, key: tuple[str, str], hands: _Hands) -> None:
        self.key = key
        self.hands = hands
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
        self.hands.enter(key[1])

    def __exit__(self, *exc: object) -> None:
        assert self.token is not None
        self.hands.leave(self.key[1])
        _HELD.reset(self.token)


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
    waiting on something due by ``now``, a child that ended and has yet to wake its parent, or
    a failed run whose ``@on_failure`` methods are owed by ``now``."""
    if head.status == "running" or wakes_parent(head):
        return True
    if owes_alerts(head):
        return head.alert_due is None or head.alert_due <= now
    return head.status == "waiting" and head.wake_at is not None and head.wake_at <= now


def own_doc(cls: type) -> str | None:
    """The class's own docstring, cleaned (not one inherited from ``Workflow``)."""
    text = cls.__dict__.get("__doc__")
    return clean_doc(text) if isinstance(text, str) and text.strip() else None


@functools.lru_cache(maxsize=256)
def clean_doc(text: str) -> str:
    """``inspect.cleandoc``, remembered: a flow's docstring is stored with every run it starts."""
    return inspect.cleandoc(text)


def start_values(shown: str, head: RunHead) -> dict[str, Any]:
    """The values of a run's ``start`` entry: its workflow, and its parent and code when known."""
    values: dict[str, Any] = {"workflow": shown}
    if head.parent is not None:
        values["parent"] = head.parent
    if head.code is not None:
        values["code"] = head.code
    if head.tags:
        values["tags"] = dict(head.tags)
    return values


def new_run_id_suffix() -> str:
    """Eight random hex digits."""
    import secrets

    return secrets.token_hex(4)


class RuntimeBase:
    """The store, clock and loader of a ``Runtime``, and how it opens, loads and commits a run."""

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
        #: Which of this runtime's threads are in which run's session (``tick`` with a crew).
        self._hands = _Hands()

    @property
    def loader(self) -> FlowLoader:
        """Loads flow files and finds the class of a stored run (made on first use, so that
        reading runs never imports the engine)."""
        if self._loader is None:
            from tinywf_cli.authoring.loader import FlowLoader

            with _MAKING:
                if self._loader is None:
                    self._loader = FlowLoader()
        return self._loader

    @property
    def store_target(self) -> str:
        """The store, as flow code sees it (``self.store_target``)."""
        return self.store.target

    # -- helpers -------------------------------------------------------------------

    def _held(self, run_id: str) -> _Held:
        """Note that this call chain holds ``run_id``; refuse at once when it already does."""
        return _Held((self.store.target, run_id), self._hands)

    @contextmanager
    def _open(self, run_id: str, timeout: float | None = None, *, create: bool = False) -> Iterator[RunSession]:
        check_run_id(run_id)
        with self._held(run_id), self.store.open(run_id, self.lock_timeout if timeout is None else timeout,
                                                 create=create) as session:
            yield session

    def _class_of(self, head: RunHead) -> WorkflowClass:
        return self.loader.resolve(head.flow, head.run_id)

    def _commit(self, session: RunSession, head: RunHead, entries: list[Entry]) -> None:
        head.updated_at = self.clock.now()
        head.progress += 1
        session.commit(head, entries)

    def _log(self, head: RunHead, type_: str, values: dict[str, Any]) -> AuditEntry:
        return AuditEntry(format_instant(self.clock.now()), head.step, type_, values)

    @staticmethod
    def _started(head: RunHead) -> None:
        """A run was created with its ``start`` entry: counted in the telemetry's metrics (when on)."""
        from tinywf_cli import telemetry

        tel = telemetry.current()
        if tel is not None:
            tel.started.add(1, {"tinywf.workflow": head.workflow})

    def _load_for(self, session: RunSession, command: str, seen: int | None = None) -> LoadedRun:
        """Load a run to change it; refuse it (exit 4) when it has ended, or when ``seen`` is given
        and the run's ``progress`` is no longer that (changed since: RunChanged)."""
        run = session.load()
        if seen is not None and run.head.progress != seen:
            raise RunChanged(session.run_id)
        if run.head.status in ENDED:
            raise StatusConflict(session.run_id, run.head.status, command)
        return run
