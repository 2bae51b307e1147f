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
``worker`` forever. One watchdog thread per process watches the step code running in every
thread, each thread's segment on its own:

- in the main thread it sends itself ``SIGALRM``, whose handler raises ``StepOverrun``
  there, even in the middle of a blocking call (``time.sleep``); a program that uses
  ``SIGALRM`` itself keeps it, and the main thread's steps are then not watched;
- in another thread (``tick --concurrency N`` runs steps in N threads) it asks the
  interpreter to raise ``StepOverrun`` in that thread (``PyThreadState_SetAsyncExc``),
  which lands at the thread's next bytecode: a step stuck inside one long call that does
  not return to Python (``time.sleep(3600)``, a blocking read) is interrupted only when
  that call returns.

Either way the exception is raised only while the segment that overran is still running,
never in the next one nor in tinywf's own code after it: a segment's end (``disarm``)
withdraws an exception not yet raised. A step that catches ``StepOverrun`` and keeps
spinning gets it again every half second, for as long as the frame that swallowed it runs.
"""

from __future__ import annotations

import math
import os
import signal
import sys
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


#: How often the watchdog looks at the segments at the latest: arming one need not wake it
#: (a thread switch per step) unless its budget ends before that.
IDLE_POLL = 1.0
#: How long an overrun is given to land before it is raised again (a step that swallowed it).
AGAIN_AFTER = 0.5

#: tinywf's own code: an overrun caught there was handled (the run fails), never raised again.
_OWN_CODE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _Segment:
    """One piece of step code being watched: in which thread, since when, for how long."""

    __slots__ = ("again_at", "budget", "deadline", "delivered", "raised", "thread")

    def __init__(self, thread: int, budget: float) -> None:
        self.thread = thread
        self.budget = budget
        self.deadline = time.monotonic() + budget
        #: Whether an overrun was sent to the thread, when to look again, and the exception
        #: once it was raised there (its traceback tells where it was caught).
        self.delivered = False
        self.again_at = 0.0
        self.raised: StepOverrun | None = None


class Watchdog:
    """Interrupts step code, in any thread, that runs past its budget."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: The segment of step code running now in each thread, by thread ident.
        self._segments: dict[int, _Segment] = {}
        #: Held while an overrun is sent, and while a segment ends: none is sent after its end.
        self._lock = threading.RLock()
        self._pending: _Segment | None = None  # the main thread's overrun being delivered by SIGALRM
        self._installed = False
        self._alarm_ours: bool | None = None  # whether SIGALRM is free for the watchdog (main thread)
        self._sleep_until = 0.0  # when the watchdog thread looks next (arming earlier wakes it)

    def _start(self) -> bool:
        """Start the watchdog thread (and take SIGALRM, from the main thread); whether this thread is watched."""
        if threading.get_ident() == _MAIN_THREAD:
            if self._alarm_ours is None:
                if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                    self._alarm_ours = False  # the program uses SIGALRM itself: leave it be
                else:
                    signal.signal(signal.SIGALRM, self._on_alarm)
                    self._installed = True
                    self._alarm_ours = True
            if not self._alarm_ours:
                return False
        elif sys.implementation.name != "cpython":
            return False  # no way to interrupt another thread (ctypes is imported only for an overrun)
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._watch, name="tinywf-step-watchdog", daemon=True)
                    self._thread.start()
        return True

    def watching(self, budget: float | None) -> _Watching:
        """While the block runs step code: interrupt it after ``budget`` seconds."""
        return _Watching(self, budget)

    def arm(self, budget: float | None) -> bool:
        """Start watching a segment of step code in this thread (``disarm`` ends it); whether it is watched."""
        if budget is None:
            return False
        ident = threading.get_ident()
        # the first segment of a thread: _start says whether it can be watched there
        if (self._thread is None or (ident == _MAIN_THREAD and not self._alarm_ours)) and not self._start():
            return False
        segment = _Segment(ident, budget)
        self._segments[ident] = segment
        if segment.deadline < self._sleep_until:  # the watchdog would look too late: wake it
            self._wake.set()
        return True

    def disarm(self) -> None:
        """The segment ``arm`` started in this thread ended: an overrun sent to it and not raised yet
        is withdrawn."""
        ident = threading.get_ident()
        with self._lock:
            segment = self._segments.pop(ident, None)
            if segment is not None and segment.delivered and ident != _MAIN_THREAD:
                withdraw = _set_async_exc()
                if withdraw is not None:
                    withdraw(ident, None)

    # -- the watchdog thread -------------------------------------------------------------

    def _watch(self) -> None:
        while True:
            self._sleep_until = math.inf  # a segment armed while this looks wakes the next wait at once
            now = time.monotonic()
            look = now + IDLE_POLL
            for segment in list(self._segments.values()):
                when = segment.again_at if segment.delivered else segment.deadline
                if when <= now:
                    self._overran(segment)
                    when = segment.again_at
                look = min(look, when)
            self._sleep_until = look
            self._wake.wait(max(look - time.monotonic(), 0.001))
            self._wake.clear()

    def _overran(self, segment: _Segment) -> None:
        """Send an overrun to the thread of a segment that ran past its budget (again, when the
        step swallowed the last one and still runs the code that did)."""
        with self._lock:
            if self._segments.get(segment.thread) is not segment:
                return  # it ended meanwhile
            segment.again_at = time.monotonic() + AGAIN_AFTER
            if segment.delivered and not _swallowed(segment):
                if segment.raised is not None:  # caught by tinywf (the run fails) or gone: nothing more to do
                    self._segments.pop(segment.thread, None)
                return
            segment.delivered = True
            if segment.thread == _MAIN_THREAD:
                self._pending = segment
                signal.pthread_kill(segment.thread, signal.SIGALRM)
                return
            deliver = _set_async_exc()
            if deliver is not None:
                deliver(segment.thread, _overrun_in(segment))

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        segment, self._pending = self._pending, None
        if segment is not None and self._segments.get(_MAIN_THREAD) is segment:
            # only in the segment that overran, never in the next one
            segment.raised = StepOverrun(segment.budget)
            raise segment.raised


