"""The authoring API: ``Workflow``, ``@step`` and ``@signal``.

A step is a generator method. It yields commands (``self.action``, ``self.sleep``,
``self.wait_event``, ``self.parallel``, ``self.child``: ``tinywf_cli.authoring.commands``)
and the engine sends back their results, running each side effect once and answering
replays from the run's records.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel

from tinywf_cli.authoring.commands import (
    NO_RETRY,
    Action,
    Child,
    Command,
    First,
    FlowTarget,
    Parallel,
    Retry,
    Sleep,
    StartChild,
    Wait,
    WaitEvent,
    seconds_of,
)
from tinywf_cli.authoring.limits import Breaker, Limit
from tinywf_cli.clock import as_utc
from tinywf_cli.errors import FlowDefinitionError
from tinywf_cli.names import WORKFLOW_API

if TYPE_CHECKING:
    from tinywf_cli.schedules.spec import Schedule

StateT = TypeVar("StateT")

#: What a step yields: one of the commands (``tinywf_cli.authoring.commands``).
StepGenerator = Generator["Command", Any, Any]

#: Names a step or signal may not take: they are the authoring API itself.
RESERVED = WORKFLOW_API
@dataclass(frozen=True)
class StepSpec:
    """A step as the engine sees it."""

    name: str
    fn: Callable[..., Any]
    start: bool


@dataclass(frozen=True)
class SignalSpec:
    """A ``@signal`` method as the engine sees it."""

    name: str
    fn: Callable[..., Any]


@dataclass(frozen=True)
class FailureHookSpec:
    """An ``@on_failure`` method as the engine sees it."""

    name: str
    fn: Callable[..., Any]
    retry: Retry


_STEP_MARK = "__tinywf_step__"
_SIGNAL_MARK = "__tinywf_signal__"
_ON_FAILURE_MARK = "__tinywf_on_failure__"


@typing.overload
def step(fn: Callable[..., Any], /) -> Callable[..., Any]: ...
@typing.overload
def step(*, start: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def step(fn: Callable[..., Any] | None = None, /, *, start: bool = False) -> Any:
    """Mark a method as a step: ``@step`` or ``@step(start=True)``.

    A step is a generator method (or a plain method that yields nothing). It returns the
    next step — a method, its name, or ``None`` to finish the run. Without ``start=True``
    anywhere, the first step defined is where a run starts.
    """

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.isfunction(func):
            raise FlowDefinitionError(f"@step decorates a method (def ...), not {func!r}")
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise FlowDefinitionError(
                f"step '{func.__name__}' is async: write steps as plain generators (def + yield); "
                "actions may be async functions"
            )
        setattr(func, _STEP_MARK, bool(start))
        return func

    if fn is not None:
        return mark(fn)
    return mark


def signal(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a method as a signal: an external action run by ``tinywf signal RUN NAME {...}``.

    It runs under the run's lock against its latest state, its arguments validated from
    their annotations; its changes and ``self.log`` entries are saved. It does not advance
    the run.
    """
    if not inspect.isfunction(fn):
        raise FlowDefinitionError(f"@signal decorates a method (def ...), not {fn!r}")
    if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn):
        raise FlowDefinitionError(f"signal '{fn.__name__}' must be a plain method (no yield, no async)")
    setattr(fn, _SIGNAL_MARK, True)
    return fn


@typing.overload
def on_failure(fn: Callable[..., Any], /) -> Callable[..., Any]: ...


