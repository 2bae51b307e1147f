"""The only place tinywf reads the wall clock or sleeps; and instants and spans in words.

The engine and runtime take a :class:`Clock`; tests move a :class:`ManualClock`, and
``$TINYWF_NOW`` fixes the clock of a whole CLI command. ``ago`` and ``span`` put times in
words for people, alike in the terminal and on the web pages.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tinywf_cli.errors import BadInput

#: How a worker waits between passes: ``wait(seconds, stop)`` (``stop.wait`` unless the store can wake it).
Wait = Callable[[float, threading.Event], object]


class Clock(Protocol):
    """What the engine asks of time: the current instant, and a way to wait."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    def sleep(self, seconds: float, progress: Callable[[float], None] | None = None) -> None:
        """Wait ``seconds``, calling ``progress(seconds_left)`` now and then; a manual clock advances instead."""
        ...

    def idle(self, until: datetime | None, poll: float, stop: threading.Event,
             wait: Wait | None = None) -> None:
        """Between two passes of a worker: wait until ``until`` (at most ``poll`` seconds) or ``stop``.

        ``wait(seconds, stop)`` does the waiting when given: a store's, which returns early
        when there is new work.
        """
        ...


#: The shortest wait between two passes of a worker, so that it never spins.
MIN_IDLE = 0.01


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    def sleep(self, seconds: float, progress: Callable[[float], None] | None = None) -> None:
        """Really sleep, reporting the time left four times a second."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if progress is not None:
                progress(left)
            time.sleep(min(left, 0.25) if progress is not None else left)

    def idle(self, until: datetime | None, poll: float, stop: threading.Event,
             wait: Wait | None = None) -> None:
        """Wait until ``until`` or for ``poll`` seconds, whichever is sooner (``poll`` when ``until``
        has passed: its run was skipped, and waiting beats spinning)."""
        seconds = poll
        if until is not None and until > self.now():
            seconds = min((until - self.now()).total_seconds(), poll)
        (wait or _stop_wait)(max(seconds, MIN_IDLE), stop)


class ManualClock:
    """A clock that moves only when told to: for tests and ``$TINYWF_NOW``.

    Example::

        clock = ManualClock("2026-01-01T00:00:00Z")
        clock.advance(timedelta(hours=1))
    """

    def __init__(self, start: datetime | str | None = None) -> None:
        if start is None:
            start = datetime(2026, 1, 1, tzinfo=UTC)
        self._now = parse_instant(start) if isinstance(start, str) else as_utc(start)

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def advance(self, by: float | timedelta) -> datetime:
        """Move the clock forward by seconds or a timedelta; returns the new time."""
        self._now += by if isinstance(by, timedelta) else timedelta(seconds=by)
        return self._now

    def set(self, when: datetime | str) -> None:
        """Jump to an instant."""
        self._now = parse_instant(when) if isinstance(when, str) else as_utc(when)

    def sleep(self, seconds: float, progress: Callable[[float], None] | None = None) -> None:
        """Advance instead of sleeping."""
        if seconds > 0:
            self.advance(seconds)

    def idle(self, until: datetime | None, poll: float, stop: threading.Event,
             wait: Wait | None = None) -> None:
        """Jump to ``until`` when it lies ahead (a moment of real time passes, for signals);
        otherwise nothing is coming: really wait ``poll`` seconds (or until the store has work)."""
        if until is not None and until > self._now:
            self._now = until
            stop.wait(MIN_IDLE)
        else:
            (wait or _stop_wait)(poll, stop)


def _stop_wait(seconds: float, stop: threading.Event) -> None:
    stop.wait(seconds)


#: How often ``wait_for_any`` looks at ``stop`` (a signal handler sets it without waking other waits).
STOP_POLL = 0.05


def wait_for_any(seconds: float, stop: threading.Event, event: threading.Event) -> None:
    """Wait up to ``seconds`` (real time) until ``event`` or ``stop`` is set."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and not event.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        event.wait(min(left, STOP_POLL))


def as_utc(when: datetime) -> datetime:
    """Make a datetime aware and UTC (naive ones are taken as UTC)."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant (``Z`` allowed); naive times are taken as UTC."""
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except (ValueError, OverflowError):
        raise BadInput(f"invalid time {text!r}: use ISO 8601, e.g. 2026-01-31T12:00:00Z") from None


