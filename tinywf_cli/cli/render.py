"""Pure functions that turn run documents into rich renderables; nothing here prints.

The CLI decides where output goes (``make_console``); tests render into
``Console(width=100, file=io.StringIO())``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tinywf_cli.clock import ago, format_instant, span

if TYPE_CHECKING:  # documents only by their attributes: `show` draws the read path's without pydantic
    from tinywf_cli.model import (
        BackfillReport,
        BreakerList,
        BulkReport,
        CheckReport,
        LimitList,
        LogEntry,
        PendingResume,
        PruneReport,
        RunDocument,
        RunList,
        ScheduleChanges,
        ScheduleDocument,
        ScheduleList,
        ShowDocument,
        TickReport,
    )

STATUS_STYLE = {
    "running": "bold blue",
    "waiting": "bold yellow",
    "paused": "bold cyan",
    "blocked": "bold red",
    "finished": "bold green",
    "failed": "bold red",
    "cancelled": "bold magenta",
    "unreadable": "bold red",
}


def make_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """The one place that decides colour and width: rich's own detection of a terminal,
    ``NO_COLOR`` and ``COLUMNS``; highlighting off so values are shown as they are.

    ``NO_COLOR`` (set and not empty) turns off every ANSI style, bold and dim included:
    rich's own ``no_color`` drops only the colours.
    """
    plain = bool(os.environ.get("NO_COLOR"))
    return Console(file=file or (sys.stderr if stderr else sys.stdout), highlight=False,
                   no_color=plain or None, color_system=None if plain else "auto")


def status_text(status: str) -> Text:
    """A status word in its colour."""
    return Text(status, style=STATUS_STYLE.get(status, ""))


def resolve_command(run_id: str, pending: PendingResume, state_hint: str = "",
                    placeholder: str = "<value>") -> str:
    """A ready-to-paste ``tinywf resolve`` line for a pending event."""
    return f"tinywf resolve{state_hint} {shlex.quote(run_id)} {shlex.quote(pending.resume_id)} {placeholder}"


def placeholder_for(expects: str | None) -> str:
    """What to type in place of the value, from the wait's type description."""
    if not expects or expects == "any JSON":
        return "<value>"
    word = expects.split(" ", 1)[0]
    return f"<{word}>"


def pending_lines(doc: RunDocument, now: datetime, state_hint: str = "") -> list[RenderableType]:
    """What the run waits for, and how to answer it: one block per pending resume."""
    out: list[RenderableType] = []
    if len(doc.pending) > 1 and all(p.kind in ("event", "timer", "child") for p in doc.pending):  # self.first
        out.append(Text("  whichever comes first of:", style="bold"))
    for pending in doc.pending:
        expects = doc.expects.get(pending.resume_id)
        if pending.kind == "event":
            question = (pending.request or {}).get("question")
            line = Text.assemble(("  waits for event ", ""), (pending.key, "bold"),
                                 (f" ({pending.resume_id})", "dim"))
            if question:
                line.append(f": {question}")
            if expects:
                line.append(f"  [{expects}]", style="dim")
            if pending.due_at is not None:
                line.append(f"  times out {ago(pending.due_at, now)}", style="dim")
            out.append(line)
            if doc.status != "paused":  # resolve refuses a paused run: the line below says what to do
                command = resolve_command(doc.run_id, pending, state_hint, placeholder_for(expects))
                # one line however narrow the terminal: a wrapped command does not paste
                out.append(Text.assemble(("    answer: ", "dim"), (command, "cyan"), no_wrap=True,
                                         overflow="ignore"))
        elif pending.kind == "child":
            child = (pending.request or {}).get("run_id", "?")
            out.append(Text.assemble(("  waits for child run ", ""), (str(child), "bold"),
                                     (f" ({pending.key}, {pending.resume_id})", "dim")))
            out.append(Text(f"    see it with `tinywf show{state_hint} {shlex.quote(str(child))}`", style="dim"))
        elif pending.kind in ("limit", "breaker"):
            request = pending.request or {}
            name = str(request.get("limit", "?"))
            keyed = f" (key {request['key']})" if "key" in request else ""
            if pending.kind == "breaker":
                parts: list[tuple[str, str]] = [("  waits for its breaker to half open, for action ", ""),
                                                (pending.key, "bold")]
            elif pending.key == name and pending.resume_id.startswith(f"{name}@"):  # the flow's own limit
                parts = [("  waits for a slot of limit ", ""), (name, "bold"), (f"{keyed} to begin", "")]
            else:
                parts = [(f"  waits for room under limit {name}{keyed}, for action ", ""), (pending.key, "bold")]
            due = format_instant(pending.due_at) if pending.due_at else "?"
            out.append(Text.assemble(*parts, (f" ({pending.resume_id})", "dim"),
                                     (f", expected {due} ({ago(pending.due_at, now)})", "")))
        else:
            what = "timer" if pending.kind == "timer" else "retry of action"
            due = format_instant(pending.due_at) if pending.due_at else "?"
            out.append(Text.assemble((f"  waits for {what} ", ""), (pending.key, "bold"),
                                     (f" ({pending.resume_id})", "dim"),
                                     (f", due {due} ({ago(pending.due_at, now)})", "")))
    if doc.status == "paused":
        out.append(Text(f"    paused: nothing advances it until `tinywf resume{state_hint} {shlex.quote(doc.run_id)}` "
                        "(`tinywf send` queues events meanwhile)", style="dim"))
    elif any(p.kind in ("timer", "retry", "limit", "breaker") for p in doc.pending):
        out.append(Text("    `tinywf tick` (cron) or `tinywf worker` carries it on when due", style="dim"))
    return out


