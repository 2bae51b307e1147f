"""Schedules through the library: slots in zones across daylight-saving changes, the overlap and
catch-up policies, backfill, pause and resume, trigger, apply — on a fake clock that ticks.

Most tests run on the in-memory store (the rules are the runtime's, the same for every
store); those about what a store keeps run on each kind of store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel

from tinywf_cli import (
    BadInput,
    FlowLoadError,
    RunExists,
    Runtime,
    Schedule,
    StorageError,
    Workflow,
    signal,
    step,
)
from tinywf_cli.clock import ManualClock
from tinywf_cli.errors import (
    FlowDefinitionError,
    InvalidSchedule,
    ScheduleConflict,
    ScheduleExists,
    ScheduleNotFound,
)
from tinywf_cli.schedules.cron import Cron
from tinywf_cli.stores.base import Store
from tinywf_cli.testing import MemoryRuntime

PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Quick(Workflow):
    """Notes the slot it was started for, and ends."""

    @step
    def note(self):
        when = self.scheduled_at
        self.state["slot"] = None if when is None else when.isoformat()
        return None


class Holding(Workflow):
    """Waits for a note; its signal says which slot started it."""

    @step
    def hold(self):
        yield self.wait_event("note")
        return None

    @signal
    def which(self):
        self.state["slot"] = None if self.scheduled_at is None else self.scheduled_at.isoformat()


class Nap(Workflow):
    """Sleeps ``hours`` hours (a run that lasts several slots)."""

    @step
    def nap(self):
        yield self.sleep("nap", timedelta(hours=self.state["hours"]))
        return None


class Count(BaseModel):
    n: int = 0


class Typed(Workflow[Count]):
    """A flow whose input is checked."""

    @step
    def go(self):
        return None


def tick_every(rt: Runtime, clock: ManualClock, until: datetime, step: timedelta = timedelta(minutes=10)) -> None:
    """Tick on the fake clock every ``step`` until ``until`` (included)."""
    while clock.now() < until:
        clock.advance(step)
        rt.tick()


def runs(rt: Runtime, prefix: str) -> dict[str, Any]:
    """The runs whose id starts with ``prefix``, by id (oldest slot first), as documents."""
    found = sorted(r.run_id for r in rt.list().runs if r.run_id.startswith(prefix))
    return {run_id: rt.get(run_id) for run_id in found}


@pytest.fixture
def mem() -> MemoryRuntime:
    return MemoryRuntime(T0)


# -- slots, zones and daylight saving ------------------------------------------------------------


def test_a_year_of_nine_am_in_paris_is_365_runs_each_at_nine_local(mem: MemoryRuntime) -> None:
    mem.add_schedule("daily", Quick, "0 9 * * *", tz="Europe/Paris")
    tick_every(mem, mem.clock, T0 + timedelta(days=365))
    found = runs(mem, "daily-")
    assert len(found) == 365
    offsets = set()
    for run_id, doc in found.items():
        slot = datetime.fromisoformat(doc.state["slot"])
        local = slot.astimezone(PARIS)
        assert (local.hour, local.minute) == (9, 0), run_id
        assert run_id == f"daily-{slot.astimezone(UTC):%Y%m%dT%H%M}Z"
        assert doc.status == "finished"
        offsets.add(local.utcoffset())
    assert offsets == {timedelta(hours=1), timedelta(hours=2)}  # both daylight-saving changes inside
    schedule = mem.get_schedule("daily")
    assert (schedule.skipped, schedule.missed) == (0, 0)


@pytest.mark.parametrize(("day", "expected"), [
    (datetime(2026, 3, 29, tzinfo=UTC), ["2026-03-29T03:00:00+02:00"]),  # 02:30 does not exist: 03:00, once
    (datetime(2026, 10, 25, tzinfo=UTC), ["2026-10-25T02:30:00+02:00"]),  # 02:30 comes twice: once
])
def test_half_past_two_in_paris_runs_once_on_both_daylight_saving_days(day: datetime, expected: list[str]) -> None:
    rt = MemoryRuntime(day - timedelta(hours=3))
    rt.add_schedule("night", Quick, "30 2 * * *", tz="Europe/Paris")
    tick_every(rt, rt.clock, day + timedelta(hours=12), timedelta(minutes=5))
    slots = [datetime.fromisoformat(d.state["slot"]).astimezone(PARIS).isoformat() for d in runs(rt, "night-").values()]
    assert slots == expected


def test_every_thirty_minutes_keeps_going_through_the_repeated_hour() -> None:
    cron = Cron("*/30 * * * *", "Europe/Paris")
    start = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # 01:00 in Paris, summer time
    slots = [s for _, s in zip(range(6), cron.slots(start), strict=False)]
    assert [s - slots[0] for s in slots] == [timedelta(minutes=30 * i) for i in range(6)]  # real time, no gap


def test_aliases_and_bad_expressions() -> None:
    assert Cron("@daily").fields == "0 0 * * *" and Cron("@hourly").fields == "0 * * * *"
    assert Cron("@weekly").fields == "0 0 * * 0" and Cron("@monthly").fields == "0 0 1 * *"
    for bad, says in [("0 25 * * *", "bad hour"), ("* * * *", "4 fields"), ("* * * * * *", "6 fields"),
                      ("@sometimes", "@ names"), ("", "empty"), ("0 0 31 2 *", "day-of-month")]:
        with pytest.raises(InvalidSchedule, match=says):
            Cron(bad)
    with pytest.raises(InvalidSchedule, match="unknown time zone 'Europe/Atlantis'"):
        Cron("@daily", "Europe/Atlantis")


# -- overlap ----------------------------------------------------------------------------------------


def overlap(policy: str) -> MemoryRuntime:
    """An hourly schedule of a run that lasts 2.5 hours (3 slots), ticked until 03:20."""
    rt = MemoryRuntime(T0 - timedelta(minutes=30))
    rt.add_schedule("nap", Nap, "0 * * * *", input={"hours": 2.5}, overlap=policy)
    tick_every(rt, rt.clock, T0 + timedelta(hours=2, minutes=20))
    return rt


def test_overlap_skip_skips_the_slots_while_the_run_lasts_and_counts_them() -> None:
    rt = overlap("skip")
    assert list(runs(rt, "nap-")) == ["nap-20260101T0000Z"]
    tick_every(rt, rt.clock, T0 + timedelta(hours=3))
    assert list(runs(rt, "nap-")) == ["nap-20260101T0000Z", "nap-20260101T0300Z"]
    schedule = rt.get_schedule("nap")
    assert schedule.skipped == 2
    assert [(e.type, e.slot) for e in schedule.log if e.type == "skipped"] == [
        ("skipped", T0 + timedelta(hours=1)), ("skipped", T0 + timedelta(hours=2))]


def test_overlap_buffer_one_starts_one_waiting_slot_when_the_run_ends() -> None:
    rt = overlap("buffer_one")
    assert list(runs(rt, "nap-")) == ["nap-20260101T0000Z"]
    assert rt.get_schedule("nap").buffered == T0 + timedelta(hours=1)
    tick_every(rt, rt.clock, T0 + timedelta(hours=2, minutes=40))  # the first run ends at 02:30
    found = runs(rt, "nap-")
    assert list(found) == ["nap-20260101T0000Z", "nap-20260101T0100Z"]
    first, buffered = found.values()
    assert first.status == "finished" and buffered.status == "waiting"
    assert buffered.created_at >= T0 + timedelta(hours=2, minutes=30)  # it waited for the end
    assert buffered.state == {"hours": 2.5}
    schedule = rt.get_schedule("nap")
    assert (schedule.skipped, schedule.buffered) == (1, None)  # 02:00 found the one place taken


def test_overlap_allow_all_runs_three_at_once() -> None:
    rt = overlap("allow_all")
    found = runs(rt, "nap-")
    assert len(found) == 3 and {d.status for d in found.values()} == {"waiting"}
    assert rt.get_schedule("nap").skipped == 0


def test_overlap_cancel_other_cancels_the_previous_run_with_the_reason() -> None:
    rt = overlap("cancel_other")
    first, second, third = runs(rt, "nap-").values()
    assert (first.status, second.status, third.status) == ("cancelled", "cancelled", "waiting")
    cancel = [entry for entry in rt.get(first.run_id).logs if entry.type == "cancel"]
    assert cancel[0].values == {"reason": "schedule overlap"}


# -- catch-up ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "started", "missed"), [
    ("latest", ["daily-20260104T0900Z"], 2),
    ("all", ["daily-20260102T0900Z", "daily-20260103T0900Z", "daily-20260104T0900Z"], 0),
    ("none", [], 3),
])
def test_catch_up_after_three_days_without_a_tick(policy: str, started: list[str], missed: int) -> None:
    rt = MemoryRuntime(T0 + timedelta(hours=12))
    rt.add_schedule("daily", Quick, "0 9 * * *", catch_up=policy)
    rt.clock.set(T0 + timedelta(days=3, hours=12))  # three slots passed while nothing ticked
    rt.tick()
    found = runs(rt, "daily-")
    assert list(found) == started
    assert all(d.status == "finished" for d in found.values())
    # started in slot order: each created after the one before ended
    created = [d.created_at for d in found.values()]
    assert created == sorted(created)
    schedule = rt.get_schedule("daily")
    assert schedule.missed == missed and schedule.next_at == T0 + timedelta(days=4, hours=9)
    rt.tick()
    assert list(runs(rt, "daily-")) == started  # nothing more, nothing twice


def test_a_slot_seen_in_time_runs_under_catch_up_none() -> None:
    rt = MemoryRuntime(T0)
    rt.add_schedule("daily", Quick, "0 9 * * *", catch_up="none")
    rt.clock.set(T0 + timedelta(hours=9, minutes=1))
    rt.tick()
    assert list(runs(rt, "daily-")) == ["daily-20260101T0900Z"]


# -- pause, resume, backfill, trigger -----------------------------------------------------------------


def test_no_slot_starts_while_paused_and_missed_ones_follow_the_catch_up_policy() -> None:
    rt = MemoryRuntime(T0)
    rt.add_schedule("daily", Quick, "0 9 * * *")
    assert rt.pause_schedule("daily").paused
    with pytest.raises(ScheduleConflict, match="paused already"):
        rt.pause_schedule("daily")
    tick_every(rt, rt.clock, T0 + timedelta(days=3, hours=12), timedelta(hours=1))
    assert runs(rt, "daily-") == {}
    assert rt.next_slot() is None  # a worker does not wake for a paused schedule
    rt.resume_schedule("daily")
    rt.tick()
    assert list(runs(rt, "daily-")) == ["daily-20260104T0900Z"]  # latest: one run, three missed
    assert rt.get_schedule("daily").missed == 3
    with pytest.raises(ScheduleConflict, match="not paused"):
        rt.resume_schedule("daily")


def test_backfill_starts_exactly_the_slots_not_run() -> None:
    rt = MemoryRuntime(T0)
    rt.add_schedule("daily", Quick, "0 9 * * *")
    tick_every(rt, rt.clock, T0 + timedelta(days=2), timedelta(hours=1))  # Jan 1 and 2 ran
    report = rt.backfill_schedule("daily", datetime(2025, 12, 29, tzinfo=UTC), T0 + timedelta(days=1, hours=12))
    assert [s.run_id for s in report.started] == [f"daily-202512{d}T0900Z" for d in (29, 30, 31)]
    assert {s.status for s in report.started} == {"finished"}
    assert report.existing == ["daily-20260101T0900Z", "daily-20260102T0900Z"]
    again = rt.backfill_schedule("daily", datetime(2025, 12, 29, tzinfo=UTC), T0 + timedelta(days=1, hours=12))
    assert again.started == [] and len(again.existing) == 5
    for start, end in [(T0, T0 - timedelta(days=1)), (T0, T0 + timedelta(days=30))]:
        with pytest.raises(BadInput):
            rt.backfill_schedule("daily", start, end)


def test_backfill_honours_the_overlap_policy() -> None:
    rt = MemoryRuntime(T0)
    rt.add_schedule("nap", Nap, "0 * * * *", input={"hours": 5})
    report = rt.backfill_schedule("nap", T0 - timedelta(hours=3), T0 - timedelta(hours=1))
    assert [s.run_id for s in report.started] == ["nap-20251231T2100Z"]
    assert [s.slot for s in report.skipped] == [T0 - timedelta(hours=2), T0 - timedelta(hours=1)]


def test_trigger_starts_one_run_now_whatever_the_policy() -> None:
    rt = MemoryRuntime(T0 + timedelta(minutes=7, seconds=30))
    rt.add_schedule("daily", Quick, "0 9 * * *")
    rt.pause_schedule("daily")
    doc = rt.trigger_schedule("daily")
    assert doc.run_id == "daily-20260101T0007Z" and doc.status == "finished"
    assert doc.state == {"slot": "2026-01-01T00:07:30+00:00"}
    with pytest.raises(RunExists):
        rt.trigger_schedule("daily")
    assert rt.get_schedule("daily").last_run_id == "daily-20260101T0007Z"


def test_runs_not_started_by_a_schedule_have_no_slot(mem: MemoryRuntime) -> None:
    assert mem.start(Quick).state == {"slot": None}


def test_a_slot_whose_run_exists_is_not_started_again(mem: MemoryRuntime) -> None:
    """A process killed after creating a slot's run, before saving the schedule: the next tick
    finds the run, and counts nothing."""
    mem.add_schedule("daily", Quick, "0 9 * * *")
    mem.start(Quick, run_id="daily-20260101T0900Z")
    mem.clock.set(T0 + timedelta(hours=9))
    mem.tick()
    assert list(runs(mem, "daily-")) == ["daily-20260101T0900Z"]
    schedule = mem.get_schedule("daily")
    assert (schedule.last_run_id, schedule.skipped, schedule.missed) == ("daily-20260101T0900Z", 0, 0)


def test_start_and_end_bound_the_slots(mem: MemoryRuntime) -> None:
    mem.add_schedule("few", Quick, "0 9 * * *", start=T0 + timedelta(days=1), end=T0 + timedelta(days=2, hours=9))
    tick_every(mem, mem.clock, T0 + timedelta(days=5), timedelta(hours=1))
    assert list(runs(mem, "few-")) == ["few-20260102T0900Z", "few-20260103T0900Z"]
    assert mem.get_schedule("few").next_at is None


def test_a_slot_whose_flow_stopped_loading_waits_and_says_why(tmp_path: Path) -> None:
    flow = tmp_path / "daily.py"
    flow.write_text("from tinywf_cli import Workflow, step\n\nclass Daily(Workflow):\n"
                    "    @step\n    def go(self):\n        return None\n")
    rt = MemoryRuntime(T0)
    rt.add_schedule("daily", str(flow), "0 9 * * *")
    flow.write_text("this is not python\n")
    rt.clock.set(T0 + timedelta(hours=9))
    rt.tick()
    schedule = rt.get_schedule("daily")
    assert runs(rt, "daily-") == {} and schedule.error is not None and "daily.py" in schedule.error
    flow.write_text("from tinywf_cli import Workflow, step\n\nclass Daily(Workflow):\n"
                    "    @step\n    def go(self):\n        return None\n")
    rt.clock.advance(timedelta(minutes=1))
    rt.tick()
    assert list(runs(rt, "daily-")) == ["daily-20260101T0900Z"] and rt.get_schedule("daily").error is None


def test_the_worker_wakes_for_the_next_slot_and_starts_it(mem: MemoryRuntime) -> None:
    mem.add_schedule("daily", Quick, "0 9 * * *", tz="Europe/Paris")
    assert mem.next_due() == T0 + timedelta(hours=8)
    stop = threading.Event()
    reports: list[Any] = []

    def seen(report: Any) -> None:
        reports.append(report)
        stop.set()

    # with a crew (the default): while the slot's run is in flight the loop waits in real time, so
    # the fake clock never jumps to the next day's slot before the run's report came
    worker = threading.Thread(target=mem.work, args=(stop,), kwargs={"poll": 30, "on_tick": seen})
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert [a.run_id for a in reports[0].advanced] == ["daily-20260101T0800Z"]
    assert mem.clock.now() == T0 + timedelta(hours=8)  # it slept (on the fake clock) until the slot


def test_a_signal_reads_the_slot_too(mem: MemoryRuntime) -> None:
    mem.add_schedule("held", Holding, "0 9 * * *")
    mem.clock.set(T0 + timedelta(hours=9))
    mem.tick()
    assert mem.signal("held-20260101T0900Z", "which").state == {"slot": "2026-01-01T09:00:00+00:00"}


# -- bad input -----------------------------------------------------------------------------------


def test_bad_schedules_are_refused_and_nothing_is_written(mem: MemoryRuntime) -> None:
    for kwargs, error in [({"cron": "61 * * * *"}, InvalidSchedule), ({"tz": "Nowhere/Land"}, InvalidSchedule),
                          ({"overlap": "sometimes"}, InvalidSchedule), ({"catch_up": "maybe"}, InvalidSchedule),
                          ({"name": "a b"}, InvalidSchedule), ({"flow": "no/such.py"}, FlowLoadError),
                          ({"flow": Typed, "input": {"nope": 1}}, BadInput)]:
        args: dict[str, Any] = {"name": "x", "flow": Nap, "cron": "@daily", **kwargs}
        with pytest.raises(error):
            mem.add_schedule(args.pop("name"), args.pop("flow"), args.pop("cron"), **args)
    assert mem.list_schedules().schedules == []
    mem.add_schedule("x", Quick, "@daily")
    with pytest.raises(ScheduleExists):
        mem.add_schedule("x", Nap, "@hourly")
    with pytest.raises(ScheduleNotFound):
        mem.get_schedule("y")
    for call in (mem.pause_schedule, mem.resume_schedule, mem.trigger_schedule, mem.remove_schedule):
        with pytest.raises(ScheduleNotFound):
            call("y")


def test_a_flow_with_a_bad_schedule_does_not_load() -> None:
    with pytest.raises(FlowDefinitionError, match="bad hour"):
        Schedule("x", "0 99 * * *")
    with pytest.raises(FlowDefinitionError, match="more than once"):
        type("Twice", (Workflow,), {"schedules": [Schedule("a", "@daily"), Schedule("a", "@hourly")],
                                    "go": step(lambda self: None)})


# -- apply, and every store ------------------------------------------------------------------------


REPORT = '''
from tinywf_cli import Schedule, Workflow, step


class Report(Workflow):
    """A report."""

    schedules = [{schedules}]

    @step
    def write(self):
        return None
'''


@pytest.fixture
def on_store(store: Store) -> Iterator[Callable[[datetime], Runtime]]:
    made: list[Runtime] = []

    def runtime(now: datetime) -> Runtime:
        rt = Runtime(store, clock=ManualClock(now), lock_timeout=2)
        made.append(rt)
        return rt

    yield runtime


def test_apply_adds_changes_and_removes_to_match_the_code(on_store: Callable[[datetime], Runtime],
                                                          tmp_path: Path) -> None:
    flow = tmp_path / "report.py"
    rt = on_store(T0)

    def code(*schedules: str) -> list[str]:
        flow.write_text(REPORT.format(schedules=", ".join(schedules)))
        return [str(flow)]

    first = rt.apply_schedules(code('Schedule("daily", "0 9 * * *")', 'Schedule("weekly", "@weekly")'))
    assert (first.added, first.changed, first.removed) == (["daily", "weekly"], [], [])
    assert rt.apply_schedules([str(flow)]).unchanged == ["daily", "weekly"]  # idempotent
    rt.add_schedule("mine", str(flow), "@hourly")  # by hand: apply leaves it alone
    changes = rt.apply_schedules(code('Schedule("daily", "0 10 * * *", tz="Europe/Paris")'))
    assert (changes.added, changes.changed, changes.removed) == ([], ["daily"], ["weekly"])
    daily = rt.get_schedule("daily")
    assert (daily.cron, daily.tz, daily.next_at, daily.origin) == ("0 10 * * *", "Europe/Paris",
                                                                   T0 + timedelta(hours=9), "code")
    assert [s.name for s in rt.list_schedules().schedules] == ["daily", "mine"]
    before = rt.list_schedules()
    with pytest.raises(ScheduleExists):
        rt.apply_schedules(code('Schedule("daily", "@daily")', 'Schedule("mine", "@daily")'))
    assert rt.list_schedules() == before  # nothing written


def test_every_store_keeps_its_schedules_and_starts_each_slot_once(on_store: Callable[[datetime], Runtime]) -> None:
    rt = on_store(T0)
    rt.add_schedule("hourly", Quick, "0 * * * *", input={})
    other = on_store(T0)  # a second process on the same store
    for hour in range(1, 4):
        for each in (rt, other):
            each.clock.set(T0 + timedelta(hours=hour, minutes=1))  # type: ignore[attr-defined]
            each.tick()
    assert [r.run_id for r in sorted(rt.list().runs, key=lambda r: r.run_id)] == [
        "hourly-20260101T0100Z", "hourly-20260101T0200Z", "hourly-20260101T0300Z"]
    assert other.get_schedule("hourly").last_run_id == "hourly-20260101T0300Z"
    rt.pause_schedule("hourly")
    assert other.list_schedules().schedules[0].paused
    assert rt.remove_schedule("hourly").name == "hourly"
    assert other.list_schedules().schedules == [] and len(rt.list().runs) == 3  # its runs stay


def test_a_damaged_schedule_is_a_storage_error_naming_it_and_ticks_pass_it_by(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0))
    rt.add_schedule("fine", Quick, "0 9 * * *")
    rt.add_schedule("broken", Quick, "0 9 * * *")
    path = state / ".schedules" / "broken.json"
    record = json.loads(path.read_text())
    record["log"] = [{"at": "yesterday", "type": 3}]
    path.write_text(json.dumps(record))
    with pytest.raises(StorageError, match="broken"):
        rt.get_schedule("broken")
    with pytest.raises(StorageError, match="broken"):
        rt.list_schedules()
    rt.clock.set(T0 + timedelta(hours=9))  # type: ignore[attr-defined]
    rt.tick()
    assert [r.run_id for r in rt.list().runs] == ["fine-20260101T0900Z"]


def test_a_state_directory_finds_due_schedules_by_their_markers_and_a_stale_one_is_harmless(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rt = Runtime(state, clock=ManualClock(T0))
    rt.add_schedule("daily", Quick, "0 9 * * *")
    rt.add_schedule("held", Quick, "0 9 * * *")
    rt.pause_schedule("held")
    folder = state / ".schedules"
    assert sorted(p.name for p in folder.glob("*~*") if not p.name.endswith(".tmp")) == [
        "daily~001767258000000", "held~-"]
    (folder / "held~000000000000000").touch()  # left by a process killed in the middle of a change
    copied = json.loads((folder / "daily.json").read_text()) | {"name": "copied"}
    (folder / "copied.json").write_text(json.dumps(copied))  # copied in by hand: no marker
    assert rt.next_slot() == T0 + timedelta(hours=9)  # the stale marker is passed by
    rt.clock.set(T0 + timedelta(hours=9))  # type: ignore[attr-defined]
    rt.tick()
    assert sorted(r.run_id for r in rt.list().runs) == ["copied-20260101T0900Z", "daily-20260101T0900Z"]
    rt.resume_schedule("held")  # its next change leaves one marker
    assert sorted(p.name for p in folder.glob("held~*")) == ["held~001767258000000"]
    rt.remove_schedule("daily")
    assert list(folder.glob("daily*")) == []
