"""Many runs at once: ``tick``/``worker`` with ``concurrency=N`` advance up to N runs in N
threads, each run held by one thread, and the report says what one thread would have said.

The actions here meet at barriers and events instead of sleeping: a barrier of N that is
passed proves N actions ran at once; the events fix the order in which runs finish.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from clihelpers import Cli, InProcessCli, at
from pgserver import fresh_url

from tinywf_cli import Runtime, Workflow, step
from tinywf_cli.authoring.loader import FlowLoader
from tinywf_cli.errors import BadInput
from tinywf_cli.runtime.base import _Hands
from tinywf_cli.testing import MemoryRuntime

#: Longest an action waits for its peers: only a broken test ever waits this long.
PATIENCE = 20


class Hub:
    """What the actions of one test share: a barrier, events, and what they saw."""

    barrier: threading.Barrier | None = None
    events: ClassVar[dict[str, threading.Event]] = {}
    lock = threading.Lock()
    in_flight = 0
    most = 0
    on_start: Callable[[str], None] | None = None

    @classmethod
    def reset(cls, parties: int | None = None) -> None:
        cls.barrier = threading.Barrier(parties, timeout=PATIENCE) if parties else None
        cls.events = {}
        cls.in_flight = cls.most = 0
        cls.on_start = None

    @classmethod
    def event(cls, name: str) -> threading.Event:
        with cls.lock:
            return cls.events.setdefault(name, threading.Event())


def meet(run_id: str) -> str:
    """Count the actions in flight, and wait at the hub's barrier (when there is one)."""
    with Hub.lock:
        Hub.in_flight += 1
        Hub.most = max(Hub.most, Hub.in_flight)
    try:
        if Hub.on_start is not None:
            Hub.on_start(run_id)
        if Hub.barrier is not None:
            Hub.barrier.wait()
        gate = Hub.events.get(f"go-{run_id}")
        if gate is not None:
            assert gate.wait(PATIENCE), f"{run_id} was never let go"
        return run_id
    finally:
        with Hub.lock:
            Hub.in_flight -= 1


class Napper(Workflow):
    """Waits a minute, then meets the others."""

    @step
    def nap(self):  # type: ignore[no-untyped-def]
        yield self.sleep("nap", 60)
        return self.work

    @step
    def work(self):  # type: ignore[no-untyped-def]
        self.state["met"] = yield self.action("meet", meet, self.run_id)


@pytest.fixture
def napping() -> Callable[[int], MemoryRuntime]:
    """``napping(n)``: a memory runtime with ``n`` Napper runs (``r0``...), all due."""
    def make(count: int) -> MemoryRuntime:
        rt = MemoryRuntime()
        for i in range(count):
            assert rt.start(Napper, run_id=f"r{i}").status == "waiting"
        rt.clock.advance(60)
        return rt

    Hub.reset()
    return make


def test_up_to_concurrency_runs_are_advanced_at_once(napping: Callable[[int], MemoryRuntime]) -> None:
    rt = napping(6)
    Hub.reset(parties=3)  # passed only by three actions at once: never by one thread after another
    report = rt.tick(concurrency=3)
    assert sorted((a.run_id, a.status) for a in report.advanced) == [(f"r{i}", "finished") for i in range(6)]
    assert report.due == 6 and report.skipped == []
    assert Hub.most == 3


def test_concurrency_1_advances_one_run_after_the_other_in_this_thread(
        napping: Callable[[int], MemoryRuntime]) -> None:
    rt = napping(4)
    threads: set[int] = set()
    Hub.on_start = lambda run_id: threads.add(threading.get_ident())
    report = rt.tick(concurrency=1)
    assert [a.run_id for a in report.advanced] == ["r0", "r1", "r2", "r3"]
    assert Hub.most == 1 and threads == {threading.get_ident()}


def test_advanced_lists_the_runs_in_the_order_they_finished(napping: Callable[[int], MemoryRuntime]) -> None:
    rt = napping(3)
    for i in range(3):
        Hub.event(f"go-r{i}")
    started: list[str] = []

    def on_start(run_id: str) -> None:
        with Hub.lock:
            started.append(run_id)
            if len(started) == 3:  # all three in flight: let them go last first
                Hub.events["go-r2"].set()

    Hub.on_start = on_start
    finished: list[str] = []

    def release_next(run_id: str) -> None:
        finished.append(run_id)
        following = {"r2": "go-r1", "r1": "go-r0"}.get(run_id)
        if following:
            Hub.events[following].set()

    watcher = _finishing(rt, ["r0", "r1", "r2"], release_next)
    report = rt.tick(concurrency=3)
    watcher.join(PATIENCE)
    assert [a.run_id for a in report.advanced] == ["r2", "r1", "r0"] == finished


