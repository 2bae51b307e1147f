"""A run's journal: the typed entries every store appends, and the slots of a step visit.

A store keeps, per run, a small head (``RunHead``, replaced at every commit) and an
append-only journal of entries:

- :class:`AuditEntry`  one entry of the audit log (``{"log": {...}}``);
- :class:`SlotEntry`   what the run recorded for one command of the current visit
  (``{"slot": {...}}``; a later entry for the same index replaces an earlier one);
- :class:`PartEntry`   one part of a ``parallel`` slot (``{"part": {"index": i, "slot": {...}}}``),
  so that a fan-out of n actions records n small entries, not n copies of the whole slot;
- :class:`VisitEntry`  where a step visit begins, with the step and its starting state
  (``{"visit": {"n": 2, "step": "...", "state": ...}}``).

Loading a run folds the entries since the last visit marker into the visit's slots.
Entries read back from storage are validated to their last field (``entry_from_json``):
a damaged journal is refused as a whole, never half-read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: What a slot can record: the commands a step yields, and the markers the engine keeps.
SLOT_KINDS = frozenset({"action", "sleep", "event", "parallel", "child", "start_child", "patch", "first"})
#: A slot's life: new/running (in flight), waiting/retrying (paused on it), gated (an action waiting
#: for room under a limit or for its breaker), failed, done, timed_out.
SLOT_STATUSES = frozenset({"new", "running", "waiting", "retrying", "gated", "failed", "done", "timed_out"})


class BadEntry(ValueError):
    """A journal entry (or slot) read back from storage does not have the shape tinywf writes."""


@dataclass
class Slot:
    """What the run recorded for one command of the current visit (or one part of a parallel)."""

    index: int
    kind: str
    key: str
    status: str
    value: Any = None
    due_at: str | None = None
    attempt: int = 0
    error: dict[str, Any] | None = None
    resume_id: str | None = None
    request: dict[str, Any] | None = None
    parts: dict[str, Slot] | None = None
    expects: str | None = None
    #: Signals received while the run was paused here, replayed when the replay gets here.
    signals: list[dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        """The journal form."""
        out: dict[str, Any] = {"index": self.index, "kind": self.kind, "key": self.key, "status": self.status}
        for name in ("value", "due_at", "error", "resume_id", "request", "expects", "signals"):
            item = getattr(self, name)
            if item is not None:
                out[name] = item
        if self.attempt:
            out["attempt"] = self.attempt
        if self.parts is not None:
            out["parts"] = {k: p.to_json() for k, p in self.parts.items()}
        return out

    @classmethod
    def from_json(cls, data: Any) -> Slot:
        """Read the journal form back, checking every field; raises BadEntry."""
        if not isinstance(data, dict):
            raise BadEntry(f"a slot must be an object, not {type(data).__name__}")
        unknown = data.keys() - _SLOT_FIELDS
        if unknown:
            raise BadEntry(f"a slot has unknown fields {sorted(unknown)}")
        index, kind, key, status = data.get("index"), data.get("kind"), data.get("key"), data.get("status")
        if type(index) is not int or index < 0:
            raise BadEntry(f"a slot's index must be an integer >= 0, not {index!r}")
        if not isinstance(kind, str) or kind not in SLOT_KINDS:
            raise BadEntry(f"slot {index} has an unknown kind {kind!r}")
        if not isinstance(key, str) or not key:
            raise BadEntry(f"slot {index} has no key")
        if not isinstance(status, str) or status not in SLOT_STATUSES:
            raise BadEntry(f"slot {index} ({kind} {key!r}) has an unknown status {status!r}")
        due_at = _optional(data, "due_at", str, index)
        if due_at is not None:
            try:
                when = datetime.fromisoformat(due_at)
            except ValueError:
                raise BadEntry(f"slot {index} ({kind} {key!r}) has a due_at that is not a time: {due_at!r}") from None
            if when.tzinfo is None:
                raise BadEntry(f"slot {index} ({kind} {key!r}) has a due_at without a UTC offset: {due_at!r}")
        attempt = data.get("attempt", 0)
        if type(attempt) is not int or attempt < 0:
            raise BadEntry(f"slot {index} ({kind} {key!r}) has a bad attempt count {attempt!r}")
        error = _optional(data, "error", dict, index)
        if error is not None and not (isinstance(error.get("type"), str) and isinstance(error.get("message"), str)):
            raise BadEntry(f"slot {index} ({kind} {key!r}) has an error without type and message")
        signals = _optional(data, "signals", list, index)
        if signals is not None and not all(
                isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("args"), dict)
                for s in signals):
            raise BadEntry(f"slot {index} ({kind} {key!r}) has malformed signals")
        parts = _optional(data, "parts", dict, index)
        return cls(
            index=index, kind=kind, key=key, status=status, value=data.get("value"), due_at=due_at,
            attempt=attempt, error=error, resume_id=_optional(data, "resume_id", str, index),
            request=_optional(data, "request", dict, index),
            parts=None if parts is None else {str(k): cls.from_json(p) for k, p in parts.items()},
            expects=_optional(data, "expects", str, index), signals=signals,
        )

    @property
    def open(self) -> bool:
        """Whether the run is paused on this slot (not answered yet)."""
        return self.status not in ("done", "timed_out")

    def due(self) -> datetime | None:
        """``due_at`` as a datetime."""
        return None if self.due_at is None else datetime.fromisoformat(self.due_at)


_SLOT_FIELDS = frozenset({"index", "kind", "key", "status", "value", "due_at", "attempt", "error", "resume_id",
                          "request", "parts", "expects", "signals"})


def _optional(data: dict[str, Any], name: str, kind: type, index: int) -> Any:
    value = data.get(name)
    if value is not None and not isinstance(value, kind):
        raise BadEntry(f"slot {index}: {name} must be {kind.__name__}, not {type(value).__name__}")
    return value


@dataclass(slots=True)
class AuditEntry:
    """One entry of the audit log: when, in which step, what, and its values."""

    at: str
    step: str | None
    type: str
    values: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The journal form."""
        return {"log": {"at": self.at, "step": self.step, "type": self.type, "values": self.values}}

    def document(self) -> dict[str, Any]:
        """The form ``show --json`` prints (``logs`` items)."""
        return {"at": self.at, "step": self.step, "type": self.type, "values": self.values}


