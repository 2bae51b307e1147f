"""The read path of ``show`` and ``list`` (``tinywf_cli.reading``) against the full one.

For runs of every flow (the examples and the test flows) in every status, both paths must
print byte-identical ``--json`` documents, draw identical screens for people, and list the
same runs with the same warnings; the read path must import neither pydantic nor the engine.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from clihelpers import TEST_FLOWS, make_workspace
from rich.console import Console

from tinywf_cli import Runtime, Workflow, step
from tinywf_cli.cli.render import runs_table, show_view
from tinywf_cli.clock import ManualClock
from tinywf_cli.errors import TinyWFError
from tinywf_cli.model import ErrorInfo
from tinywf_cli.reading import documents, files

T0 = "2026-01-01T00:00:00Z"


class Odd(Workflow):
    """Values whose printed forms differ between encoders: small and large floats, odd strings."""

    history_limit = 3

    @step
    def begin(self) -> Any:
        self.state["floats"] = [1e-5, 2.5e-05, 1e-7, -3.2e-9, 1e16, 1e20, 0.1, -0.0, 123456789.125]
        self.state["text"] = "é\u2028\x1f\x7f\"\\/😀"
        self.state["big"] = 2**70
        for i in range(6):
            self.log("note", i=i, f=i / 3e6, s="\t\n")
        return None


def runs(state: Path, workspace: Path) -> Iterator[str]:
    """Runs of every flow, in every status; yields their ids."""
    clock = ManualClock(T0)
    rt = Runtime(state, clock=clock)
    flows = sorted((workspace / "flows").glob("*.py"))
    for path in flows:
        if path.name in ("raises.py", "empty.py"):
            continue
        try:
            doc = rt.start(str(path), run_id=path.stem.replace("_", "-"))
        except TinyWFError:
            continue  # a flow that needs input it was not given
        yield doc.run_id
        if doc.status == "waiting":
            paused = rt.start(str(path), run_id=f"{doc.run_id}-paused")
            rt.pause(paused.run_id)
            yield paused.run_id
            cancelled = rt.start(str(path), run_id=f"{doc.run_id}-cancelled")
            rt.cancel(cancelled.run_id, reason="enough")
            yield cancelled.run_id
    os.environ["TINYWF_TEST_FAIL"] = "1"
    try:
        failed = rt.start(str(workspace / "flows" / "fail.py"), run_id="failed")
    finally:
        del os.environ["TINYWF_TEST_FAIL"]
    assert failed.status in ("failed", "waiting")
    yield failed.run_id
    odd = rt.start(Odd, run_id="odd")
    assert odd.status == "finished"
    yield odd.run_id
    clock.advance(timedelta(minutes=5))
    rt.tick()  # timers come due: runs move on
    # blocked and running (as a process that died leaves it): set by hand through the store
    for run_id, status in (("blocked", "blocked"), ("running", "running")):
        rt.start(str(workspace / "flows" / "guess_game.py"), run_id=run_id)
        with rt.store.open(run_id, 1) as session:
            head = session.load().head
            head.status = status
            head.pending = []
            if status == "blocked":
                head.error = ErrorInfo(type="StepRemoved", message="gone")
            session.commit(head, [])
        yield run_id


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("read")
    workspace = make_workspace(root / "ws")
    state = root / "state"
    here = os.getcwd()
    os.chdir(workspace)  # flows write files beside them (an outbox, marks): never into the repository
    try:
        ids = list(runs(state, workspace))
    finally:
        os.chdir(here)
    return state, ids


def screen(renderable: Any) -> str:
    out = io.StringIO()
    Console(width=100, file=out, force_terminal=True, color_system="truecolor").print(renderable, crop=False)
    return out.getvalue()


def test_every_flow_has_runs_in_every_status(state: tuple[Path, list[str]]) -> None:
    root, ids = state
    statuses = {Runtime(root).get(r).status for r in ids}
    assert statuses == {"running", "waiting", "paused", "blocked", "finished", "failed", "cancelled"}
    assert {"fail", "guess-game", "simple"} <= set(ids) and len(TEST_FLOWS) > 1


@pytest.mark.parametrize("last", [None, 0, 1, 3, 50])
def test_show_prints_the_same_bytes_on_both_paths(state: tuple[Path, list[str]], last: int | None) -> None:
    root, ids = state
    rt = Runtime(root, clock=ManualClock(T0))
    now = ManualClock("2026-01-01T00:10:00Z").now()
    for run_id in ids:
        full = rt.get(run_id, last=last)
        fast = files.show(root, run_id, last)  # never Fallback for a healthy record
        assert fast.json() == full.model_dump_json(indent=2), run_id
        assert fast.omitted == full.omitted
        assert screen(show_view(fast, now, " --state-dir x")) == screen(show_view(full, now, " --state-dir x")), run_id


@pytest.mark.parametrize("status", [None, "waiting", "finished", "unreadable", "running"])
def test_list_prints_the_same_bytes_on_both_paths(state: tuple[Path, list[str]], tmp_path: Path,
                                                  status: str | None) -> None:
    root, _ = state
    copy = tmp_path / "state"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    (copy / "broken.json").write_text("{not json")
    (copy / "simple.json").write_text(json.dumps({"tinywf": 3, "run": {"run_id": "simple"}}))  # fails the model
    rt = Runtime(copy, clock=ManualClock(T0))
    now = ManualClock("2026-01-01T00:10:00Z").now()
    full = rt.list(status)
    fast = files.list_runs(copy, status)
    assert fast.json() == full.model_dump_json(indent=2)
    assert fast.problems == full.problems and (status not in (None, "unreadable") or len(fast.problems) == 2)
    assert screen(runs_table(fast, now)) == screen(runs_table(full, now))  # type: ignore[arg-type]


def test_records_only_the_full_path_may_judge_are_handed_to_it(state: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, _ = state
    copy = tmp_path / "state"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    record = json.loads((copy / "odd.json").read_bytes())
    record["run"]["version"] = "1"  # pydantic's lax mode reads it; the read path does not guess
    (copy / "odd.json").write_text(json.dumps(record))
    with pytest.raises(documents.Fallback):
        files.show(copy, "odd", None)
    for bad in ("nope", "../x"):
        with pytest.raises(documents.Fallback):
            files.show(copy, bad, None)


def test_floats_print_as_pydantic_prints_them() -> None:
    import random
    import struct

    from pydantic import TypeAdapter

    adapter = TypeAdapter(Any)
    rng = random.Random(13)
    values = [rng.uniform(-1, 1) * 10 ** rng.randint(-9, 22) for _ in range(20_000)]
    values += [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(20_000)]
    values = [v for v in values if v == v and abs(v) != float("inf")]
    assert all(documents.encode(v) == adapter.dump_json(v).decode() for v in values)


CHECK_IMPORTS = """
import sys
from tinywf_cli.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    heavy = sorted(m for m in ("pydantic", "tinywf_cli.engine.engine", "tinywf_cli.runtime.runtime",
                               "tinywf_cli.model", "rich") if m in sys.modules)
    print("IMPORTS", exit.code, ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(("argv", "heavy"), [
    (["show", "simple", "--json"], ""),
    (["list", "--json"], ""),
    (["show", "simple"], "rich"),
    (["list"], "rich"),
])
def test_show_and_list_import_neither_pydantic_nor_the_engine(state: tuple[Path, list[str]], argv: list[str],
                                                                heavy: str) -> None:
    root, _ = state
    done = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, *argv, "--state-dir", str(root)],
                          capture_output=True, text=True, check=False, env=dict(os.environ, TINYWF_NOW=T0))
    line = done.stderr.strip().splitlines()[-1]
    assert line == f"IMPORTS 0 {heavy}".strip(), done.stderr