def _finishing(rt: Runtime, run_ids: list[str], then: Callable[[str], None]) -> threading.Thread:
    """A thread that calls ``then(run_id)`` as each run is seen finished, in that order."""
    def watch() -> None:
        left = set(run_ids)
        stop = threading.Event()
        while left and not stop.wait(0.001):
            for run_id in sorted(left):
                if rt.store.head(run_id).status == "finished":
                    left.discard(run_id)
                    then(run_id)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_limit_counts_the_runs_in_flight(napping: Callable[[int], MemoryRuntime]) -> None:
    rt = napping(5)
    report = rt.tick(limit=2, concurrency=8)
    assert len(report.advanced) == 2
    assert sum(rt.get(f"r{i}").status == "finished" for i in range(5)) == 2


def test_a_stopped_worker_takes_no_run_and_finishes_those_in_flight(
        napping: Callable[[int], MemoryRuntime]) -> None:
    rt = napping(8)
    stop = threading.Event()
    Hub.reset(parties=4)  # four in flight at once, then the worker is told to stop
    Hub.on_start = lambda run_id: stop.set() if Hub.in_flight == 4 else None
    reports: list[Any] = []
    rt.work(stop, poll=0.01, concurrency=4, on_tick=reports.append)
    statuses = [rt.get(f"r{i}").status for i in range(8)]
    assert statuses.count("finished") == 4 and statuses.count("waiting") == 4
    assert [len(r.advanced) for r in reports] == [4]


class Later(Workflow):
    """Waits two minutes, then meets the others."""

    @step
    def nap(self):  # type: ignore[no-untyped-def]
        yield self.sleep("nap", 120)
        self.state["met"] = yield self.action("meet", meet, self.run_id)


def test_a_worker_takes_a_run_that_comes_due_while_a_slow_one_is_in_flight() -> None:
    """A pass does not wait for its runs: the run that comes due (the clock moved on) while the
    first one's action still waits is advanced, and only its start lets that one go."""
    Hub.reset()
    rt = MemoryRuntime()
    rt.start(Napper, run_id="slow")
    rt.start(Later, run_id="later")
    rt.clock.advance(60)
    Hub.event("go-slow")
    stop, slow_started = threading.Event(), threading.Event()

    def on_start(run_id: str) -> None:
        if run_id == "slow":
            slow_started.set()
        if run_id == "later":
            Hub.events["go-slow"].set()
            stop.set()

    Hub.on_start = on_start
    reports: list[Any] = []
    worker = threading.Thread(target=rt.work, args=(stop,),
                              kwargs={"poll": 0.01, "concurrency": 2, "on_tick": reports.append})
    worker.start()
    assert slow_started.wait(PATIENCE)
    rt.clock.advance(60)  # "later" comes due while "slow" is in flight
    worker.join(PATIENCE)
    assert not worker.is_alive()
    assert rt.get("slow").status == rt.get("later").status == "finished"
    assert sorted(a.run_id for r in reports for a in r.advanced) == ["later", "slow"]


class Interrupted(Workflow):
    @step
    def nap(self):  # type: ignore[no-untyped-def]
        yield self.sleep("nap", 60)
        yield self.action("stop", _interrupt)


def _interrupt() -> None:
    if Hub.barrier is not None:  # the first time: with the run beside it in flight
        Hub.barrier.wait()
        raise KeyboardInterrupt


def test_an_interrupt_in_a_thread_ends_the_tick_once_the_other_runs_are_done() -> None:
    """Without the CLI's handlers a KeyboardInterrupt is taken as real, in a thread too: the
    tick raises it, after the run beside it finished; the interrupted run is left running."""
    Hub.reset(parties=2)
    rt = MemoryRuntime()
    rt.start(Interrupted, run_id="a")
    rt.start(Napper, run_id="b")
    rt.clock.advance(60)
    with pytest.raises(KeyboardInterrupt):
        rt.tick(concurrency=4)
    assert rt.get("a").status == "running" and rt.get("b").status == "finished"
    Hub.reset()
    assert [a.run_id for a in rt.tick(concurrency=4).advanced] == ["a"]  # recovered


