"""Store targets: ``self.store_target`` reaches the store a run lives in (in memory too), and no
string is silently turned into a new, empty store where an existing one was meant."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from clihelpers import NOW, TINYWF, InProcessCli, assert_error, clean_env, describe, make_workspace

from tinywf_cli import RunLocked, Runtime, StoreNotFound, Workflow, step
from tinywf_cli.authoring.commands import Command
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Command, Any, Any]


def poke(store: str, run_id: str) -> bool:
    Runtime(store).send(run_id, "q", 1)
    return True


class Child(Workflow):
    """Sends its parent an event from an action, through ``Runtime(self.store_target)``."""

    @step
    def go(self) -> Steps:
        yield self.action("poke", poke, self.store_target, self.state["parent"])


class Parent(Workflow):
    """Starts a Child and waits for what it sends."""

    @step
    def go(self) -> Steps:
        yield self.start_child("c", Child, input={"parent": self.run_id})
        self.state["got"] = yield self.wait_event("q", type=int)


def test_runtime_of_the_store_target_reaches_the_memory_store(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rt = MemoryRuntime()
    rt.start(Parent, run_id="p")
    assert rt.get("p.c").error is None and rt.get("p.c").status == "finished"
    assert rt.get("p").status == "finished" and rt.get("p").state == {"got": 1}
    assert os.listdir(tmp_path) == []  # no directory made for the memory store


def test_a_memory_store_target_names_that_store_and_its_clock() -> None:
    rt, other = MemoryRuntime("2026-01-01T00:00:00Z"), MemoryRuntime()
    assert rt.store_target.startswith("memory://") and rt.store_target != other.store_target
    again = Runtime(rt.store_target)
    assert again.store is rt.store and again.clock is rt.clock  # the time the tests move by hand
    rt.start(Parent, run_id="p")
    assert again.get("p").updated_at.isoformat() == "2026-01-01T00:00:00+00:00"
    with pytest.raises(StoreNotFound, match="no in-memory store of this process") as refused:
        Runtime("memory://0123456789ab")
    assert refused.value.exit_code == 2


def poke_myself(store: str, run_id: str) -> str:
    try:
        Runtime(store).send(run_id, "q", 1)
    except RunLocked:
        return "refused"
    return "sent"


class Myself(Workflow):
    """Uses Runtime on its own run from an action."""

    @step
    def go(self) -> Steps:
        self.state["self"] = yield self.action("self", poke_myself, self.store_target, self.run_id)


def test_an_action_on_its_own_run_in_memory_is_refused_at_once() -> None:
    rt = MemoryRuntime()
    assert rt.start(Myself, run_id="me").state == {"self": "refused"}


@pytest.mark.parametrize("target", ["postgresq://u:secret@db/app", "postgresql:/db/app", "memory:/abc",
                                    "http://example.com/runs"])
def test_a_target_that_looks_like_a_url_is_never_made_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   target: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreNotFound, match="not a store") as refused:
        Runtime(target).start(Parent, run_id="p")
    assert "secret" not in refused.value.message
    assert os.listdir(tmp_path) == []


def test_a_state_directory_given_to_runtime_is_made_on_first_start(tmp_path: Path) -> None:
    rt = MemoryRuntime()
    Runtime(tmp_path / "made" / "state", clock=rt.clock).start(Myself, run_id="me")
    assert (tmp_path / "made" / "state" / "me.json").is_file()


# -- through the command -------------------------------------------------------------------------------


@pytest.fixture
def ws(tmp_path: Path) -> InProcessCli:
    """A workspace with the example flows, driven through ``main`` in this process."""
    return InProcessCli(make_workspace(tmp_path / "ws"))


def entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_run_with_a_store_that_names_no_directory_is_refused_and_makes_nothing(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws")
    before = entries(workspace)
    result = subprocess.run([TINYWF, "run", "flows/simple.py", "--store", "runs"], cwd=workspace,
                            env=clean_env(TINYWF_NOW=NOW), capture_output=True, text=True, check=False)
    assert_error(result, 2, "runs: no such directory", "--store", "--state-dir")
    result = subprocess.run([TINYWF, "run", "flows/simple.py"], cwd=workspace, capture_output=True, text=True,
                            env=clean_env(TINYWF_NOW=NOW, TINYWF_STORE=str(tmp_path / "missing")), check=False)
    assert_error(result, 2, "missing: no such directory", "$TINYWF_STORE", "$TINYWF_STATE_DIR")
    assert entries(workspace) == before and not (tmp_path / "missing").exists()


@pytest.mark.parametrize("command", [["list"], ["show", "s1"], ["tick"], ["worker", "--poll", "0.5"],
                                     ["copy", "--to", "elsewhere"]])
def test_every_command_refuses_a_store_that_names_no_directory(ws: InProcessCli, command: list[str]) -> None:
    before = entries(ws.workspace)
    assert_error(ws(*command[:1], "--store", "runs", *command[1:], state_dir=False), 2, "runs: no such directory")
    assert_error(ws(*command, state_dir=False, env={"TINYWF_STORE": "runs"}), 2, "$TINYWF_STORE")
    assert entries(ws.workspace) == before


def test_a_store_url_of_no_known_kind_is_refused_and_makes_nothing(ws: InProcessCli) -> None:
    before = entries(ws.workspace)
    for target in ("postgresq://tinywf:pw@db/app", "postgresql:/db/app", "memory://gone"):
        line = assert_error(ws("run", "flows/simple.py", "--store", target, state_dir=False), 2)
        assert "pw" not in line
        assert_error(ws("copy", "--to", target), 2)
    assert entries(ws.workspace) == before


def test_state_dir_and_the_default_make_a_new_directory_and_store_names_it_after(ws: InProcessCli) -> None:
    folder = ws.workspace
    made = ws("run", "flows/simple.py", "--run-id", "s1", "--state-dir", "new/state", state_dir=False)
    assert made.returncode == 0, describe(made)
    assert (folder / "new" / "state" / "s1.json").is_file()
    shown = ws("show", "s1", "--store", "new/state", "--json", state_dir=False)  # it exists now
    assert shown.returncode == 0, describe(shown)
    env_made = ws("run", "flows/simple.py", "--run-id", "s2", state_dir=False, env={"TINYWF_STATE_DIR": "envdir"})
    assert env_made.returncode == 0 and (folder / "envdir" / "s2.json").is_file()
    default = ws("run", "flows/simple.py", "--run-id", "s3", state_dir=False)
    assert default.returncode == 0 and (folder / "state" / "s3.json").is_file()
    copied = ws("copy", "--to", "copied", "--store", "new/state", state_dir=False)
    assert copied.returncode == 0, describe(copied)  # a destination to write to: made
    assert (folder / "copied" / "s1.json").is_file()

