"""Schedules: add, apply, list, show, pause, resume, trigger, backfill and remove them, and start
their due slots at the top of every ``tick``.

A slot starts as a run with an id of its own, ``<schedule>-<YYYYMMDDTHHMMZ>``: creating a
run whose id is taken is refused by every store, so a slot starts once whichever process
gets there first, and one that another process started (or a process that was killed
after creating it) is found, not started again. ``tick`` looks at each due schedule under
its lock (held for the milliseconds a decision takes, never while a run advances; another
process holding it is passed by): the slots come due since it last looked, the catch-up
policy picks those that still run, and the overlap policy decides each against the
schedule's previous run. A slot that starts is created as a run waiting from now, which
the same pass then advances with the other due runs (with its concurrency). When one look
starts several slots (``catch_up="all"`` after a gap), each run is advanced before the
next slot is decided, so that the overlap policy sees how it went.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywf_cli.clock import as_utc
from tinywf_cli.errors import (
    BadInput,
    FlowLoadError,
    InvalidValue,
    RunExists,
    RunLocked,
    RunNotFound,
    ScheduleConflict,
    ScheduleExists,
    ScheduleLocked,
    ScheduleNotFound,
    StatusConflict,
    StorageError,
    StoreUnavailable,
    TinyWFError,
)
from tinywf_cli.model import (
    BackfillReport,
    BackfillSkipped,
    FlowRef,
    RunDocument,
    RunHead,
    ScheduleChanges,
    ScheduleDocument,
    ScheduleList,
    ScheduleLogEntry,
    ScheduleRow,
    TickAdvanced,
)
from tinywf_cli.runtime.base import _running, own_doc, start_values
from tinywf_cli.runtime.commands import RunCommands
from tinywf_cli.schedules.cron import Cron
from tinywf_cli.schedules.record import (
    ACTIVE,
    OVERLAP_REASON,
    ScheduleRecord,
    check_catch_up,
    check_name,
    check_overlap,
    due,
    overlap_decision,
    slot_run_id,
)
from tinywf_cli.stores.journal import VisitEntry
from tinywf_cli.stores.schedules import ScheduleSession
from tinywf_cli.telemetry import trace_id_of

if TYPE_CHECKING:
    from tinywf_cli.authoring.loader import WorkflowClass
    from tinywf_cli.authoring.workflow import Workflow

#: The most slots one ``backfill`` starts: a wider range is refused (narrow it, or run it in parts).
MAX_BACKFILL = 10_000
#: How many coming slots ``schedule show`` lists.
UPCOMING = 3


class Scheduling(RunCommands):
    """The schedules of the store, and starting their slots."""

    # -- the store's schedules ---------------------------------------------------------------

    def _record(self, session: ScheduleSession) -> ScheduleRecord | None:
        """The schedule a session holds (None: no such schedule); StorageError for a damaged one."""
        return self._parse(session.name, session.load())

    def _parse(self, name: str, data: dict[str, Any] | None) -> ScheduleRecord | None:
        if data is None:
            return None
        try:
            return ScheduleRecord.from_json(data)
        except ValueError as exc:
            raise StorageError(f"{self.store.target} schedule '{name}'",
                               f"{exc}; `tinywf schedule remove {name}` and add it again") from None

    def _save(self, session: ScheduleSession, record: ScheduleRecord, before: dict[str, Any] | None) -> None:
        """Save the record when it changed (a look that changed nothing writes nothing)."""
        after = record.to_json()
        if after != before:
            record.updated_at = self.clock.now()
            session.save(record.to_json())

    def _existing(self, session: ScheduleSession) -> ScheduleRecord:
        record = self._record(session)
        if record is None:
            raise ScheduleNotFound(session.name)
        return record

    def _flow(self, flow: str | Path | type[Workflow[Any]]) -> tuple[WorkflowClass, FlowRef, str]:
        """The class, reference and shown name of a flow file (``path.py[:Class]``) or class."""
        running = _running()
        if isinstance(flow, type):
            if not issubclass(flow, running.Workflow) or not flow.__tinywf_steps__:
                raise FlowLoadError(f"{flow!r} is not a workflow class with @step methods")
            ref, shown = self.loader.register(flow)
            return flow, ref, shown
        return self.loader.load(str(flow))

    def _schedule_document(self, record: ScheduleRecord) -> ScheduleDocument:
        upcoming: list[datetime] = []
        if record.next_at is not None:
            for slot in record.schedule.slots(record.next_at):
                if record.within(slot) is None or len(upcoming) == UPCOMING:
                    break
                upcoming.append(slot)
        return ScheduleDocument(
            **_row(record).model_dump(), catch_up=record.catch_up, input=record.input, start=record.start,
            end=record.end, buffered=record.buffered, origin=record.origin, upcoming=upcoming, error=record.error,
            created_at=record.created_at, updated_at=record.updated_at,
            log=[ScheduleLogEntry.model_validate(entry) for entry in record.log])

    # -- the commands ------------------------------------------------------------------------------

    def add_schedule(self, name: str, flow: str | Path | type[Workflow[Any]], cron: str, *, tz: str = "UTC",
                     input: dict[str, Any] | None = None, overlap: str = "skip", catch_up: str = "latest",
                     start: datetime | None = None, end: datetime | None = None) -> ScheduleDocument:
        """Store a new schedule: ``tick`` starts a run of ``flow`` at every slot of ``cron`` in ``tz``.

        Refused, with nothing written: a bad name, expression, zone or policy, a flow that does
        not load or an input that does not fit it (``BadInput``, exit 2); a name already taken
        (``ScheduleExists``, exit 4). The first slot is the first after now (or at or after
        ``start``, when later); none runs after ``end``.
        """
        check_name(name)
        record = self._new_record(name, self._flow(flow), cron, tz, input, overlap, catch_up, start, end, "cli")
        with self.store.schedules.open(name, self.lock_timeout) as session:
            taken = self._record(session)
            if taken is not None:
                raise ScheduleExists(name, taken.flow)
            session.save(record.to_json())
        return self._schedule_document(record)

    def _new_record(self, name: str, flow: tuple[WorkflowClass, FlowRef, str], cron: str, tz: str,
                    input: dict[str, Any] | None, overlap: str, catch_up: str, start: datetime | None,
                    end: datetime | None, origin: str) -> ScheduleRecord:
        check_name(name)
        schedule = Cron(cron, tz)
        policy, catching = check_overlap(overlap), check_catch_up(catch_up)
        start, end = (None if start is None else as_utc(start)), (None if end is None else as_utc(end))
        if start is not None and end is not None and end < start:
            raise BadInput(f"schedule '{name}': --end ({end.isoformat()}) is before --start ({start.isoformat()})")
        if input is not None and not isinstance(input, dict):
            raise InvalidValue(f"schedule '{name}': input must be a JSON object")
        cls, ref, shown = flow
        _running().encode_state_input(cls, input)  # an input that does not fit is refused now, not at 9 am
        now = self.clock.now()
        record = ScheduleRecord(name=name, flow=shown, ref=ref.model_dump(mode="json"), cron=schedule.fields, tz=tz,
                                input=input, overlap=policy, catch_up=catching, created_at=now, updated_at=now,
                                start=start, end=end, origin="code" if origin == "code" else "cli")
        record.next_at = record.first_slot(now)
        return record

    def apply_schedules(self, flows: list[str | Path | type[Workflow[Any]]]) -> ScheduleChanges:
        """Make the store's schedules of ``flows`` match their code (each flow's ``schedules``): add
        the new ones, change those that differ, remove those the code no longer declares.

        Idempotent. Everything is checked before anything is written: a flow that does not
        load or a bad schedule is BadInput (exit 2), a name taken by another flow's schedule or
        by one added with ``schedule add`` is ScheduleExists (exit 4). A change of expression,
        zone or bounds starts the schedule afresh from now; its counts and pause stay.
        """
        wanted: dict[str, ScheduleRecord] = {}
        refs: list[dict[str, Any]] = []
        for flow in flows:
            loaded = self._flow(flow)
            refs.append(loaded[1].model_dump(mode="json"))
            for spec in loaded[0].schedules:
                if spec.name in wanted:
                    raise ScheduleExists(spec.name, wanted[spec.name].flow)
                wanted[spec.name] = self._new_record(spec.name, loaded, spec.cron, spec.tz, spec.input, spec.overlap,
                                                     spec.catch_up, spec.start, spec.end, "code")
        kept = {r.name: r for r in (self._parse(str(d.get("name")), d) for d in self.store.schedules.all()) if r}
        for name, record in wanted.items():
            old = kept.get(name)
            if old is not None and (old.origin != "code" or old.ref != record.ref):
                raise ScheduleExists(name, old.flow)
        changes = ScheduleChanges()
        for name, record in wanted.items():
            with self.store.schedules.open(name, self.lock_timeout) as session:
                old = self._record(session)
                if old is None:
                    session.save(record.to_json())
                    changes.added.append(name)
                    continue
                if _same(old, record):
                    changes.unchanged.append(name)
                    continue
                retimed = (old.cron, old.tz, old.start, old.end) != (record.cron, record.tz, record.start, record.end)
                old.flow, old.cron, old.tz, old.input = record.flow, record.cron, record.tz, record.input
                old.overlap, old.catch_up = record.overlap, record.catch_up
                old.start, old.end = record.start, record.end
                if retimed:
                    old.next_at = record.next_at
                old.note(self.clock.now(), "changed")
                self._save(session, old, None)
                changes.changed.append(name)
        for name, old in kept.items():
            if old.origin == "code" and old.ref in refs and name not in wanted:
                with self.store.schedules.open(name, self.lock_timeout) as session:
                    if self._record(session) is not None:
                        session.delete()
                        changes.removed.append(name)
        return changes

    def list_schedules(self) -> ScheduleList:
        """Every schedule of the store, by name."""
        records = (self._parse(str(d.get("name")), d) for d in self.store.schedules.all())
        return ScheduleList(schedules=[_row(r) for r in records if r is not None])

    def get_schedule(self, name: str) -> ScheduleDocument:
        """One schedule, with its coming slots and its log; ScheduleNotFound (exit 3)."""
        check_name(name)
        record = self._parse(name, self.store.schedules.read(name))
        if record is None:
            raise ScheduleNotFound(name)
        return self._schedule_document(record)

    def pause_schedule(self, name: str) -> ScheduleDocument:
        """Start no slot of the schedule until ``resume_schedule``; a paused one is ScheduleConflict (exit 4)."""
        return self._set_paused(name, True)

    def resume_schedule(self, name: str) -> ScheduleDocument:
        """Start its slots again; those that passed while it was paused follow its catch-up policy."""
        return self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> ScheduleDocument:
        check_name(name)
        with self.store.schedules.open(name, self.lock_timeout) as session:
            record = self._existing(session)
            if record.paused == paused:
                raise ScheduleConflict(name, "is paused already (`tinywf schedule resume` it)" if paused
                                       else "is not paused (`tinywf schedule pause` it)")
            before = record.to_json()
            record.paused = paused
            record.note(self.clock.now(), "paused" if paused else "resumed")
            self._save(session, record, before)
        return self._schedule_document(record)

    def remove_schedule(self, name: str) -> ScheduleDocument:
        """Remove the schedule (the runs it started stay); its last document."""
        check_name(name)
        with self.store.schedules.open(name, self.lock_timeout) as session:
            record = self._existing(session)
            session.delete()
        return self._schedule_document(record)

    def trigger_schedule(self, name: str) -> RunDocument:
        """Start one run of the schedule now (whatever its overlap policy and pause), and advance it
        as ``start`` does; its id is ``<name>-<now, to the minute>``, so a second trigger in the same
        minute is RunExists (exit 4)."""
        check_name(name)
        now = self.clock.now()
        with self.store.schedules.open(name, self.lock_timeout) as session:
            record = self._existing(session)
            before = record.to_json()
            run_id, created = self._start_slot(record, now, now, raising=True)
            if not created:
                raise RunExists(run_id)
            record.note(now, "triggered", now, run_id=run_id)
            self._save(session, record, before)
        return self.advance(run_id)

    def backfill_schedule(self, name: str, start: datetime, end: datetime) -> BackfillReport:
        """Start the schedule's slots from ``start`` to ``end`` (both included) that have not run,
        oldest first, each advanced before the next is decided under the overlap policy.

        ``end`` may not lie ahead (``tick`` starts those slots); at most ``MAX_BACKFILL`` slots.
        """
        check_name(name)
        start, end, now = as_utc(start), as_utc(end), self.clock.now()
        if end < start:
            raise BadInput(f"--to ({end.isoformat()}) is before --from ({start.isoformat()})")
        if end > now:
            raise BadInput(f"--to ({end.isoformat()}) is in the future: tick starts those slots when they come")
        record = self._parse(name, self.store.schedules.read(name))
        if record is None:
            raise ScheduleNotFound(name)
        slots: list[datetime] = []
        for slot in record.schedule.slots(start):
            if slot > end:
                break
            if len(slots) == MAX_BACKFILL:
                raise BadInput(f"backfill from {start.isoformat()} to {end.isoformat()} covers more than "
                               f"{MAX_BACKFILL:,} slots: backfill a shorter range at a time")
            slots.append(slot)
        report = BackfillReport(schedule=name)
        for slot in slots:
            with self.store.schedules.open(name, self.lock_timeout) as session:
                record = self._existing(session)
                before = record.to_json()
                outcome, run_id = self._decide(record, slot, self.clock.now(), raising=True)
                self._save(session, record, before)
            if outcome == "started":
                report.started.append(TickAdvanced(run_id=run_id, status=self._advanced(run_id)))
            elif outcome == "existing":
                report.existing.append(run_id)
            else:
                report.skipped.append(BackfillSkipped(slot=slot, reason=_REASONS.get(outcome, outcome)))
        return report

    def _advanced(self, run_id: str) -> Any:
        """Advance a run a schedule just created; the status it was left in."""
        try:
            return self.advance(run_id).status
        except TinyWFError:  # locked, or a store error: `tick` advances it
            return self.store.head(run_id).status

    # -- starting slots --------------------------------------------------------------------------

    def start_due_slots(self, now: datetime) -> list[str]:
        """Start every due slot of every schedule (the top of each ``tick``); the runs created, which
        are due now: the pass that follows advances them with the other due runs.

        A schedule another process holds is passed by (it is deciding the same slots); one
        that cannot be read is passed by too (``schedule list`` names it).
        """
        created: list[str] = []
        for name in self.store.schedules.due(now):
            try:
                created += self._look_at(name, now)
            except StoreUnavailable:
                raise
            except TinyWFError:
                continue
        return created

    def next_slot(self) -> datetime | None:
        """When the earliest slot of a schedule that is not paused comes (for ``worker``)."""
        return self.store.schedules.next_at()

    def _look_at(self, name: str, now: datetime) -> list[str]:
        """Decide the due slots of one schedule; the runs it created (each but the last advanced
        already: the next slot's overlap depends on how it went)."""
        created: list[str] = []
        while True:
            try:
                with self.store.schedules.open(name, 0) as session:
                    record = self._record(session)
                    if record is None or record.paused:
                        return created
                    before = record.to_json()
                    run_id, more = self._due_slots(record, now)
                    self._save(session, record, before)
            except ScheduleLocked:  # another process is deciding its slots
                return created
            if run_id is None:
                return created
            created.append(run_id)
            if not more:
                return created
            self._advanced(run_id)

    def _due_slots(self, record: ScheduleRecord, now: datetime) -> tuple[str | None, bool]:
        """Decide the record's due slots until one starts a run: that run's id (None: none did) and
        whether more slots wait to be decided after it."""
        if record.buffered is not None and not self._active(record.last_run_id):
            slot, record.buffered = record.buffered, None
            run_id, created = self._start_slot(record, slot, now)
            if created:
                return run_id, record.next_at is not None and record.next_at <= now
            if not run_id:  # it could not start: it waits again
                record.buffered = slot
        found = due(record, now)
        if found.missed:
            record.missed += found.missed
            record.note(now, "missed", count=found.missed, first=_iso(found.first_missed), last=_iso(found.last_missed))
        for index, slot in enumerate(found.slots):
            outcome, run_id = self._decide(record, slot, now)
            if outcome in ("started", "existing", "skipped", "buffered"):
                record.next_at = found.slots[index + 1] if index + 1 < len(found.slots) else found.next_at
            else:  # it could not start now: try again at the next pass
                record.next_at = slot
                return None, False
            if outcome == "started":
                return run_id, index + 1 < len(found.slots)
        record.next_at = found.next_at
        return None, False

    def _decide(self, record: ScheduleRecord, slot: datetime, now: datetime, *,
                raising: bool = False) -> tuple[str, str]:
        """One slot under the overlap policy: ``started``, ``existing`` (its run was started before),
        ``skipped``, ``buffered``, or why it cannot start now; and its run id."""
        run_id = slot_run_id(record.name, slot)
        if self._exists(run_id):
            record.last_run_id = run_id
            return "existing", run_id
        previous = record.last_run_id
        decision = overlap_decision(record.overlap, self._active(previous), record.buffered is not None)
        if decision == "skip":
            record.skipped += 1
            record.note(now, "skipped", slot, run_id=previous)
            return "skipped", run_id
        if decision == "buffer":
            record.buffered = slot
            record.note(now, "buffered", slot, run_id=previous)
            return "buffered", run_id
        if decision == "cancel" and previous is not None:
            try:
                self.cancel(previous, reason=OVERLAP_REASON)
                record.note(now, "cancelled", slot, run_id=previous)
            except (StatusConflict, RunNotFound):
                pass  # it ended meanwhile
            except RunLocked as exc:
                if raising:
                    raise
                record.error = exc.message
                return f"previous run locked: {exc.message}", run_id
        run_id, created = self._start_slot(record, slot, now, raising=raising)
        if not run_id:
            return f"could not start: {record.error}", run_id
        return ("started" if created else "existing"), run_id

    def _exists(self, run_id: str) -> bool:
        try:
            self.store.head(run_id)
        except RunNotFound:
            return False
        except StorageError:
            return True  # a record is there, damaged: never start the slot a second time
        return True

    def _active(self, run_id: str | None) -> bool:
        """Whether the run has not ended (running, waiting, paused, blocked); a run that is gone has."""
        if run_id is None:
            return False
        try:
            return self.store.head(run_id).status in ACTIVE
        except RunNotFound:
            return False
        except StorageError:
            return True  # cannot tell: the overlap policy errs on the side of one run at a time

    def _start_slot(self, record: ScheduleRecord, slot: datetime, now: datetime, *,
                    raising: bool = False) -> tuple[str, bool]:
        """Create the run of ``slot``, waiting from now (``tick``'s pass advances it): its id and
        whether this call created it (False: it existed). A flow that no longer loads, or an input
        it no longer takes, starts nothing: ``("", False)``, the reason kept as the record's
        ``error`` (raised instead with ``raising``)."""
        run_id = slot_run_id(record.name, slot)
        running = _running()
        try:
            ref = FlowRef.model_validate(record.ref)
            cls = self.loader.resolve(ref, run_id)
            state = running.encode_state_input(cls, record.input)
        except (FlowLoadError, InvalidValue) as exc:
            if raising:
                raise
            if record.error != exc.message:
                record.note(now, "error", slot, message=exc.message)
            record.error = exc.message
            return "", False
        first = cls.__tinywf_start__
        assert first is not None
        head = RunHead(run_id=run_id, workflow=record.flow, flow=ref, doc=own_doc(cls), status="waiting", step=first,
                       state=state, visit_state=state, created_at=now, updated_at=now, version=cls.version,
                       code=running.code_of(cls), history_limit=cls.history_limit, wake_at=now, scheduled_at=slot,
                       trace=trace_id_of(run_id, now))
        values = start_values(record.flow, head) | {"schedule": record.name, "scheduled_at": _iso(slot)}
        try:
            with self._held(run_id), self.store.open(run_id, 0, create=True) as session:
                session.create(head, [self._log(head, "start", values), VisitEntry(1, first, state, cls.version)])
            self._started(head)
        except (RunExists, RunLocked):  # started already (a lock held: being created or advanced)
            record.last_run_id = run_id
            return run_id, False
        record.error = None
        record.last_run_id = run_id
        record.note(now, "started", slot, run_id=run_id)
        return run_id, True


#: Why ``backfill`` did not start a slot, for each overlap decision that starts none.
_REASONS = {
    "skipped": "overlap: the previous run has not ended (skip)",
    "buffered": "overlap: buffered, it starts once the previous run ended (buffer_one)",
}


def _row(record: ScheduleRecord) -> ScheduleRow:
    return ScheduleRow(name=record.name, flow=record.flow, cron=record.cron, tz=record.tz, overlap=record.overlap,
                       paused=record.paused, next_at=None if record.paused else record.next_at,
                       last_run_id=record.last_run_id, skipped=record.skipped, missed=record.missed)


def _same(old: ScheduleRecord, new: ScheduleRecord) -> bool:
    """Whether a stored schedule already says what the code declares."""
    return (old.flow, old.cron, old.tz, old.input, old.overlap, old.catch_up, old.start, old.end) == \
        (new.flow, new.cron, new.tz, new.input, new.overlap, new.catch_up, new.start, new.end)


def _iso(when: datetime | None) -> str | None:
    from tinywf_cli.clock import format_instant

    return None if when is None else format_instant(when)
