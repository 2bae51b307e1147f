"""Workers on several hosts against one PostgreSQL: real processes, real failures.

Each worker is ``tinywf worker`` in a network namespace of its own, with its own address
(``pgcluster.Hosts``), against a private cluster (never the shared server: it gets
restarted here). Every action appends ``start`` and ``end`` lines (process, run, key,
times, a token) to a log, and the run keeps the token of the execution it accepted, so
the test can tell which executions counted and check that no two processes ever
advanced one run at the same time.

A worker can be held inside an action (a file ``hold-<pid>``), so that each failure
strikes mid-action: SIGKILL, the link cut, SIGSTOP. Their runs must be recovered by the
others after the lease; the cut and the frozen worker's late writes refused when they
come back; the only duplicated actions those that were in flight.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clihelpers import TINYWF, clean_env
from pgcluster import Hosts, PrivateCluster, why_not

pytestmark = [pytest.mark.slow]

LEASE = 3.0

FLOW = '''
"""One run on the hosts: a timer, two actions, an event, a third action."""

import json
import os
import time
from pathlib import Path

from tinywf_cli import Workflow, step

def logs() -> Path:
    return Path(os.environ["TINYWF_HOSTS_LOGS"])


def note(line: dict) -> None:
    with (logs() / f"actions-{os.getpid()}.jsonl").open("a") as log:
        log.write(json.dumps(line) + "\\n")
        log.flush()


def act(run_id: str, key: str) -> str:
    pid = os.getpid()
    token = f"{pid}-{time.monotonic_ns()}"
    note({"event": "start", "run": run_id, "key": key, "pid": pid, "token": token, "at": time.time()})
    time.sleep(0.005)
    hold = logs() / f"hold-{pid}"
    if hold.exists():  # the test holds this process here, mid-action
        (logs() / f"holding-{pid}").write_text(json.dumps({"run": run_id, "key": key, "token": token}))
        while hold.exists():
            time.sleep(0.01)
    note({"event": "end", "run": run_id, "key": key, "pid": pid, "token": token, "at": time.time()})
    return token


class HostRun(Workflow):
    """A timer, actions a and b, the event go, action c."""

    @step
    def begin(self):
        yield self.sleep("settle", self.state["delay"])
        self.state["a"] = yield self.action("a", act, self.run_id, "a")
        self.state["b"] = yield self.action("b", act, self.run_id, "b")
        return self.finish

    @step
    def finish(self):
        self.state["go"] = yield self.wait_event("go")
        self.state["c"] = yield self.action("c", act, self.run_id, "c")
        return None
'''


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    """A bridge for the hosts (and the database) of this module."""
    reason = why_not()
    if reason is not None:
        if os.environ.get("TINYWF_REQUIRE_PG"):
            pytest.fail(f"$TINYWF_REQUIRE_PG is set but {reason}")
        pytest.skip(reason)
    made = Hosts()
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture(scope="module")
def cluster(hosts: Hosts) -> Iterator[PrivateCluster]:
    """A private cluster listening on the bridge too."""
    made = PrivateCluster(listen=hosts.address)
    try:
        yield made
    finally:
        made.remove()


@dataclass
class Execution:
    """One execution of an action, from the logs."""

    pid: int
    run: str
    key: str
    token: str
    start: float
    end: float | None


def executions(logs: Path) -> list[Execution]:
    """Every action execution the processes logged (``end`` None: the process died in it)."""
    found: dict[str, Execution] = {}
    for path in logs.glob("actions-*.jsonl"):
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if item["event"] == "start":
                found[item["token"]] = Execution(item["pid"], item["run"], item["key"], item["token"], item["at"], None)
            else:
                found[item["token"]].end = item["at"]
    return list(found.values())


def states(url: str) -> dict[str, dict[str, Any]]:
    """Every run's status and state, straight from the database."""
    import psycopg

    from tinywf_cli.stores.postgres.connection import parse_target

    target = parse_target(url)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        rows = conn.execute(f'SELECT run_id, status, head::text FROM "{target.schema}".runs').fetchall()
    return {run_id: {"status": status, "state": json.loads(head)["state"]} for run_id, status, head in rows}


def check_no_overlap(found: list[Execution], runs: dict[str, dict[str, Any]]) -> list[Execution]:
    """The executions a run accepted never overlap in time (per run); returns the others (duplicates)."""
    accepted = {(run_id, key): info["state"][key] for run_id, info in runs.items() for key in "abc"}
    by_token = {e.token: e for e in found}
    for run_id in runs:
        spans = sorted((by_token[accepted[(run_id, k)]].start, by_token[accepted[(run_id, k)]].end or 0.0, k)
                       for k in "abc")
        for (_, first_end, first), (second_start, _, second) in itertools.pairwise(spans):
            assert first_end <= second_start, f"run {run_id}: actions {first} and {second} overlap"
    kept = set(accepted.values())
    return [e for e in found if e.token not in kept]