@typing.overload
def on_failure(*, retry: Retry | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def on_failure(fn: Callable[..., Any] | None = None, /, *,
               retry: Retry | None = None) -> Callable[..., Any]:
    """Mark a method ``def alert(self, error)`` to be called each time the run fails or becomes blocked.

    ``error`` is the run's error (``error.type``, ``error.message``); ``self.state`` is the run's
    last saved state (changes to it are not kept). It is called once per failure, as an action
    is: its result (JSON) is logged as an ``on_failure`` entry, a raise as ``on_failure_error``
    and tried again per ``retry`` (``@on_failure(retry=Retry(attempts=3))``; delays are durable,
    ``tick`` carries them out). A process killed while it runs leaves it to be called again.
    For alerts: send a message, open a ticket.
    """
    if retry is not None and not isinstance(retry, Retry):
        raise FlowDefinitionError(f"@on_failure(retry=...) takes a Retry(...), not {retry!r}")

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.isfunction(method):
            raise FlowDefinitionError(f"@on_failure decorates a method (def ...), not {method!r}")
        if inspect.isgeneratorfunction(method) or inspect.iscoroutinefunction(method):
            raise FlowDefinitionError(f"on_failure '{method.__name__}' must be a plain method (no yield, no async)")
        setattr(method, _ON_FAILURE_MARK, retry or NO_RETRY)
        return method

    if fn is not None:
        return mark(fn)
    return mark


class RunContext(Protocol):
    """What a workflow instance asks of the engine while its code runs."""

    run_id: str
    visit: int
    step: str | None
    store_target: str

    def record_log(self, type_: str, values: dict[str, Any]) -> object:
        """Take a ``self.log`` entry."""
        ...

    def record_tags(self, tags: dict[str, str]) -> None:
        """Take ``self.tag(...)``: an entry, and the run's tags."""
        ...

    def patched(self, patch_id: str) -> bool:
        """Answer ``self.patched(patch_id)`` at this point of the visit."""
        ...


class Workflow(Generic[StateT]):
    """Base class of every workflow: subclass it, decorate steps with ``@step``.

    ``Workflow[Model]`` gives ``self.state`` as an instance of the pydantic ``Model``
    (input to a new run is validated against it); plain ``Workflow`` gives a ``dict``.
    The class docstring is what ``tinywf show`` prints about the flow.
    """

    __tinywf_model__: ClassVar[type[BaseModel] | None] = None
    __tinywf_steps__: ClassVar[dict[str, StepSpec]] = {}
    __tinywf_signals__: ClassVar[dict[str, SignalSpec]] = {}
    __tinywf_start__: ClassVar[str | None] = None
    __tinywf_on_failure__: ClassVar[dict[str, FailureHookSpec]] = {}

    #: The version of this flow's code and state; new runs record it. Raise it when the
    #: state's shape changes, with a migration from the old version.
    version: ClassVar[int] = 1
    #: ``{v: fn}``: ``fn(state_dict_at_v)`` returns the state at ``v + 1``; applied in order
    #: to runs recorded at an older version before they go on.
    migrations: ClassVar[Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}
    #: Keep only the newest N audit entries of a run (``None``: keep all).
    history_limit: ClassVar[int | None] = None
    #: Seconds a step's code may run between two yields before the run fails (``None``: no limit).
    #: Steps should be quick; slow work belongs in actions, which have no such limit.
    step_timeout: ClassVar[float | None] = 60.0
    #: A ``Limit`` the whole run holds one slot of, from its first step to its end (``rate``
    #: counts run starts); or a method ``def limit(self): return LIMIT.key(self.state.customer)``,
    #: asked once, before the run's first step. ``None``: no limit.
    limit: ClassVar[Limit | Callable[[Any], Limit | None] | None] = None
    #: Recurring runs of this flow (``Schedule(...)``), stored by ``tinywf schedule apply FLOW``.
    schedules: ClassVar[Sequence[Schedule]] = ()
    #: How long a run may take, from its creation (seconds or a timedelta; ``None``: no limit). A
    #: run that has not ended by then is cancelled (reason ``"max_duration"``), its unfinished
    #: children with it: ``tick`` enforces it, and so does any command that would advance the run.
    max_duration: ClassVar[float | timedelta | None] = None

    state: StateT
    _tinywf: RunContext

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = _state_model_of(cls)
        if model is not None:
            cls.__tinywf_model__ = model
        steps: dict[str, StepSpec] = {}
        signals: dict[str, SignalSpec] = {}
        hooks: dict[str, FailureHookSpec] = {}
        starts: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                steps.pop(name, None)  # a member of a subclass overrides whatever its base had there
                signals.pop(name, None)
                hooks.pop(name, None)
                if callable(member) and hasattr(member, _STEP_MARK):
                    steps[name] = StepSpec(name, member, getattr(member, _STEP_MARK))
                elif callable(member) and hasattr(member, _SIGNAL_MARK):
                    signals[name] = SignalSpec(name, member)
                elif callable(member) and hasattr(member, _ON_FAILURE_MARK):
                    hooks[name] = FailureHookSpec(name, member, getattr(member, _ON_FAILURE_MARK))
        for name in (*steps, *signals, *hooks):
            if name in RESERVED or name.startswith("_tinywf"):
                raise FlowDefinitionError(
                    f"{cls.__name__}.{name}: '{name}' is part of the Workflow API; give the step another name"
                )
        starts = [s.name for s in steps.values() if s.start]
        if len(starts) > 1:
            raise FlowDefinitionError(
                f"{cls.__name__} marks {len(starts)} steps start=True ({', '.join(starts)}); a run has one start"
            )
        cls.__tinywf_steps__ = steps
        cls.__tinywf_signals__ = signals
        cls.__tinywf_on_failure__ = hooks
        cls.__tinywf_start__ = starts[0] if starts else next(iter(steps), None)
        _check_versioning(cls)
        if cls.__dict__.get("schedules"):
            _check_schedules(cls)

    # -- commands --------------------------------------------------------------

    def action(self, key: str, fn: Callable[..., Any], /, *args: Any, retry: Retry | None = None,
               limit: Limit | None = None, breaker: Breaker | None = None,
               timeout: float | timedelta | None = None, **kwargs: Any) -> Action:
        """Run ``fn(*args, **kwargs)`` once and cache its result: ``value = yield self.action(...)``.

        ``fn`` may be ``async def``. Its result is stored as JSON before the step
        continues; replays get the stored value (restored through ``fn``'s return
        annotation when pydantic understands it). ``retry=Retry(...)`` retries failures
        with durable delays. ``limit=Limit(...)``: each attempt starts only when the limit
        has room (until then the run waits durably); ``breaker=Breaker(...)``: attempts go
        through the circuit breaker, and failures count towards opening it. ``timeout=``
        (seconds or a timedelta): an attempt that has not returned by then fails with
        ``ActionTimeout``, retried per ``retry`` — an ``async def`` is cancelled, a plain
        function keeps running in its thread and what it returns is discarded. Inside the
        function, ``tinywf_cli.heartbeat()`` says the attempt is alive.
        """
        return Action(key, fn, args, kwargs, retry, limit, breaker, timeout)

    def sleep(self, key: str, duration: float | timedelta) -> Sleep:
        """A durable timer of ``duration`` seconds (or a timedelta); yields the time it was due."""
        return Sleep(key, seconds_of(duration, f"sleep '{key}' duration"), None)

    def sleep_until(self, key: str, when: datetime) -> Sleep:
        """A durable timer until ``when`` (naive means UTC); yields ``when``."""
        if not isinstance(when, datetime):
            raise TypeError(f"sleep_until '{key}' takes a datetime, not {when!r}")
        return Sleep(key, None, as_utc(when))

    def wait_event(self, key: str, *, type: Any = object, timeout: float | timedelta | datetime | None = None,
                   **request: Any) -> WaitEvent:
        """Pause until the event ``key`` is resolved; yields its value, validated against ``type``.

        ``request`` (JSON) is shown to whoever answers; ``question=`` is the prompt text.
        ``timeout`` is seconds, a timedelta, or an aware datetime (a deadline); once it
        passes, ``EventTimeout`` is raised at the yield (at once for one already past,
        unless a value is queued). A key is a channel: waiting on it again (in a loop)
        takes the next value.
        """
        if isinstance(timeout, datetime):
            if timeout.tzinfo is None:
                raise TypeError(f"wait_event '{key}': a timeout datetime must be timezone-aware "
                                "(e.g. datetime(..., tzinfo=UTC))")
            return WaitEvent(key, type, None, request, deadline=as_utc(timeout))
        seconds = None if timeout is None else max(0.0, seconds_of(timeout, f"wait_event '{key}' timeout",
                                                                   negative=True))
        return WaitEvent(key, type, seconds, request)

    def first(self, **waits: Wait) -> First:
        """Wait for whichever of several waits comes first: ``name, value = yield self.first(**waits)``.

        Each wait is a ``self.wait_event(...)``, ``self.sleep(...)``/``self.sleep_until(...)`` or
        ``self.child(...)``, passed under a name; the yield gives the name of the one that came
        first and its value (an event's value, a timer's due time, a child's final state; an
        event that timed out raises ``EventTimeout``, a child that failed ``ChildFailed``). The
        others are withdrawn: nothing of them stays pending, a withdrawn child keeps running,
        and a value sent later for a withdrawn event queues for the next wait on its key. The
        winner is recorded: a replay gets the same one.
        """
        return First(waits)

    def parallel(self, actions: Mapping[str, Action], max_workers: int = 8) -> Parallel:
        """Run ``{name: self.action(...)}`` concurrently, at most ``max_workers`` at once; yields
        ``{name: result}`` (``{}`` for an empty dict). A part that finally fails raises
        ``ActionFailed`` once the others have finished and been recorded."""
        return Parallel(actions, max_workers)

    def child(self, key: str, flow: FlowTarget, input: dict[str, Any] | None = None,
              run_id: str | None = None) -> Child:
        """Start a child run of ``flow`` in this run's store and wait until it ends.

        ``result = yield self.child(...)`` gives the child's final state (JSON); a child
        that fails or is cancelled raises ``ChildFailed`` at the yield. The child's id is
        ``run_id``, else ``<this run's id>.<key>``. ``flow`` is a Workflow class or
        ``"path.py[:Class]"`` (a relative path is looked for beside this flow's file first).
        """
        return Child(key, flow, input, run_id)

    def start_child(self, key: str, flow: FlowTarget, input: dict[str, Any] | None = None,
                    run_id: str | None = None) -> StartChild:
        """Start a child run without waiting for it; ``yield`` gives its run id."""
        return StartChild(key, flow, input, run_id)

    def patched(self, patch_id: str) -> bool:
        """Whether this point of the step runs the changed code: ``if self.patched("id"): new else: old``.

        True when the visit runs here for the first time (a marker is recorded); on a replay
        of a visit recorded before the change, False, so the old path is taken; True when
        the replay finds the marker.
        """
        if not isinstance(patch_id, str) or not patch_id:
            raise TypeError(f"self.patched() takes a non-empty id string, got {patch_id!r}")
        return self._tinywf.patched(patch_id)

    @property
    def store_target(self) -> str:
        """The store this run lives in (a directory or a URL): ``Runtime(self.store_target)`` in an
        action reaches this run's siblings."""
        return self._tinywf.store_target

    # -- run facts ---------------------------------------------------------------

    @property
    def run_id(self) -> str:
        """This run's id."""
        return self._tinywf.run_id

    @property
    def scheduled_at(self) -> datetime | None:
        """The slot a schedule started this run for (an aware UTC datetime); None for runs not
        started by a schedule. The same on every replay."""
        return getattr(self._tinywf, "scheduled_at", None)

    def idempotency_key(self, key: str) -> str:
        """A stable id for action ``key`` in this step visit: ``<run_id>:<visit>:<key>``.

        Hand it to services that deduplicate requests (payment APIs, mailers).
        """
        return f"{self._tinywf.run_id}:{self._tinywf.visit}:{key}"

    def log(self, type: str, /, **values: Any) -> None:
        """Append an entry to the run's audit log (recorded once per step visit)."""
        if not isinstance(type, str) or not type:
            raise TypeError(f"self.log() takes a non-empty type string first, got {type!r}")
        self._tinywf.record_log(type, values)

    def tag(self, **tags: str) -> None:
        """Tag this run: ``self.tag(customer="acme")`` (string values; a key already there takes the
        new value). Recorded in the audit log as a ``tag`` entry and applied once, like ``log``;
        ``tinywf list --tag customer=acme`` finds the run."""
        from tinywf_cli.filters import checked_tags

        self._tinywf.record_tags(checked_tags(tags, "self.tag()"))


def _check_versioning(cls: type[Workflow[Any]]) -> None:
    """Refuse a bad ``version``, ``migrations``, ``history_limit``, ``step_timeout`` or ``max_duration``
    when the class is defined."""
    name = cls.__name__
    version = cls.version
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FlowDefinitionError(f"{name}.version must be an integer >= 1, not {version!r}")
    migrations = cls.migrations
    if not isinstance(migrations, Mapping):
        raise FlowDefinitionError(f"{name}.migrations must be a dict {{version: function}}, not {migrations!r}")
    for old, fn in migrations.items():
        if not isinstance(old, int) or isinstance(old, bool) or not 1 <= old < version:
            raise FlowDefinitionError(
                f"{name}.migrations[{old!r}]: keys are the versions migrated from, 1 to {version - 1} "
                f"(version is {version})")
        if not callable(fn):
            raise FlowDefinitionError(f"{name}.migrations[{old}] must be a function of the state dict")
    limit = cls.history_limit
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise FlowDefinitionError(f"{name}.history_limit must be None or an integer >= 1, not {limit!r}")
    declared = cls.__dict__.get("limit", None)
    if declared is not None and not isinstance(declared, Limit) and not inspect.isfunction(declared):
        raise FlowDefinitionError(f"{name}.limit must be a Limit(...), or a method returning one, not {declared!r}")
    timeout = cls.step_timeout
    if timeout is not None and (not isinstance(timeout, int | float) or isinstance(timeout, bool)
                                or not 0 < timeout < math.inf):
        raise FlowDefinitionError(f"{name}.step_timeout must be None or a number of seconds > 0, not {timeout!r}")
    longest = cls.max_duration
    if longest is not None:
        try:
            seconds = seconds_of(longest, f"{name}.max_duration")
        except (TypeError, ValueError) as exc:
            raise FlowDefinitionError(f"{exc} (None for no limit)") from None
        if seconds <= 0:
            raise FlowDefinitionError(f"{name}.max_duration must be more than 0 seconds (None for no limit), "
                                      f"not {longest!r}")


def _check_schedules(cls: type[Workflow[Any]]) -> None:
    """Refuse ``schedules`` that is not a list of ``Schedule`` with names of their own."""
    from tinywf_cli.schedules.spec import Schedule

    given = cls.schedules
    if isinstance(given, str | bytes) or not isinstance(given, Sequence) or \
            not all(isinstance(s, Schedule) for s in given):
        raise FlowDefinitionError(f"{cls.__name__}.schedules must be a list of Schedule(...), not {given!r}")
    names = [s.name for s in given]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise FlowDefinitionError(f"{cls.__name__}.schedules names {', '.join(map(repr, twice))} more than once; "
                                  "each schedule needs a name of its own")


def _state_model_of(cls: type) -> type[BaseModel] | None:
    for base in getattr(cls, "__orig_bases__", ()):
        origin = typing.get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Workflow):
            args = typing.get_args(base)
            if not args:
                return None
            model = args[0]
            if model is dict or typing.get_origin(model) is dict or model is Any:
                return None
            if isinstance(model, type) and issubclass(model, BaseModel):
                return model
            if isinstance(model, TypeVar):
                return None
            raise FlowDefinitionError(
                f"{cls.__name__}: Workflow[...] takes a pydantic BaseModel class, not {model!r}"
            )
    return None


def next_step_name(cls: type[Workflow[Any]], result: Any) -> str | None:
    """The step a step's return value names; raises ValueError when it names none."""
    if result is None:
        return None
    name: Any = result
    if not isinstance(result, str):
        func = getattr(result, "__func__", result)
        name = getattr(func, "__name__", None)
        if name is None or getattr(cls, name, None) is None:
            raise ValueError(f"returned {result!r}, which is not a step (return a step method, its name, or None)")
    if name not in cls.__tinywf_steps__:
        raise ValueError(f"returned {name!r}, which is not a step of {cls.__name__}")
    return str(name)
