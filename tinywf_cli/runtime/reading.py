"""Reading runs: one run with its audit log, and the list of every run."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from tinywf_cli.clock import parse_duration
from tinywf_cli.errors import BadInput, RunNotFound, TinyWFError
from tinywf_cli.filters import RunFilter, checked_tags, statuses_of
from tinywf_cli.model import LogEntry, RunDocument, RunHead, RunList, RunSummary, ShowDocument
from tinywf_cli.runtime.base import RuntimeBase, check_run_id
from tinywf_cli.stores.journal import shown_history

#: The heads a filter picks, the ids of the records that could not be read, and why (``Reading.heads_matching``).
Matching = tuple[list[RunHead], list[str], list[str]]


class Reading(RuntimeBase):
    """Read runs without changing them: ``get`` and ``list``."""

    def get(self, run_id: str, last: int | None = None) -> ShowDocument:
        """A run with its audit log (``tinywf show``); ``last`` keeps only the newest entries."""
        check_run_id(run_id)
        head = self.store.head(run_id)
        history = self.store.history(run_id)
        history, omitted = shown_history(history, head.dropped_logs, head.history_limit, last)
        logs = [LogEntry.model_validate(e.document()) for e in history]
        doc = RunDocument.of(head)
        return ShowDocument(**dict(doc), logs=logs, doc=head.doc, omitted=omitted)

    def list(self, status: str | None = None, *, tags: Mapping[str, str] | None = None, flow: str | None = None,
             since: timedelta | str | None = None, stuck: timedelta | str | None = None) -> RunList:
        """The runs that match every filter given, newest first; unreadable records are listed as such
        (unless a filter other than ``status`` was given).

        ``tags``: each key has that value; ``flow``: the workflow's name or file; ``since``: updated
        within that long (a timedelta or an age like ``"1d"``); ``stuck``: running or waiting and not
        updated for that long. ``status`` may name several, comma-separated.
        """
        now = self.clock.now()
        try:
            given = checked_tags(tags or {}, "tags")
        except TypeError as exc:
            raise BadInput(str(exc)) from None
        select = RunFilter(tags=given, statuses=statuses_of(status),
                           flow=flow, since=_before(now, since, "since"), stuck_before=_before(now, stuck, "stuck"))
        return self.select(select)

    def select(self, select: RunFilter) -> RunList:
        """The runs ``select`` picks, newest first (``list``)."""
        heads, unreadable, problems = self.heads_matching(select)
        rows = [RunSummary(run_id=head.run_id, workflow=head.workflow, status=head.status, step=head.step,
                           updated_at=head.updated_at, tags=dict(head.tags)) for head in heads]
        rows += [RunSummary(run_id=run_id, workflow="?", status="unreadable", step=None, updated_at=None)
                 for run_id in unreadable]
        return RunList(runs=rows, problems=problems)

    def heads_matching(self, select: RunFilter) -> Matching:
        """The heads of the runs ``select`` picks, newest first (the newest created; of those created
        at one instant, the greatest id); the ids of the records that could not be read, when
        ``select`` lists them; and what was wrong with each."""
        heads: list[RunHead] = []
        unreadable: list[str] = []
        problems: list[str] = []
        tagged = getattr(self.store, "tagged_run_ids", None)
        run_ids = tagged(select.tags) if select.tags and tagged is not None else None
        for run_id in self.store.run_ids() if run_ids is None else run_ids:
            try:
                head = self.store.head(run_id)
            except RunNotFound:
                continue  # removed meanwhile
            except TinyWFError as exc:
                problems.append(exc.message)
                if select.lists_unreadable:
                    unreadable.append(run_id)
                continue
            if select.matches(head.status, head.workflow, head.tags, head.updated_at, head.flow.file):
                heads.append(head)
        heads.sort(key=lambda h: (h.created_at.replace(tzinfo=None), h.run_id), reverse=True)
        return heads, sorted(unreadable, reverse=True), problems


def _before(now: datetime, age: timedelta | str | None, what: str) -> datetime | None:
    """``now`` less ``age`` (a timedelta, or an age such as ``"12h"``)."""
    if age is None:
        return None
    return now - (parse_duration(age, what) if isinstance(age, str) else age)
