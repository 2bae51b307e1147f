"""Seeing many runs at scale (issue 23): ``tinywf list`` with filters over 100,000 runs.

    python bench/filters.py                          # 100,000 runs, file store and PostgreSQL
    python bench/filters.py --runs 20000 --stores file

Per store, N runs (made once and kept: ``bench/out/filters/state-N`` for the file store, the
schema ``bench_filters_N`` of ``$TINYWF_BENCH_PG`` for PostgreSQL), of 1,000 customers (tag
``customer=c0`` … ``c999``, 100 runs each at 100,000), a quarter of them failed, the others
waiting. Then, as whole processes, alternating, ``--repeat`` times each:

- ``tinywf list --tag customer=c42 --status failed --json`` (25 matches at 100,000),
- ``tinywf list --tag customer=c42 --json`` (100 matches),
- ``tinywf list --status failed --json`` (every failed run: no tag, so every record is read),
- ``python -c pass`` beside them, for scale;

and, in this process, how many records the read path read for each (its ``read_head`` counted;
on PostgreSQL, how many heads the one statement returned). Prints medians (and the spread) and
writes ``bench/out/filters.json``. Not a test: it measures; the tests check behaviour.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
OUT = BENCH_DIR / "out" / "filters"
SERVER = os.environ.get("TINYWF_BENCH_PG", "postgresql://root@127.0.0.1:5432/test")
FLOW = '''
from tinywf_cli import Workflow, step


class Nightly(Workflow):
    """Fails or waits, as its input says."""

    @step
    def begin(self):
        if self.state["fail"]:
            raise RuntimeError("the import failed")
        yield self.wait_event("go")
        return None
'''
QUERIES = {
    "tag+status": ["--tag", "customer=c42", "--status", "failed"],
    "tag": ["--tag", "customer=c42"],
    "status": ["--status", "failed"],
}


def _fill_part(target: str, flow: str, start: int, stop: int) -> None:
    from tinywf_cli import Runtime

    rt = Runtime(target)
    try:
        for i in range(start, stop):
            rt.start(flow, {"fail": (i // 1000) % 4 == 0}, run_id=f"r{i:06}", tags={"customer": f"c{i % 1000}"})
    finally:
        rt.close()


def fill(target: str, count: int, done: Path) -> float:
    """Make ``count`` runs in ``target`` (two processes), unless ``done`` says they are there; seconds taken."""
    if done.exists() and done.read_text() == str(count):
        return 0.0
    flow = OUT / "nightly.py"
    flow.write_text(FLOW, encoding="utf-8")
    started = time.perf_counter()
    half = count // 2
    parts = [multiprocessing.Process(target=_fill_part, args=(target, str(flow), a, b))
             for a, b in ((0, half), (half, count))]
    for part in parts:
        part.start()
    for part in parts:
        part.join()
        assert part.exitcode == 0
    done.write_text(str(count))
    return time.perf_counter() - started


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    return took, result.stdout


def reads(target: str, query: list[str]) -> int:
    """How many records the read path reads to answer ``query`` (PostgreSQL: heads returned)."""
    from tinywf_cli.clock import clock_from_env
    from tinywf_cli.filters import run_filter
    from tinywf_cli.reading import files
    from tinywf_cli.reading.sources import source_of

    args = dict(zip(query[::2], query[1::2], strict=True))
    select = run_filter(clock_from_env().now(), tags=[args["--tag"]] if "--tag" in args else [],
                        status=args.get("--status"))
    count = 0
    real_read = files.read_head

    def counting(run_files: Any, run_id: str) -> Any:
        nonlocal count
        count += 1
        return real_read(run_files, run_id)

    files.read_head = counting  # type: ignore[assignment]
    try:
        source = source_of(target)
        if "://" in target:
            from tinywf_cli.reading import database

            real_heads = database.PostgresReader.heads

            def counted_heads(self: Any, *a: Any) -> Any:
                nonlocal count
                rows = real_heads(self, *a)
                count += len(rows)
                return rows

            database.PostgresReader.heads = counted_heads  # type: ignore[method-assign]
            try:
                source.list_runs(select)
            finally:
                database.PostgresReader.heads = real_heads  # type: ignore[method-assign]
        else:
            source.list_runs(select)
        source.close()
    finally:
        files.read_head = real_read  # type: ignore[assignment]
    return count


def bench_store(kind: str, count: int, repeat: int) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    target = str(OUT / f"state-{count}") if kind == "file" else f"{SERVER}?schema=bench_filters_{count}"
    filled = fill(target, count, OUT / f"{kind}-{count}.done")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINYWF_", "OTEL_"))}
    tinywf = str(Path(sys.executable).with_name("tinywf"))
    samples: dict[str, list[float]] = {name: [] for name in [*QUERIES, "python -c pass"]}
    matches: dict[str, int] = {}
    for _ in range(repeat):
        for name, query in QUERIES.items():
            took, out = timed([tinywf, "list", "--store", target, "--json", *query], env)
            samples[name].append(took)
            matches[name] = len(json.loads(out)["runs"])
        samples["python -c pass"].append(timed([sys.executable, "-c", "pass"], env)[0])
    result: dict[str, Any] = {"runs": count, "filled_in_s": round(filled, 1), "queries": {}}
    for name, values in samples.items():
        result["queries"][name] = {
            "median_ms": round(statistics.median(values) * 1000, 1),
            "min_ms": round(min(values) * 1000, 1), "max_ms": round(max(values) * 1000, 1),
            "matches": matches.get(name), "records_read": reads(target, QUERIES[name]) if name in QUERIES else None,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--stores", default="file,postgres")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    report = {kind: bench_store(kind, args.runs, args.repeat) for kind in args.stores.split(",")}
    (OUT.parent / "filters.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    for kind, result in report.items():
        print(f"{kind}: {result['runs']} runs (made in {result['filled_in_s']} s)")
        for name, figures in result["queries"].items():
            print(f"  {name:16} median {figures['median_ms']:7.1f} ms  ({figures['min_ms']}–{figures['max_ms']})"
                  f"  matches {figures['matches']}  records read {figures['records_read']}")


if __name__ == "__main__":
    main()
