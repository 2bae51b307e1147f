"""The commands a step yields (``self.action(...)``, ``self.sleep(...)``, …) and ``Retry``.

Each is a small object the engine answers: from the run's records on replay, or by doing
it now and recording it. ``Command.kind`` and ``Command.key`` are what a replay checks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from tinywf_cli.authoring.limits import Breaker, Limit

#: The longest wait tinywf accepts (about 100 years): longer ones are surely mistakes.
MAX_SECONDS = 100 * 366 * 86400.0


def seconds_of(value: float | timedelta, what: str, *, negative: bool = False) -> float:
    """Seconds from a number or a timedelta: finite, at most ~100 years, and >= 0 unless ``negative``."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:
            result = math.inf
    else:
        raise TypeError(f"{what} must be seconds (a number) or a timedelta, not {value!r}")
    if not math.isfinite(result) or result > MAX_SECONDS:
        raise ValueError(f"{what} must be a finite number of seconds (at most {MAX_SECONDS:.0f}), got {value!r}")
    if result < 0 and not negative:
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

    __slots__ = ("args", "breaker", "fn", "kwargs", "limit", "retry", "timeout")
    kind = "action"

    def __init__(self, key: str, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], retry: Retry | None, limit: Limit | None = None,
                 breaker: Breaker | None = None, timeout: float | timedelta | None = None) -> None:
        super().__init__(key)
        #: Seconds an attempt may take before it fails with ``ActionTimeout`` (``None``: no bound).
        self.timeout = None if timeout is None else seconds_of(timeout, f"action '{key}' timeout")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"action '{key}': timeout must be more than 0 seconds (None for no bound), "
                             f"not {timeout!r}")
        if not callable(fn):
            raise TypeError(f"action '{key}': {fn!r} is not callable")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"action '{key}': retry= takes a Retry(...), not {retry!r}")
        if limit is not None or breaker is not None:
            from tinywf_cli.authoring.limits import Breaker, Limit  # limits.py builds on this module

            if limit is not None and not isinstance(limit, Limit):
                raise TypeError(f"action '{key}': limit= takes a Limit(...) (or LIMIT.key(value)), not {limit!r}")
            if breaker is not None and not isinstance(breaker, Breaker):
                raise TypeError(f"action '{key}': breaker= takes a Breaker(...), not {breaker!r}")
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.retry = retry or NO_RETRY
        #: The limit each attempt takes room under, and the breaker it goes through (or ``None``).
        self.limit = limit
        self.breaker = breaker


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

    __slots__ = ("deadline", "request", "timeout", "type")
    kind = "event"

    def __init__(self, key: str, type_: Any, timeout: float | None, request: dict[str, Any],
                 deadline: datetime | None = None) -> None:
        super().__init__(key)
        self.type = type_
        #: Seconds from when the wait begins (never negative: one already past times out at once).
        self.timeout = timeout
        #: An absolute deadline (``timeout=`` an aware datetime).
        self.deadline = deadline
        self.request = request


class Parallel(Command):
    """Run several actions concurrently; the yield gives ``{name: result}``."""

    __slots__ = ("actions", "max_workers")
    kind = "parallel"

    def __init__(self, actions: Mapping[str, Action], max_workers: int = 8) -> None:
        if not isinstance(actions, Mapping):
            raise TypeError("self.parallel() takes a dict {name: self.action(...)}")
        for name, action in actions.items():
            if not isinstance(action, Action):
                raise TypeError(f"self.parallel(): {name!r} must be a self.action(...), not {action!r}")
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise ValueError(f"self.parallel(max_workers=...) must be an integer >= 1, got {max_workers!r}")
        keys = [a.key for a in actions.values()]
        if len(set(keys)) != len(keys):
            raise TypeError(f"self.parallel(): action keys must differ, got {keys}")
        # JSON, not a joined string: {"a,b": ...} and {"a": ..., "b": ...} must not look alike
        super().__init__("parallel" + json.dumps(sorted(keys), ensure_ascii=False))
        self.actions = dict(actions)
        self.max_workers = max_workers

    def describe(self) -> str:
        """``parallel 'a,b'``."""
        return f"parallel of {', '.join(repr(k) for k in sorted(a.key for a in self.actions.values()))}"


#: What ``self.child`` and ``self.start_child`` take as the flow: a class, or ``"path.py[:Class]"``.
FlowTarget = type | str | Path


class Child(Command):
    """Start a child run and wait until it ends: ``result = yield self.child(...)``."""

    __slots__ = ("flow", "input", "run_id", "wait")
    kind = "child"

    def __init__(self, key: str, flow: FlowTarget, input: dict[str, Any] | None, run_id: str | None,
                 *, wait: bool = True) -> None:
        super().__init__(key)
        if not isinstance(flow, type | str | Path):
            raise TypeError(f"child '{key}': flow must be a Workflow class or 'path.py[:Class]', not {flow!r}")
        if input is not None and not isinstance(input, dict):
            raise TypeError(f"child '{key}': input must be a dict, not {type(input).__name__}")
        if run_id is not None and not isinstance(run_id, str):
            raise TypeError(f"child '{key}': run_id must be a string, not {run_id!r}")
        self.flow = flow
        self.input = input
        self.run_id = run_id
        self.wait = wait


class StartChild(Child):
    """Start a child run without waiting for it: ``run_id = yield self.start_child(...)``."""

    __slots__ = ()
    kind = "start_child"

    def __init__(self, key: str, flow: FlowTarget, input: dict[str, Any] | None, run_id: str | None) -> None:
        super().__init__(key, flow, input, run_id, wait=False)


#: What ``self.first`` races: events, timers and child runs that are waited for.
Wait = WaitEvent | Sleep | Child


class First(Command):
    """Wait for whichever of several waits comes first: ``name, value = yield self.first(**waits)``."""

    __slots__ = ("waits",)
    kind = "first"

    def __init__(self, waits: Mapping[str, Wait]) -> None:
        if not waits:
            raise TypeError("self.first() takes the waits to race by name, e.g. "
                            "self.first(approved=self.wait_event('approval'), late=self.sleep('late', 3600))")
        for name, wait in waits.items():
            if type(wait) not in (WaitEvent, Sleep, Child):
                raise TypeError(f"self.first(): {name}= must be a self.wait_event(...), self.sleep(...), "
                                f"self.sleep_until(...) or self.child(...), not {wait!r}")
        keys = [w.key for w in waits.values()]
        if len(set(keys)) != len(keys):
            raise TypeError(f"self.first(): the waits' keys must differ, got {keys}")
        # the branches by name, kind and key (JSON, sorted): a replay with other branches is another command
        super().__init__("first" + json.dumps(sorted([name, w.kind, w.key] for name, w in waits.items()),
                                              ensure_ascii=False))
        self.waits = dict(waits)

    def describe(self) -> str:
        """``first of approved (event 'approval'), late (sleep 'late')``."""
        return "first of " + ", ".join(f"{name} ({w.describe()})" for name, w in sorted(self.waits.items()))