class Worker:
    """``tinywf worker`` on a host, its JSON lines and errors in files.

    ``concurrency`` 1 by default: a held worker then holds exactly one action, the one in flight.
    """

    def __init__(self, hosts: Hosts | None, ns: str | None, url: str, logs: Path, name: str,
                 concurrency: int = 1) -> None:
        argv = [TINYWF, "worker", "--store", url, "--lease", str(LEASE), "--poll", "1", "--json",
                "--concurrency", str(concurrency)]
        self.concurrency = concurrency
        self.out = logs / f"{name}.out"
        self.err = logs / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(hosts.command(ns, argv) if hosts and ns else argv, stdout=out, stderr=err,
                                         env=clean_env(TINYWF_HOSTS_LOGS=str(logs)), cwd=logs)
        self.pid = self.proc.pid
        self.logs = logs

    def hold(self, timeout: float = 60) -> dict[str, str]:
        """Hold the worker inside its next action; what it holds (run, key, token)."""
        (self.logs / f"hold-{self.pid}").write_text("hold")
        holding = self.logs / f"holding-{self.pid}"
        deadline = time.monotonic() + timeout
        while not holding.exists():
            assert time.monotonic() < deadline, "the worker never reached an action to be held in"
            assert self.proc.poll() is None, self.err.read_text()
            time.sleep(0.01)
        time.sleep(0.05)  # the file is written whole
        held: dict[str, str] = json.loads(holding.read_text())
        return held

    def let_go(self) -> None:
        """End the hold: the held action returns."""
        (self.logs / f"hold-{self.pid}").unlink()

    def reports(self) -> list[dict[str, Any]]:
        """The tick reports it printed."""
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def stop(self) -> int:
        """SIGTERM, and its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def wait_until(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def taken_over(logs: Path, held: dict[str, str], pid: int) -> bool:
    """Whether another process has started the held action again."""
    return any(e.run == held["run"] and e.key == held["key"] and e.pid != pid for e in executions(logs))


def start_runs(url: str, flow: Path, count: int) -> None:
    """``count`` runs, each waiting on its timer (0.2-2 s); every even one gets its event early."""
    from tinywf_cli import Runtime

    rt = Runtime(url, lock_timeout=5)
    try:
        for i in range(count):
            run_id = f"r{i:03d}"
            rt.start(flow, input={"delay": 0.2 + (i % 10) * 0.2}, run_id=run_id)
            if i % 2 == 0:
                rt.send(run_id, "go", True)  # queued: the wait takes it when it gets there
    finally:
        rt.close()


def resolve_late(url: str, count: int, stop: threading.Event, done: list[str]) -> None:
    """Answer every odd run's event once it waits for it, from this process (another host)."""
    from tinywf_cli import Runtime
    from tinywf_cli.errors import TinyWFError

    rt = Runtime(url, lock_timeout=0)
    left = {f"r{i:03d}" for i in range(1, count, 2)}
    try:
        while left and not stop.is_set():
            for run_id in sorted(left):
                try:
                    if any(p.key == "go" for p in rt.store.head(run_id).pending):
                        rt.resolve(run_id, "go", True)
                        left.discard(run_id)
                        done.append(run_id)
                except TinyWFError:
                    pass  # locked by a worker, or not there yet: next round
            stop.wait(0.1)
    finally:
        rt.close()