def _overrun_in(segment: _Segment) -> type[StepOverrun]:
    """A ``StepOverrun`` class for one segment: the interpreter raises a class (made without
    arguments), whose instance notes itself in the segment where it is raised."""

    def made(self: StepOverrun) -> None:
        StepOverrun.__init__(self, segment.budget)
        segment.raised = self

    return type("StepOverrun", (StepOverrun,), {"__init__": made, "__module__": __name__})


def _swallowed(segment: _Segment) -> bool:
    """Whether the overrun raised in a segment was caught by the step's own code, which is still
    running (so it must be raised again); False until it was raised, and once tinywf caught it."""
    raised = segment.raised
    tb = raised.__traceback__ if raised is not None else None
    if tb is None:
        return False
    catcher = tb.tb_frame  # the outermost frame the exception reached: where it was caught
    if catcher.f_code.co_filename.startswith(_OWN_CODE):
        return False
    frame = sys._current_frames().get(segment.thread)
    while frame is not None:
        if frame is catcher:
            return True
        frame = frame.f_back
    return False


_async_exc: list[Callable[[int, type[BaseException] | None], None] | None] = []


def _set_async_exc() -> Callable[[int, type[BaseException] | None], None] | None:
    """``PyThreadState_SetAsyncExc`` (raise an exception class in a thread at its next bytecode,
    or withdraw one with None), or None where the interpreter has none."""
    if not _async_exc:
        try:
            import ctypes

            call = ctypes.pythonapi.PyThreadState_SetAsyncExc
            call.argtypes = [ctypes.c_ulong, ctypes.py_object]
            call.restype = ctypes.c_int
        except (ImportError, AttributeError):
            _async_exc.append(None)
        else:
            def send(thread: int, exc: type[BaseException] | None) -> None:
                call(thread, exc if exc is not None else ctypes.py_object())

            _async_exc.append(send)
    return _async_exc[0]


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


_MAIN_THREAD: int = threading.main_thread().ident or 0

WATCHDOG = Watchdog()
