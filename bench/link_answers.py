"""Many people answer their links at once: N concurrent link answers against one ``tinywf serve``.

    python bench/link_answers.py              # 200 answers, all at once
    python bench/link_answers.py --runs 500 --concurrency 100

Sets up N runs of a one-approval flow in a fresh file store, signs one link per run (as
``tinywf link`` does), starts a real ``tinywf serve`` on a free loopback port, then POSTs
every link's Approve at once (one HTTP client per answer, all released together) and times
each answer. Then it reads every run back: each must be finished with its answer recorded
once — none lost, none doubled. Prints the figures and writes ``bench/out/link_answers.json``.
Not a test: it measures; the tests check behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx

from tinywf_cli import Runtime
from tinywf_cli.web.links import issue_link

BENCH_DIR = Path(__file__).resolve().parent
FLOW = '''
from tinywf_cli import Workflow, step


class Approval(Workflow):
    """One yes/no question."""

    @step
    def ask(self):
        self.state["approved"] = yield self.wait_event("approval", type=bool, question="Approve?")
        return None
'''


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def start_server(workspace: Path, token: str) -> tuple[subprocess.Popen[str], str]:
    """``tinywf serve --port 0 --json --quiet`` in ``workspace``; the process and its URL."""
    tinywf = shutil.which("tinywf", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env = {**os.environ, "TINYWF_API_TOKEN": token}
    proc = subprocess.Popen([tinywf or "tinywf", "serve", "--state-dir", "state", "--port", "0", "--json",
                             "--quiet"], cwd=workspace, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["url"]


def run(runs: int, concurrency: int) -> dict[str, object]:
    """Set up, answer, check; the figures."""
    with tempfile.TemporaryDirectory(prefix="tinywf-links-") as folder:
        workspace = Path(folder)
        (workspace / "flows").mkdir()
        (workspace / "flows" / "approval.py").write_text(FLOW, encoding="utf-8")
        runtime = Runtime(workspace / "state")
        tokens = []
        for index in range(runs):
            runtime.start(workspace / "flows" / "approval.py", run_id=f"approval-{index:04d}")
            tokens.append(issue_link(runtime, f"approval-{index:04d}", "approval", timedelta(days=1))[1])
        proc, url = start_server(workspace, "bench-token")
        latencies: list[float] = [0.0] * runs
        codes: list[int] = [0] * runs
        gate = threading.Barrier(min(concurrency, runs) + 1)
        work = list(range(runs))
        lock = threading.Lock()

        def worker() -> None:
            # TCP_NODELAY, as browsers do: else Nagle holds the form body back for the server's
            # delayed ACK (40 ms) and the figures measure the client's socket, not the server
            nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            with httpx.Client(base_url=url, timeout=120, transport=nodelay) as client:
                client.get("/link/warm-up")  # open the connection before the clock starts
                gate.wait()
                while True:
                    with lock:
                        if not work:
                            return
                        index = work.pop()
                    began = time.perf_counter()
                    response = client.post(f"/link/{tokens[index]}", data={"value": "true"})
                    latencies[index] = time.perf_counter() - began
                    codes[index] = response.status_code

        try:
            threads = [threading.Thread(target=worker) for _ in range(min(concurrency, runs))]
            for thread in threads:
                thread.start()
            gate.wait()
            began = time.perf_counter()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - began
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        reader = Runtime(workspace / "state")
        answered = lost = doubled = 0
        for index in range(runs):
            doc = reader.get(f"approval-{index:04d}")
            ends = [e for e in doc.logs if e.type == "wait_end"]
            if doc.status == "finished" and doc.state == {"approved": True} and len(ends) == 1:
                answered += 1
            elif not ends:
                lost += 1
            else:
                doubled += len(ends) > 1
    return {
        "runs": runs, "concurrency": min(concurrency, runs), "answered_200": codes.count(200),
        "finished_with_answer": answered, "lost": lost, "doubled": doubled,
        "wall_s": round(wall, 3), "answers_per_s": round(runs / wall, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1), "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1), "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=200, help="runs, one link each (default 200)")
    parser.add_argument("--concurrency", type=int, default=200, help="answers in flight at once (default: all)")
    args = parser.parse_args()
    figures = run(args.runs, args.concurrency)
    out = BENCH_DIR / "out"
    out.mkdir(exist_ok=True)
    (out / "link_answers.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))
    ok = figures["finished_with_answer"] == figures["runs"] == figures["answered_200"]
    print("all answered, none lost" if ok else "ANSWERS WERE LOST OR REFUSED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