@dataclass(slots=True)
class SlotEntry:
    """A slot recorded (or changed): its JSON form as it was when the entry was made."""

    slot: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The journal form."""
        return {"slot": self.slot}


@dataclass(slots=True)
class PartEntry:
    """One part of the ``parallel`` slot at ``index`` recorded (or changed)."""

    index: int
    part: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The journal form."""
        return {"part": {"index": self.index, "slot": self.part}}


@dataclass(slots=True)
class VisitEntry:
    """A step visit begins: its number, step, starting state and the flow version that state is at
    (step and state are ``None`` in records of tinywf 0.1)."""

    n: int
    step: str | None = None
    state: Any = None
    version: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The journal form."""
        body = {"n": self.n, "step": self.step, "state": self.state}
        if self.version is not None:
            body["version"] = self.version
        return {"visit": body}


Entry = AuditEntry | SlotEntry | PartEntry | VisitEntry


def entry_from_json(data: Any) -> Entry:
    """An entry read back from storage, checked to its last field; raises BadEntry."""
    if not isinstance(data, dict) or len(data) != 1:
        raise BadEntry("a journal entry must be an object with one key")
    (name, body), = data.items()
    if name == "log":
        if (not isinstance(body, dict) or not isinstance(body.get("at"), str) or not isinstance(body.get("type"), str)
                or not isinstance(body.get("values", {}), dict)
                or not (body.get("step") is None or isinstance(body.get("step"), str))):
            raise BadEntry("an audit entry must have at, step, type and values")
        return AuditEntry(body["at"], body.get("step"), body["type"], body.get("values", {}))
    # a slot's fields are checked where slots are folded (``fold_slots``), once
    if name == "slot":
        if not isinstance(body, dict):
            raise BadEntry("a slot entry must be an object")
        return SlotEntry(body)
    if name == "part":
        if not isinstance(body, dict) or type(body.get("index")) is not int or not isinstance(body.get("slot"), dict):
            raise BadEntry("a part entry must name its parallel slot's index and hold a slot")
        return PartEntry(body["index"], body["slot"])
    if name == "visit":
        if type(body) is int:  # tinywf 0.1 wrote only the visit's number
            return VisitEntry(body)
        if (not isinstance(body, dict) or type(body.get("n")) is not int
                or not (body.get("step") is None or isinstance(body.get("step"), str))
                or not (body.get("version") is None or type(body.get("version")) is int)):
            raise BadEntry("a visit entry must have its number and step")
        return VisitEntry(body["n"], body.get("step"), body.get("state"), body.get("version"))
    raise BadEntry(f"unknown journal entry {name!r}")


def fold_slots(entries: Iterable[Entry]) -> list[Slot]:
    """The current visit's slots from the entries after its visit marker (a later entry wins)."""
    slots: list[Slot] = []
    for entry in entries:
        if type(entry) is SlotEntry:
            slot = Slot.from_json(entry.slot)
            if slot.index == len(slots):
                slots.append(slot)
            elif slot.index < len(slots):
                slots[slot.index] = slot
            else:
                raise BadEntry(f"slot {slot.index} recorded before slot {len(slots)}")
        elif type(entry) is PartEntry:
            if entry.index >= len(slots) or slots[entry.index].parts is None:
                raise BadEntry(f"a part recorded for slot {entry.index}, which is no parallel slot")
            part = Slot.from_json(entry.part)
            parts = slots[entry.index].parts
            assert parts is not None
            parts[part.key] = part
    return slots


