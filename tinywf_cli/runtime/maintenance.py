"""Looking after a store: its due index, checking runs against today's code, forking,
pruning and copying runs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from tinywf_cli.clock import parse_duration
from tinywf_cli.errors import (
    BadInput,
    InvalidValue,
    NotFound,
    RunLocked,
    RunNotFound,
    RunsExistAtTarget,
    TinyWFError,
)
from tinywf_cli.model import (
    ENDED,
    CheckReport,
    CheckResult,
    CopyReport,
    CopySkipped,
    CopySkippedSchedule,
    PruneReport,
    RunDocument,
    RunHead,
    TickSkipped,
)
from tinywf_cli.runtime.advancing import Advancing, _Follow
from tinywf_cli.runtime.base import check_run_id, new_run_id_suffix
from tinywf_cli.stores import open_store
from tinywf_cli.stores.base import LoadedRun, Store
from tinywf_cli.stores.journal import VisitEntry
from tinywf_cli.telemetry import trace_id_of

#: Statuses ``prune`` may delete (``failed`` only when asked for by name).
PRUNABLE = frozenset({"finished", "cancelled", "failed"})


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as a timedelta (a bare number is refused: no unit to guess)."""
    return parse_duration(text, "age")


class Maintenance(Advancing):
    """Repair the due index, check, fork, prune and copy runs."""

    def reindex(self) -> int:
        """Repair the store's due index from the runs themselves (after records were copied in by
        hand); how many entries were added."""
        repair = getattr(self.store, "reindex", None)
        return int(repair()) if repair is not None else 0

    # -- changing flows under live runs -------------------------------------------------

    def check(self, flow: str | Path | None = None) -> CheckReport:
        """Would every unfinished run (of ``flow``, or all) replay under today's code?

        Each run is loaded without its lock, migrated in memory and its current visit
        replayed against its records: no action runs, nothing is written, no lock is waited for.
        """
        only: Path | None = None
        if flow is not None:
            from tinywf_cli.authoring.loader import flow_path

            only = flow_path(str(flow))[0]
            self.loader.module(only)  # a flow that does not load is exit 2, not a verdict
        results: list[CheckResult] = []
        for run_id in sorted(self.store.run_ids()):
            try:
                head = self.store.head(run_id)
            except RunNotFound:
                continue
            except TinyWFError as exc:
                results.append(CheckResult(run_id=run_id, ok=False, reason=exc.message))
                continue
            if head.status in ENDED:
                continue
            if only is not None and (head.flow.file is None or Path(head.flow.file) != only):
                continue
            results.append(self._check_one(run_id))
        return CheckReport(runs=results)

    def _check_one(self, run_id: str) -> CheckResult:
        try:
            run = self.store.load(run_id)
            cls = self._class_of(run.head)
        except TinyWFError as exc:
            return CheckResult(run_id=run_id, ok=False, reason=exc.message)
        head = run.head
        if head.status not in ("running", "waiting"):
            head.status = "running"  # replay a failed, paused or blocked run as a retry or resume would
        engine = self._engine(cls, run, None, dry=True)
        try:
            engine.advance()
        except InvalidValue as exc:
            return CheckResult(run_id=run_id, ok=False, reason=exc.message)
        if engine.outcome in ("ok", "paused", "finished"):
            return CheckResult(run_id=run_id, ok=True, reason=None)
        return CheckResult(run_id=run_id, ok=False, reason=engine.reason or engine.outcome)

    def fork(self, run_id: str, at_visit: int | None = None, new_run_id: str | None = None) -> RunDocument:
        """A new run from the state at the start of visit ``at_visit`` of ``run_id`` (default: its
        current visit), starting at that visit's step; the original is untouched."""
        head = self.store.load(check_run_id(run_id)).head  # the whole record is checked, not just its head
        if new_run_id is not None:
            check_run_id(new_run_id)
        visit = head.visit if at_visit is None else at_visit
        if visit < 1 or visit > head.visit:
            raise BadInput(f"--at-visit must be between 1 and {head.visit} (the visits of run '{run_id}')")
        if visit == head.visit:
            step, state, version = head.step, head.visit_state, head.version
        else:
            found = next((e for e in self.store.entries(run_id) if type(e) is VisitEntry and e.n == visit), None)
            if found is None:
                raise NotFound(f"visit {visit} of run '{run_id}' is no longer in its history (history_limit)")
            if found.step is None:
                raise NotFound(f"visit {visit} of run '{run_id}' was recorded by tinywf 0.1, which kept no state "
                               "for it: fork at the current visit instead")
            step, state, version = found.step, found.state, found.version or head.version
        cls = self._class_of(head)
        rid = new_run_id or f"{run_id[:100]}-fork-{new_run_id_suffix()}"
        now = self.clock.now()
        fork = RunHead(run_id=rid, workflow=head.workflow, flow=head.flow, doc=head.doc, status="running",
                       step=step, state=state, visit_state=state, created_at=now, updated_at=now, version=version,
                       tags=dict(head.tags), trace=trace_id_of(rid, now))
        follow = _Follow()
        with self._open(rid, create=True) as session:
            session.create(fork, [self._log(fork, "forked", {"from": run_id, "visit": visit}),
                                  VisitEntry(1, step, state, version)])
            self._advance(session, LoadedRun(fork), follow, cls=cls)
        return self._document(fork, advanced=True, follow=follow)

    def prune(self, older_than: timedelta | str, statuses: Iterable[str] = ("finished", "cancelled"),
              dry_run: bool = False) -> PruneReport:
        """Delete runs that ended (or failed, when named) and were last updated before now -
        ``older_than``, with all their files. Locked runs are skipped; never a run that has not ended."""
        age = parse_age(older_than) if isinstance(older_than, str) else older_than
        wanted = set(statuses)
        refused = sorted(wanted - PRUNABLE)
        if refused:
            raise BadInput(f"prune deletes runs that ended (finished, cancelled) or failed, not {', '.join(refused)}")
        cutoff = self.clock.now() - age
        report = PruneReport(pruned=[])
        for run_id in sorted(self.store.run_ids()):
            try:
                head = self.store.head(run_id)
            except TinyWFError:
                continue
            if head.status not in wanted or head.updated_at >= cutoff:
                continue
            if dry_run:
                report.pruned.append(run_id)
                continue
            try:
                with self._open(run_id, 0) as session:
                    head = session.load().head
                    if head.status not in wanted or head.updated_at >= cutoff:
                        continue
                    session.delete()
                report.pruned.append(run_id)
            except RunLocked:
                report.skipped.append(TickSkipped(run_id=run_id, reason="locked by another process"))
            except RunNotFound:
                continue
            except TinyWFError as exc:
                report.skipped.append(TickSkipped(run_id=run_id, reason=exc.message))
        return report

    # -- copying ---------------------------------------------------------------------------

    def copy(self, to: str | Path | Store, *, skip_existing: bool = False) -> CopyReport:
        """Copy every run of this store into another (a directory, a URL or a store): heads and
        whole journals, so that every document reads the same there (``tinywf copy``); then its
        schedules, each as it stands (paused or not, its next slot and last run).

        A run id (or schedule name) that exists at the target raises RunsExistAtTarget before
        anything is copied, unless ``skip_existing``: then those are left alone and reported.
        Each run is read under its lock, each schedule under its own, so one being changed is
        copied whole, before or after.
        """
        target = open_store(to, lease=self.lease)
        try:
            ids = self.store.run_ids()
            taken: list[str] = []
            for run_id in ids:
                try:
                    target.head(run_id)
                    taken.append(run_id)
                except RunNotFound:
                    pass
            names = [str(record["name"]) for record in self.store.schedules.all()]
            there = [name for name in names if target.schedules.read(name) is not None]
            if (taken or there) and not skip_existing:
                raise RunsExistAtTarget(target.target, taken, there)
            report = CopyReport(to=target.target, skipped=[
                CopySkipped(run_id=r, reason=f"exists in {target.target}") for r in taken])
            for run_id in ids:
                if run_id in taken:
                    continue
                with self._open(run_id) as held:
                    head = held.load().head
                    entries = self.store.entries(run_id)
                    with target.open(run_id, self.lock_timeout, create=True) as session:
                        session.create(head, entries)
                report.copied.append(run_id)
            for name in names:
                with self.store.schedules.open(name, self.lock_timeout) as source:
                    record = source.load()
                    if record is None:  # removed since it was listed
                        continue
                    with target.schedules.open(name, self.lock_timeout) as copy:
                        if copy.load() is not None:
                            report.schedules.skipped.append(
                                CopySkippedSchedule(name=name, reason=f"exists in {target.target}"))
                            continue
                        copy.save(record)
                report.schedules.copied.append(name)
            return report
        finally:
            if target is not to:
                target.close()
