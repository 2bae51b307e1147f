"""Pydantic models of a run: the record a store keeps, and the documents users see.

``RunHead`` is the part of a run that is rewritten at every checkpoint; it stays small
(no audit log, no past visits). The documents (``RunDocument`` and friends) are exactly
the CLI's ``--json`` output and what ``Runtime`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Status = Literal["running", "waiting", "paused", "blocked", "finished", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("running", "waiting", "paused", "blocked", "finished", "failed", "cancelled")
ResumeKind = Literal["event", "timer", "retry", "child", "limit", "breaker"]
#: How an event's value reached the run, as its ``wait_end`` entry says: a command (``cli``),
#: the HTTP API or the web page's form (``http``), a signed link (``link``), a library call
#: (``runtime``).
Via = Literal["cli", "http", "link", "runtime"]
#: Runs that have ended: nothing changes them any more.
ENDED: frozenset[str] = frozenset({"finished", "cancelled"})


class _Model(BaseModel):
    """Base of the documents: schemas are built on first use, so a command pays only for its own."""

    model_config = ConfigDict(defer_build=True)


class ErrorInfo(_Model):
    """Why a run failed: the error's type name and a message for people."""

    type: str
    message: str


class PendingResume(_Model):
    """Something the run waits for: an event to resolve, a timer or a retry delay to pass, a child
    run to end, room under a limit, a breaker to half open."""

    resume_id: str
    kind: ResumeKind
    key: str
    request: dict[str, Any] | None = None
    due_at: datetime | None = None


class LogEntry(_Model):
    """One entry of a run's audit log."""

    at: datetime
    step: str | None
    type: str
    values: dict[str, Any] = Field(default_factory=dict)


class FlowRef(_Model):
    """Where a run's workflow class lives, so later commands find it untold.

    A flow file gives ``file`` alone (loaded as a flow file). A class of an importable module
    gives ``module`` and, when the module has one, its ``file``: a later process puts the
    folder the module was imported from back on the import path before importing it.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    #: The flow file (absolute), or the file of ``module``.
    file: str | None = None
    #: The module the class was imported from, when it was not loaded as a flow file.
    module: str | None = None
    #: The class's qualified name in the file or module.
    cls: str


class Recovery(_Model):
    """How often a run was recovered from a dead process at the same point (frozen: replaced, never changed)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    count: int = 0
    at: int = 0


#: A run never recovered (shared: a Recovery is frozen).
NO_RECOVERY = Recovery()


