"""Workload C (issue 6): tinywf against DBOS Transact on its SQLite system database, and both against the disk."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from context import Bench, CountingStore, NullStore, frames_written
from disk import append_floor_seconds, design_floor_seconds
from effects import CRASH_ENV, executions
from measure import (
    BENCH_DIR,
    Section,
    Stats,
    Table,
    alternate,
    check,
    num,
    python_command,
    ratio,
    run_process,
    timed,
    tinywf_command,
)
from sample_flows import AwaitAnswer, Loop, ManyActions, ThreeActions, ThreeSteps
from tinywf_cli import Runtime, Workflow
from tinywf_cli.testing import ManualClock

TINYWF_DURABILITY = ("FileStore: a commit of a running run is one checksummed frame appended to its wal + "
                     "fdatasync; the record is an atomic, fsynced replace (temp fsync, rename, dir fsync) at "
                     "the create, a pause, the end and every 128 frames; transitions ride with the next commit")
THROUGHPUT_GOAL = 4.0
FLAT_GOAL = 1.3
FLOOR_GOAL = 2.0
COLD_GOAL = 3.0
STEPS = "tinywf, 3 steps × 1 action"
ACTIONS = "tinywf, 1 step × 3 actions"


class Dbos:
    """DBOS Transact in this process, launched on a fresh SQLite database when asked."""

    def __init__(self, bench: Bench, app: ModuleType) -> None:
        self.bench = bench
        self.app = app
        self.settings = "journal_mode=?, synchronous=?"

    @contextmanager
    def launched(self, label: str) -> Iterator[Path]:
        """DBOS launched on a new database (not timed); shut down afterwards."""
        folder = self.bench.scratch.new(label)
        database = folder / "dbos.sqlite"
        self.app.launch(database)
        try:
            yield database
        finally:
            self.app.shutdown()
            self.settings = self.app.sqlite_settings(database)

    @property
    def durability(self) -> str:
        """What DBOS's SQLite database was found to use."""
        return f"SQLite system database at its defaults ({self.settings})"


def start_many(runtime: Runtime, flow: type[Workflow[Any]], count: int, payload: dict[str, Any] | None = None) -> float:
    """Seconds to start ``count`` runs of ``flow`` one after the other; each must finish."""
    last: list[str] = []

    def go() -> None:
        for _ in range(count):
            last.append(runtime.start(flow, input=payload).status)

    seconds = timed(go)
    assert set(last) == {"finished"}, set(last)
    return seconds


