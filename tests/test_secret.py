"""Stores keep named secrets (the key that signs links): made once, owner-only, agreed on by racers."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from tinywf_cli.errors import InvalidRunId, StorageError
from tinywf_cli.stores.files.store import FileStore
from tinywf_cli.stores.memory import MemoryStore


def test_a_secret_is_made_once_and_readable_by_its_owner_only(state_dir: Path) -> None:
    store = FileStore(state_dir)
    key = store.secret("link")
    assert len(key) == 32 and FileStore(state_dir).secret("link") == key
    assert store.secret("other") != key
    path = state_dir / ".secret~link"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in state_dir.iterdir() if p.name.startswith(".secret")) == [
        ".secret~link", ".secret~other"]  # no temp file left behind


def test_a_secret_others_can_read_or_a_symlink_is_refused(state_dir: Path) -> None:
    store = FileStore(state_dir)
    store.secret("link")
    path = state_dir / ".secret~link"
    path.chmod(0o644)
    with pytest.raises(StorageError, match="owner only"):
        FileStore(state_dir).secret("link")
    path.unlink()
    path.symlink_to(state_dir / "elsewhere")
    with pytest.raises(StorageError):
        FileStore(state_dir).secret("link")
    with pytest.raises(InvalidRunId):
        store.secret("../x")


def _read_secret(root: str, start: object, out: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    out.put(FileStore(Path(root)).secret("link"))  # type: ignore[attr-defined]


def test_processes_racing_to_make_a_secret_agree_on_one(tmp_path: Path) -> None:
    root = tmp_path / "state"
    os.makedirs(root, mode=0o700)
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    procs = [context.Process(target=_read_secret, args=(str(root), start, out)) for _ in range(8)]
    for proc in procs:
        proc.start()
    start.set()
    keys = {out.get(timeout=30) for _ in procs}
    for proc in procs:
        proc.join(timeout=30)
    assert len(keys) == 1 and keys == {FileStore(root).secret("link")}


def test_the_memory_store_keeps_secrets_too() -> None:
    store = MemoryStore()
    assert store.secret("link") == store.secret("link") and len(store.secret("link")) == 32
    assert MemoryStore().secret("link") != store.secret("link")