@dataclass(slots=True)
class RunHead:
    """The rewritten part of a run record. History and visit records live in the store's journal.

    A plain dataclass, because the engine assigns its fields at every step; pydantic
    validates and serialises it through ``HEAD`` (``head_from_json``, ``head_to_json``).
    """

    __pydantic_config__ = ConfigDict(extra="forbid", defer_build=True)

    run_id: str
    workflow: str
    flow: FlowRef
    status: Status
    step: str
    state: Any
    visit_state: Any
    created_at: datetime
    updated_at: datetime
    doc: str | None = None
    #: The flow's ``version`` the run is at.
    version: int = 1
    #: The run that started this one (``self.child``), if any.
    parent: str | None = None
    visit: int = 1
    visit_logs: int = 0
    pending: list[PendingResume] = field(default_factory=list)
    #: What each pending event accepts, described for people (resume id -> description).
    expects: dict[str, str] = field(default_factory=dict)
    #: Early events by key, oldest first: ``("value", v, via)`` or ``("text", "...", via)`` (a
    #: value given as command-line text, parsed against the wait's type when a wait takes it);
    #: ``via`` says how it came (absent from items queued before tinywf recorded it).
    inbox: dict[str, list[tuple[Literal["value", "text"], Any] | tuple[Literal["value", "text"], Any, Via]]] = \
        field(default_factory=dict)
    error: ErrorInfo | None = None
    wake_at: datetime | None = None
    progress: int = 0
    recovery: Recovery = NO_RECOVERY
    #: Child runs this run started (``self.child``, ``self.start_child``), oldest first.
    children: list[str] = field(default_factory=list)
    #: Whether this run, having ended, has woken its parent (until then it stays due).
    parent_woken: bool = False
    #: The status a paused run goes back to when resumed.
    paused_from: Status | None = None
    #: The id of the flow source the run last ran with (its history names each change).
    code: str | None = None
    #: Keep only this many audit entries (the flow's ``history_limit``); the store drops older ones.
    history_limit: int | None = None
    #: Audit entries dropped by ``history_limit``.
    dropped_logs: int = 0
    #: The whole-run limit (the flow's ``limit``) this run holds a slot of: its name and key.
    held_limit: tuple[str, str | None] | None = None
    #: The slot a schedule started this run for (``self.scheduled_at``); None for other runs.
    scheduled_at: datetime | None = None
    #: When the run is cancelled if it has not ended (``created_at`` plus the flow's ``max_duration``).
    deadline: datetime | None = None
    #: The run's tags (``run --tag``, ``Runtime.start(tags=)``, ``self.tag``): what ``list`` filters by.
    tags: dict[str, str] = field(default_factory=dict)
    #: The ``@on_failure`` methods still to call for the run's last failure (or block), in order.
    alerts: list[str] = field(default_factory=list)
    #: Attempts made of the first of ``alerts`` (it failed that often; 0: none yet).
    alert_attempt: int = 0
    #: When the first of ``alerts`` is tried again (after a failed attempt); None: at once.
    alert_due: datetime | None = None
    #: The run's OpenTelemetry trace id (32 hex digits): every span of the run has it.
    trace: str | None = None
    #: The trace id of the run that started this one (``self.child``): its spans link there.
    parent_trace: str | None = None


HEAD: TypeAdapter[RunHead] = TypeAdapter(RunHead)


def head_from_json(data: str | bytes | dict[str, Any]) -> RunHead:
    """Validate a stored head (JSON text or parsed JSON); raises pydantic's ValidationError."""
    if isinstance(data, dict):
        return HEAD.validate_python(data)
    return HEAD.validate_json(data)


def head_to_json(head: RunHead) -> str:
    """The JSON text a store keeps for a head."""
    return head_json_bytes(head).decode()


def head_json_bytes(head: RunHead) -> bytes:
    """``head_to_json`` as UTF-8 bytes, straight from pydantic's serializer (at every file-store commit)."""
    return HEAD.serializer.to_json(head)


class RunDocument(_Model):
    """A run as ``run``, ``resolve``, ``send``, ``signal``, ``cancel`` and ``retry`` print it."""

    run_id: str
    workflow: str
    version: int
    status: Status
    step: str
    state: Any
    pending: list[PendingResume]
    error: ErrorInfo | None
    parent: str | None
    tags: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    #: What each pending event accepts, for prompts (not part of the JSON document).
    expects: dict[str, str] = Field(default_factory=dict, exclude=True)
    #: Whether the command that returned this document advanced the run (its failure is then
    #: the command's: exit 1); not part of the JSON document.
    advanced: bool = Field(default=False, exclude=True)
    #: Child runs the run started, oldest first (shown to people; not part of the JSON document).
    children: list[str] = Field(default_factory=list, exclude=True)
    #: The event key ``send`` queued its value under, and how many values now wait there
    #: (shown to people; not part of the JSON document).
    queued: tuple[str, int] | None = Field(default=None, exclude=True)
    #: Whether ``queued`` holds an answer the run stopped (blocked or failed) before its wait
    #: could take it: kept for the wait, which takes it when ``retry`` gets there.
    kept: bool = Field(default=False, exclude=True)

    @classmethod
    def of(cls, head: RunHead) -> RunDocument:
        """The document of a run record."""
        ids = {p.resume_id for p in head.pending}
        return cls(run_id=head.run_id, workflow=head.workflow, version=head.version, status=head.status,
                   step=head.step, state=head.state, pending=head.pending, error=head.error, parent=head.parent,
                   tags=dict(head.tags), created_at=head.created_at, updated_at=head.updated_at,
                   expects={k: v for k, v in head.expects.items() if k in ids}, children=list(head.children))


