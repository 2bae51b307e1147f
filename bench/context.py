"""What every workload is given (sizes, scratch folders), and stores that count or keep nothing."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from measure import Scratch
from tinywf_cli.errors import RunNotFound
from tinywf_cli.model import RunHead
from tinywf_cli.stores.base import LoadedRun, RunSession
from tinywf_cli.stores.files.store import FileStore
from tinywf_cli.stores.journal import Entry
from tinywf_cli.stores.memory import MemoryStore


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


class NullSession:
    """A session that keeps nothing."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def load(self) -> LoadedRun:
        """Never called by a run that never waits."""
        raise RunNotFound(self.run_id)

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Keep nothing."""

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Keep nothing."""

    def delete(self) -> None:
        """Nothing to delete."""


class NullStore(MemoryStore):
    """A store that keeps nothing: what the engine costs with no store at all.

    A run that never waits only creates and commits through its session; everything else
    is ``MemoryStore``'s, so the class keeps up with the store interface.
    """

    @contextmanager
    def open(self, run_id: str, timeout: float, *, create: bool = False) -> Iterator[RunSession]:
        """A session that keeps nothing (and takes no lock)."""
        yield NullSession(run_id)


class CountingSession:
    """A file store session that counts its durable checkpoints."""

    def __init__(self, inner: RunSession, store: CountingStore) -> None:
        self.inner = inner
        self.store = store
        self.run_id = inner.run_id

    def load(self) -> LoadedRun:
        """Load."""
        return self.inner.load()

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Count, then store the new run."""
        self.store.checkpoints += 1
        self.inner.create(head, entries)

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        """Count, then commit."""
        self.store.checkpoints += 1
        self.inner.commit(head, entries)

    def delete(self) -> None:
        """Delete."""
        self.inner.delete()


class CountingStore(FileStore):
    """A ``FileStore`` that counts its durable checkpoints (creates and commits); ``frames_written``
    tells which of them were frames appended to a wal."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.checkpoints = 0

    @contextmanager
    def open(self, run_id: str, timeout: float, *, create: bool = False) -> Iterator[RunSession]:
        """A counting session."""
        with super().open(run_id, timeout, create=create) as session:
            yield CountingSession(session, self)


@contextmanager
def frames_written() -> Iterator[list[int]]:
    """The size of every frame the file store appends to a wal while the block runs."""
    from tinywf_cli.stores.files.fileio import Appender

    sizes: list[int] = []
    real = Appender.append

    def counting(self: Appender, at: int, data: bytes) -> None:
        if self.path.suffix == ".wal":
            sizes.append(len(data))
        real(self, at, data)

    Appender.append = counting  # type: ignore[method-assign]
    try:
        yield sizes
    finally:
        Appender.append = real  # type: ignore[method-assign]
