"""``cancel``, ``retry``, ``pause`` and ``resume`` of every run a filter picks.

The runs are selected first (``Reading.heads_matching``), each with its ``progress`` (a count of
its commits); then each is changed under its own lock by the one-run command, only if it is
still as it was when selected. So two bulk commands racing over the same runs never both act on one:
the second finds it changed (``RunChanged``) and reports it skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from tinywf_cli.errors import RunLocked, RunNotFound, TinyWFError
from tinywf_cli.filters import RunFilter
from tinywf_cli.model import ENDED, BulkReport, RunDocument, TickAdvanced, TickSkipped
from tinywf_cli.runtime.commands import RunCommands
from tinywf_cli.runtime.reading import Reading

BulkCommand = Literal["cancel", "retry", "pause", "resume"]

#: Which statuses each command acts on; a run selected in another is skipped, with this reason.
_ACTS_ON: dict[str, tuple[Callable[[str], bool], str]] = {
    "cancel": (lambda status: status not in ENDED, "it has ended"),
    "retry": (lambda status: status in ("failed", "blocked"), "only failed or blocked runs are retried"),
    "pause": (lambda status: status not in ENDED and status != "paused", "only runs that have not ended "
                                                                         "and are not paused are paused"),
    "resume": (lambda status: status == "paused", "only paused runs are resumed"),
}


class Bulk(RunCommands, Reading):
    """The one-run commands, over every run a filter picks."""

    def bulk(self, command: BulkCommand, select: RunFilter, *, dry_run: bool = False,
             reason: str | None = None) -> BulkReport:
        """Apply ``command`` to every run ``select`` picks (refused, BadInput, when it picks by
        nothing), oldest first; ``dry_run``: only say which. ``reason``: ``cancel``'s."""
        from tinywf_cli.errors import BadInput

        if select.empty:
            raise BadInput(f"{command} needs a run id or a filter (--tag, --status, --flow, --since, --stuck); "
                           "it does not touch every run")
        acts_on, refusal = _ACTS_ON[command]
        report = BulkReport(dry_run=dry_run, command=command)
        heads, _, _ = self.heads_matching(select)
        for head in reversed(heads):  # oldest first
            if not acts_on(head.status):
                report.skipped.append(TickSkipped(run_id=head.run_id, reason=f"{head.status}: {refusal}"))
                continue
            if dry_run:
                report.runs.append(TickAdvanced(run_id=head.run_id, status=head.status))
                continue
            try:
                doc = self._one(command, head.run_id, head.progress, reason)
            except RunNotFound:
                continue  # removed meanwhile
            except RunLocked:
                report.skipped.append(TickSkipped(run_id=head.run_id, reason="locked by another process"))
            except TinyWFError as exc:
                report.skipped.append(TickSkipped(run_id=head.run_id, reason=exc.message))
            else:
                report.runs.append(TickAdvanced(run_id=doc.run_id, status=doc.status))
        return report

    def _one(self, command: BulkCommand, run_id: str, seen: int, reason: str | None) -> RunDocument:
        """The one-run command on ``run_id``, if it was not changed since its ``progress`` was ``seen``."""
        if command == "cancel":
            return self.cancel(run_id, reason, _seen=seen)
        if command == "retry":
            return self.retry(run_id, _seen=seen)
        if command == "pause":
            return self.pause(run_id, _seen=seen)
        return self.resume(run_id, _seen=seen)