class SignalDocument(RunDocument):
    """``tinywf signal --json``: the run's document and, when the method returned a value, ``result``."""

    #: What the ``@signal`` method returned (JSON); absent from the document when it returned ``None``.
    result: Any = None

    # ``result`` is left out of the dumps, not set to null, for methods that return nothing (a
    # serializer of the model's own would hide the document's fields from its JSON schema)
    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """The document as a dict; without ``result`` when there is none."""
        return super().model_dump(**self._leave_out_empty_result(kwargs))

    def model_dump_json(self, **kwargs: Any) -> str:
        """The document as JSON text; without ``result`` when there is none."""
        return super().model_dump_json(**self._leave_out_empty_result(kwargs))

    def _leave_out_empty_result(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.result is None and kwargs.get("exclude") is None:
            kwargs["exclude"] = {"result"}
        return kwargs


class ShowDocument(RunDocument):
    """``tinywf show --json``: the run document plus its whole audit log."""

    logs: list[LogEntry]
    #: The workflow class's docstring (for people; the JSON keeps to the contract's keys).
    doc: str | None = Field(default=None, exclude=True)
    #: Audit entries not in ``logs``: dropped by ``history_limit``, or left out by ``--last``.
    omitted: int = Field(default=0, exclude=True)


class RunSummary(_Model):
    """One row of ``tinywf list``."""

    run_id: str
    workflow: str
    status: Status | Literal["unreadable"]
    step: str | None
    updated_at: datetime | None
    tags: dict[str, str] = Field(default_factory=dict)


class RunList(_Model):
    """``tinywf list --json``."""

    runs: list[RunSummary]
    #: Records that could not be read, with the reason (also listed as ``unreadable``).
    problems: list[str] = Field(default_factory=list, exclude=True)


class TickAdvanced(_Model):
    """A run ``tick`` advanced, and the status it was left in."""

    run_id: str
    status: Status


class TickSkipped(_Model):
    """A due run ``tick`` did not advance, and why."""

    run_id: str
    reason: str
    #: Held by a live claim of another process of a shared store: another worker advances it,
    #: so it is none of this process's business (listed in the JSON only; not part of it).
    elsewhere: bool = Field(default=False, exclude=True)


class TickReport(_Model):
    """``tinywf tick --json``: how many runs were due, which advanced, which were skipped."""

    due: int
    advanced: list[TickAdvanced] = Field(default_factory=list)
    skipped: list[TickSkipped] = Field(default_factory=list)


class CheckResult(_Model):
    """One run of ``tinywf check``: would it replay under today's code, and if not, why."""

    run_id: str
    ok: bool
    reason: str | None


class CheckReport(_Model):
    """``tinywf check --json``."""

    runs: list[CheckResult]

    @property
    def ok(self) -> bool:
        """Whether every run would replay."""
        return all(r.ok for r in self.runs)


class PruneReport(_Model):
    """``tinywf prune --json``: the runs deleted (or that would be, with ``--dry-run``) and those skipped."""

    pruned: list[str]
    skipped: list[TickSkipped] = Field(default_factory=list)


class CopySkipped(_Model):
    """A run ``copy --skip-existing`` left alone, and why."""

    run_id: str
    reason: str


class CopySkippedSchedule(_Model):
    """A schedule ``copy --skip-existing`` left alone, and why."""

    name: str
    reason: str


class CopiedSchedules(_Model):
    """The schedules ``tinywf copy`` copied (by name), and those it skipped."""

    copied: list[str] = Field(default_factory=list)
    skipped: list[CopySkippedSchedule] = Field(default_factory=list)


class CopyReport(_Model):
    """``tinywf copy --json``: the store copied into (``to``, never with a password), the runs
    copied, and those skipped; ``schedules``: the same for the store's schedules."""

    to: str
    copied: list[str] = Field(default_factory=list)
    skipped: list[CopySkipped] = Field(default_factory=list)
    schedules: CopiedSchedules = Field(default_factory=CopiedSchedules)


class LimitRow(_Model):
    """One limit (or one key of a keyed limit) of ``tinywf limits``: what applies now (``tinywf
    limit set`` over the code), the attempts in flight under it and the runs waiting for room."""

    name: str
    key: str | None
    rate: str | None
    concurrency: int | None
    in_flight: int
    waiting: int


class LimitList(_Model):
    """``tinywf limits --json``: every limit the store has seen."""

    limits: list[LimitRow]


class BreakerRow(_Model):
    """One breaker of ``tinywf breakers``: its state now, the failures counted, when it half opens."""

    name: str
    state: Literal["closed", "open", "half_open"]
    failures: int
    half_open_at: datetime | None


class BreakerList(_Model):
    """``tinywf breakers --json``: every breaker the store has seen."""

    breakers: list[BreakerRow]
class ScheduleRow(_Model):
    """One schedule of ``tinywf schedule list``: what it runs, when, and where it stands."""

    name: str
    flow: str
    cron: str
    tz: str
    overlap: str
    paused: bool
    next_at: datetime | None
    last_run_id: str | None
    skipped: int
    missed: int


class ScheduleList(_Model):
    """``tinywf schedule list --json``."""

    schedules: list[ScheduleRow]


class ScheduleLogEntry(_Model):
    """One entry of a schedule's log: a slot started, skipped, buffered or missed, a pause, an error."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    at: datetime
    type: str
    slot: datetime | None = None


class ScheduleDocument(ScheduleRow):
    """``tinywf schedule show --json`` (and what add, pause, resume and remove print): the list's
    row, its catch-up policy, input, bounds, a slot waiting for its turn (``buffered``), the
    next slots to come, why the last slot could not start (``error``), and its log."""

    catch_up: str
    input: dict[str, Any] | None = None
    start: datetime | None = None
    end: datetime | None = None
    buffered: datetime | None = None
    origin: Literal["cli", "code"] = "cli"
    upcoming: list[datetime] = Field(default_factory=list)
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    log: list[ScheduleLogEntry] = Field(default_factory=list)


class ScheduleChanges(_Model):
    """``tinywf schedule apply --json``: the schedules added, changed, removed and left as they were."""

    added: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)


class BackfillSkipped(_Model):
    """A slot ``backfill`` did not start, and why."""

    slot: datetime
    reason: str


class BackfillReport(_Model):
    """``tinywf schedule backfill --json``: the runs started (in slot order, with the status each was
    left in), the slots that had run already (their run ids), and the slots skipped or buffered."""

    schedule: str
    started: list[TickAdvanced] = Field(default_factory=list)
    existing: list[str] = Field(default_factory=list)
    skipped: list[BackfillSkipped] = Field(default_factory=list)


class BulkReport(_Model):
    """``tinywf cancel|retry|pause|resume --json`` given filters: the runs it touched (with the
    status each was left in; with ``--dry-run``, the runs it would touch, as they are) and those
    it left alone, with why."""

    runs: list[TickAdvanced] = Field(default_factory=list)
    skipped: list[TickSkipped] = Field(default_factory=list)
    #: Whether nothing was changed (``--dry-run``); not part of the JSON document.
    dry_run: bool = Field(default=False, exclude=True)
    #: The command (``cancel``, ``retry``, ``pause``, ``resume``); not part of the JSON document.
    command: str = Field(default="", exclude=True)
