"""Reading runs: one run with its audit log, and the list of every run."""

from __future__ import annotations

from datetime import datetime

from tinywf_cli.errors import RunNotFound, TinyWFError
from tinywf_cli.model import LogEntry, RunDocument, RunList, RunSummary, ShowDocument
from tinywf_cli.runtime.base import RuntimeBase, check_run_id
from tinywf_cli.stores.journal import shown_history


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

    def list(self, status: str | None = None) -> RunList:
        """Every run, newest first; unreadable records are listed as such."""
        rows: list[tuple[datetime, RunSummary]] = []
        problems: list[str] = []
        for run_id in self.store.run_ids():
            try:
                head = self.store.head(run_id)
            except RunNotFound:
                continue  # removed meanwhile
            except TinyWFError as exc:
                problems.append(exc.message)
                if status in (None, "unreadable"):
                    rows.append((datetime.min.replace(tzinfo=None),
                                 RunSummary(run_id=run_id, workflow="?", status="unreadable", step=None,
                                            updated_at=None)))
                continue
            if status is None or head.status == status:
                rows.append((head.created_at.replace(tzinfo=None),
                             RunSummary(run_id=head.run_id, workflow=head.workflow, status=head.status,
                                        step=head.step, updated_at=head.updated_at)))
        rows.sort(key=lambda r: r[0], reverse=True)
        return RunList(runs=[r for _, r in rows], problems=problems)
