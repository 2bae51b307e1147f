"""Watch every commit a store makes: for tests that "kill" a process right after commit n."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tinywf_cli.model import RunHead
from tinywf_cli.stores.base import LoadedRun, RunSession, Store
from tinywf_cli.stores.journal import Entry

Hook = Callable[[RunHead, Sequence[Entry]], None]


class HookedSession:
    """A session whose creates and commits call ``hook`` once they are done."""

    def __init__(self, inner: RunSession, hook: Hook) -> None:
        self.inner = inner
        self.hook = hook
        self.run_id = inner.run_id

    def load(self) -> LoadedRun:
        return self.inner.load()

    def create(self, head: RunHead, entries: Sequence[Entry]) -> None:
        self.inner.create(head, entries)
        self.hook(head, entries)

    def commit(self, head: RunHead, entries: Sequence[Entry]) -> None:
        self.inner.commit(head, entries)
        self.hook(head, entries)

    def delete(self) -> None:
        self.inner.delete()


def on_commit(store: Store, hook: Hook) -> None:
    """Make every session of ``store`` call ``hook`` after each create and commit."""
    real_open = store.open

    @contextmanager
    def open_(run_id: str, timeout: float, *, create: bool = False) -> Iterator[Any]:
        with real_open(run_id, timeout, create=create) as session:
            yield HookedSession(session, hook)

    store.open = open_  # type: ignore[method-assign]