def queued_line(doc: RunDocument, state_hint: str = "") -> Text | None:
    """What ``send`` did with a value it queued, or ``resolve`` with an answer the run stopped
    before taking (None when the value resolved a wait)."""
    if doc.queued is None:
        return None
    key, count = doc.queued
    run = shlex.quote(doc.run_id)
    waiting = any(p.kind == "event" and p.key == key for p in doc.pending)
    if doc.status in ("blocked", "failed"):
        why = (f"the run is {doc.status}; `tinywf retry{state_hint} {run}`, once the cause is fixed, "
               "hands it to its wait")
    elif doc.status == "paused" and waiting:
        why = f"the run is paused; `tinywf resume{state_hint} {run}` hands it to its wait"
    else:
        why = "no wait on it yet"
    if doc.kept:
        return Text.assemble(("  your answer to ", ""), (key, "bold"), (f" is kept: {why} ({count} queued)", ""))
    return Text.assemble(("  queued for ", ""), (key, "bold"), (f": {why} ({count} queued)", ""))


def run_outcome(doc: RunDocument, now: datetime, state_hint: str = "") -> RenderableType:
    """What ``run`` / ``resolve`` / ``send`` / ``retry`` / ``signal`` print for people (a signal's
    ``result`` too)."""
    head = Text.assemble(("run ", ""), (doc.run_id, "bold"), (f" ({doc.workflow}) ", "dim"))
    head.append_text(status_text(doc.status))
    head.append(f" at step {doc.step}")
    parts: list[RenderableType] = [head]
    queued = queued_line(doc, state_hint)
    if queued is not None:
        parts.append(queued)
    if doc.error is not None:
        parts.append(Text.assemble(("  error: ", "red"), (f"{doc.error.type}: ", "bold red"),
                                   (doc.error.message, "")))
        if doc.status in ("failed", "blocked"):
            parts.append(Text(f"    fix the cause, then `tinywf retry{state_hint} {doc.run_id}`", style="dim"))
    result = getattr(doc, "result", None)  # a signal's answer (``SignalDocument``)
    if result is not None:
        parts.append(Text.assemble(("  result: ", "bold"), (compact_json(result), "")))
    parts.extend(pending_lines(doc, now, state_hint))
    if doc.status == "finished":
        parts.append(Text.assemble(("  state: ", "dim"), (compact_json(doc.state), "")))
    return Group(*parts)