class Kid(Workflow):
    @step
    def nap(self):  # type: ignore[no-untyped-def]
        yield self.sleep("nap", 60)
        self.state["done"] = yield self.action("meet", meet, self.run_id)


class Parent(Workflow):
    """Starts a child, then waits on its own timer, due at the same instant as the child's."""

    @step
    def wait(self):  # type: ignore[no-untyped-def]
        # the child's id sorts first: it is handed out before its parent, and wakes it meanwhile
        self.state["kid"] = yield self.start_child("kid", Kid, run_id=f"k{self.run_id}")
        yield self.sleep("nap", 60)


def test_children_and_parents_in_many_threads_all_end_in_one_tick() -> None:
    """Children end in some threads and wake their parents while other threads advance those
    parents for their own timers: every run ends, none is reported locked by another process."""
    Hub.reset()
    rt = MemoryRuntime()
    for i in range(12):
        rt.start(Parent, run_id=f"p{i}")
    rt.clock.advance(60)
    report = rt.tick(concurrency=8)
    assert report.skipped == []
    assert {rt.get(f"p{i}").status for i in range(12)} == {rt.get(f"kp{i}").status for i in range(12)} \
        == {"finished"}


def test_a_thread_waits_for_a_run_another_thread_of_its_tick_holds() -> None:
    hands = _Hands()
    holding, let_go, waited = threading.Event(), threading.Event(), []
    holder_ident: list[int] = []

    def holder() -> None:
        holder_ident.append(threading.get_ident())
        hands.enter("p")
        holding.set()
        let_go.wait(PATIENCE)
        hands.leave("p")

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(PATIENCE)
    assert hands.wait_for("p", set()) is False  # held by no thread of that set: no wait
    waiter = threading.Thread(target=lambda: waited.append(hands.wait_for("p", set(holder_ident))))
    waiter.start()
    waiter.join(0.05)
    assert waiter.is_alive()  # still waiting
    let_go.set()
    waiter.join(PATIENCE)
    thread.join(PATIENCE)
    assert waited == [True]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_concurrency_is_a_whole_number_of_at_least_one(bad: Any) -> None:
    rt = MemoryRuntime()
    with pytest.raises(BadInput, match="concurrency"):
        rt.tick(concurrency=bad)
    with pytest.raises(BadInput, match="concurrency"):
        rt.work(threading.Event(), concurrency=bad)


def test_threads_loading_one_flow_file_load_it_once(tmp_path: Path) -> None:
    """Sixteen threads resolve a flow file at once: its code runs once, and all get one class."""
    flow = tmp_path / "counted.py"
    flow.write_text('''
import threading

from tinywf_cli import Workflow, step

import concurrency_probe

concurrency_probe.loads.append(threading.get_ident())
try:  # a second load running at the same time meets this one here
    concurrency_probe.gate.wait()
except threading.BrokenBarrierError:
    pass


class Counted(Workflow):
    @step
    def only(self):
        return None
''', encoding="utf-8")
    probe = _probe_module()
    loader = FlowLoader()
    start = threading.Barrier(16, timeout=PATIENCE)
    classes: list[type] = []

    def load() -> None:
        start.wait()
        classes.append(loader.load(str(flow))[0])

    threads = [threading.Thread(target=load) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    assert len(probe.loads) == 1 and len(classes) == 16 and len(set(classes)) == 1


def _probe_module() -> Any:
    import sys
    import types

    probe = types.ModuleType("concurrency_probe")
    probe.loads = []  # type: ignore[attr-defined]
    probe.gate = threading.Barrier(2, timeout=0.3)  # type: ignore[attr-defined]
    sys.modules["concurrency_probe"] = probe
    return probe


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_url() as url:
        yield url


def connections_of(url: str) -> int:
    """This process's connections to the store's schema, as the server counts them."""
    import psycopg

    from tinywf_cli.stores.postgres.connection import parse_target

    target = parse_target(url)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
                           "AND application_name NOT LIKE %s",
                           (f"tinywf {target.schema} %:{os.getpid()}", "% keeper %")).fetchone()
    assert row is not None
    return int(row[0])


