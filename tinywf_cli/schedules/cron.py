"""Cron expressions in IANA zones: the slots of a schedule, as instants in UTC.

A *slot* is an instant a schedule's expression names, in its zone; it is kept and compared
in UTC, and names the run it starts: ``<schedule>-<slot as YYYYMMDDTHHMMZ>``.

Parsing and stepping are ``cronsim``'s. It was picked over the other well-kept library for
three reasons: it has no dependencies of its own (tinywf's install stays small), it steps
through ``zoneinfo`` datetimes directly (no second zone database), and its daylight-saving
rules are cron's, documented and tested: a local time the clocks skip (02:30 on a
spring-forward night) runs at the first instant after the gap (03:00), and a local time the
clocks repeat (02:30 on a fall-back night) runs once, at its first occurrence — except in
expressions whose hour field is ``*``, which keep running every N minutes through both
copies of the hour, as an every-N-minutes job must. Zones come from the system, else from
the ``tzdata`` package (a dependency, for machines without zone data).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from tinywf_cli.errors import InvalidSchedule

#: What the ``@`` names stand for (cron's own).
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: How a slot is written in the id of the run it starts (UTC, to the minute).
SLOT_FORMAT = "%Y%m%dT%H%MZ"
#: One step back before stepping forward, so that a slot exactly at the start is found.
_BACK = timedelta(minutes=1)


def expression(text: str) -> str:
    """The 5-field expression ``text`` names (an ``@`` alias stands for its fields); InvalidSchedule
    when cron would not take it, saying why."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidSchedule("empty cron expression: give 5 fields, e.g. '0 9 * * MON-FRI', or @daily")
    cleaned = " ".join(text.split())
    fields = ALIASES.get(cleaned.lower(), cleaned)
    if cleaned.startswith("@") and cleaned.lower() not in ALIASES:
        raise InvalidSchedule(f"invalid cron expression {text!r}: the @ names are {', '.join(ALIASES)}")
    count = len(fields.split(" "))
    if count != 5:
        raise InvalidSchedule(f"invalid cron expression {text!r}: {count} field{'s' if count != 1 else ''}, "
                              "cron takes 5 (minute hour day-of-month month day-of-week), e.g. '0 9 * * *'")
    _checked(fields)
    return fields


@functools.lru_cache(maxsize=1024)
def _checked(fields: str) -> None:
    try:
        CronSim(fields, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise InvalidSchedule(f"invalid cron expression {fields!r}: {str(exc).lower()}") from None


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (``Europe/Paris``, ``UTC``); InvalidSchedule for one that does not exist."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidSchedule("empty time zone: name an IANA zone, e.g. Europe/Paris or UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidSchedule(f"unknown time zone {shown!r}: name an IANA zone, e.g. Europe/Paris, "
                              "America/New_York or UTC") from None


def slot_text(slot: datetime) -> str:
    """A slot as run ids write it: UTC, to the minute (``20260301T0800Z``)."""
    return slot.astimezone(UTC).strftime(SLOT_FORMAT)


class Cron:
    """A cron expression in a zone: the slots it names, in UTC, in order.

    Example::

        cron = Cron("0 9 * * *", "Europe/Paris")
        cron.after(datetime(2026, 3, 1, tzinfo=UTC))   # 2026-03-01 08:00 UTC
    """

    def __init__(self, text: str, tz: str = "UTC") -> None:
        self.fields = expression(text)
        self.tz = tz
        self.zone = zone(tz)

    def slots(self, start: datetime, *, reverse: bool = False) -> Iterator[datetime]:
        """The slots from ``start`` on (at or after it; with ``reverse``, at or before it, going back),
        as aware UTC datetimes, each strictly after (before) the one before."""
        # a step back in UTC, then into the zone: local arithmetic would cross a clock change wrongly
        begin = (start + _BACK if reverse else start - _BACK).astimezone(self.zone)
        stepper = CronSim(self.fields, begin, reverse=reverse)
        last: datetime | None = None
        while True:
            try:
                local = next(stepper)
            except (StopIteration, CronSimError):  # past the years cronsim counts to
                return
            slot = local.astimezone(UTC)
            if (slot > start if reverse else slot < start) or (
                    last is not None and (slot >= last if reverse else slot <= last)):
                continue
            last = slot
            yield slot

    def at_or_after(self, when: datetime) -> datetime | None:
        """The first slot at or after ``when``, or None (there is none in the years cron counts)."""
        return next(self.slots(when), None)

    def after(self, when: datetime) -> datetime | None:
        """The first slot strictly after ``when``."""
        return next((s for s in self.slots(when) if s > when), None)

    def at_or_before(self, when: datetime) -> datetime | None:
        """The last slot at or before ``when``."""
        return next(self.slots(when, reverse=True), None)
