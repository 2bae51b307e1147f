"""Shared fixtures: an in-memory runtime, and file-store runtimes that can be "restarted"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clihelpers import Cli, InProcessCli, make_workspace
from stores import DAMAGE, STORE_KINDS, make_store

from tinywf_cli import Runtime
from tinywf_cli.clock import ManualClock
from tinywf_cli.store import Store
from tinywf_cli.testing import MemoryRuntime

START = "2026-01-01T00:00:00Z"


@pytest.fixture
def rt() -> MemoryRuntime:
    """A fresh in-memory runtime whose clock stands at 2026-01-01T00:00:00Z."""
    return MemoryRuntime(START)


@pytest.fixture
def clock() -> ManualClock:
    """The clock shared by every file-store runtime of a test."""
    return ManualClock(START)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A state directory for the file store (created by the store on first use)."""
    return tmp_path / "state"


@pytest.fixture
def open_runtime(state_dir: Path, clock: ManualClock) -> Callable[[], Runtime]:
    """Open a new ``Runtime`` over the same state directory: calling it again is a restart."""

    def open_() -> Runtime:
        return Runtime(state_dir, clock=clock, lock_timeout=2)

    return open_


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A workspace with the example and test flows, driven through the installed ``tinywf``."""
    return Cli(make_workspace(tmp_path))


@pytest.fixture
def fast(cli: Cli) -> InProcessCli:
    """The same workspace through ``main`` in this process: for setting runs up quickly."""
    return InProcessCli(cli.workspace, cli.state_dir)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each kind of store in turn (``tests/stores.py``)."""
    return str(request.param)


@pytest.fixture
def store(store_kind: str, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each kind in turn."""
    with make_store(store_kind, tmp_path) as made:
        yield made


@pytest.fixture
def damage(store_kind: str) -> Callable[[Store, str], None]:
    """A function that damages a run's stored data the way a bad disk or a bad hand would."""
    return DAMAGE[store_kind]
