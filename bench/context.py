"""What every workload is given (sizes, scratch folders), and stores that count or keep nothing."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from measure import Scratch
from tinywf_cli.filestore import FileStore
from tinywf_cli.model import RunHead
from tinywf_cli.store import Entry, MemoryStore


@dataclass
class Bench:
    """One invocation of ``bench/run.py``."""

    quick: bool
    reps: int
    scratch: Scratch
    rng: random.Random = field(default_factory=lambda: random.Random(20260101))

    def size(self, full: int, quick: int) -> int:
        """``full`` normally, ``quick`` for a smoke run."""
        return quick if self.quick else full


class NullStore(MemoryStore):
    """A store that keeps nothing: what the engine costs with no store at all.

    Only ``create`` and ``commit`` are used by a run that never waits; everything else is
    ``MemoryStore``'s, so the class keeps up with the store interface.
    """

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Keep nothing."""

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Keep nothing."""


class CountingStore(FileStore):
    """A ``FileStore`` that counts its durable checkpoints (creates and commits)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.checkpoints = 0

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Count, then store the new run."""
        self.checkpoints += 1
        super().create(head, entries)

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Count, then commit."""
        self.checkpoints += 1
        super().commit(head, entries)
