"""The documents of ``show`` and ``list`` without pydantic or the engine.

The read commands only read records and print them, so they need none of what a command
that changes a run needs: this module checks a stored head field by field and builds the
same documents ``Runtime.get`` and ``Runtime.list`` return — byte for byte the same
``--json`` text (pydantic's number, time and string forms), and objects with the same
attributes for ``tinywf_cli.cli.render``. ``files`` reads the heads of a state directory.

A record this module cannot vouch for (a field of an unexpected type or form, an error of
any kind) is handed to the full path (``Runtime``), which says exactly what is wrong with
it, as before: the fast path only ever answers for records both paths read alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinywf_cli.filters import RunFilter

STATUSES = frozenset({"running", "waiting", "paused", "blocked", "finished", "failed", "cancelled"})
RESUME_KINDS = frozenset({"event", "timer", "retry", "child", "limit", "breaker"})
#: How a queued event came (``model.Via``).
VIAS = frozenset({"cli", "http", "link", "runtime"})
QUEUED_FORMS = frozenset({"value", "text"})
#: An instant as tinywf and pydantic write them (anything else goes to the full path).
_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)?", re.ASCII)


class Fallback(Exception):
    """This record is for the full path to read (or to refuse, with its own words)."""


# -- values, as pydantic prints them ---------------------------------------------------------------


def instant(text: Any) -> datetime:
    """A stored time, as pydantic reads it; Fallback for any form it might read otherwise."""
    if not isinstance(text, str) or _INSTANT.fullmatch(text) is None:
        raise Fallback
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise Fallback from None


def instant_text(when: datetime) -> str:
    """A time as pydantic prints it: ``Z`` for UTC, microseconds only when there are some."""
    text = when.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def float_text(value: float) -> str:
    """A float as pydantic prints it: Python's shortest form, but ``1e-7`` for ``1e-07`` and
    ``0.00001`` for ``1e-05``."""
    text = repr(value)
    mantissa, sep, exponent = text.partition("e-")
    if not sep:
        return text
    if exponent == "05":
        sign = "-" if mantissa.startswith("-") else ""
        return f"{sign}0.0000{mantissa.lstrip('-').replace('.', '')}"
    return f"{mantissa}e-{int(exponent)}"


def encode(value: Any, indent: str = "") -> str:
    """JSON text of a JSON value, indented by two as pydantic's ``model_dump_json(indent=2)``."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is str:
        return encode_basestring(value)
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return float_text(value)
    inner = indent + "  "
    if type(value) is list:
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + encode(item, inner) for item in value) + "\n" + indent + "]"
    if type(value) is dict:
        if not value:
            return "{}"
        return ("{\n" + ",\n".join(f"{inner}{encode_basestring(key)}: {encode(item, inner)}"
                                   for key, item in value.items()) + "\n" + indent + "}")
    raise Fallback  # tuples and friends never come out of JSON


def _time(when: datetime | None) -> str | None:
    return None if when is None else instant_text(when)


# -- the documents' objects (what render draws) ----------------------------------------------------


class Error:
    """``error``: type and message."""

    __slots__ = ("message", "type")

    def __init__(self, type_: str, message: str) -> None:
        self.type = type_
        self.message = message


class Pending:
    """One pending resume."""

    __slots__ = ("due_at", "key", "kind", "request", "resume_id")

    def __init__(self, resume_id: str, kind: str, key: str, request: dict[str, Any] | None,
                 due_at: datetime | None) -> None:
        self.resume_id, self.kind, self.key, self.request, self.due_at = resume_id, kind, key, request, due_at


class Log:
    """One audit entry."""

    __slots__ = ("at", "step", "type", "values")

    def __init__(self, at: datetime, step: str | None, type_: str, values: dict[str, Any]) -> None:
        self.at, self.step, self.type, self.values = at, step, type_, values


