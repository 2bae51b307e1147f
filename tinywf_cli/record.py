"""The file store's record format: one JSON document per run, and its journal lines.

A record is ``{"tinywf": 2, "journal": {"size", "visit_start", "gen", "logs"}, "tail": [entries],
"run": head}``: the head, how many bytes of the run's journal are committed and where the
current visit begins in it, which generation of the journal file holds them (a history
trimmed by ``history_limit`` is rewritten into the next one), how many audit entries the
journal and tail hold, and the *tail* — the newest journal entries, not yet moved to the
journal. Journal lines are one entry each, in the same JSON form as the tail's.

Parsing is strict: JSON without ``NaN``/``Infinity`` or out-of-range numbers, every field
of the head and of every entry checked. What tinywf writes it can read back
(``tinywf_cli.values`` refuses what could not be).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tinywf_cli.errors import StorageError
from tinywf_cli.journal import BadEntry, Entry, entry_from_json
from tinywf_cli.model import RunHead, head_from_json, head_to_json
from tinywf_cli.values import dumps, strict_loads

#: The format this tinywf writes; it reads this one and those listed in ``READS``.
FORMAT = 2
READS = frozenset({1, 2})
#: Records larger than this are refused rather than read (and never written).
MAX_RECORD_BYTES = 64 * 1024 * 1024


@dataclass
class Record:
    """A parsed record: the head, the journal's committed size, where the visit starts, the tail."""

    head: RunHead
    size: int
    visit_start: int
    #: Encoded journal entries kept in the record (one JSON text each).
    tail: list[bytes]
    #: The journal file's generation (0: ``R.journal``; n: ``R~n.journal``).
    gen: int = 0
    #: Audit entries in the journal and the tail (for ``history_limit``).
    logs: int = 0


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool


def parse_record(path: Path, run_id: str, data: bytes) -> Record:
    """A record's bytes, checked; StorageError naming the path and what is wrong."""
    if not data.strip():
        raise StorageError(path, "is empty (not a run record)")
    try:
        doc = strict_loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise StorageError(path, "is not valid UTF-8 (corrupt run record)") from None
    except ValueError as exc:
        raise StorageError(path, f"is not valid JSON (corrupt run record): {exc}") from None
    except RecursionError:
        raise StorageError(path, "is nested too deeply (not a run record)") from None
    if not isinstance(doc, dict) or not _is_int(doc.get("tinywf")) or not isinstance(doc.get("run"), dict):
        raise StorageError(path, "is not a tinywf run record (wrong shape)")
    if doc["tinywf"] not in READS:
        raise StorageError(path, f"has format {doc['tinywf']}; this tinywf reads formats "
                                 f"{', '.join(map(str, sorted(READS)))}")
    journal = doc.get("journal")
    if (not isinstance(journal, dict) or not _is_int(journal.get("size"))
            or not _is_int(journal.get("visit_start"))
            or not 0 <= journal["visit_start"] <= journal["size"]
            or not _is_int(journal.get("gen", 0)) or journal.get("gen", 0) < 0
            or not _is_int(journal.get("logs", 0)) or journal.get("logs", 0) < 0):
        raise StorageError(path, "has no valid journal position (corrupt run record)")
    tail = doc.get("tail", [])
    if not isinstance(tail, list):
        raise StorageError(path, "has a malformed tail of journal entries (corrupt run record)")
    for entry in tail:
        try:
            entry_from_json(entry)
        except BadEntry as exc:
            raise StorageError(path, f"has a malformed journal entry in its tail ({exc}; corrupt run record)") from None
    if doc["tinywf"] == 1:
        _upgrade_format_1(doc["run"])
    try:
        head = head_from_json(doc["run"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise StorageError(path, f"is not a valid run record ({where}: {first['msg']})") from None
    if head.run_id != run_id:
        raise StorageError(path, f"holds run '{head.run_id}', not '{run_id}'")
    return Record(head, journal["size"], journal["visit_start"], [dumps(e).encode() for e in tail],
                  journal.get("gen", 0), journal.get("logs", 0))


def _upgrade_format_1(run: dict[str, Any]) -> None:
    """A head written by tinywf 0.1 kept early events as bare values."""
    inbox = run.get("inbox")
    if isinstance(inbox, dict):
        run["inbox"] = {key: [["value", v] for v in values] if isinstance(values, list) else values
                        for key, values in inbox.items()}


def encode_record(head: RunHead, size: int, visit_start: int, tail: list[bytes], gen: int = 0,
                  logs: int = 0) -> bytes:
    """A record's bytes (one line)."""
    return (b'{"tinywf":%d,"journal":{"size":%d,"visit_start":%d,"gen":%d,"logs":%d},"tail":[%b],"run":%b}\n'
            % (FORMAT, size, visit_start, gen, logs, b",".join(tail), head_to_json(head).encode()))


def encode_entry(entry: Entry) -> bytes:
    """One entry as a journal line's text (without its newline)."""
    return dumps(entry.to_json()).encode()


def is_visit_line(line: bytes) -> bool:
    """Whether an encoded entry is a visit marker."""
    return line.startswith(b'{"visit":')


def parse_entries(path: Path, lines: list[bytes]) -> list[Entry]:
    """Encoded entries (journal lines or the tail), checked; StorageError naming the path."""
    entries = []
    try:
        for line in lines:
            entries.append(entry_from_json(strict_loads(line)))
    except ValueError as exc:  # BadEntry included
        raise StorageError(path, f"is corrupt: {exc}") from None
    except RecursionError:
        raise StorageError(path, "is corrupt: an entry is nested too deeply") from None
    return entries


def split_journal(path: Path, data: bytes, end: int) -> list[bytes]:
    """Journal bytes as lines; StorageError when the last one is cut short."""
    # split on b"\n" only: str.splitlines() would also split inside strings holding U+2028 etc.
    lines = data.split(b"\n")
    if lines.pop() != b"":
        raise StorageError(path, f"is corrupt: the entry ending at byte {end} is cut short")
    return lines