#: Seconds per duration unit: ``30s``, ``90m``, ``12h``, ``30d``, ``2w``.
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+", re.ASCII)
_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
#: The longest duration any option takes.
MAX_DURATION = timedelta(days=100 * 366)


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``, ``1.5h`` or a sum like ``1d12h`` as a timedelta;
    BadInput otherwise, naming the value as ``invalid WHAT``.

    A bare number is refused: ``--older-than 30`` could mean 30 seconds or 30 days, and
    guessing wrong deletes runs.
    """
    cleaned = (text or "").strip().lower()
    if _NUMBER.fullmatch(cleaned):
        units = ", ".join(f"{cleaned}{unit}" for unit in "smhd")
        raise BadInput(f"invalid {what} {text!r}: add a unit: {units} or {cleaned}w")
    if not _DURATION.fullmatch(cleaned):
        raise BadInput(f"invalid {what} {text!r}: use a number and a unit (s, m, h, d, w), e.g. 30d, 12h or 1d12h")
    seconds = sum(float(n) * DURATION_UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", cleaned))
    if seconds > MAX_DURATION.total_seconds():
        raise BadInput(f"invalid {what} {text!r}: at most 100 years")
    return timedelta(seconds=seconds)


#: Seconds per rate unit: ``"20/s"``, ``"100/m"``, ``"1000/h"``.
RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*([0-9]{1,9})\s*/\s*([smh])\s*", re.ASCII)


def parse_rate(rate: object) -> tuple[int, float]:
    """``"20/s"`` as ``(20, 1.0)``: at most N per period; ValueError saying how to write one otherwise."""
    match = _RATE.fullmatch(rate) if isinstance(rate, str) else None
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"a rate is 'N/s', 'N/m' or 'N/h' with N >= 1 (e.g. '20/s'), not {rate!r}")
    return int(match.group(1)), RATE_UNITS[match.group(2)]


def rate_text(count: int, per: float) -> str:
    """``(20, 1.0)`` as ``"20/s"``."""
    unit = next((u for u, seconds in RATE_UNITS.items() if seconds == per), None)
    return f"{count}/{unit}" if unit is not None else f"{count}/{per:g}s"


def format_instant(when: datetime) -> str:
    """ISO 8601 with ``Z``, as every tinywf document writes times."""
    global _last_formatted
    last = _last_formatted
    if last[0] is when:  # the same instant again (a manual clock hands out one until moved)
        return last[1]
    text = as_utc(when).isoformat().replace("+00:00", "Z")
    _last_formatted = (when, text)  # one tuple, replaced whole: safe across threads
    return text


_last_formatted: tuple[datetime | None, str] = (None, "")


#: The instants ``$TINYWF_NOW`` may name: far enough from the ends of what a date can hold that
#: every timer and deadline a run sets stays within it.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def clock_from_env() -> Clock:
    """``ManualClock($TINYWF_NOW)`` when the variable is set, else the wall clock."""
    fixed = os.environ.get("TINYWF_NOW")
    if fixed:
        try:
            when = parse_instant(fixed)
        except BadInput:
            raise BadInput(f"invalid $TINYWF_NOW {fixed[:60]!r}: use ISO 8601, e.g. 2026-01-31T12:00:00Z") from None
        if not EARLIEST <= when < LATEST:
            raise BadInput(f"$TINYWF_NOW {fixed!r} is out of range: use a time from 1970 to 8999")
        return ManualClock(when)
    return SystemClock()


def ago(when: datetime | None, now: datetime) -> str:
    """``3m ago`` / ``in 2h 5m``: a time relative to ``now``, for people."""
    if when is None:
        return "-"
    seconds = (when - now).total_seconds()
    if abs(seconds) < 0.005:
        return "now"
    text = span(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"


def span(seconds: float) -> str:
    """``1d 2h``, ``5m 3s``, ``0.25s``: a duration in its two largest units."""
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.2f}s".replace(".00s", "s")
    total = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size or (unit == "s" and not parts):
            parts.append(f"{total // size}{unit}")
            total %= size
        if len(parts) == 2:
            break
    return " ".join(parts)