def compact_json(value: Any, limit: int = 200) -> str:
    """One-line JSON, shortened to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pairs(values: dict[str, Any], limit: int = 400) -> str:
    """``key=value key2="text"``: audit values on one line, for people."""
    out = []
    for key, value in values.items():
        shown = value if isinstance(value, str) and value and " " not in value else compact_json(value, 120)
        out.append(f"{key}={shown}")
    text = " ".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show_view(doc: ShowDocument, now: datetime, state_hint: str = "") -> RenderableType:
    """``tinywf show``: header, state, pending resumes, visits, and the audit timeline."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("workflow", Text(doc.workflow, style="bold"))
    if doc.doc:
        grid.add_row("", Text(doc.doc.strip(), style="italic"))
    status = status_text(doc.status)
    status.append(f"  at step {doc.step}", style="")
    grid.add_row("status", status)
    if doc.version != 1:
        grid.add_row("version", str(doc.version))
    if doc.parent is not None:
        grid.add_row("parent", doc.parent)
    if doc.tags:
        grid.add_row("tags", tag_text(doc.tags))
    if doc.children:
        grid.add_row("children", ", ".join(doc.children))
    grid.add_row("created", f"{format_instant(doc.created_at)} ({ago(doc.created_at, now)})")
    grid.add_row("updated", f"{format_instant(doc.updated_at)} ({ago(doc.updated_at, now)})")
    if doc.error is not None:
        grid.add_row("error", Text(f"{doc.error.type}: {doc.error.message}", style="red"))
    parts: list[RenderableType] = [Panel(grid, title=Text(doc.run_id, style="bold"), title_align="left",
                                         expand=False)]
    parts.append(Text("State", style="bold underline"))
    parts.append(JSON.from_data(doc.state, indent=2))
    if doc.pending:
        parts.append(Text("Pending", style="bold underline"))
        parts.extend(pending_lines(doc, now, state_hint))
    visits = visit_table(doc.logs, doc.status, now) if not doc.omitted else None
    if visits is not None:
        parts.append(Text("Step visits", style="bold underline"))
        parts.append(visits)
    parts.append(Text("Timeline", style="bold underline"))
    if doc.omitted:
        parts.append(Text(f"… {doc.omitted:,} earlier entr{'y' if doc.omitted == 1 else 'ies'} not shown "
                          f"(`tinywf show{state_hint} {doc.run_id} --last N`, or --json)", style="dim"))
    parts.append(timeline_table(doc.logs, now))
    return Group(*parts)


def timeline_table(logs: Iterable[LogEntry], now: datetime) -> Table:
    """The audit log: when, step, type and values."""
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="dim")
    table.add_column("at", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("values", overflow="fold")
    for entry in logs:
        style = "red" if entry.type in ("error", "event_rejected") else ""
        table.add_row(ago(entry.at, now), entry.step or "", Text(entry.type, style=style or "bold"),
                      pairs(entry.values))
    return table


def step_visits(logs: list[LogEntry], status: str, now: datetime) -> list[tuple[int, str, datetime, float]]:
    """(visit, step, started, seconds) for each step visit, from the audit log's transitions."""
    if not logs:
        return []
    visits: list[tuple[int, str, datetime]] = [(1, logs[0].step or "?", logs[0].at)]
    for entry in logs:
        if entry.type == "transition":
            number = entry.values.get("visit")  # a log entry's values may be anything: use what fits
            visits.append((number if type(number) is int else len(visits) + 1, str(entry.values.get("to")),
                           entry.at))
    ends = [v[2] for v in visits[1:]] + [logs[-1].at if status in ("finished", "failed", "cancelled", "blocked")
                                         else max(now, logs[-1].at)]
    return [(n, name, start, max(0.0, (end - start).total_seconds()))
            for (n, name, start), end in zip(visits, ends, strict=True)]


def visit_table(logs: list[LogEntry], status: str, now: datetime) -> Table | None:
    """A compact view of how long each step visit took (the current one: until now)."""
    rows = step_visits(logs, status, now)
    if not rows:
        return None
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="dim")
    table.add_column("visit", justify="right")
    table.add_column("step")
    table.add_column("started", no_wrap=True)
    table.add_column("took", justify="right")
    longest = max(r[3] for r in rows) or 1.0
    table.add_column("")
    for n, name, start, seconds in rows:
        bar = "█" * max(1, round(20 * seconds / longest)) if seconds else ""
        table.add_row(str(n), name, format_instant(start), span(seconds), Text(bar, style="cyan"))
    return table