def settled_connections(url: str) -> int:
    """``connections_of``, once the server has seen the connections closed (a backend ends a
    moment after its client closed it)."""
    pause = threading.Event()
    for _ in range(250):
        count = connections_of(url)
        if count <= 1:
            return count
        pause.wait(0.02)
    return count


def test_postgres_runs_are_advanced_at_once_and_their_threads_close_their_connections(pg_url: str) -> None:
    from tinywf_cli.clock import ManualClock

    clock = ManualClock()
    rt = Runtime(pg_url, clock=clock)
    try:
        for i in range(8):
            rt.start(Napper, run_id=f"r{i}")
        clock.advance(60)
        Hub.reset(parties=4)
        report = rt.tick(concurrency=4)
        assert sorted(a.run_id for a in report.advanced) == [f"r{i}" for i in range(8)]
        assert Hub.most == 4 and report.skipped == []
        assert settled_connections(pg_url) == 1  # the crew's threads closed theirs: this thread's is left
    finally:
        Hub.reset()
        rt.close()


# -- real processes: two ticks of many threads each, on one store --------------------------------------

BUSY = '''
"""Runs whose three actions each record which process and thread ran them, and when."""

import os
import threading
import time

from tinywf_cli import Workflow, step


def record(run_id, key):
    start = time.monotonic_ns()  # one clock for every process of the machine
    for _ in range(20):
        os.sched_yield()  # let the other threads in
    line = f"{run_id} {key} {os.getpid()}:{threading.get_ident()} {start} {time.monotonic_ns()}\\n"
    fd = os.open(os.environ["INTERVALS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return key


class Busy(Workflow):
    @step
    def settle(self):
        yield self.sleep("settle", 60)
        return self.first

    @step
    def first(self):
        yield self.action("a", record, self.run_id, "a")
        return self.rest

    @step
    def rest(self):
        yield self.action("b", record, self.run_id, "b")
        yield self.action("c", record, self.run_id, "c")
'''


@pytest.mark.stores("file", "postgres")
def test_two_ticks_of_eight_threads_never_advance_one_run_in_two_threads_at_once(
        cli: Cli, fast: InProcessCli, tmp_path: Path) -> None:
    (cli.workspace / "flows" / "busy.py").write_text(BUSY, encoding="utf-8")
    runs = [f"b{i:02d}" for i in range(40)]
    for run_id in runs:
        fast.start("flows/busy.py", run_id)
    env = {"INTERVALS": str(tmp_path / "intervals")}
    ticks = [cli.spawn(("tick", "--json", "--concurrency", "8"), at(60), env) for _ in range(2)]
    for proc in ticks:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (out, err)
    seen: dict[str, list[tuple[int, int, str]]] = {}
    threads: dict[str, set[str]] = {}
    for line in (tmp_path / "intervals").read_text().splitlines():
        run_id, key, thread, start, end = line.split()
        seen.setdefault(run_id, []).append((int(start), int(end), key))
        threads.setdefault(thread.split(":")[0], set()).add(thread)
    for run_id in runs:
        intervals = sorted(seen[run_id])
        assert sorted(k for _, _, k in intervals) == ["a", "b", "c"], (run_id, intervals)  # each once
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(intervals)), (run_id, intervals)
    assert any(len(t) > 1 for t in threads.values()), threads  # a tick ran runs in several threads
    listed = fast.json("list")["runs"]
    assert {r["run_id"]: r["status"] for r in listed} == dict.fromkeys(runs, "finished")


@pytest.mark.parametrize("command", ["tick", "worker"])
@pytest.mark.parametrize("bad", ["0", "-3", "many"])
def test_a_bad_concurrency_is_one_line_and_exit_2(fast: InProcessCli, command: str, bad: str) -> None:
    fast.start("flows/simple.py", "s1")
    before = fast.snapshot()
    result = fast(command, "--concurrency", bad)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "--concurrency" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert fast.snapshot() == before


def test_the_commands_default_is_the_runtimes() -> None:
    from tinywf_cli.cli import workers
    from tinywf_cli.runtime import crew

    assert workers.DEFAULT_CONCURRENCY == crew.DEFAULT_CONCURRENCY == 8
