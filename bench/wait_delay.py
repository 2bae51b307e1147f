"""How soon ``tinywf wait`` returns after another process ends the run it waits for.

    python bench/wait_delay.py                  # a state directory and the test PostgreSQL server
    python bench/wait_delay.py --samples 50     # more samples
    python bench/wait_delay.py --hosts          # PostgreSQL also across network namespaces (root)

Per store, two long-lived processes: a *waiter* (``Runtime.wait``, what ``tinywf wait`` calls)
and a *finisher* (``Runtime.resolve``, what ``tinywf resolve`` calls). For each sample the
bench starts a run waiting for an event, lets the waiter wait for it, has the finisher end it,
and takes the time from the finisher's ``resolve`` returning (the run's end is saved by then)
to the waiter's ``wait`` returning, both on this machine's clock. With ``--hosts`` the waiter
and the finisher run in two network namespaces of their own and reach a private cluster over
a bridge, as two hosts would. Prints median, 90th percentile and worst per store, and writes
``bench/out/wait_delay.json``. Not a test: it measures; the tests check behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
FLOW = '''
from tinywf_cli import Workflow, step


class Done(Workflow):
    """Ends when told."""

    @step
    def ask(self):
        self.state["v"] = yield self.wait_event("v")
        return None
'''

# The two processes: each reads a run id per line on stdin and answers one JSON line.
WAITER = r'''
import json, sys, time
from tinywf_cli import Runtime
rt = Runtime(sys.argv[1])
for line in sys.stdin:
    run_id = line.strip()
    print(json.dumps({"ready": run_id}), flush=True)
    doc = rt.wait(run_id, timeout=60)
    print(json.dumps({"returned": time.time(), "status": doc.status}), flush=True)
'''
FINISHER = r'''
import json, sys, time
from tinywf_cli import Runtime
rt = Runtime(sys.argv[1])
for line in sys.stdin:
    run_id = line.strip()
    before = time.time()
    rt.resolve(run_id, "v", 1)
    print(json.dumps({"before": before, "after": time.time()}), flush=True)
'''


def spawn(code: str, target: str, prefix: list[str]) -> subprocess.Popen[str]:
    """A waiter or finisher process over ``target`` (inside a namespace when ``prefix`` says so)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    env.pop("TINYWF_NOW", None)
    return subprocess.Popen([*prefix, sys.executable, "-c", code, target], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def ask(proc: subprocess.Popen[str], run_id: str) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(run_id + "\n")
    proc.stdin.flush()
    return dict(json.loads(proc.stdout.readline()))


def read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    return dict(json.loads(proc.stdout.readline()))


def measure(name: str, target: str, local: str, samples: int, waiter_prefix: list[str],
            finisher_prefix: list[str], flow: Path) -> dict[str, Any]:
    """``samples`` delays (ms) from the finisher's ``resolve`` returning to the waiter's ``wait`` returning."""
    from tinywf_cli import Runtime

    rt = Runtime(local)
    waiter = spawn(WAITER, target, waiter_prefix)
    finisher = spawn(FINISHER, target, finisher_prefix)
    delays: list[float] = []
    try:
        for i in range(samples + 2):  # the first two warm the processes up
            run_id = f"wait-{name.replace(' ', '-').replace(',', '')}-{i}"
            rt.start(str(flow), run_id=run_id)
            assert ask(waiter, run_id)["ready"] == run_id
            time.sleep(0.3)  # the waiter reads the run and waits on its store's watch
            finished = ask(finisher, run_id)
            returned = read(waiter)
            assert returned["status"] == "finished", returned
            if i >= 2:
                delays.append((returned["returned"] - finished["after"]) * 1000)
    finally:
        rt.close()
        for proc in (waiter, finisher):
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
    ordered = sorted(delays)
    figures = {"store": name, "samples": len(delays), "median_ms": round(statistics.median(delays), 2),
               "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2), "max_ms": round(ordered[-1], 2)}
    print(f"{name:<28} median {figures['median_ms']:7.2f} ms   p90 {figures['p90_ms']:7.2f} ms   "
          f"max {figures['max_ms']:7.2f} ms   ({len(delays)} samples)", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--hosts", action="store_true", help="PostgreSQL across network namespaces too (root)")
    parser.add_argument("--pg", default=os.environ.get("TINYWF_TEST_PG", "postgresql://root@127.0.0.1:5432/test"))
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tinywf-wait-") as tmp:
        flow = Path(tmp) / "done.py"
        flow.write_text(FLOW, encoding="utf-8")
        state = str(Path(tmp) / "state")
        results.append(measure("state directory", state, state, args.samples, [], [], flow))
        schema = f"wait_bench_{os.getpid()}"
        url = f"{args.pg}?schema={schema}"
        try:
            results.append(measure("postgresql", url, url, args.samples, [], [], flow))
        finally:
            drop(args.pg, schema)
        if args.hosts:
            sys.path.insert(0, str(REPO_DIR / "tests"))
            from pgcluster import Hosts, PrivateCluster, why_not

            reason = why_not()
            if reason is not None:
                print(f"postgresql across hosts: skipped ({reason})")
            else:
                hosts = Hosts()
                try:
                    cluster = PrivateCluster(listen=hosts.address)
                    try:
                        one, two = hosts.add(), hosts.add()
                        results.append(measure(
                            "postgresql, two hosts", cluster.url("wait_hosts", hosts.address),
                            cluster.url("wait_hosts"), args.samples, hosts.command(one, []),
                            hosts.command(two, []), flow))
                    finally:
                        cluster.remove()
                finally:
                    hosts.remove()
    out = BENCH_DIR / "out"
    out.mkdir(exist_ok=True)
    (out / "wait_delay.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def drop(url: str, schema: str) -> None:
    """Drop the bench's schema."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