#: Above this many runs, ``list`` prints plain aligned lines instead of measuring a table.
TABLE_ROWS = 200


def runs_table(runs: RunList, now: datetime) -> RenderableType:
    """``tinywf list``: a table, or for many runs lines in columns sized from the first rows."""
    if not runs.runs:
        return Text("no runs", style="dim")
    rows: list[tuple[str, str, str, str, str]] = [
        (row.run_id, row.workflow, row.status, row.step or "-", ago(row.updated_at, now)) for row in runs.runs]
    if len(rows) > TABLE_ROWS:
        return Group(*list(run_lines(rows)))
    tagged = any(row.tags for row in runs.runs)
    table = Table(header_style="bold", box=None, show_edge=False, pad_edge=False)
    for name in ("run", "workflow", "status", "step", "updated", *(("tags",) if tagged else ())):
        table.add_column(name, no_wrap=name not in ("workflow", "tags"))
    for (run_id, workflow, status, step, updated), row in zip(rows, runs.runs, strict=True):
        table.add_row(run_id, workflow, status_text(status), step, updated,
                      *((tag_text(row.tags),) if tagged else ()))
    return table


def tag_text(tags: Mapping[str, str]) -> str:
    """Tags for people: ``customer=acme tier=gold``."""
    return " ".join(f"{key}={value}" for key, value in tags.items())


def run_lines(rows: list[tuple[str, str, str, str, str]]) -> Iterable[Text]:
    """One line per run, columns as wide as the widest of the first rows (a long list is not measured whole)."""
    sample = rows[:TABLE_ROWS]
    widths = [max(len(r[i]) for r in [("run", "workflow", "status", "step", "updated"), *sample]) for i in range(4)]
    header = Text("  ".join(h.ljust(w) for h, w in zip(("run", "workflow", "status", "step"), widths, strict=True))
                  + "  updated", style="bold")
    yield header
    for run_id, workflow, status, step, updated in rows:
        line = Text(f"{run_id.ljust(widths[0])}  {workflow.ljust(widths[1])}  ")
        line.append(status.ljust(widths[2]), style=STATUS_STYLE.get(status, ""))
        line.append(f"  {step.ljust(widths[3])}  {updated}")
        yield line


def bulk_lines(report: BulkReport) -> RenderableType:
    """``cancel``/``retry``/``pause``/``resume`` by filter: one line per run touched (or, with
    ``--dry-run``, that would be) and per run skipped, then a summary."""
    done = {"cancel": "cancelled", "retry": "retried", "pause": "paused", "resume": "resumed"}[report.command]
    lines: list[RenderableType] = []
    for one in report.runs:
        verb = f"would {report.command}" if report.dry_run else done
        lines.append(Text.assemble((f"{verb} ", "green"), (one.run_id, "bold"), (" -> " if not report.dry_run
                                                                                else " (now ", ""),
                                   status_text(one.status), ("" if not report.dry_run else ")", "")))
    for skipped in report.skipped:
        lines.append(Text.assemble(("skipped ", "yellow"), (skipped.run_id, "bold"), (f": {skipped.reason}", "")))
    touched = f"{len(report.runs)} would be {done}" if report.dry_run else f"{len(report.runs)} {done}"
    lines.append(Text(f"{touched}, {len(report.skipped)} skipped" + (" (dry run: nothing changed)"
                                                                     if report.dry_run else ""), style="dim"))
    return Group(*lines)