class RunView:
    """A run as ``show`` prints it (the attributes of ``ShowDocument``). Plain classes here, not
    dataclasses: each dataclass costs ``show`` about a millisecond to define."""

    def __init__(self, head: dict[str, Any], run_id: str, pending: list[Pending], expects: dict[str, str],
                 error: Error | None) -> None:
        self.run_id = run_id
        self.workflow: str = head["workflow"]
        self.version: int = head.get("version", 1)
        self.status: str = head["status"]
        self.step: str = head["step"]
        self.state: Any = head["state"]
        self.pending = pending
        self.error = error
        self.parent: str | None = head.get("parent")
        self.flow_file: str | None = head["flow"].get("file")
        self.tags: dict[str, str] = head.get("tags", {})
        self.created_at = instant(head["created_at"])
        self.updated_at = instant(head["updated_at"])
        self.expects = expects
        self.children: list[str] = list(head.get("children", []))
        self.doc: str | None = head.get("doc")
        self.history_limit: int | None = head.get("history_limit")
        self.dropped_logs: int = head.get("dropped_logs", 0)
        self.logs: list[Log] = []
        self.omitted = 0

    def json(self) -> str:
        """``show --json``: the text ``ShowDocument.model_dump_json(indent=2)`` prints."""
        pending = [{"resume_id": p.resume_id, "kind": p.kind, "key": p.key, "request": p.request,
                    "due_at": _time(p.due_at)} for p in self.pending]
        doc = {"run_id": self.run_id, "workflow": self.workflow, "version": self.version, "status": self.status,
               "step": self.step, "state": self.state, "pending": pending,
               "error": None if self.error is None else {"type": self.error.type, "message": self.error.message},
               "parent": self.parent, "tags": self.tags, "created_at": _time(self.created_at),
               "updated_at": _time(self.updated_at),
               "logs": [{"at": _time(e.at), "step": e.step, "type": e.type, "values": e.values}
                        for e in self.logs]}
        return encode(doc)


class RunRow:
    """One row of ``list``."""

    __slots__ = ("pending", "run_id", "status", "step", "tags", "updated_at", "workflow")

    def __init__(self, run_id: str, workflow: str, status: str, step: str | None, updated_at: datetime | None,
                 tags: dict[str, str], pending: Sequence[Any] = ()) -> None:
        self.run_id, self.workflow, self.status, self.step, self.updated_at = run_id, workflow, status, step, updated_at
        self.tags = tags
        #: Its pending resumes as read (``/metrics`` counts their kinds; not part of the document).
        self.pending = pending


class RunRows:
    """``list``: the rows, newest first, and the records that could not be read."""

    def __init__(self, runs: list[RunRow], problems: list[str]) -> None:
        self.runs = runs
        self.problems = problems

    def json(self) -> str:
        """``list --json``: the text ``RunList.model_dump_json(indent=2)`` prints."""
        return encode({"runs": [{"run_id": r.run_id, "workflow": r.workflow, "status": r.status,
                                 "step": r.step, "updated_at": _time(r.updated_at), "tags": r.tags}
                                for r in self.runs]})


# -- reading a head -----------------------------------------------------------------------------------


_HEAD_FIELDS = frozenset({
    "run_id", "workflow", "flow", "status", "step", "state", "visit_state", "created_at", "updated_at", "doc",
    "version", "parent", "visit", "visit_logs", "pending", "expects", "inbox", "error", "wake_at", "progress",
    "recovery", "children", "parent_woken", "paused_from", "code", "history_limit", "dropped_logs", "held_limit",
    "scheduled_at", "deadline", "tags", "alerts", "alert_attempt", "alert_due", "trace", "parent_trace"})
_REQUIRED = ("run_id", "workflow", "flow", "status", "step", "state", "visit_state", "created_at", "updated_at")


def _check(ok: bool) -> None:
    if not ok:
        raise Fallback


def _opt(value: Any, kind: type) -> bool:
    return value is None or type(value) is kind


def _one_of(value: Any, names: frozenset[str]) -> bool:
    """Whether ``value`` is one of ``names`` (a list or a dict in a damaged record is not, and does not raise)."""
    return type(value) is str and value in names


def _is_json_object(value: Any) -> bool:
    return type(value) is dict


def _is_queued(item: Any) -> bool:
    """An item of a run's queue of early events: ``[form, value]`` or ``[form, value, via]``."""
    return (type(item) is list and 2 <= len(item) <= 3 and _one_of(item[0], QUEUED_FORMS)
            and (len(item) == 2 or _one_of(item[2], VIAS)))


