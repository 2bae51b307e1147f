"""The authoring API: ``Workflow``, ``@step``, ``@signal``, ``Retry`` and the commands a step yields.

A step is a generator method. It yields commands (``self.action``, ``self.sleep``,
``self.wait_event``, ``self.parallel``) and the engine sends back their results, running
each side effect once and answering replays from the run's records.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel

from tinywf_cli.clock import as_utc
from tinywf_cli.errors import FlowDefinitionError

StateT = TypeVar("StateT")

#: What a step yields: one of the command objects below.
StepGenerator = Generator["Command", Any, Any]

# Names a step or signal may not take: they are the authoring API itself.
RESERVED = frozenset(
    {"action", "sleep", "sleep_until", "wait_event", "parallel", "log", "run_id", "state",
     "idempotency_key"}
)


def seconds_of(value: float | timedelta, what: str) -> float:
    """Seconds from a number or a timedelta, refusing negatives and non-numbers."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(f"{what} must be seconds (a number) or a timedelta, not {value!r}")
    if result != result or result < 0:  # NaN or negative
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return result


@dataclass(frozen=True)
class Retry:
    """How often and how patiently to retry a failing action.

    The delay after attempt ``n`` is ``min(delay * backoff**(n-1), max_delay)``; between
    attempts the run waits durably (the process may exit, ``tinywf tick`` carries on).
    """

    #: Calls at most, the first included; 1 means no retry.
    attempts: int = 1
    #: Seconds (or a timedelta) to wait after the first failed attempt.
    delay: float | timedelta = 1.0
    #: Factor applied to the delay after each further failure.
    backoff: float = 2.0
    #: Cap on any one delay (seconds or timedelta); ``None`` for no cap.
    max_delay: float | timedelta | None = None
    #: Exception types that fail the run at once, without another attempt.
    non_retryable: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool) or self.attempts < 1:
            raise ValueError(f"Retry(attempts=...) must be an integer >= 1, got {self.attempts!r}")
        seconds_of(self.delay, "Retry(delay=...)")
        if self.max_delay is not None:
            seconds_of(self.max_delay, "Retry(max_delay=...)")
        if not isinstance(self.backoff, int | float) or self.backoff <= 0:
            raise ValueError(f"Retry(backoff=...) must be a number > 0, got {self.backoff!r}")
        kinds = self.non_retryable
        if isinstance(kinds, type):
            kinds = (kinds,)
            object.__setattr__(self, "non_retryable", kinds)
        if not all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
            raise TypeError("Retry(non_retryable=...) takes exception classes")

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (counted from 1)."""
        wait = seconds_of(self.delay, "delay") * self.backoff ** (attempt - 1)
        if self.max_delay is not None:
            wait = min(wait, seconds_of(self.max_delay, "max_delay"))
        return wait


NO_RETRY = Retry()


class Command:
    """Something a step yields for the engine to do; build them with ``self.action`` and friends."""

    __slots__ = ("key",)
    kind: ClassVar[str] = ""

    def __init__(self, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise TypeError(f"a {self.kind} key must be a non-empty string, got {key!r}")
        self.key = key

    def describe(self) -> str:
        """``action 'charge'``: how messages name this command."""
        return f"{self.kind} '{self.key}'"


class Action(Command):
    """Run ``fn(*args, **kwargs)`` once, durably: ``value = yield self.action(...)``."""

    __slots__ = ("args", "fn", "kwargs", "retry")
    kind = "action"

    def __init__(self, key: str, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], retry: Retry | None) -> None:
        super().__init__(key)
        if not callable(fn):
            raise TypeError(f"action '{key}': {fn!r} is not callable")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"action '{key}': retry= takes a Retry(...), not {retry!r}")
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.retry = retry or NO_RETRY


class Sleep(Command):
    """A durable timer; the yield gives the datetime it was due."""

    __slots__ = ("seconds", "until")
    kind = "sleep"

    def __init__(self, key: str, seconds: float | None, until: datetime | None) -> None:
        super().__init__(key)
        self.seconds = seconds
        self.until = until


class WaitEvent(Command):
    """Pause until a value for ``key`` arrives from outside (``tinywf resolve``/``send``)."""

    __slots__ = ("request", "timeout", "type")
    kind = "event"

    def __init__(self, key: str, type_: Any, timeout: float | None, request: dict[str, Any]) -> None:
        super().__init__(key)
        self.type = type_
        self.timeout = timeout
        self.request = request


class Parallel(Command):
    """Run several actions concurrently; the yield gives ``{name: result}``."""

    __slots__ = ("actions",)
    kind = "parallel"

    def __init__(self, actions: Mapping[str, Action]) -> None:
        if not isinstance(actions, Mapping) or not actions:
            raise TypeError("self.parallel() takes a non-empty dict {name: self.action(...)}")
        for name, action in actions.items():
            if not isinstance(action, Action):
                raise TypeError(f"self.parallel(): {name!r} must be a self.action(...), not {action!r}")
        keys = [a.key for a in actions.values()]
        if len(set(keys)) != len(keys):
            raise TypeError(f"self.parallel(): action keys must differ, got {keys}")
        # JSON, not a joined string: {"a,b": ...} and {"a": ..., "b": ...} must not look alike
        super().__init__("parallel" + json.dumps(sorted(keys), ensure_ascii=False))
        self.actions = dict(actions)

    def describe(self) -> str:
        """``parallel 'a,b'``."""
        return f"parallel of {', '.join(repr(k) for k in sorted(a.key for a in self.actions.values()))}"


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


_STEP_MARK = "__tinywf_step__"
_SIGNAL_MARK = "__tinywf_signal__"


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


class RunContext(Protocol):
    """What a workflow instance asks of the engine while its code runs."""

    run_id: str
    visit: int
    step: str | None

    def record_log(self, type_: str, values: dict[str, Any]) -> None:
        """Take a ``self.log`` entry."""
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

    state: StateT
    _tinywf: RunContext

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = _state_model_of(cls)
        if model is not None:
            cls.__tinywf_model__ = model
        steps: dict[str, StepSpec] = {}
        signals: dict[str, SignalSpec] = {}
        starts: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                if callable(member) and hasattr(member, _STEP_MARK):
                    signals.pop(name, None)
                    steps[name] = StepSpec(name, member, getattr(member, _STEP_MARK))
                elif callable(member) and hasattr(member, _SIGNAL_MARK):
                    steps.pop(name, None)
                    signals[name] = SignalSpec(name, member)
                elif name in steps or name in signals:
                    # overridden by something that is not a step or signal
                    steps.pop(name, None)
                    signals.pop(name, None)
        for name in (*steps, *signals):
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
        cls.__tinywf_start__ = starts[0] if starts else next(iter(steps), None)

    # -- commands --------------------------------------------------------------

    def action(self, key: str, fn: Callable[..., Any], /, *args: Any,
               retry: Retry | None = None, **kwargs: Any) -> Action:
        """Run ``fn(*args, **kwargs)`` once and cache its result: ``value = yield self.action(...)``.

        ``fn`` may be ``async def``. Its result is stored as JSON before the step
        continues; replays get the stored value (restored through ``fn``'s return
        annotation when pydantic understands it). ``retry=Retry(...)`` retries failures
        with durable delays.
        """
        return Action(key, fn, args, kwargs, retry)

    def sleep(self, key: str, duration: float | timedelta) -> Sleep:
        """A durable timer of ``duration`` seconds (or a timedelta); yields the time it was due."""
        return Sleep(key, seconds_of(duration, f"sleep '{key}' duration"), None)

    def sleep_until(self, key: str, when: datetime) -> Sleep:
        """A durable timer until ``when`` (naive means UTC); yields ``when``."""
        if not isinstance(when, datetime):
            raise TypeError(f"sleep_until '{key}' takes a datetime, not {when!r}")
        return Sleep(key, None, as_utc(when))

    def wait_event(self, key: str, *, type: Any = object, timeout: float | timedelta | None = None,
                   **request: Any) -> WaitEvent:
        """Pause until the event ``key`` is resolved; yields its value, validated against ``type``.

        ``request`` (JSON) is shown to whoever answers; ``question=`` is the prompt text.
        With ``timeout``, ``EventTimeout`` is raised at the yield once it passes.
        """
        seconds = None if timeout is None else seconds_of(timeout, f"wait_event '{key}' timeout")
        return WaitEvent(key, type, seconds, request)

    def parallel(self, actions: Mapping[str, Action]) -> Parallel:
        """Run ``{name: self.action(...)}`` concurrently; yields ``{name: result}``."""
        return Parallel(actions)

    # -- run facts ---------------------------------------------------------------

    @property
    def run_id(self) -> str:
        """This run's id."""
        return self._tinywf.run_id

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
