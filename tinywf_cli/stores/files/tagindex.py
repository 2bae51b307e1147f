"""The file store's tag index: ``list --tag K=V`` reads the records of the runs with that tag,
not every record.

An entry is an empty file ``.tags/<tag>/<run id>``, ``<tag>`` being 32 hex digits of the
SHA-256 of ``KEY=VALUE`` (any value fits a file name so). Tags change rarely — at a run's
start, at a ``self.tag`` — so an entry is added and synced (its folder's entry and the file)
*before* the commit of the head that carries the tag, and removed after the commit of a head
that no longer does: a crash leaves at most a stale entry, which costs a read and is
filtered out, because the selection always checks the records themselves. A run without
tags costs nothing here.

The index is whole or absent: the first tagged commit of a state directory without ``.tags/``
builds it from every record (in ``.tags~build``, renamed into place whole, under a lock), and a
state directory without one is filtered by reading every record. Records copied in by hand
beside an index are indexed by ``tinywf tick --reindex``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from pathlib import Path

from tinywf_cli.errors import StorageError
from tinywf_cli.names import is_run_id
from tinywf_cli.stores.files.fileio import build_whole, fsync_dir, problem

TAGS_DIR = ".tags"
#: Every tagged run of a state directory, with its tags (read from the records).
Tagged = Callable[[], Iterable[tuple[str, Mapping[str, str]]]]


def tag_folder(key: str, value: str) -> str:
    """The folder name of a tag's entries."""
    return hashlib.sha256(f"{key}={value}".encode()).hexdigest()[:32]


def tag_folders(tags: Mapping[str, str]) -> frozenset[str]:
    """The folders a run with ``tags`` has entries in."""
    return frozenset(tag_folder(k, v) for k, v in tags.items())


class TagIndex:
    """The ``.tags/`` folder of a state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / TAGS_DIR

    def exists(self) -> bool:
        """Whether the index is kept here (a tagged run was written since this tinywf kept one)."""
        return os.path.isdir(self.folder)

    def add(self, run_id: str, folders: Iterable[str], tagged: Tagged) -> None:
        """Add the run's entries in ``folders`` durably (before the commit that needs them); a
        missing index is built first from ``tagged()``."""
        try:
            if not self.exists():
                self.build(tagged)
            self._add(self.folder, run_id, folders)
        except OSError as exc:
            raise StorageError(self.folder, f"cannot update the tag index: {problem(exc)}; "
                                            "the run is unchanged") from None

    @staticmethod
    def _add(folder: Path, run_id: str, names: Iterable[str]) -> None:
        for name in names:
            where = folder / name
            os.makedirs(where, 0o700, exist_ok=True)
            os.close(os.open(where / run_id, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            fsync_dir(where)
            fsync_dir(folder)  # the folder's own entry, whoever made it (two processes may race to)

    def build(self, tagged: Tagged) -> None:
        """Build a missing index from ``tagged()`` and rename it into place whole (another process
        may have built it meanwhile: then that one stands)."""
        def fill(build: Path) -> None:
            for run_id, tags in tagged():
                self._add(build, run_id, tag_folders(tags))

        build_whole(self.root, self.folder, fill, "building the tag index")

    def remove(self, run_id: str, folders: Iterable[str]) -> None:
        """Drop the run's entries in ``folders`` (best effort: a stale entry costs one read)."""
        for name in folders:
            with suppress(OSError):
                os.unlink(self.folder / name / run_id)

    def run_ids(self, tags: Mapping[str, str]) -> set[str] | None:
        """The runs that may carry every one of ``tags`` (a superset: their records decide); None
        when the state directory keeps no index (then every record must be read)."""
        if not self.exists():
            return None
        found: set[str] | None = None
        for name in tag_folders(tags):
            try:
                ids = {n for n in os.listdir(self.folder / name) if is_run_id(n)}
            except FileNotFoundError:
                return set()
            except OSError as exc:
                raise StorageError(self.folder / name, f"cannot list: {problem(exc)}") from None
            found = ids if found is None else found & ids
            if not found:
                return set()
        return found if found is not None else None

    def add_missing(self, tagged: Tagged) -> int:
        """Index the runs ``tagged()`` names whose entries are missing (building a missing index);
        how many entries were added."""
        added = 0
        try:
            if not self.exists():
                self.build(tagged)
            for run_id, tags in tagged():
                missing = [name for name in tag_folders(tags) if not os.path.lexists(self.folder / name / run_id)]
                if missing:
                    self._add(self.folder, run_id, missing)
                    added += len(missing)
        except OSError as exc:
            raise StorageError(self.folder, f"cannot update the tag index: {problem(exc)}") from None
        return added
