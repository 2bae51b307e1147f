"""Child runs whose flow is a class imported from a module beside the parent's flow, or named by a
path relative to it: later processes find the child's flow, on every store and in memory."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clihelpers import Cli

from tinywf_cli import Runtime
from tinywf_cli.testing import MemoryRuntime

KID = '''
from tinywf_cli import Workflow, step


class Kid(Workflow):
    """Waits for a number."""

    @step
    def go(self):
        self.state["got"] = yield self.wait_event("go", type=int)
        self.state["from"] = FROM
'''

PARENT = '''
from tinywf_cli import Workflow, step
from {module} import Kid


class Parent(Workflow):
    """Starts one Kid and leaves it, waits for another."""

    @step
    def go(self):
        self.state["started"] = yield self.start_child("bg", Kid)
        self.state["kid"] = yield self.child("kid", Kid)
'''

#: Where the child's module sits: beside the parent's flow, or in a folder under it.
LAYOUTS = {"beside": "kid", "subfolder": "sub.kid"}


def write_family(folder: Path, module: str, where: str = "flows") -> None:
    """``parent.py`` in ``folder`` importing ``Kid`` from ``module`` (a file under ``folder``)."""
    kid = folder.joinpath(*module.split(".")).with_suffix(".py")
    kid.parent.mkdir(parents=True, exist_ok=True)
    kid.write_text(KID.lstrip() + f"\n\nFROM = {where!r}\n", encoding="utf-8")
    (folder / "parent.py").write_text(PARENT.format(module=module).lstrip(), encoding="utf-8")


@pytest.mark.stores("file", "postgres")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_child_class_imported_beside_the_flow_is_found_by_later_commands(cli: Cli, layout: str) -> None:
    write_family(cli.workspace / "flows", LAYOUTS[layout])
    doc = cli.start("flows/parent.py", "P")
    assert doc["status"] == "waiting" and doc["state"] == {"started": "P.bg"}
    # each command below is a process of its own: none has the flows folder on its import path
    started = cli.json("resolve", "P.bg", "go", "1")
    assert started["status"] == "finished" and started["state"] == {"got": 1, "from": "flows"}
    assert started["workflow"] == f"{LAYOUTS[layout]}:Kid"
    waited = cli.json("resolve", "P.kid", "go", "2")
    assert waited["status"] == "finished" and waited["parent"] == "P"
    parent = cli.json("show", "P")
    assert parent["status"] == "finished"
    assert parent["state"] == {"started": "P.bg", "kid": {"got": 2, "from": "flows"}}


@pytest.fixture
def forget_modules(tmp_path: Path) -> Iterator[None]:
    """Take the test's own modules and import path entries back out after it."""
    path = list(sys.path)
    yield None
    sys.path[:] = path
    forget(tmp_path)


def forget(folder: Path) -> None:
    """What a process that never loaded ``folder``'s flows would not have: its modules, its import path."""
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(folder)):
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not p.startswith(str(folder))]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.usefixtures("forget_modules")
def test_a_child_class_from_a_module_is_found_by_a_new_runtime_in_memory(tmp_path: Path, layout: str) -> None:
    flows = tmp_path / "flows"
    write_family(flows, LAYOUTS[layout])
    rt = MemoryRuntime()
    assert rt.start(str(flows / "parent.py"), run_id="P").status == "waiting"
    forget(flows)
    later = Runtime(rt.store, clock=rt.clock)  # a new loader, as a later process has, on the same runs
    assert later.resolve("P.bg", "go", 1).state == {"got": 1, "from": "flows"}
    assert later.resolve("P.kid", "go", 2).status == "finished"
    assert rt.get("P").state == {"started": "P.bg", "kid": {"got": 2, "from": "flows"}}


CLAIM = '''
from tinywf_cli import Workflow, step


class ExpenseClaim(Workflow):
    """Pays through a child named by a path relative to this file."""

    @step
    def go(self):
        self.state["payout"] = yield self.child("payout", "payout.py")
'''

PAYOUT = '''
from tinywf_cli import Workflow, step


class Payout(Workflow):
    @step
    def pay(self):
        self.state["paid"] = True
'''


@pytest.mark.parametrize("layout", ["claims", "sub.claims"])
@pytest.mark.usefixtures("forget_modules")
def test_a_child_named_by_a_relative_path_is_found_beside_a_parent_class_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    flows = tmp_path / "flows"
    claims = flows.joinpath(*layout.split(".")).with_suffix(".py")
    claims.parent.mkdir(parents=True, exist_ok=True)
    claims.write_text(CLAIM.lstrip(), encoding="utf-8")
    (claims.parent / "payout.py").write_text(PAYOUT.lstrip(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(flows))
    monkeypatch.chdir(tmp_path)  # not the folder of payout.py
    module = __import__(layout, fromlist=["ExpenseClaim"])
    rt = MemoryRuntime()
    run = rt.start(module.ExpenseClaim, run_id="claim")
    assert run.error is None and run.status == "finished"
    assert run.state == {"payout": {"paid": True}}
    folder = "flows/sub" if "." in layout else "flows"
    assert rt.get("claim.payout").workflow == f"{folder}/payout.py:Payout"


@pytest.mark.usefixtures("forget_modules")
def test_a_child_module_whose_name_another_folder_took_runs_its_own_file(tmp_path: Path) -> None:
    for where in ("a", "b"):
        write_family(tmp_path / where, "kid", where)
    state = tmp_path / "state"
    Runtime(state).start(str(tmp_path / "b" / "parent.py"), run_id="B")
    forget(tmp_path / "b")
    sys.path.insert(0, str(tmp_path / "a"))
    import kid  # a worker that served folder a first holds its `kid`

    assert kid.FROM == "a"
    done = Runtime(state).resolve("B.kid", "go", 1)
    assert done.state == {"got": 1, "from": "b"}