def throughput(bench: Bench, dbos: Dbos, section: Section) -> None:
    """C1: 1,000 workflows of 3 durable steps, sequentially, in one process."""
    count = bench.size(1_000, 50)
    checkpoints: dict[str, float] = {}
    record = b""
    frames: dict[str, list[int]] = {}

    def tinywf(name: str, flow: type[Workflow[Any]]) -> Callable[[], float]:
        def go() -> float:
            nonlocal record
            store = CountingStore(bench.scratch.new("throughput"))
            with frames_written() as sizes:
                seconds = start_many(Runtime(store), flow, count)
            checkpoints[name] = store.checkpoints / count
            frames[name] = sizes
            record = max(store.root.glob("*.json")).read_bytes()
            return seconds

        return go

    def peer() -> float:
        with dbos.launched("throughput"):
            return timed(lambda: [dbos.app.three_steps() for _ in range(count)])

    def floor() -> float:
        sizes = frames[STEPS]
        appends = round(len(sizes) / count)
        replaces = round(checkpoints[STEPS]) - appends
        frame = b"x" * (sorted(sizes)[len(sizes) // 2] - 1) + b"\n"
        with bench.scratch.folder("floor") as folder:
            return sum(design_floor_seconds(folder, record, frame, replaces, appends) for _ in range(count))

    results = alternate({STEPS: tinywf(STEPS, ThreeSteps), ACTIONS: tinywf(ACTIONS, ThreeActions),
                         "DBOS, 3 steps": peer, "floor": floor}, bench.reps)
    rates = {name: stats.inverted(count) for name, stats in results.items()}
    base = rates["DBOS, 3 steps"]
    table = Table(["side", "durability", "checkpoints per workflow", "workflows/s", "vs DBOS"])
    for name in (STEPS, ACTIONS):
        table.add(name, TINYWF_DURABILITY, num(checkpoints[name], 1), rates[name].cell(0),
                  ratio(rates[name].median, base.median))
    table.add("DBOS, 3 steps", dbos.durability, "(SQLite transactions)", base.cell(0), "1.00×")
    appends = round(len(frames[STEPS]) / count)
    table.add(f"disk floor: {round(checkpoints[STEPS]) - appends} atomic replaces of tinywf's record and "
              f"{appends} frame appends per workflow", "the same fsynced writes, nothing else",
              num(checkpoints[STEPS], 1), rates["floor"].cell(0), ratio(rates["floor"].median, base.median))
    section.note(f"**C1. Throughput.** {count:,} workflows of three durable steps, one after the other in one "
                 f"process; a fresh state directory / database per sample (DBOS launched before the clock "
                 f"starts). {bench.reps} samples, alternating. Checkpoints are the durable commits (the run's "
                 "create, each action's result, the end); the floor row is what those same writes cost on "
                 "this disk with nothing else.")
    section.table(table)
    best = rates[STEPS]
    section.goal(f"C1 ≥ {THROUGHPUT_GOAL:.0f}× DBOS's workflows/s (3 steps × 1 action)",
                 best.median >= THROUGHPUT_GOAL * base.median,
                 f"{num(best.median, 0)} vs {num(base.median, 0)} wf/s = {ratio(best.median, base.median)}")


def sequential_steps(bench: Bench, dbos: Dbos, section: Section) -> None:
    """C2 and C6: one workflow of N sequential durable steps; the disk's floor and the engine alone beside them."""
    sizes = (10, 100) if bench.quick else (10, 100, 1_000, 5_000)
    frame = 0
    checkpoints: dict[str, float] = {}
    per_step: dict[int, dict[str, Stats]] = {}
    for n in sizes:

        def loop(n: int = n) -> float:
            nonlocal frame
            store = CountingStore(bench.scratch.new(f"loop{n}"))
            with frames_written() as written:
                seconds = start_many(Runtime(store), Loop, 1, {"n": n})
            frame = sorted(written)[len(written) // 2]
            checkpoints["loop"] = store.checkpoints / n
            return seconds / n * 1e3

        def actions(n: int = n) -> float:
            store = CountingStore(bench.scratch.new(f"actions{n}"))
            seconds = start_many(Runtime(store), ManyActions, 1, {"n": n})
            checkpoints["actions"] = store.checkpoints / n
            return seconds / n * 1e3

        def peer(n: int = n) -> float:
            with dbos.launched(f"dbos{n}"):
                return timed(lambda: dbos.app.n_steps(n)) / n * 1e3

        def floor(n: int = n) -> float:
            with bench.scratch.folder("floor") as folder:
                return append_floor_seconds(folder, b"x" * (frame - 1) + b"\n", n) * 1e3

        def engine(n: int = n) -> float:
            return start_many(Runtime(NullStore(), clock=ManualClock()), Loop, 1, {"n": n}) / n * 1e3

        per_step[n] = alternate({"loop": loop, "actions": actions, "dbos": peer, "floor": floor,
                                        "engine": engine}, bench.reps)
    table = Table(["N", "tinywf: N visits × 1 action (ms/step)", "tinywf: 1 visit × N actions (ms/step)",
                   "DBOS: N steps (ms/step)", "append floor (ms/write)", "tinywf loop vs DBOS",
                   "tinywf loop vs floor"])
    for n, row in per_step.items():
        table.add(f"{n:,}", row["loop"].cell(3), row["actions"].cell(3), row["dbos"].cell(3),
                  row["floor"].cell(3), ratio(row["loop"].median, row["dbos"].median),
                  ratio(row["loop"].median, row["floor"].median))
    section.note(f"**C2. One workflow of N sequential durable steps.** tinywf runs it two ways: one step "
                 "visit with N actions (one checkpoint per action; what a DBOS workflow of N steps is), and "
                 "one step visited N times with one action per visit (one checkpoint per visit: the "
                 "action's, which carries the transition before it). "
                 f"Durability: tinywf {TINYWF_DURABILITY}; DBOS {dbos.durability}. The floor is one append "
                 f"of the loop's median frame ({frame:,} bytes) + fdatasync per step. {bench.reps} samples, "
                 "alternating.")
    section.table(table)
    base_n = 100 if sizes[-1] > 100 else sizes[0]
    small, large = per_step[base_n], per_step[sizes[-1]]
    flat = Table(["side", f"ms/step at {base_n:,}", f"ms/step at {sizes[-1]:,}", f"{sizes[-1]:,} vs {base_n:,}"])
    for key, name in (("loop", "tinywf, N visits × 1 action"), ("actions", "tinywf, 1 visit × N actions"),
                      ("dbos", "DBOS"), ("engine", "tinywf engine, no store")):
        flat.add(name, small[key].cell(3), large[key].cell(3), ratio(large[key].median, small[key].median))
    section.table(flat)
    # One visit with N actions is what a DBOS workflow of N steps is (one function, N durable
    # steps); the loop form adds a transition checkpoint per step. Both are held to the goals.
    for key, form in (("actions", "1 visit × N actions"), ("loop", "N visits × 1 action")):
        growth = large[key].median / small[key].median
        section.goal(f"C2 flat: {sizes[-1]:,} within {FLAT_GOAL}× of {base_n:,} ({form})",
                     growth <= FLAT_GOAL, f"{growth:.2f}×")
        to_floor = large[key].median / large["floor"].median
        section.goal(f"C2 ≤ {FLOOR_GOAL:.0f}× the floor per step (N = {sizes[-1]:,}, {form})",
                     to_floor <= FLOOR_GOAL,
                     f"{num(large[key].median, 3)} vs {num(large['floor'].median, 3)} ms = {to_floor:.2f}×")

    floor_table = Table([f"per step, N = {sizes[-1]:,}", "durability", "checkpoints per step", "ms",
                         "vs disk floor"])
    base = large["floor"].median
    rows = (("append floor: the same frame appended + fdatasync", "one fdatasync'ed append per step", "1", "floor"),
            ("tinywf, N visits × 1 action", TINYWF_DURABILITY, num(checkpoints["loop"], 2), "loop"),
            ("tinywf, 1 visit × N actions", TINYWF_DURABILITY, num(checkpoints["actions"], 2), "actions"),
            ("DBOS", dbos.durability, "(SQLite transactions)", "dbos"),
            ("tinywf engine with no store (in memory)", "none", "0", "engine"))
    for name, durability, count, key in rows:
        floor_table.add(name, durability, count, large[key].cell(4), ratio(large[key].median, base))
    section.note("**C6. The floor.** The same figures against one fdatasync'ed append of the same frame on "
                 "the same disk, and the engine with a store that keeps nothing.")
    section.table(floor_table)


def cold_start(bench: Bench, dbos: Dbos, section: Section) -> None:
    """C3: whole-process cold start, fresh store and existing store."""
    python = str(python_command())
    child = str(BENCH_DIR / "child_cold.py")
    flow = str(BENCH_DIR / "cold_flow.py")
    command, about = tinywf_command()
    kept = {side: bench.scratch.new(f"cold-{side}") for side in ("cli", "lib", "dbos")}

    def process(argv: list[str], what: str, env: dict[str, str] | None = None) -> float:
        seconds, done = run_process(argv, env=env, cwd=bench.scratch.root)
        check(done, what)
        if argv[1:2] == ["run"]:
            status = json.loads(done.stdout)["status"]
            assert status == "finished", status
        return seconds * 1e3

    def cli(fresh: bool) -> Callable[[], float]:
        def go() -> float:
            state = bench.scratch.new("cold-cli") if fresh else kept["cli"]
            return process([str(command), "run", flow, "--no-input", "--json"], "tinywf run",
                           {"TINYWF_STATE_DIR": str(state)})
        return go

    def library(fresh: bool) -> Callable[[], float]:
        def go() -> float:
            state = bench.scratch.new("cold-lib") if fresh else kept["lib"]
            return process([python, child, "tinywf-lib", str(state)], "tinywf library cold start")
        return go

    def peer(fresh: bool) -> Callable[[], float]:
        def go() -> float:
            folder = bench.scratch.new("cold-dbos") if fresh else kept["dbos"]
            return process([python, child, "dbos", str(folder / "dbos.sqlite")], "DBOS cold start")
        return go

    contenders: dict[str, Callable[[], float]] = {
        "`python -c pass` (baseline)": lambda: process([python, "-c", "pass"], "python")}
    existing = not bench.quick
    if command is not None:
        contenders["`tinywf run` (CLI), new state dir"] = cli(True)
        if existing:
            contenders["`tinywf run` (CLI), existing state dir"] = cli(False)
    contenders["tinywf library (`Runtime.start`), new state dir"] = library(True)
    if existing:
        contenders["tinywf library (`Runtime.start`), existing state dir"] = library(False)
    contenders["DBOS launch + one-step workflow, new database"] = peer(True)
    if existing:
        contenders["DBOS launch + one-step workflow, existing database"] = peer(False)
        # the "existing" stores are made before the clock starts
        if command is not None:
            cli(False)()
        library(False)()
        peer(False)()
    results = alternate(contenders, bench.reps)
    base = results["`python -c pass` (baseline)"]
    dbos_new = results["DBOS launch + one-step workflow, new database"]
    table = Table(["process", "ms", "minus `python -c pass`", "DBOS (new database) ÷ this"])
    for name, stats in results.items():
        table.add(name, stats.cell(1), num(stats.median - base.median, 1), ratio(dbos_new.median, stats.median))
    section.note(f"**C3. Whole-process cold start**, spawn to exit, running a one-action (one-step) workflow "
                 f"to its end (Python's bytecode caches kept, for both sides). {bench.reps} samples, "
                 "alternating. tinywf: `tinywf run bench/cold_flow.py "
                 "--no-input --json` and the same through the library (`bench/child_cold.py`); DBOS: "
                 "`bench/child_cold.py dbos` (import, configure, launch, run, destroy).")
    section.table(table)
    if command is None:
        section.note(f"**Skipped `tinywf run`:** {about}. The library rows show what the run costs without the CLI.")
        lib = results["tinywf library (`Runtime.start`), new state dir"]
        section.goal(f"C3 `tinywf run` ≥ {COLD_GOAL:.0f}× faster than DBOS", None,
                     f"no `tinywf` command yet; the library's cold start is {ratio(dbos_new.median, lib.median)} "
                     "faster than DBOS's")
        return
    mine = results["`tinywf run` (CLI), new state dir"]
    section.goal(f"C3 `tinywf run` ≥ {COLD_GOAL:.0f}× faster than DBOS (new store)",
                 dbos_new.median >= COLD_GOAL * mine.median,
                 f"{num(mine.median, 0)} vs {num(dbos_new.median, 0)} ms = {ratio(dbos_new.median, mine.median)}")


def event_round_trip(bench: Bench, dbos: Dbos, section: Section) -> None:
    """C4: from answering a waiting run to the run finishing."""
    reps = bench.size(max(bench.reps, 10), bench.reps)
    runtime = Runtime(bench.scratch.new("events"))
    recv = Stats()
    # one random offset in each 1/reps slice of DBOS's 1-s poll interval, in random order
    offsets = [(k + bench.rng.random()) / reps for k in range(reps)]
    bench.rng.shuffle(offsets)
    delays = iter(offsets)

    def tinywf() -> float:
        run = runtime.start(AwaitAnswer)
        assert run.status == "waiting", run.status
        done: list[str] = []
        seconds = timed(lambda: done.append(runtime.resolve(run.run_id, "go", 7).status))
        assert done == ["finished"], done
        return seconds * 1e3

    def peer() -> float:
        from dbos import DBOS

        handle = DBOS.start_workflow(dbos.app.await_answer)
        time.sleep(0.1 + next(delays))  # so the sends fall all over DBOS's poll cycle
        start = time.perf_counter()
        DBOS.send(handle.workflow_id, 7, topic="go")
        arrived = handle.get_result()
        finished = time.perf_counter()
        recv.add((arrived - start) * 1e3)
        return (finished - start) * 1e3

    with dbos.launched("events"):
        results = alternate({"tinywf": tinywf, "dbos": peer}, reps)
    mine, theirs = results["tinywf"], results["dbos"]
    table = Table(["side", "durability", "ms, answer → run finished", "vs tinywf"])
    table.add("tinywf `Runtime.resolve` (advances the run itself)", TINYWF_DURABILITY, mine.cell(2), "1.00×")
    table.add("DBOS `send` → `recv` returns → workflow result", dbos.durability, theirs.cell(1),
              ratio(theirs.median, mine.median))
    table.add("DBOS `send` → `recv` returns (inside the workflow)", dbos.durability, recv.cell(1),
              ratio(recv.median, mine.median))
    section.note(f"**C4. Event round trip.** {reps} samples, alternating. DBOS on SQLite has no push "
                 "notifications: a listener thread polls for messages every "
                 "`notification_listener_polling_interval_sec` (default 1.0 s), so the expected latency is "
                 "about half of that. Each DBOS sample waits 0.1 s plus a random offset after starting the "
                 "workflow before sending; the offsets are stratified over one 1-s interval (one in each "
                 f"1/{reps} of it, in random order), so the sends cover the whole poll cycle.")
    section.table(table)


def crash_recovery(bench: Bench, dbos: Dbos, section: Section) -> None:
    """C5: kill inside step 4 of 5, restart, time to finish, count re-executions."""
    python = str(python_command())
    child = str(BENCH_DIR / "child_crash.py")
    inside = {"tinywf": Stats(), "dbos": Stats()}
    repeats: dict[str, list[str]] = {"tinywf": [], "dbos": []}

    def side(name: str) -> Callable[[], float]:
        def go() -> float:
            folder = bench.scratch.new(f"crash-{name}")
            _, first = run_process([python, child, name, "start", str(folder)], env={CRASH_ENV: "4"},
                                   cwd=folder)
            if first.returncode != -9:
                raise RuntimeError(f"{name}: the crashing process exited {first.returncode}, not SIGKILL: "
                                   f"{first.stderr[-500:]}")
            seconds, done = run_process([python, child, name, "recover", str(folder)], cwd=folder)
            check(done, f"{name} recovery")
            inside[name].add(json.loads(done.stdout.strip().splitlines()[-1])["seconds"] * 1e3)
            counts = executions(str(folder / "effects.log"))
            again = [f"step {k}" for k, v in sorted(counts.items()) if v > 1]
            missing = [k for k in range(1, 6) if k not in counts]
            seen = ", ".join(again) or "none"
            repeats[name].append(seen + (f" (never ran: {missing})" if missing else ""))
            return seconds * 1e3

        return go

    results = alternate({"tinywf": side("tinywf"), "dbos": side("dbos")}, bench.reps)
    table = Table(["side", "durability", "restart process, spawn → finished (ms)", "recovery in-process (ms)",
                   "steps run twice (per sample)"])
    table.add("tinywf: `Runtime(state).tick()` in a new process", TINYWF_DURABILITY, results["tinywf"].cell(0),
              inside["tinywf"].cell(1), "; ".join(repeats["tinywf"]))
    table.add("DBOS: `DBOS.launch()` recovers, then the result", dbos.durability, results["dbos"].cell(0),
              inside["dbos"].cell(1), "; ".join(repeats["dbos"]))
    section.note(f"**C5. Crash recovery.** A five-step workflow (one action / DBOS step each, appending to a "
                 "log to count executions) whose process SIGKILLs itself inside step 4; a new process then "
                 "recovers the run and waits for it to finish. In-process time: tinywf's `tick` call; DBOS "
                 "from `DBOS()` + `launch()` to `retrieve_workflow(...).get_result(polling_interval_sec=0.01)`; "
                 "DBOS recovers by re-enqueueing the workflow on its internal queue, which its queue thread "
                 f"polls once a second (`DEFAULT_QUEUE_POLLING_INTERVAL_SEC`). {bench.reps} samples, alternating.")
    section.table(table)
    only_in_flight = all(r == "step 4" for r in repeats["tinywf"])
    section.goal("C5 repeats only the step in flight (tinywf)", only_in_flight,
                 "; ".join(sorted(set(repeats["tinywf"]))))


def run(bench: Bench) -> Section:
    """All of issue 6's workloads, or a note when DBOS is not installed."""
    section = Section("C. tinywf vs DBOS Transact (issue 6)")
    try:
        import dbos_app
    except ImportError as exc:
        section.note(f"**Skipped:** DBOS is not installed ({exc}); `pip install -e '.[bench]'` installs it.")
        section.goal("issue 6 comparisons", None, "DBOS not installed")
        return section
    dbos = Dbos(bench, dbos_app)
    throughput(bench, dbos, section)
    sequential_steps(bench, dbos, section)
    cold_start(bench, dbos, section)
    event_round_trip(bench, dbos, section)
    crash_recovery(bench, dbos, section)
    return section