def tick_lines(report: TickReport) -> RenderableType:
    """``tinywf tick``: one line per advanced or skipped run, then a summary; runs that another
    worker holds are its business, not shown here."""
    lines: list[RenderableType] = []
    for done in report.advanced:
        lines.append(Text.assemble(("advanced ", "green"), (done.run_id, "bold"), (" -> ", ""),
                                   status_text(done.status)))
    skipped = [s for s in report.skipped if not s.elsewhere]
    for one in skipped:
        lines.append(Text.assemble(("skipped  ", "yellow"), (one.run_id, "bold"), (f": {one.reason}", "")))
    lines.append(Text(f"{report.due} due, {len(report.advanced)} advanced, {len(skipped)} skipped", style="dim"))
    return Group(*lines)


def prune_lines(report: PruneReport, dry_run: bool) -> RenderableType:
    """``tinywf prune``: what was (or would be) deleted, what was skipped."""
    verb = "would delete" if dry_run else "deleted"
    lines: list[RenderableType] = [Text.assemble((f"{verb} ", "green"), (run_id, "bold")) for run_id in report.pruned]
    for skipped in report.skipped:
        lines.append(Text.assemble(("skipped ", "yellow"), (skipped.run_id, "bold"), (f": {skipped.reason}", "")))
    count = len(report.pruned)
    runs = "no run" if count == 0 else f"{count} run{'s' if count != 1 else ''}"
    lines.append(Text(f"{runs} {'would be deleted' if dry_run else 'deleted'}, {len(report.skipped)} skipped",
                      style="dim"))
    return Group(*lines)


def limits_table(limits: LimitList) -> RenderableType:
    """``tinywf limits``: each limit (each key of a keyed one), what applies, in flight, waiting."""
    if not limits.limits:
        return Text("no limits (a limit appears once a run has used it, or `tinywf limit set` named it)",
                    style="dim")
    table = Table(header_style="bold", box=None, show_edge=False, pad_edge=False)
    for name in ("limit", "key", "rate", "concurrency", "in flight", "waiting"):
        table.add_column(name, no_wrap=True, justify="right" if name in ("concurrency", "in flight", "waiting")
                         else "left")
    for row in limits.limits:
        table.add_row(row.name, "-" if row.key is None else row.key, row.rate or "-",
                      "-" if row.concurrency is None else str(row.concurrency), str(row.in_flight), str(row.waiting))
    return table


BREAKER_STYLE = {"closed": "green", "open": "bold red", "half_open": "bold yellow"}


def breakers_table(breakers: BreakerList, now: datetime) -> RenderableType:
    """``tinywf breakers``: each breaker, its state, the failures counted, when it half opens."""
    if not breakers.breakers:
        return Text("no breakers (a breaker appears once a run has called through it)", style="dim")
    table = Table(header_style="bold", box=None, show_edge=False, pad_edge=False)
    for name in ("breaker", "state", "failures", "half open"):
        table.add_column(name, no_wrap=True)
    for row in breakers.breakers:
        half = "-" if row.half_open_at is None else f"{format_instant(row.half_open_at)} ({ago(row.half_open_at, now)})"
        table.add_row(row.name, Text(row.state.replace("_", " "), style=BREAKER_STYLE.get(row.state, "")),
                      str(row.failures), half)
    return table


def check_lines(report: CheckReport) -> RenderableType:
    """``tinywf check``: each unfinished run ok, or what would block it."""
    lines: list[RenderableType] = []
    for result in report.runs:
        if result.ok:
            lines.append(Text.assemble(("ok      ", "green"), (result.run_id, "bold")))
        else:
            lines.append(Text.assemble(("BLOCKED ", "bold red"), (result.run_id, "bold"), (f": {result.reason}", "")))
    bad = sum(1 for r in report.runs if not r.ok)
    lines.append(Text(f"{len(report.runs)} unfinished run{'s' if len(report.runs) != 1 else ''} checked, "
                      f"{bad} would not replay", style="red" if bad else "dim"))
    return Group(*lines)


# -- schedules -----------------------------------------------------------------------------------


def _when(when: datetime | None, now: datetime) -> str:
    return "-" if when is None else f"{format_instant(when)} ({ago(when, now)})"


