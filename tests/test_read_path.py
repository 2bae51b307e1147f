"""The read path of ``show`` and ``list`` (``tinywf_cli.reading``) against the full one.

For runs of every flow (the examples and the test flows) in every status, in a state
directory and in PostgreSQL, both paths must print byte-identical ``--json`` documents,
draw identical screens for people, and list the same runs with the same warnings; the
read path must import neither pydantic nor the engine (nor psycopg: it reads PostgreSQL
through libpq itself).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from clihelpers import TEST_FLOWS, make_workspace
from pgserver import fresh_url
from rich.console import Console

from tinywf_cli import Breaker, Limit, Runtime, Workflow, step
from tinywf_cli.cli.render import runs_table, show_view
from tinywf_cli.clock import ManualClock
from tinywf_cli.errors import RunNotFound, TinyWFError
from tinywf_cli.filters import RunFilter
from tinywf_cli.model import ErrorInfo
from tinywf_cli.reading import documents
from tinywf_cli.reading.sources import Source, source_of

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


def _broken() -> None:
    raise ConnectionError("down")


class Limited(Workflow):
    """One action under a rate and a breaker: runs wait for a token, or for the breaker to half open."""

    @step
    def begin(self) -> Any:
        if self.state.get("fail"):
            yield self.action("call", _broken, breaker=Breaker("read-path", failures=1))
        yield self.action("call", print, limit=Limit("read-path", rate="1/m").key("k"))


class Whole(Workflow):
    """A run that holds a slot for its whole life."""

    limit = Limit("read-path-whole", concurrency=1)

    @step
    def begin(self) -> Any:
        yield self.wait_event("done")


def runs(rt: Runtime, clock: ManualClock, workspace: Path) -> Iterator[str]:
    """Runs of every flow, in every status; yields their ids."""
    flows = sorted((workspace / "flows").glob("*.py"))
    for path in flows:
        if path.name in ("raises.py", "empty.py", "slow.py"):  # slow.py's action sleeps 120 s the first time
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
    # answers in the audit log (wait_end's value and via), and early events queued with theirs
    answered = rt.start(str(workspace / "flows" / "echo.py"), run_id="answered")
    rt.send(answered.run_id, "later", {"floats": [1e-7, 1e16], "text": "é\u2028😀"})
    rt.resolve(answered.run_id, "value", [2**70, -0.0, "x" * 500])
    yield answered.run_id
    for run_id, flow, values in (("limited", Limited, {}), ("rate-waits", Limited, {}),
                                 ("breaks", Limited, {"fail": True}), ("breaker-waits", Limited, {"fail": True}),
                                 ("whole", Whole, {}), ("whole-waits", Whole, {})):
        rt.start(flow, input=values, run_id=run_id)
        yield run_id
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


@dataclass
class Runs:
    """A store holding runs of every flow in every status."""

    kind: str
    #: ``--state-dir`` or ``--store``, and the target it names.
    option: str
    target: str
    ids: list[str]


@pytest.fixture(scope="module", params=["file", "postgres"])
def state(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("read")
    workspace = make_workspace(root / "ws")
    with (fresh_url() if request.param == "postgres" else _directory(root / "state")) as target:
        here = os.getcwd()
        os.chdir(workspace)  # flows write files beside them (an outbox, marks): never into the repository
        clock = ManualClock(T0)
        try:
            with full(target, clock) as rt:
                ids = list(runs(rt, clock, workspace))
        finally:
            os.chdir(here)
        yield Runs(request.param, "--store" if request.param == "postgres" else "--state-dir", target, ids)


@contextmanager
def _directory(path: Path) -> Iterator[str]:
    yield str(path)


@contextmanager
def full(target: str, clock: ManualClock | None = None) -> Iterator[Runtime]:
    """The full path's ``Runtime`` over a target, closed after."""
    rt = Runtime(target, clock=clock or ManualClock(T0))
    try:
        yield rt
    finally:
        rt.close()


@contextmanager
def read_path(target: str) -> Iterator[Source]:
    """The read path's source of a target, closed after."""
    source = source_of(target)
    try:
        yield source
    finally:
        source.close()