def last_visit(entries: Sequence[Entry]) -> int | None:
    """The position of the last visit marker in ``entries`` (``None`` when there is none)."""
    for position in range(len(entries) - 1, -1, -1):
        if type(entries[position]) is VisitEntry:
            return position
    return None


def visit_start(entries: Sequence[Entry]) -> int:
    """The position of the last visit marker in ``entries`` (0 when there is none)."""
    position = last_visit(entries)
    return 0 if position is None else position


def shown_history(history: list[AuditEntry], dropped: int, limit: int | None,
                  last: int | None) -> tuple[list[AuditEntry], int]:
    """The audit entries ``show`` prints, and how many it leaves out: the ``dropped`` ones
    (``history_limit``), those past ``limit`` not trimmed yet (shown as if they were), and
    with ``last`` all but the newest ``last``."""
    omitted = dropped
    if limit is not None and len(history) > limit:
        omitted += len(history) - limit
        history = history[len(history) - limit:]
    if last is not None and len(history) > last:
        omitted += len(history) - last
        history = history[len(history) - last:] if last else []
    return history, omitted


#: Entries beyond a run's history_limit are dropped once this many more have gathered
#: (at least): a compaction rewrites the kept history, so it happens rarely.
TRIM_SLACK = 100


def needs_trim(logs: int, limit: int | None) -> bool:
    """Whether ``logs`` audit entries are enough beyond ``limit`` to drop the oldest."""
    return limit is not None and logs > limit + max(limit, TRIM_SLACK)


def trim_history(entries: list[Entry], keep: int) -> tuple[list[Entry], int]:
    """The entries a run keeps under ``history_limit = keep``, and how many audit entries went.

    Kept: the newest ``keep`` audit entries, every other entry from the oldest of them on,
    and the current visit's records wherever they begin (a run must still load).
    """
    logs = [i for i, e in enumerate(entries) if type(e) is AuditEntry]
    if len(logs) <= keep:
        return entries, 0
    cut = logs[len(logs) - keep] if keep else len(entries)
    current = visit_start(entries)
    kept = [e for i, e in enumerate(entries) if i >= cut or (i >= current and type(e) is not AuditEntry)]
    return kept, len(logs) - keep