def test_workers_on_four_hosts_finish_500_runs_through_a_kill_a_cut_and_a_freeze(
        hosts: Hosts, cluster: PrivateCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logs = tmp_path
    flow = logs / "host_run.py"
    flow.write_text(FLOW)
    monkeypatch.setenv("TINYWF_HOSTS_LOGS", str(logs))  # this process resolves events too: its actions log here
    count = 500
    url = cluster.url("hosts", host=hosts.address)
    start_runs(cluster.url("hosts"), flow, count)
    names = [hosts.add() for _ in range(4)]
    workers = [Worker(hosts, ns, url, logs, f"w{i + 1}") for i, ns in enumerate(names)]
    killed, cut, frozen, _steady = workers
    stop = threading.Event()
    resolved: list[str] = []
    resolver = threading.Thread(target=resolve_late, args=(cluster.url("hosts"), count, stop, resolved))
    resolver.start()
    try:
        # SIGKILL mid-action
        held_by_killed = killed.hold()
        killed.proc.kill()
        killed.proc.wait()
        # the link cut and the freeze, mid-action, at the same time
        held_by_cut = cut.hold()
        held_by_frozen = frozen.hold()
        hosts.cut(names[1])
        frozen.proc.send_signal(signal.SIGSTOP)
        lost_at = time.monotonic()
        wait_until("the others took over every held run",
                   lambda: all(taken_over(logs, h, w.pid) for h, w in
                               ((held_by_killed, killed), (held_by_cut, cut), (held_by_frozen, frozen))))
        recovered_after = time.monotonic() - lost_at
        hosts.restore(names[1])
        cut.let_go()
        frozen.let_go()
        frozen.proc.send_signal(signal.SIGCONT)
        wait_until("all 500 runs finished",
                   lambda: sum(1 for r in states(cluster.url("hosts")).values()
                               if r["status"] == "finished") == count, timeout=180)
    finally:
        stop.set()
        resolver.join(30)
        if hosts.names:
            hosts.restore(names[1])
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGCONT)
        codes = [w.stop() for w in workers]
    assert codes[1:] == [0, 0, 0], [w.err.read_text()[-2000:] for w in workers]

    runs = states(cluster.url("hosts"))
    assert len(runs) == count and {r["status"] for r in runs.values()} == {"finished"}
    assert all(r["state"]["go"] is True for r in runs.values())
    found = executions(logs)
    duplicates = check_no_overlap(found, runs)
    # the only actions run twice: the three held when their worker was killed, cut off, frozen
    held = {(h["run"], h["key"], h["token"]) for h in (held_by_killed, held_by_cut, held_by_frozen)}
    assert {(e.run, e.key, e.token) for e in duplicates} == held, duplicates
    # their late writes were refused, and they said so, and went on
    for worker, what in ((cut, held_by_cut), (frozen, held_by_frozen)):
        reasons = [s["reason"] for r in worker.reports() for s in r["skipped"] if s["run_id"] == what["run"]]
        assert any("lost its claim" in reason for reason in reasons), (worker.out.read_text()[-3000:], reasons)
    advanced_by = {pid: sum(1 for e in found if e.pid == pid) for pid in {e.pid for e in found}}
    assert all(advanced_by.get(w.pid, 0) > 0 for w in workers)  # every host worked
    assert len(resolved) == count // 2
    print(f"\n{count} runs, 4 hosts: recovered all held runs {recovered_after:.1f}s after the failures "
          f"(lease {LEASE:g}s); {len(found)} action executions, {len(duplicates)} duplicates (the 3 in flight); "
          f"actions per process: {sorted(advanced_by.values())}", file=sys.stderr)


def test_workers_reconnect_after_postgresql_restarts_under_load_and_nothing_is_lost(
        cluster: PrivateCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logs = tmp_path
    flow = logs / "host_run.py"
    flow.write_text(FLOW)
    monkeypatch.setenv("TINYWF_HOSTS_LOGS", str(logs))
    count = 200
    url = cluster.url("restart")
    start_runs(url, flow, count)
    workers = [Worker(None, None, url, logs, f"w{i + 1}", concurrency=8) for i in range(3)]
    stop = threading.Event()
    resolved: list[str] = []
    resolver = threading.Thread(target=resolve_late, args=(url, count, stop, resolved))
    resolver.start()
    try:
        wait_until("the workers are busy", lambda: len(executions(logs)) >= 60)
        took = cluster.restart()
        wait_until("all runs finished after the restart",
                   lambda: sum(1 for r in states(url).values() if r["status"] == "finished") == count, timeout=180)
    finally:
        stop.set()
        if resolver.is_alive():
            resolver.join(30)
        codes = [w.stop() for w in workers]
    assert codes == [0, 0, 0], [w.err.read_text()[-2000:] for w in workers]
    runs = states(url)
    assert {r["status"] for r in runs.values()} == {"finished"}
    found = executions(logs)
    duplicates = check_no_overlap(found, runs)
    # at most the actions in flight when the server went down: one per thread of each worker
    assert len(duplicates) <= sum(w.concurrency for w in workers)
    warned = [w.err.read_text() for w in workers]
    assert any("trying again" in text for text in warned), warned
    assert not any("Traceback" in text for text in warned), warned
    print(f"\nrestart -m immediate took {took:.2f}s under load; {count} runs finished, {len(found)} action "
          f"executions, {len(duplicates)} duplicates (in flight at the restart)", file=sys.stderr)


def test_a_host_cut_off_cannot_wait_forever_its_worker_says_why(hosts: Hosts, cluster: PrivateCluster,
                                                                tmp_path: Path) -> None:
    """A command on a host whose link is down fails within its connect timeout, exit 5, naming the host."""
    ns = hosts.add()
    hosts.cut(ns)
    try:
        started = time.monotonic()
        result = subprocess.run(hosts.command(ns, [TINYWF, "list", "--store", cluster.url("cut", host=hosts.address)]),
                                capture_output=True, text=True, timeout=60, env=clean_env(), check=False)
        took = time.monotonic() - started
    finally:
        hosts.restore(ns)
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith("error: ") and hosts.address in result.stderr
    assert took < 15
