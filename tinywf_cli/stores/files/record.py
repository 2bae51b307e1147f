"""The file store's formats: a run's record, its journal lines and its write-ahead frames.

A record is ``{"tinywf": 3, "journal": {"size", "visit_start", "gen", "logs", "wal"}, "tail": [entries],
"run": head}``: the head as of the record's writing, how many bytes of the run's journal are
committed and where the current visit begins in it, which generation of the journal file holds
them (a history trimmed by ``history_limit`` is rewritten into the next one), how many audit
entries the journal and tail hold, the *salt* of the write-ahead frames that follow this record
(``wal``), and the *tail* — the newest journal entries, not yet moved to the journal. Journal
lines are one entry each, in the same JSON form as the tail's.

A *frame* of ``R.wal`` is one commit made after the record: one line, ::

    <crc32 of the rest, 8 hex digits> <salt> <seq>\\t<entry>\\t<entry>...\\t<head>\\n

the entries it appends and the head it leaves. Tabs and newlines never occur in the compact
JSON tinywf writes, so they delimit. A frame counts only when its checksum holds, its salt is
the record's and its number follows the one before: frames left from before the record are
ignored, and a last frame cut short (a writer killed mid-append) was never acknowledged and is
dropped. Anything else that fails is damage, refused as a whole.

Parsing is strict: JSON without ``NaN``/``Infinity`` or out-of-range numbers, every field of
the record and of every entry checked (the head's fields by the store that reads it). What
tinywf writes it can read back. This module needs only the standard library: the read
commands use it without pydantic.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from tinywf_cli.errors import StorageError
from tinywf_cli.jsonio import dumps, strict_loads
from tinywf_cli.stores.journal import BadEntry, Entry, entry_from_json

#: The format this tinywf writes; it reads this one and those listed in ``READS``.
FORMAT = 3
READS = frozenset({1, 2, 3})
#: Records larger than this are refused rather than read (and never written).
MAX_RECORD_BYTES = 64 * 1024 * 1024


class RawRecord:
    """A record whose shape was checked, with its head still as parsed JSON."""

    __slots__ = ("format", "gen", "logs", "run", "salt", "size", "tail", "visit_start")

    def __init__(self, run: dict[str, Any], size: int, visit_start: int, tail: list[bytes], gen: int = 0,
                 logs: int = 0, salt: int = 0, format: int = FORMAT) -> None:
        self.run = run
        self.size = size
        self.visit_start = visit_start
        #: Encoded journal entries kept in the record (one JSON text each).
        self.tail = tail
        #: The journal file's generation (0: ``R.journal``; n: ``R~n.journal``).
        self.gen = gen
        #: Audit entries in the journal and the tail (for ``history_limit``).
        self.logs = logs
        #: The salt of the write-ahead frames that follow this record.
        self.salt = salt
        #: The format the record was written in.
        self.format = format


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool


def parse_document(path: Path, data: bytes) -> RawRecord:
    """A record's bytes, checked but for the head's fields; StorageError naming the path and what is wrong."""
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
            or not _is_int(journal.get("logs", 0)) or journal.get("logs", 0) < 0
            or not _is_int(journal.get("wal", 0)) or journal.get("wal", 0) < 0):
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
    return RawRecord(doc["run"], journal["size"], journal["visit_start"], [dumps(e).encode() for e in tail],
                     journal.get("gen", 0), journal.get("logs", 0), journal.get("wal", 0), doc["tinywf"])


def _upgrade_format_1(run: dict[str, Any]) -> None:
    """A head written by tinywf 0.1 kept early events as bare values."""
    inbox = run.get("inbox")
    if isinstance(inbox, dict):
        run["inbox"] = {key: [["value", v] for v in values] if isinstance(values, list) else values
                        for key, values in inbox.items()}


def encode_record(head_json: bytes, size: int, visit_start: int, tail: list[bytes], gen: int = 0,
                  logs: int = 0, salt: int = 0) -> bytes:
    """A record's bytes (one line), around a head already encoded as JSON."""
    return (b'{"tinywf":%d,"journal":{"size":%d,"visit_start":%d,"gen":%d,"logs":%d,"wal":%d},"tail":[%b],"run":%b}\n'
            % (FORMAT, size, visit_start, gen, logs, salt, b",".join(tail), head_json))


def encode_entry(entry: Entry) -> bytes:
    """One entry as a journal line's text (without its newline)."""
    return dumps(entry.to_json()).encode()


def is_visit_line(line: bytes) -> bool:
    """Whether an encoded entry is a visit marker."""
    return line.startswith(b'{"visit":')


def is_audit_line(line: bytes) -> bool:
    """Whether an encoded entry is an audit entry."""
    return line.startswith(b'{"log":')


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


# -- write-ahead frames -------------------------------------------------------------------------


def encode_frame(salt: int, seq: int, lines: list[bytes], head_json: bytes) -> bytes:
    """One frame: a commit's entries and the head it leaves, checksummed (see the module's docstring)."""
    body = b"%d %d\t%b%b" % (salt, seq, b"".join(line + b"\t" for line in lines), head_json)
    return b"%08x %b\n" % (zlib.crc32(body), body)


class Frames:
    """The frames of a wal that follow a record: their entries, the last head, where they end."""

    __slots__ = ("count", "end", "head", "lines", "stale")

    def __init__(self, lines: list[bytes], head: bytes | None, count: int, end: int, stale: bool = False) -> None:
        self.lines = lines
        #: The head the last frame left, as JSON text (``None``: no frame follows the record).
        self.head = head
        #: How many frames, and the offset just past the last (where the next one is written).
        self.count = count
        self.end = end
        #: Whether a frame with a newer salt was found: the record was rewritten while it was read.
        self.stale = stale


class TornFrame(Exception):
    """Internal: a frame that does not check out."""


def _frame(line: bytes) -> tuple[int, int, list[bytes], bytes]:
    crc, sep, body = line.partition(b" ")
    if not sep or len(crc) != 8:
        raise TornFrame
    try:
        if int(crc, 16) != zlib.crc32(body):
            raise TornFrame
        header, *lines, head = body.split(b"\t")
        salt_text, _, seq_text = header.partition(b" ")
        return int(salt_text), int(seq_text), lines, head
    except ValueError:
        raise TornFrame from None


def parse_frames(path: Path, data: bytes, salt: int) -> Frames:
    """The frames of ``data`` (a wal's bytes) that follow a record whose salt is ``salt``.

    Frames of an older salt end the list (they came before the record); a last frame cut
    short is dropped. A frame that fails its checksum with more after it, or that is out of
    sequence, is damage: StorageError.
    """
    lines: list[bytes] = []
    head: bytes | None = None
    offset = 0
    count = 0
    while offset < len(data):
        newline = data.find(b"\n", offset)
        if newline < 0:
            break  # a last frame cut short: never acknowledged
        try:
            frame_salt, seq, entries, frame_head = _frame(data[offset:newline])
        except TornFrame:
            if data.find(b"\n", newline + 1) < 0 and newline + 1 == len(data):
                break  # the last line, torn so that it still ends in a newline: never acknowledged
            raise StorageError(path, f"is corrupt: the frame at byte {offset} fails its checksum") from None
        if frame_salt < salt:
            break  # written before the record: superseded by it
        if frame_salt > salt:
            return Frames(lines, head, count, offset, stale=True)
        if seq != count:
            raise StorageError(path, f"is corrupt: frame {seq} at byte {offset} where frame {count} belongs")
        lines.extend(entries)
        head = frame_head
        count += 1
        offset = newline + 1
    return Frames(lines, head, count, offset)