#: The runs ``copy_of`` damages, and the status column each keeps on PostgreSQL.
DAMAGED = {"broken": "waiting", "simple": "finished"}


@contextmanager
def copy_of(state: Runs, tmp_path: Path) -> Iterator[str]:
    """A copy of the store in which a run holds no head at all and ``simple``'s head fails the model."""
    if state.kind == "file":
        copy = tmp_path / "state"
        subprocess.run(["cp", "-a", state.target, str(copy)], check=True)
        (copy / "broken.json").write_text("{not json")
        (copy / "simple.json").write_text(json.dumps({"tinywf": 3, "run": {"run_id": "simple"}}))  # fails the model
        yield str(copy)
        return
    import psycopg

    source = state.target.rpartition("schema=")[2]
    with fresh_url() as url:
        with full(url) as rt:
            rt.list()  # makes the tables
        schema = url.rpartition("schema=")[2]
        with psycopg.connect(url.partition("?")[0], autocommit=True) as conn:
            conn.execute(f'INSERT INTO "{schema}".runs SELECT * FROM "{source}".runs')
            conn.execute(f'INSERT INTO "{schema}".journal SELECT * FROM "{source}".journal')
            conn.execute(f"INSERT INTO \"{schema}\".runs (run_id, head, status) VALUES ('broken', '[]', %s)",
                         (DAMAGED["broken"],))
            conn.execute(f'UPDATE "{schema}".runs SET head = %s WHERE run_id = %s',
                         (json.dumps({"run_id": "simple"}), "simple"))
        yield url


def edit_head(target: str, run_id: str, change: dict[str, Any]) -> None:
    """Change fields of a run's head in place (a state directory's record, or its row)."""
    if "://" not in target:
        path = Path(target) / f"{run_id}.json"
        record = json.loads(path.read_bytes())
        record["run"].update(change)
        path.write_text(json.dumps(record))
        return
    import psycopg

    schema = target.rpartition("schema=")[2]
    with psycopg.connect(target.partition("?")[0], autocommit=True) as conn:
        row = conn.execute(f'SELECT head::text FROM "{schema}".runs WHERE run_id = %s', (run_id,)).fetchone()
        assert row is not None
        head = json.loads(row[0])
        head.update(change)
        conn.execute(f'UPDATE "{schema}".runs SET head = %s WHERE run_id = %s', (json.dumps(head), run_id))


def screen(renderable: Any) -> str:
    out = io.StringIO()
    Console(width=100, file=out, force_terminal=True, color_system="truecolor").print(renderable, crop=False)
    return out.getvalue()


def test_every_flow_has_runs_in_every_status(state: Runs) -> None:
    with full(state.target) as rt:
        statuses = {rt.get(r).status for r in state.ids}
    assert statuses == {"running", "waiting", "paused", "blocked", "finished", "failed", "cancelled"}
    assert {"fail", "guess-game", "simple"} <= set(state.ids) and len(TEST_FLOWS) > 1


@pytest.mark.parametrize("last", [None, 0, 1, 3, 50])
def test_show_prints_the_same_bytes_on_both_paths(state: Runs, last: int | None) -> None:
    now = ManualClock("2026-01-01T00:10:00Z").now()
    with full(state.target) as rt, read_path(state.target) as source:
        for run_id in state.ids:
            slow = rt.get(run_id, last=last)
            fast = source.show(run_id, last)  # never Fallback for a healthy record
            assert fast.json() == slow.model_dump_json(indent=2), run_id
            assert fast.omitted == slow.omitted
            assert screen(show_view(fast, now, " --state-dir x")) == screen(show_view(slow, now, " --state-dir x")), \
                run_id


@pytest.mark.parametrize("status", [None, "waiting", "finished", "unreadable", "running"])
def test_list_prints_the_same_bytes_on_both_paths(state: Runs, tmp_path: Path, status: str | None) -> None:
    now = ManualClock("2026-01-01T00:10:00Z").now()
    with copy_of(state, tmp_path) as copy, full(copy) as rt, read_path(copy) as source:
        slow = rt.list(status)
        fast = source.list_runs(RunFilter(statuses=frozenset({status} if status else ())))
    assert fast.json() == slow.model_dump_json(indent=2)
    assert screen(runs_table(fast, now)) == screen(runs_table(slow, now))  # type: ignore[arg-type]
    assert len(slow.problems) == 2
    if state.kind == "file" or status in (None, "unreadable"):
        assert fast.problems == slow.problems
    else:  # PostgreSQL selects by the status column: it reads (and warns about) the heads of runs in that status
        assert fast.problems == [p for p in slow.problems if any(
            f"run '{run_id}'" in p for run_id, kept in DAMAGED.items() if kept == status)]


