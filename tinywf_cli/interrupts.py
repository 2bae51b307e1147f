"""Stopping a process cleanly, and stopping a step that never yields.

Two things look alike to Python and must not to tinywf:

- a real interrupt (Ctrl-C, a second SIGTERM to a worker), which stops the process and
  leaves the run in progress ``running`` for ``tinywf tick`` to recover, and
- flow code raising ``KeyboardInterrupt`` or ``SystemExit`` itself, which is that run's own
  failure, recorded once like any other.

The CLI installs handlers that count real signals (``install``); ``is_interrupt`` tells the
two apart. Without them (a program embedding tinywf), a ``KeyboardInterrupt`` is taken as real.

The step watchdog: a step's code between two yields should be quick (slow work belongs in
actions). A step that runs longer than its ``step_timeout`` is interrupted with
``StepOverrun``, which fails the run, so one step that never yields cannot hold ``tick`` or
``worker`` forever. One watchdog thread per process watches the step in progress; it can
interrupt only the main thread (where the CLI runs steps), so steps run in other threads
are not watched.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class StepOverrun(BaseException):
    """Raised inside a step's code that ran past its ``step_timeout`` without yielding."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"ran for more than {seconds:g} s without yielding")
        self.seconds = seconds


_signals_seen = 0
_handlers_installed = False


def interrupted(signum: int, frame: FrameType | None) -> None:
    """The CLI's handler of SIGINT: count it, then stop what is running."""
    global _signals_seen
    _signals_seen += 1
    raise KeyboardInterrupt


def install(handler: Callable[[int, FrameType | None], Any] = interrupted,
            signums: tuple[int, ...] = (signal.SIGINT,)) -> None:
    """Install ``handler`` for ``signums`` (main thread only) and count real interrupts from now on."""
    global _handlers_installed
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in signums:
        signal.signal(signum, handler)
    _handlers_installed = True


@contextmanager
def handling() -> Iterator[None]:
    """For one CLI command: SIGINT counted as a real interrupt; the previous handler restored after."""
    global _handlers_installed, _signals_seen
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    saved = _handlers_installed, _signals_seen
    install()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _handlers_installed, _signals_seen = saved


def note_signal() -> None:
    """Count a real signal received by a handler other than ``interrupted`` (the worker's)."""
    global _signals_seen
    _signals_seen += 1


def seen() -> int:
    """How many real interrupts this command received."""
    return _signals_seen


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` stops the process (propagate it) rather than failing the code that raised it."""
    if isinstance(exc, KeyboardInterrupt):
        return not _handlers_installed or _signals_seen > 0
    return False


#: How often an idle watchdog looks for step code to watch: arming it need not wake it (a
#: thread switch per step) unless the budget is short.
IDLE_POLL = 1.0


class Watchdog:
    """Interrupts the main thread when step code runs past its budget."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: The segment of step code running now: (number, started at, budget) or None.
        self._segment: tuple[int, float, float] | None = None
        self._count = 0
        self._pending: tuple[int, float] | None = None  # the segment and budget of an overrun being delivered
        self._installed = False
        self._idle = False  # the thread waits with no deadline: arming must wake it

    def _start(self) -> bool:
        if threading.get_ident() != _MAIN_THREAD:
            return False
        if not self._installed:
            if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                return False  # the program uses SIGALRM itself: leave it be
            signal.signal(signal.SIGALRM, self._on_alarm)
            self._installed = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="tinywf-step-watchdog", daemon=True)
            self._thread.start()
        return True

    def watching(self, budget: float | None) -> _Watching:
        """While the block runs step code: interrupt it after ``budget`` seconds."""
        return _Watching(self, budget)

    def arm(self, budget: float | None) -> bool:
        """Start watching a segment of step code (``disarm`` ends it); whether it is watched."""
        if budget is None:
            return False
        # not started yet, or not in the main thread: _start says whether it can watch here
        if (self._thread is None or threading.get_ident() != _MAIN_THREAD) and not self._start():
            return False
        self._count += 1
        self._segment = (self._count, time.monotonic(), budget)
        if self._idle and budget < 2 * IDLE_POLL:  # an idle thread looks again within IDLE_POLL by itself
            self._wake.set()
        return True

    def disarm(self) -> None:
        """The segment ``arm`` started ended."""
        self._segment = None

    def _watch(self) -> None:
        main = threading.main_thread().ident
        while True:
            segment = self._segment
            if segment is None:
                self._idle = True
                if self._segment is None:  # looked at again after saying so: no arming is missed
                    self._wake.wait(IDLE_POLL)
                self._idle = False
                self._wake.clear()
                continue
            number, started, budget = segment
            left = started + budget - time.monotonic()
            if left > 0:
                self._wake.wait(left)
                self._wake.clear()
                continue
            current = self._segment
            if current is not None and current[0] == number and main is not None:
                self._pending = (number, budget)
                signal.pthread_kill(main, signal.SIGALRM)
                time.sleep(0.5)  # let it land (and again later, if the step swallows it)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        pending, self._pending = self._pending, None
        current = self._segment
        if pending is not None and current is not None and current[0] == pending[0]:
            raise StepOverrun(pending[1])  # only in the segment that overran, never in the next one


class _Watching:
    """``Watchdog.watching``: a plain class, not a generator (it wraps every piece of step code)."""

    __slots__ = ("armed", "budget", "dog")

    def __init__(self, dog: Watchdog, budget: float | None) -> None:
        self.dog = dog
        self.budget = budget
        self.armed = False

    def __enter__(self) -> None:
        self.armed = self.dog.arm(self.budget)

    def __exit__(self, *exc: object) -> None:
        if self.armed:
            self.dog.disarm()


_MAIN_THREAD = threading.main_thread().ident

WATCHDOG = Watchdog()
