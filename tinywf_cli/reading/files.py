"""``show`` and ``list`` over a state directory without pydantic or the engine.

This module reads a run's files (``tinywf_cli.stores.files.runfiles``) and hands its head
to ``documents``, which checks it and builds the documents. A record it cannot vouch for
(an error of any kind) is handed to the full path (``Runtime``), as ``documents`` says.
"""

from __future__ import annotations

import os
import stat
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywf_cli.jsonio import strict_loads
from tinywf_cli.names import is_run_id
from tinywf_cli.reading.documents import Fallback, RunRows, RunView, _check, listed, view_of_head, with_history
from tinywf_cli.stores.files.runfiles import RunFiles

if TYPE_CHECKING:
    from tinywf_cli.filters import RunFilter

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
    from tinywf_cli.stores.journal import AuditEntry

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
    return with_history(view, history, last)


def list_runs(root: Path, select: RunFilter) -> RunRows:
    """The runs ``select`` picks, newest first (``list``); a record the fast path cannot vouch for is read by
    the file store (its head, or its error)."""
    if not os.path.lexists(root):
        return RunRows([], [])
    _check(_root_ok(root))
    files = RunFiles(root)

    def head_of(run_id: str) -> Any:
        return files.retrying(lambda: read_head(files, run_id))[0]

    def full_head(run_id: str) -> Any:
        from tinywf_cli.stores.files.store import FileStore

        return FileStore(root).head(run_id)

    run_ids: list[str] | None = None
    if select.tags:
        from tinywf_cli.stores.files.tagindex import TagIndex

        found = TagIndex(root).run_ids(select.tags)
        run_ids = None if found is None else sorted(found)
    if run_ids is None:
        run_ids = files.run_ids()
    return listed(((run_id, partial(head_of, run_id)) for run_id in run_ids), full_head, select)


class StateDirectory:
    """A state directory as a source of the read path (``tinywf_cli.reading.sources``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def show(self, run_id: str, last: int | None) -> RunView:
        """The run ``show`` prints."""
        return show(self.root, run_id, last)

    def list_runs(self, select: RunFilter) -> RunRows:
        """The runs ``select`` picks, newest first."""
        return list_runs(self.root, select)

    def close(self) -> None:
        """Nothing is held open."""