def view_of_head(head: dict[str, Any], run_id: str) -> RunView:
    """The view of a stored head whose every field has the type and form the model gives it."""
    _check(head.keys() <= _HEAD_FIELDS and all(name in head for name in _REQUIRED))
    get = head.get
    _check(get("run_id") == run_id and type(get("workflow")) is str and type(get("step")) is str
           and _one_of(get("status"), STATUSES) and _opt(get("doc"), str) and _opt(get("parent"), str)
           and _opt(get("code"), str) and _opt(get("history_limit"), int)
           and _opt(get("trace"), str) and _opt(get("parent_trace"), str)
           and (get("paused_from") is None or _one_of(get("paused_from"), STATUSES)))
    for name, default in (("version", 1), ("visit", 1), ("visit_logs", 0), ("progress", 0), ("dropped_logs", 0),
                          ("alert_attempt", 0)):
        _check(type(get(name, default)) is int)
    _check(type(get("parent_woken", False)) is bool)
    held = get("held_limit")
    _check(held is None or (type(held) is list and len(held) == 2 and type(held[0]) is str and _opt(held[1], str)))
    flow = get("flow")
    _check(type(flow) is dict and flow.keys() <= {"file", "module", "cls"} and type(flow.get("cls")) is str
           and _opt(flow.get("file"), str) and _opt(flow.get("module"), str))
    recovery = get("recovery", {})
    _check(type(recovery) is dict and recovery.keys() <= {"count", "at"}
           and all(type(v) is int for v in recovery.values()))
    children = get("children", [])
    _check(type(children) is list and all(type(c) is str for c in children))
    expects = get("expects", {})
    _check(type(expects) is dict and all(type(v) is str for v in expects.values()))
    tags = get("tags", {})
    _check(type(tags) is dict and all(type(v) is str for v in tags.values()))
    inbox = get("inbox", {})
    _check(type(inbox) is dict and all(type(queue) is list and all(map(_is_queued, queue)) for queue in inbox.values()))
    alerts = get("alerts", [])
    _check(type(alerts) is list and all(type(a) is str for a in alerts))
    for name in ("wake_at", "scheduled_at", "deadline", "alert_due"):
        if get(name) is not None:
            instant(get(name))
    error = get("error")
    _check(error is None or (type(error) is dict and error.keys() == {"type", "message"}
                             and type(error["type"]) is str and type(error["message"]) is str))
    pending = get("pending", [])
    _check(type(pending) is list)
    resumes = []
    for item in pending:
        _check(type(item) is dict and item.keys() <= {"resume_id", "kind", "key", "request", "due_at"}
               and type(item.get("resume_id")) is str and _one_of(item.get("kind"), RESUME_KINDS)
               and type(item.get("key")) is str and _opt(item.get("request"), dict))
        due = item.get("due_at")
        resumes.append(Pending(item["resume_id"], item["kind"], item["key"], item.get("request"),
                               None if due is None else instant(due)))
    ids = {p.resume_id for p in resumes}
    return RunView(head, run_id, resumes, {k: v for k, v in expects.items() if k in ids},
                   None if error is None else Error(error["type"], error["message"]))


def log_of(entry: Any) -> Log:
    """An audit entry's document (``{"at", "step", "type", "values"}``), checked."""
    _check(type(entry.values) is dict)
    return Log(instant(entry.at), entry.step, entry.type, entry.values)


# -- show and list, whatever the store ---------------------------------------------------------------


def with_history(view: RunView, history: list[Any], last: int | None) -> RunView:
    """The view with the audit entries ``show`` prints of ``history`` (``AuditEntry``s, oldest
    first; ``last``: the newest only), and how many it leaves out."""
    from tinywf_cli.stores.journal import shown_history

    history, view.omitted = shown_history(history, view.dropped_logs, view.history_limit, last)
    view.logs = [log_of(e) for e in history]
    return view


def listed(heads: Iterable[tuple[str, Callable[[], Any]]], full_head: Callable[[str], Any],
           select: RunFilter) -> RunRows:
    """``list``: the runs ``heads`` names (oldest first, each with a way to read its head as
    parsed JSON) that ``select`` picks, newest first. A head the read path cannot vouch for, or
    cannot read, is read by ``full_head``, the store's own reading: its ``RunHead``, or its error,
    listed as unreadable in the store's words (unless a filter other than ``--status unreadable``
    was given: such a record cannot be said to match)."""
    from tinywf_cli.errors import RunNotFound, TinyWFError

    rows: list[tuple[datetime, str, RunRow]] = []
    problems: list[str] = []
    for run_id, read in heads:
        try:
            try:
                view = view_of_head(read(), run_id)
                if not select.matches(view.status, view.workflow, view.tags, view.updated_at, view.flow_file):
                    continue
                row = (view.created_at.replace(tzinfo=None), run_id,
                       RunRow(run_id, view.workflow, view.status, view.step, view.updated_at, view.tags, view.pending))
            except (Fallback, TinyWFError, ValueError):
                slow = full_head(run_id)
                if not select.matches(slow.status, slow.workflow, slow.tags, slow.updated_at, slow.flow.file):
                    continue
                row = (slow.created_at.replace(tzinfo=None), run_id,
                       RunRow(slow.run_id, slow.workflow, slow.status, slow.step, slow.updated_at, dict(slow.tags),
                              slow.pending))
        except RunNotFound:
            continue  # removed meanwhile
        except TinyWFError as exc:
            problems.append(exc.message)
            if select.lists_unreadable:
                rows.append((datetime.min, run_id, RunRow(run_id, "?", "unreadable", None, None, {})))
            continue
        rows.append(row)
    rows.sort(key=lambda r: r[:2], reverse=True)  # newest first; of one instant, the greatest id
    return RunRows([r for _, _, r in rows], problems)
