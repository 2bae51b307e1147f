"""The file store's due index: ``tick`` lists names, it does not read every run.

An entry is an empty file named ``<ms>~<run id>``: the run is to be looked at from that
instant (milliseconds since the epoch, rounded down). Entries of waiting runs live in
``.due/``. A running run sits at 0 (``tick`` recovers it when its process died); its entry
is the *marker* ``.running~<run id>`` in the state directory itself, beside the record, so
that one sync of that directory makes a new run's record and marker durable together (a
file system that journals metadata — ext4, XFS, btrfs — never keeps the later rename
without the earlier marker). An entry is added (and synced, at the latest with the record
that needs it) before that record is committed, and removed after, so a crash leaves at
most a stale entry, which the run's next session drops. A missing ``.due/`` is rebuilt from
the records, whole or not at all.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from tinywf_cli.errors import StorageError
from tinywf_cli.names import is_run_id
from tinywf_cli.stores.files.fileio import build_whole, fsync_dir, problem

INDEX_DIR = ".due"
#: Entry names of running runs begin so (due at the epoch) ...
RUNNING = "000000000000000~"
#: ... and live in the state directory as ``.running~<run id>`` (outside the run-id charset).
MARKER = ".running~"


def entry_name(due: datetime | None, run_id: str) -> str | None:
    """The index entry for a run due at ``due`` (``None``: not in the index)."""
    if due is None:
        return None
    return f"{max(0, int(due.timestamp() * 1000)):015d}~{run_id}"


class DueIndex:
    """The ``.due/`` folder of a state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / INDEX_DIR
        #: Entries of running runs a scan found in ``.due/`` (where an older tinywf kept them).
        self._legacy: set[str] = set()

    def path(self, name: str) -> Path:
        """Where the entry ``name`` lives: a running run's marker in the state directory, else ``.due/``."""
        if name.startswith(RUNNING):
            return self.root / f"{MARKER}{name[len(RUNNING):]}"
        return self.folder / name

    def ensure(self, due_names: Callable[[], Iterable[str]]) -> None:
        """Create the index when it is missing, from ``due_names()`` (the records' entries)."""
        try:
            if stat.S_ISDIR(os.lstat(self.folder).st_mode):
                return
            raise StorageError(self.folder, "is not a directory (the due index)")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(self.folder, f"cannot use the due index: {problem(exc)}") from None
        self.rebuild(due_names)

    def rebuild(self, due_names: Callable[[], Iterable[str]]) -> None:
        """Build a missing index from ``due_names()`` and rename it into place whole.

        An index that exists is never swapped (a commit may be adding to it right now):
        ``add_missing`` repairs it instead.
        """
        def fill(build: Path) -> None:
            for name in due_names():
                where = self.path(name) if name.startswith(RUNNING) else build / name
                os.close(os.open(where, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))

        try:
            build_whole(self.root, self.folder, fill, "rebuilding the due index")
        except OSError as exc:
            raise StorageError(self.folder, f"cannot create the due index: {problem(exc)}") from None

    def add_missing(self, names: Iterable[str]) -> int:
        """Add the entries of ``names`` the index lacks (records copied in by hand); how many."""
        try:
            have = set(os.listdir(self.folder))
            added = 0
            for name in names:
                where = self.path(name)
                if (name not in have) if where.parent == self.folder else not os.path.lexists(where):
                    os.close(os.open(where, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
                    added += 1
            if added:
                fsync_dir(self.folder)
                fsync_dir(self.root)
        except OSError as exc:
            raise StorageError(self.folder, f"cannot update the due index: {problem(exc)}") from None
        return added

    def add(self, name: str, rebuild: Callable[[], None], *, root_synced_next: bool = False) -> None:
        """Add an entry durably (rebuilding the index first if it vanished).

        ``root_synced_next``: the caller syncs the state directory next (a record written
        into place), which makes a running run's marker durable with it: no sync of its own.
        """
        where = self.path(name)
        try:
            try:
                fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # the index was removed under us: rebuild it
                rebuild()
                fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
            if where.parent == self.folder:
                fsync_dir(self.folder)
            elif not root_synced_next:
                fsync_dir(self.root)
        except OSError as exc:
            raise StorageError(where, f"cannot update the due index: {problem(exc)}; "
                                      "the run is unchanged") from None

    def remove(self, name: str) -> None:
        """Drop an entry (best effort: a stale entry only costs a later tick one look at the run)."""
        with suppress(OSError):
            os.unlink(self.path(name))
        if name in self._legacy:  # where an older tinywf kept a running run's entry (or a hand-made copy)
            self._legacy.discard(name)
            with suppress(OSError):
                os.unlink(self.folder / name)

    def scan(self, rebuild: Callable[[], None]) -> dict[str, list[tuple[datetime, str]]]:
        """Every entry, by run id: ``(due, name)``."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            rebuild()
            try:
                names = os.listdir(self.folder)
            except OSError as exc:
                raise StorageError(self.folder, f"cannot list: {problem(exc)}") from None
        except OSError as exc:
            raise StorageError(self.folder, f"cannot list: {problem(exc)}") from None
        try:
            markers = [RUNNING + n[len(MARKER):] for n in os.listdir(self.root) if n.startswith(MARKER)]
        except OSError as exc:
            raise StorageError(self.root, f"cannot list: {problem(exc)}") from None
        self._legacy = {n for n in names if n.startswith(RUNNING)}
        found: dict[str, list[tuple[datetime, str]]] = {}
        for name in names + markers:
            ms, sep, run_id = name.partition("~")
            if not sep or not ms.isdigit() or not is_run_id(run_id):
                continue
            when = datetime.fromtimestamp(int(ms) / 1000, UTC)
            found.setdefault(run_id, []).append((when, name))
        return found