def schedules_table(schedules: ScheduleList, now: datetime) -> RenderableType:
    """``tinywf schedule list``: one row per schedule."""
    if not schedules.schedules:
        return Text("no schedules (`tinywf schedule add` or `tinywf schedule apply FLOW`)", style="dim")
    table = Table(header_style="bold", box=None, show_edge=False, pad_edge=False)
    for name in ("schedule", "cron", "tz", "flow", "next", "last run", "skipped", "missed"):
        table.add_column(name, no_wrap=name not in ("flow",))
    for row in schedules.schedules:
        upcoming = Text("paused", style="bold cyan") if row.paused else Text(
            "-" if row.next_at is None else ago(row.next_at, now))
        table.add_row(row.name, row.cron, row.tz, row.flow, upcoming, row.last_run_id or "-", str(row.skipped),
                      str(row.missed))
    return table


def schedule_view(doc: ScheduleDocument, now: datetime) -> RenderableType:
    """``tinywf schedule show`` (and what add, pause, resume, remove print): the schedule, its
    coming slots and its log."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("flow", Text(doc.flow, style="bold"))
    grid.add_row("cron", f"{doc.cron}  in {doc.tz}")
    grid.add_row("policies", f"overlap {doc.overlap}, catch-up {doc.catch_up}")
    if doc.input:
        grid.add_row("input", compact_json(doc.input))
    if doc.start is not None or doc.end is not None:
        grid.add_row("between", f"{_when(doc.start, now)} and {_when(doc.end, now)}")
    grid.add_row("state", Text("paused", style="bold cyan") if doc.paused else Text("active", style="bold green"))
    grid.add_row("next", "paused: no slot starts until `tinywf schedule resume`" if doc.paused
                 else ", ".join(format_instant(s) for s in doc.upcoming) or "no slot left")
    grid.add_row("last run", doc.last_run_id or "-")
    if doc.buffered is not None:
        grid.add_row("buffered", f"{format_instant(doc.buffered)}: starts once the last run ended")
    grid.add_row("counted", f"{doc.skipped} skipped (overlap), {doc.missed} missed (nothing ticked in time)")
    if doc.error:
        grid.add_row("error", Text(doc.error, style="red"))
    parts: list[RenderableType] = [Panel(grid, title=Text(doc.name, style="bold"), title_align="left", expand=False)]
    if doc.log:
        table = Table(header_style="bold", box=None, show_edge=False, pad_edge=False)
        for name in ("at", "what", "slot", "values"):
            table.add_column(name, no_wrap=name != "values")
        for entry in doc.log:
            extra = {k: v for k, v in (entry.model_extra or {}).items() if v is not None}
            table.add_row(ago(entry.at, now), entry.type, "-" if entry.slot is None else format_instant(entry.slot),
                          pairs(extra))
        parts += [Text("Log", style="bold underline"), table]
    return Group(*parts)


def apply_lines(changes: ScheduleChanges) -> RenderableType:
    """``tinywf schedule apply``: what changed."""
    lines: list[RenderableType] = []
    for verb, names, style in (("added", changes.added, "green"), ("changed", changes.changed, "yellow"),
                               ("removed", changes.removed, "red")):
        lines += [Text.assemble((f"{verb:<8}", style), (name, "bold")) for name in names]
    lines.append(Text(f"{len(changes.added)} added, {len(changes.changed)} changed, {len(changes.removed)} removed, "
                      f"{len(changes.unchanged)} unchanged", style="dim"))
    return Group(*lines)


def backfill_lines(report: BackfillReport) -> RenderableType:
    """``tinywf schedule backfill``: the runs started, the slots that had run, those skipped."""
    lines: list[RenderableType] = [Text.assemble(("started ", "green"), (done.run_id, "bold"), (" -> ", ""),
                                                 status_text(done.status)) for done in report.started]
    lines += [Text.assemble(("had run ", "dim"), (run_id, "")) for run_id in report.existing]
    lines += [Text.assemble(("skipped ", "yellow"), (format_instant(one.slot), "bold"), (f": {one.reason}", ""))
              for one in report.skipped]
    lines.append(Text(f"{len(report.started)} started, {len(report.existing)} had run, {len(report.skipped)} skipped",
                      style="dim"))
    return Group(*lines)
