"""Shared fixtures: an in-memory runtime, and file-store runtimes that can be "restarted"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clihelpers import Cli, InProcessCli, make_workspace
from pgserver import fresh_url
from stores import DAMAGE, STORE_KINDS, make_store

from tinywf_cli import Runtime
from tinywf_cli.clock import ManualClock
from tinywf_cli.stores.base import Store
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses a store target (``cli``, ``fast``, ``open_runtime``) against the
    kinds of store its ``stores`` mark names (default: the state directory only)."""
    if "target_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("stores")
        kinds = marker.args if marker is not None else ("file",)
        metafunc.parametrize("target_kind", kinds, indirect=True)


@pytest.fixture
def target_kind(request: pytest.FixtureRequest) -> str:
    """``file`` (a state directory) or ``postgres`` (a fresh schema): see ``pytest_generate_tests``."""
    return str(getattr(request, "param", "file"))


@pytest.fixture
def store_url(target_kind: str) -> Iterator[str | None]:
    """The PostgreSQL URL of a fresh schema for a ``postgres`` test (dropped after), else None."""
    if target_kind != "postgres":
        yield None
        return
    with fresh_url() as url:
        yield url


@pytest.fixture
def open_runtime(state_dir: Path, store_url: str | None, clock: ManualClock) -> Iterator[Callable[[], Runtime]]:
    """Open a new ``Runtime`` over the same store: calling it again is a restart."""
    opened: list[Runtime] = []

    def open_() -> Runtime:
        runtime = Runtime(store_url or state_dir, clock=clock, lock_timeout=2)
        opened.append(runtime)
        return runtime

    yield open_
    for runtime in opened:
        runtime.close()


@pytest.fixture
def cli(tmp_path: Path, store_url: str | None) -> Cli:
    """A workspace with the example and test flows, driven through the installed ``tinywf``
    (on a state directory, or on PostgreSQL for tests marked ``stores("file", "postgres")``)."""
    return Cli(make_workspace(tmp_path), store=store_url)


@pytest.fixture
def fast(cli: Cli) -> InProcessCli:
    """The same workspace through ``main`` in this process: for setting runs up quickly."""
    return InProcessCli(cli.workspace, cli.state_dir, store=cli.store)


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
