"""``show`` and ``list`` over a state directory without pydantic or the engine.

This module reads a run's files (``tinywf_cli.stores.files.runfiles``) and hands its head
to ``documents``, which checks it and builds the documents. A record it cannot vouch for
(an error of any kind) is handed to the full path (``Runtime``), as ``documents`` says.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

from tinywf_cli.jsonio import strict_loads
from tinywf_cli.names import is_run_id
from tinywf_cli.reading.documents import Fallback, RunRow, RunRows, RunView, _check, log_of, view_of_head
from tinywf_cli.stores.files.runfiles import RunFiles

# -- show and list ---------------------------------------------------------------------------------


def read_head(files: RunFiles, run_id: str) -> tuple[dict[str, Any], Any]:
    """The latest head of a run (as parsed JSON) and the snapshot it came from."""
    snap = files.snapshot(run_id)
    if snap.head_json is None:
        return snap.record.run, snap
    head = strict_loads(snap.head_json)
    _check(type(head) is dict)
    return head, snap


def _root_ok(root: Path) -> bool:
    """Whether the state directory is one the full path would use: a directory of ours that
    others cannot write (anything else: the full path says what is wrong)."""
    try:
        info = os.stat(root)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def show(root: Path, run_id: str, last: int | None) -> RunView:
    """The run ``show`` prints; Fallback when the full path must read it."""
    from tinywf_cli.stores.journal import AuditEntry, shown_history

    _check(is_run_id(run_id) and _root_ok(root))
    files = RunFiles(root)
    try:
        def read() -> tuple[RunView, list[Any]]:
            head, snap = read_head(files, run_id)
            view = view_of_head(head, run_id)
            return view, [e for e in files.all_entries(run_id, snap) if type(e) is AuditEntry]

        view, history = files.retrying(read)
    except Fallback:
        raise
    except Exception:
        raise Fallback from None
    history, view.omitted = shown_history(history, view.dropped_logs, view.history_limit, last)
    view.logs = [log_of(e) for e in history]
    return view


def list_runs(root: Path, status: str | None) -> RunRows:
    """Every run, newest first (``list``); a record the fast path cannot vouch for is read by
    the file store (its head, or its error)."""
    from tinywf_cli.errors import RunNotFound, TinyWFError

    if not os.path.lexists(root):
        return RunRows([], [])
    _check(_root_ok(root))
    files = RunFiles(root)
    rows: list[tuple[datetime, RunRow]] = []
    problems: list[str] = []
    for run_id in files.run_ids():
        try:
            try:
                head, _ = files.retrying(lambda run_id=run_id: read_head(files, run_id))  # type: ignore[misc]
                view = view_of_head(head, run_id)
                row = (view.created_at, RunRow(run_id, view.workflow, view.status, view.step, view.updated_at))
            except (Fallback, TinyWFError, ValueError):
                from tinywf_cli.stores.files.store import FileStore

                slow = FileStore(root).head(run_id)
                row = (slow.created_at, RunRow(slow.run_id, slow.workflow, slow.status, slow.step, slow.updated_at))
        except RunNotFound:
            continue  # removed meanwhile
        except TinyWFError as exc:
            problems.append(exc.message)
            if status in (None, "unreadable"):
                rows.append((datetime.min, RunRow(run_id, "?", "unreadable", None, None)))
            continue
        if status is None or row[1].status == status:
            rows.append(row)
    rows.sort(key=lambda r: r[0].replace(tzinfo=None), reverse=True)
    return RunRows([r for _, r in rows], problems)