def test_records_only_the_full_path_may_judge_are_handed_to_it(state: Runs, tmp_path: Path) -> None:
    with copy_of(state, tmp_path) as copy:
        edit_head(copy, "odd", {"version": "1"})  # pydantic's lax mode reads it; the read path does not guess
        with read_path(copy) as source:
            with pytest.raises(documents.Fallback):
                source.show("odd", None)
            with pytest.raises(documents.Fallback):
                source.show("../x", None)
            if state.kind == "file":
                with pytest.raises(documents.Fallback):
                    source.show("nope", None)
            else:  # the row is not there: that needs no second opinion
                with pytest.raises(RunNotFound, match="no run 'nope'"):
                    source.show("nope", None)


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
                               "tinywf_cli.model", "psycopg", "rich") if m in sys.modules)
    print("IMPORTS", exit.code, ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(("argv", "heavy"), [
    (["show", "simple", "--json"], ""),
    (["list", "--json"], ""),
    (["show", "simple"], "rich"),
    (["list"], "rich"),
])
def test_show_and_list_import_neither_pydantic_nor_the_engine(state: Runs, argv: list[str], heavy: str) -> None:
    done = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, *argv, state.option, state.target],
                          capture_output=True, text=True, check=False, env=dict(os.environ, TINYWF_NOW=T0))
    line = done.stderr.strip().splitlines()[-1]
    assert line == f"IMPORTS 0 {heavy}".strip(), done.stderr


@pytest.mark.parametrize("state", ["postgres"], indirect=True)
def test_show_json_on_postgresql_imports_neither_pydantic_nor_the_engine_nor_psycopg(state: Runs) -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tinywf_cli", "show", "simple", "--json",
                           "--store", state.target], capture_output=True, text=True, check=False,
                          env=dict(os.environ, TINYWF_NOW=T0))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_id"] == "simple"
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "tinywf_cli.reading.database" in imported
    heavy = {name for name in imported
             if name.split(".")[0] in ("pydantic", "pydantic_core", "psycopg", "psycopg_binary")
             or name.startswith(("tinywf_cli.engine", "tinywf_cli.runtime", "tinywf_cli.model"))}
    assert heavy == set()


@pytest.mark.parametrize("state", ["postgres"], indirect=True)
def test_the_postgresql_reader_answers_alike_through_libpq_and_through_psycopg(state: Runs) -> None:
    from tinywf_cli.stores.postgres.reader import PostgresReader

    answers = []
    for use_libpq in (True, False):
        reader = PostgresReader(state.target, use_libpq=use_libpq)
        try:
            answers.append((reader.heads(), reader.heads("waiting"), [reader.run(r) for r in state.ids],
                            reader.run("nope")))
        finally:
            reader.close()
    assert answers[0] == answers[1]
    heads, waiting, shown, missing = answers[0]
    assert [r for r, _ in heads] and {r for r, _ in waiting} < {r for r, _ in heads} and missing is None
    assert all(json.loads(head)["status"] == "waiting" for _, head in waiting)
    assert all(found is not None and json.loads(found[0])["run_id"] == run_id
               for run_id, found in zip(state.ids, shown, strict=True))


def test_a_postgresql_schema_without_tables_is_the_full_path_s_to_answer(tmp_path: Path) -> None:
    from tinywf_cli.cli import main

    with fresh_url() as url:
        with pytest.raises(documents.Fallback):
            source_of(url)  # the read path creates nothing
        with pytest.raises(SystemExit) as done:
            main(["list", "--json", "--store", url])  # the full path makes the tables, and lists none
        assert done.value.code == 0
        with read_path(url) as source:  # now the read path answers
            assert source.list_runs(RunFilter()).json() == '{\n  "runs": []\n}'
