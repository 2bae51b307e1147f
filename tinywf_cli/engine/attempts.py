"""An action's attempt as it runs: its timeout, its heartbeats, and the sign of life it gives its run.

``call_attempt`` runs one attempt of an action and says how it went (``Attempt``), never
raising. With the action's ``timeout``:

- an ``async def`` runs under ``asyncio.timeout``: when the time is up it is cancelled, and
  the attempt fails with ``ActionTimeout``;
- a plain function runs in a thread of its own while the caller waits for it up to the
  timeout. Python cannot stop a thread from outside, so when the time is up the function
  keeps running there, the attempt fails with ``ActionTimeout``, and whatever the function
  returns later is discarded. Bound the function's own waits (a socket timeout) so that it
  ends too.

The timeout is real time, whatever the engine's clock says (``$TINYWF_NOW`` fixes the run's
clock, not how long a call may take).

``heartbeat(details)``, called from the function, says the attempt is alive and keeps its
``details`` (JSON). The details of the last heartbeat of an attempt that failed are kept with
the action's record, and the next attempt reads them with ``last_heartbeat()`` (to resume
where the last one got to). Each run being advanced has an ``InFlight``, its attempts now:
on PostgreSQL the run's claim is renewed while it ``alive`` — no attempt in flight, or one
that started or heartbeated lately — so an attempt that hangs without a heartbeat loses the
run to another worker after the lease, and its late result is refused.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import inspect
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from tinywf_cli import telemetry
from tinywf_cli.authoring.commands import Action
from tinywf_cli.engine.values import NotJSON, to_json_value
from tinywf_cli.errors import ActionTimeout

#: Results that are surely no awaitable (the common ones: no ABC check for them).
_NOT_AWAITABLE = frozenset({type(None), bool, int, float, str, list, dict, tuple})


def run_callable(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``fn``; when it returns an awaitable (``async def``), run it to completion."""
    result = fn(*args, **kwargs)
    if type(result) in _NOT_AWAITABLE or not inspect.isawaitable(result):
        return result
    import asyncio  # only flows with async actions pay for it

    async def wait() -> Any:
        return await result

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    # Called from inside an event loop (an embedding program): use a loop of our own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wait()).result()


_CURRENT: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("tinywf_attempt", default=None)


class Attempt:
    """One attempt of an action: how it went (``result`` or ``error``), and its heartbeats."""

    __slots__ = ("details", "error", "key", "last", "number", "result", "sign")

    def __init__(self, key: str, number: int, last: Any) -> None:
        self.key = key
        self.number = number
        #: The details of the last heartbeat of the attempt before it (``last_heartbeat()``).
        self.last = last
        #: The details of this attempt's last heartbeat (None until it sends one).
        self.details: Any = None
        #: When it last showed a sign of life (its start, a heartbeat), in monotonic seconds.
        self.sign = time.monotonic()
        self.result: Any = None
        self.error: BaseException | None = None

    def beat(self, details: Any) -> None:
        """A heartbeat: alive now, with ``details``."""
        if details is not None:
            try:
                self.details = to_json_value(details)
            except NotJSON as exc:
                raise TypeError(f"heartbeat(details): details must be JSON: {exc}") from None
        self.sign = time.monotonic()


class InFlight:
    """The attempts of one run in flight now, and whether the run shows a sign of life."""

    def __init__(self) -> None:
        self._attempts: set[Attempt] = set()
        self._lock = threading.Lock()

    def add(self, attempt: Attempt) -> None:
        """An attempt began."""
        with self._lock:
            self._attempts.add(attempt)

    def remove(self, attempt: Attempt) -> None:
        """An attempt ended (or was given up on: a plain function past its timeout)."""
        with self._lock:
            self._attempts.discard(attempt)

    def alive(self, within: float) -> bool:
        """Whether the run shows a sign of life: no attempt in flight (tinywf's own code runs), or
        one that started or heartbeated less than ``within`` seconds ago."""
        with self._lock:
            attempts = list(self._attempts)
        now = time.monotonic()
        return not attempts or any(now - a.sign < within for a in attempts)


def heartbeat(details: Any = None) -> None:
    """Tell tinywf that the action calling it is alive, with ``details`` (JSON) of how far it got.

    On PostgreSQL the run's claim is renewed while its attempt heartbeats: call it at least
    every half lease (15 s by default) in an action that runs longer than that, or another
    worker takes the run over and this attempt's result is refused. The details of the last
    heartbeat of an attempt that failed (a timeout, an error) reach the next attempt as
    ``last_heartbeat()``. Outside an action it does nothing.

    Example::

        def copy_rows(start: int) -> int:
            for n in range(last_heartbeat() or start, 10_000):
                copy(n)
                heartbeat(n)
            return 10_000
    """
    attempt = _CURRENT.get()
    if attempt is not None:
        attempt.beat(details)


def last_heartbeat() -> Any:
    """The details of the last heartbeat of this action's previous attempt, when that attempt
    failed (a timeout, an error) after sending one; ``None`` otherwise, and outside an action."""
    attempt = _CURRENT.get()
    return None if attempt is None else attempt.last


def call_attempt(action: Action, number: int, last: Any, inflight: InFlight | None = None) -> Attempt:
    """Run attempt ``number`` of ``action`` here (a plain function with a timeout: in a thread of
    its own); how it went is on the returned ``Attempt`` (interrupts too, for the caller to raise)."""
    attempt = Attempt(action.key, number, last)
    if inflight is not None:
        inflight.add(attempt)
    token = _CURRENT.set(attempt)
    tel = telemetry.current()
    span = None if tel is None else tel.attempt(action.key, number)
    try:
        with nullcontext() if span is None else span as live:
            try:
                if action.timeout is None:
                    attempt.result = run_callable(action.fn, action.args, action.kwargs)
                elif inspect.iscoroutinefunction(action.fn):
                    attempt.result = run_callable(_bounded, (action, number), {})
                else:
                    attempt.result = _in_thread(action, number)
            except BaseException as exc:
                attempt.error = exc
            if tel is not None:
                tel.attempt_ended(live, attempt.error)
    finally:
        _CURRENT.reset(token)
        if inflight is not None:
            inflight.remove(attempt)
    return attempt


async def _bounded(action: Action, number: int) -> Any:
    """An ``async def`` action under its timeout: cancelled when the time is up."""
    import asyncio

    assert action.timeout is not None
    scope = asyncio.timeout(action.timeout)
    try:
        async with scope:
            return await action.fn(*action.args, **action.kwargs)
    except TimeoutError:
        if scope.expired():
            raise ActionTimeout(action.key, action.timeout, number) from None
        raise  # the function's own


def _in_thread(action: Action, number: int) -> Any:
    """A plain function in a thread of its own, waited for up to its timeout (then left running:
    what it returns after that goes nowhere)."""
    assert action.timeout is not None
    outcome: list[tuple[bool, Any]] = []
    finished = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, run_callable(action.fn, action.args, action.kwargs)))
        except BaseException as exc:  # handed to the waiting thread, which records or raises it
            outcome.append((False, exc))
        finally:
            finished.set()

    # a copy of this context: the attempt (heartbeats) and the run this call chain holds go along
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), name=f"tinywf-action-{action.key}"[:60],
                              daemon=True)
    thread.start()
    if not finished.wait(action.timeout):
        raise ActionTimeout(action.key, action.timeout, number)
    ok, value = outcome[0]
    if ok:
        return value
    raise value
