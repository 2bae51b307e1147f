"""Limits and breakers across real processes, on real time: the file store (3 processes on one
machine) and PostgreSQL (3 workers, each in a network namespace of its own: another host).

Each process is ``procs/limits_driver.py``: it starts its share of the runs, then works
(``Runtime.work`` in several threads) until every run has ended. Every attempt logs its start
and end (``procs/limits_flows.py``); the tests rebuild the intervals and check what a limit
promises: starts under a rate, overlaps under a concurrency, one customer at a time, slots
given back when a process holding them is killed, one probe through a half-open breaker.
The figures go to stderr (``pytest -s``).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clihelpers import clean_env
from pgcluster import Hosts, PrivateCluster, why_not

from tinywf_cli import Runtime

pytestmark = [pytest.mark.slow]

PROCS = Path(__file__).resolve().parent / "procs"
FLOWS = PROCS / "limits_flows.py"
DRIVER = PROCS / "limits_driver.py"
LEASE = 2.0


@dataclass
class Attempt:
    """One attempt of an action, from the logs (``end`` None: its process was killed in it)."""

    pid: int
    run: str
    start: float
    end: float | None
    ok: bool


def attempts(logs: Path) -> list[Attempt]:
    found: dict[str, Attempt] = {}
    for path in logs.glob("actions-*.jsonl"):
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if item["event"] == "start":
                found[item["token"]] = Attempt(item["pid"], item["run"], item["at"], None, True)
            else:
                found[item["token"]].end = item["at"]
                found[item["token"]].ok = item["ok"]
    return sorted(found.values(), key=lambda a: a.start)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (one that ends as another starts does not overlap it)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


class Stores:
    """Where the processes run: a state directory, or a private PostgreSQL reached from namespaces."""

    def __init__(self, kind: str, tmp_path: Path, hosts: Hosts | None, cluster: PrivateCluster | None) -> None:
        self.kind = kind
        self.hosts = hosts
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        if kind == "file":
            self.here = self.there = str(tmp_path / "state")
        else:
            assert hosts is not None and cluster is not None
            schema = f"lim{os.getpid()}{time.monotonic_ns() % 10**6}"
            self.here = cluster.url(schema)
            self.there = cluster.url(schema, host=hosts.address)

    def process(self, flow: str, first: int, last: int, *, threads: int = 4, total: int = 0,
                values: dict[str, object] | None = None, start_threads: bool = False) -> subprocess.Popen[bytes]:
        argv = [sys.executable, str(DRIVER), self.there, f"{FLOWS}:{flow}", str(first), str(last),
                "--threads", str(threads), "--total", str(total), "--input", json.dumps(values or {}),
                "--lease", str(LEASE)]
        if start_threads:
            argv.append("--start-threads")
        if self.hosts is not None:
            argv = self.hosts.command(self.hosts.add(), argv)
        err = (self.logs / f"driver-{first}.err").open("w")
        return subprocess.Popen(argv, env=clean_env(TINYWF_LIMITS_LOGS=str(self.logs)), stdout=err, stderr=err,
                                cwd=self.logs)

    def three(self, flow: str, count: int, **options: object) -> list[Attempt]:
        """``count`` runs started by three processes (a third each), which then work them all off."""
        share = count // 3
        procs = [self.process(flow, i * share, count if i == 2 else (i + 1) * share, total=count,
                              **options) for i in range(3)]  # type: ignore[arg-type]
        for proc in procs:
            assert proc.wait(timeout=300) == 0
        runs = self.runtime().list().runs
        assert len(runs) == count and {r.status for r in runs} == {"finished"}, self.errors()
        return attempts(self.logs)

    def runtime(self) -> Runtime:
        return Runtime(self.here, lease=LEASE)

    def errors(self) -> str:
        return "".join(p.read_text()[-2000:] for p in self.logs.glob("driver-*.err"))


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts | None]:
    reason = why_not()
    if reason is not None:
        yield None
        return
    made = Hosts()
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture(scope="module")
def cluster(hosts: Hosts | None) -> Iterator[PrivateCluster | None]:
    if hosts is None:
        yield None
        return
    made = PrivateCluster(listen=hosts.address)
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture(params=["file", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path, hosts: Hosts | None,
           cluster: PrivateCluster | None) -> Stores:
    if request.param == "postgres" and (hosts is None or cluster is None):
        reason = why_not()
        if os.environ.get("TINYWF_REQUIRE_PG"):
            pytest.fail(f"$TINYWF_REQUIRE_PG is set but {reason}")
        pytest.skip(str(reason))
    return Stores(request.param, tmp_path, hosts, cluster)


def test_300_actions_under_a_rate_of_20_per_second_keep_to_it_and_none_starves(stores: Stores) -> None:
    found = stores.three("Rated", 300, threads=2)
    starts = [a.start for a in found]
    assert len(starts) == 300
    # over every 5 s window (each beginning at a start): at most 20/s x 5 s plus the bucket (20)
    worst = max(sum(1 for t in starts[i:] if t < s + 5.0) for i, s in enumerate(starts))
    took = max(a.end or 0 for a in found) - starts[0]
    print(f"\n[{stores.kind}] rate 20/s, 300 actions, 3 processes: most starts in a 5 s window {worst} "
          f"(bound 120), all done in {took:.2f} s (bound {1.2 * 300 / 20:.0f} s)", file=sys.stderr)
    assert worst <= 20 * 5 + 20
    assert took <= 1.2 * 300 / 20


def test_concurrency_5_never_has_more_than_5_attempts_in_flight(stores: Stores) -> None:
    found = stores.three("Slots", 60, threads=4, start_threads=True)
    spans = [(a.start, a.end or a.start) for a in found]
    peak = most_at_once(spans)
    took = max(e for _, e in spans) - min(s for s, _ in spans)
    print(f"\n[{stores.kind}] concurrency 5, 60 actions of 0.1 s started at once by 3 processes (then 4 workers "
          f"each): at most {peak} in flight; all done in {took:.2f} s (the floor 1.2 s)", file=sys.stderr)
    assert peak <= 5
    assert peak >= 4  # the limit is what bounds them: 60 were started at once


def test_a_keyed_limit_runs_one_attempt_per_customer_at_a_time_while_customers_overlap(stores: Stores) -> None:
    found = stores.three("PerCustomer", 60, threads=4, values={"customer": "i%4"}, start_threads=True)
    customers = {f"r{i:04d}": f"c{i % 4}" for i in range(60)}
    per: dict[str, list[tuple[float, float]]] = {}
    for a in found:
        per.setdefault(customers[a.run], []).append((a.start, a.end or a.start))
    assert all(most_at_once(spans) == 1 for spans in per.values())
    across = most_at_once([s for spans in per.values() for s in spans])
    print(f"\n[{stores.kind}] concurrency 1 per customer, 4 customers: 1 at a time each, up to {across} at "
          f"once across them", file=sys.stderr)
    assert across >= 2


def test_slots_held_by_a_killed_process_come_back_when_its_runs_are_recovered(stores: Stores) -> None:
    holder = stores.process("Held", 0, 2, threads=1, values={"block": True}, start_threads=True)
    deadline = time.monotonic() + 60
    while len(attempts(stores.logs)) < 2:
        assert time.monotonic() < deadline and holder.poll() is None, stores.errors()
        time.sleep(0.05)
    # both slots are held, mid-action: the other runs wait for room
    waiter = stores.process("Held", 2, 6, threads=0)
    assert waiter.wait(timeout=120) == 0, stores.errors()
    rt = stores.runtime()
    row = rt.limits().limits[0]
    assert (row.in_flight, row.waiting) == (2, 4)
    assert {r.status for r in rt.list().runs if r.run_id >= "r0002"} == {"waiting"}
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    killed_at = time.time()
    worker = stores.process("Held", 6, 6, threads=2, total=6)
    assert worker.wait(timeout=120) == 0, stores.errors()
    found = attempts(stores.logs)
    assert {r.status for r in rt.list().runs} == {"finished"}
    assert rt.limits().limits[0].in_flight == 0
    rt.close()
    by_run: dict[str, list[Attempt]] = {}
    for a in found:
        by_run.setdefault(a.run, []).append(a)
    # the two killed mid-action ran again (at least once); every other action ran once
    assert sorted(len(v) for v in by_run.values()) == [1, 1, 1, 1, 2, 2]
    assert all(len(by_run[r]) == 2 and by_run[r][0].end is None for r in ("r0000", "r0001"))
    spans = [(a.start, a.end if a.end is not None else killed_at) for a in found]
    assert most_at_once(spans) <= 2
    waited = min(a.start for a in found if a.run >= "r0002") - killed_at
    print(f"\n[{stores.kind}] concurrency 2, holder SIGKILLed mid-action: its runs recovered and the waiters "
          f"went on {waited:.2f} s after the kill (lease {LEASE:g} s on PostgreSQL)", file=sys.stderr)
    if stores.kind == "postgres":
        assert waited >= LEASE * 0.5  # not before the dead claim's lease ran out


def test_a_breaker_lets_no_call_through_while_open_then_exactly_one_probe(stores: Stores) -> None:
    procs = [stores.process("Calls", i * 10, (i + 1) * 10, threads=2, total=30) for i in range(3)]
    try:
        deadline = time.monotonic() + 60
        while len(attempts(stores.logs)) < 3 + 3:  # down: it opens, probes fail, …
            assert time.monotonic() < deadline, stores.errors()
            time.sleep(0.05)
        (stores.logs / "up").write_text("up")
        for proc in procs:
            assert proc.wait(timeout=120) == 0, stores.errors()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    found = attempts(stores.logs)
    rt = stores.runtime()
    history = {r.run_id: rt.get(r.run_id) for r in rt.list().runs}
    rt.close()
    assert {doc.status for doc in history.values()} == {"finished"}
    opened = sorted(e.at.timestamp() for doc in history.values() for e in doc.logs if e.type == "breaker_opened")
    closed = [e.at.timestamp() for doc in history.values() for e in doc.logs if e.type == "breaker_closed"]
    assert len(closed) == 1 and len(opened) >= 2
    failed_first = [a for a in found if a.start < opened[0]]
    # from the moment it opened: no call until it half opened, then one probe at a time
    later = [a for a in found if a.start >= opened[0]]
    # the probe that closed it is the first that succeeded (the run that made it logs
    # breaker_closed when it commits, which another process may beat to its next call)
    closing = min((a for a in later if a.ok), key=lambda a: a.start)
    assert closing.end is not None and closing.start <= closed[0]
    probes = [a for a in later if a.start <= closing.start]
    for first, second in itertools.pairwise(probes):
        assert first.end is not None and first.end <= second.start, "two probes at once"
        assert second.start - first.start >= 1.5 * 0.9  # each after another reset
    assert probes[0].start - opened[0] >= 1.5 * 0.9
    after = [a for a in later if a.start > closing.start]
    assert all(a.start >= closing.end for a in after), "a call while the closing probe was in flight"
    assert all(a.ok for a in after) and len(failed_first) + len(probes) + len(after) == len(found)
    succeeded = {doc.run_id for doc in history.values() if "token" in doc.state}
    print(f"\n[{stores.kind}] breaker failures=3 reset=1.5 s, 30 runs in 3 processes: {len(failed_first)} calls "
          f"before it opened, {len(probes)} probes one at a time (the last closed it), then {len(after)} calls; "
          f"{len(succeeded)} runs succeeded", file=sys.stderr)
    assert len(failed_first) <= 3 + 6  # the attempts already under way when it opened (3 x 2 threads)
