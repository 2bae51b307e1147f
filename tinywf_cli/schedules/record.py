"""A schedule as the store keeps it, and the rules that decide which of its slots start.

A store keeps one small JSON document per schedule (``ScheduleRecord.to_json``): what it
runs (flow, input), when (cron, zone, start, end), its policies, and where it stands —
``next_at``, the earliest slot no tick has looked at yet; ``buffered``, a slot waiting for
the previous run to end (``buffer_one``); ``last_run_id``, the run the newest slot started;
the counts of slots skipped (overlap) and missed (catch-up), and a short log of what
happened. Everything here is a pure function of a record and the time: every store and
every process runs the same rules, and the run id of a slot (``slot_run_id``) makes
starting it exactly-once whoever gets there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from tinywf_cli.clock import format_instant, parse_instant
from tinywf_cli.errors import BadInput, InvalidSchedule
from tinywf_cli.names import is_schedule_name
from tinywf_cli.schedules.cron import Cron, slot_text

Overlap = Literal["skip", "buffer_one", "allow_all", "cancel_other"]
CatchUp = Literal["latest", "all", "none"]
Origin = Literal["cli", "code"]
#: What to do with a slot that comes due while the schedule's previous run has not ended.
OVERLAPS: tuple[Overlap, ...] = ("skip", "buffer_one", "allow_all", "cancel_other")
#: Which of the slots missed while nothing ticked still run.
CATCH_UPS: tuple[CatchUp, ...] = ("latest", "all", "none")
#: A slot first seen by a tick more than this after its time was missed (nothing ticked in time):
#: ``catch_up="none"`` does not run it. A tick every minute from cron, or a worker, sees each in time.
ON_TIME = timedelta(minutes=5)
#: Statuses of a run that has not ended, for the overlap policies (a blocked or paused run holds
#: its place until someone retries, resumes or cancels it).
ACTIVE = frozenset({"running", "waiting", "paused", "blocked"})
#: Entries a schedule's log keeps (the newest).
LOG_LIMIT = 50
#: Slots one look at a schedule starts at most (``catch_up="all"`` after a long gap): the next
#: tick goes on from there.
PASS_SLOTS = 1000
#: Missed slots counted one by one at most per look; beyond, the latest is found directly.
COUNT_LIMIT = 100_000
#: Why ``cancel_other`` cancels the previous run (its ``cancel`` entry's reason).
OVERLAP_REASON = "schedule overlap"


def check_name(name: str) -> str:
    """``name`` if it can name a schedule (and its runs' ids); InvalidSchedule otherwise."""
    if not is_schedule_name(name):
        shown = repr(name) if len(str(name)) <= 60 else f"{str(name)[:40]!r}…"
        raise InvalidSchedule(f"invalid schedule name {shown}: use 1-100 characters from A-Z a-z 0-9 . _ - "
                              "starting with a letter or digit")
    return name


def check_overlap(value: str) -> Overlap:
    """An overlap policy by name; InvalidSchedule for another word."""
    for policy in OVERLAPS:
        if value == policy:
            return policy
    raise InvalidSchedule(f"invalid overlap policy {value!r}: use one of {', '.join(OVERLAPS)}")


def check_catch_up(value: str) -> CatchUp:
    """A catch-up policy by name; InvalidSchedule for another word."""
    for policy in CATCH_UPS:
        if value == policy:
            return policy
    raise InvalidSchedule(f"invalid catch-up policy {value!r}: use one of {', '.join(CATCH_UPS)}")


def slot_run_id(name: str, slot: datetime) -> str:
    """The id of the run a slot starts: ``<name>-<YYYYMMDDTHHMMZ>`` (UTC)."""
    return f"{name}-{slot_text(slot)}"


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    try:
        return parse_instant(value)
    except BadInput:
        raise ValueError(f"not a time: {value!r}") from None


def _text(value: datetime | None) -> str | None:
    return None if value is None else format_instant(value)


@dataclass
class ScheduleRecord:
    """One schedule: what it starts, when, its policies, and where it stands."""

    name: str
    #: The flow as people read it (``flows/report.py:Report``), and where it lives (a ``FlowRef``'s JSON).
    flow: str
    ref: dict[str, Any]
    cron: str
    tz: str
    input: dict[str, Any] | None
    overlap: Overlap
    catch_up: CatchUp
    created_at: datetime
    updated_at: datetime
    start: datetime | None = None
    end: datetime | None = None
    paused: bool = False
    #: The earliest slot not looked at yet (None: no slot left before ``end``).
    next_at: datetime | None = None
    #: A slot waiting for the previous run to end (``buffer_one``).
    buffered: datetime | None = None
    last_run_id: str | None = None
    skipped: int = 0
    missed: int = 0
    #: ``cli`` (``schedule add``) or ``code`` (``schedule apply``: the flow's ``schedules``).
    origin: Origin = "cli"
    #: Why the last slot could not start (its flow no longer loads, its input no longer fits), if it could not.
    error: str | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def schedule(self) -> Cron:
        """Its expression in its zone."""
        return Cron(self.cron, self.tz)

    def first_slot(self, now: datetime) -> datetime | None:
        """Where a new (or re-timed) schedule starts looking: its first slot after ``now``, or at
        or after ``start`` when that is later; None when none comes before ``end``."""
        cron = self.schedule
        first = cron.at_or_after(self.start) if self.start is not None and self.start > now else cron.after(now)
        return self.within(first)

    def within(self, slot: datetime | None) -> datetime | None:
        """``slot``, unless it lies past ``end``."""
        if slot is None or (self.end is not None and slot > self.end):
            return None
        return slot

    def note(self, at: datetime, type_: str, slot: datetime | None = None, **values: Any) -> None:
        """Add an entry to the schedule's log (its newest ``LOG_LIMIT`` are kept)."""
        entry: dict[str, Any] = {"at": format_instant(at), "type": type_}
        if slot is not None:
            entry["slot"] = format_instant(slot)
        entry.update(values)
        self.log.append(entry)
        del self.log[:-LOG_LIMIT]

    def to_json(self) -> dict[str, Any]:
        """The document a store keeps."""
        return {
            "name": self.name, "flow": self.flow, "ref": self.ref, "cron": self.cron, "tz": self.tz,
            "input": self.input, "overlap": self.overlap, "catch_up": self.catch_up,
            "start": _text(self.start), "end": _text(self.end), "paused": self.paused,
            "next_at": _text(self.next_at), "buffered": _text(self.buffered), "last_run_id": self.last_run_id,
            "skipped": self.skipped, "missed": self.missed, "origin": self.origin, "error": self.error,
            "created_at": _text(self.created_at), "updated_at": _text(self.updated_at), "log": self.log,
        }

    @classmethod
    def from_json(cls, data: Any) -> ScheduleRecord:
        """A record a store kept; ValueError when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            record = cls(
                name=check_name(data["name"]), flow=str(data["flow"]), ref=dict(data["ref"]),
                cron=str(data["cron"]), tz=str(data["tz"]), input=data.get("input"),
                overlap=check_overlap(data["overlap"]), catch_up=check_catch_up(data["catch_up"]),
                created_at=_required(data["created_at"]), updated_at=_required(data["updated_at"]),
                start=_instant(data.get("start")), end=_instant(data.get("end")), paused=bool(data.get("paused")),
                next_at=_instant(data.get("next_at")), buffered=_instant(data.get("buffered")),
                last_run_id=data.get("last_run_id"), skipped=int(data.get("skipped", 0)),
                missed=int(data.get("missed", 0)), origin="code" if data.get("origin") == "code" else "cli",
                error=data.get("error"), log=list(data.get("log") or []),
            )
        except (KeyError, TypeError, InvalidSchedule) as exc:
            raise ValueError(f"not a schedule record ({type(exc).__name__}: {exc})") from None
        if record.input is not None and not isinstance(record.input, dict):
            raise ValueError("not a schedule record (input is not an object)")
        for entry in record.log:
            if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
                raise ValueError("not a schedule record (a log entry is not an object with a type)")
            _required(entry.get("at"))
            _instant(entry.get("slot"))
        if record.last_run_id is not None and not isinstance(record.last_run_id, str):
            raise ValueError("not a schedule record (last_run_id is not text)")
        return record


def _required(value: Any) -> datetime:
    when = _instant(value)
    if when is None:
        raise ValueError("a time is missing")
    return when


# -- which slots start -----------------------------------------------------------------------------


@dataclass
class Due:
    """What one look at a schedule finds due by ``now``: the slots to start (oldest first), how many
    were missed (and the first and last of them), and where the schedule looks next."""

    slots: list[datetime]
    missed: int
    first_missed: datetime | None
    last_missed: datetime | None
    next_at: datetime | None


def due(record: ScheduleRecord, now: datetime) -> Due:
    """The slots of ``record`` due by ``now``, under its catch-up policy.

    Every slot from ``next_at`` to ``now`` is due. The most recent of them is on time when
    ``now`` is within ``ON_TIME`` of it; the others were missed (their successor came due
    too before any tick looked). ``latest`` starts the most recent, ``all`` every one (at
    most ``PASS_SLOTS`` per look, oldest first), ``none`` only the most recent and only when
    it is on time; the rest are counted as missed.
    """
    first = record.next_at
    if first is None or first > now:
        return Due([], 0, None, None, first)
    cron = record.schedule
    last_allowed = now if record.end is None or record.end > now else record.end
    if record.catch_up == "all":
        slots: list[datetime] = []
        after: datetime | None = None
        for slot in cron.slots(first):
            if slot > last_allowed or len(slots) == PASS_SLOTS:
                after = slot
                break
            slots.append(slot)
        if after is None and not slots:
            after = cron.after(last_allowed)
        elif after is None:
            after = cron.after(slots[-1])
        return Due(slots, 0, None, None, record.within(after))
    latest = cron.at_or_before(last_allowed)
    following = record.within(cron.after(now))
    if latest is None or latest < first:
        return Due([], 0, None, None, following)
    earlier: list[datetime] = []
    count = 0
    for slot in cron.slots(first):
        if slot >= latest or count == COUNT_LIMIT:
            break
        count += 1
        if not earlier or len(earlier) == 1:
            earlier.append(slot)
        else:
            earlier[1] = slot
    on_time = now - latest <= ON_TIME
    run_latest = record.catch_up == "latest" or on_time
    missed = count + (0 if run_latest else 1)
    first_missed = earlier[0] if earlier else (None if run_latest else latest)
    last_missed = latest if not run_latest else (earlier[-1] if earlier else None)
    return Due([latest] if run_latest else [], missed, first_missed, last_missed, following)


Decision = Literal["start", "skip", "buffer", "cancel"]


def overlap_decision(overlap: Overlap, previous_active: bool, buffered: bool) -> Decision:
    """What a slot that comes due does, given whether the schedule's previous run is still active and
    whether a slot is buffered already: ``start`` it, ``skip`` it (counted), ``buffer`` it (it starts
    once the previous run ended), or ``cancel`` the previous run, then start it."""
    if not previous_active or overlap == "allow_all":
        return "start"
    if overlap == "skip":
        return "skip"
    if overlap == "buffer_one":
        return "skip" if buffered else "buffer"
    return "cancel"
