"""One process of the limit and breaker proofs: start some runs, then work until every run has ended.

``python limits_driver.py STORE FLOW FIRST LAST [--threads N] [--lease S] [--input JSON]
[--total N]``: starts runs ``r<FIRST>`` … ``r<LAST-1>`` of ``FLOW`` (``path.py:Class``), each
in a thread of its own when ``--start-threads``, else one after the other (a start advances
the run: its action runs now, or it waits for room); then runs ``Runtime.work`` in
``--threads`` threads (each its own ``Runtime``: one process's several workers) until the
store holds ``--total`` runs that all ended. ``--input`` is the runs' input; a ``customer``
of ``"i%K"`` gives run i the customer ``c<i % K>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from tinywf_cli import Runtime
from tinywf_cli.errors import TinyWFError


def started(store: str, lease: float | None, flow: str, first: int, last: int, values: dict[str, Any],
            threads: bool) -> None:
    def one(i: int) -> None:
        rt = Runtime(store, lease=lease, lock_timeout=30)
        try:
            item = dict(values)
            if isinstance(item.get("customer"), str) and item["customer"].startswith("i%"):
                item["customer"] = f"c{i % int(item['customer'][2:])}"
            rt.start(flow, input=item, run_id=f"r{i:04d}")
        finally:
            rt.close()

    if not threads:
        for i in range(first, last):
            one(i)
        return
    workers = [threading.Thread(target=one, args=(i,)) for i in range(first, last)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def all_ended(rt: Runtime, total: int) -> bool:
    try:
        runs = rt.list().runs
    except TinyWFError:
        return False
    return len(runs) >= total and all(r.status in ("finished", "failed", "cancelled") for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("flow")
    parser.add_argument("first", type=int)
    parser.add_argument("last", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lease", type=float, default=None)
    parser.add_argument("--input", default="{}")
    parser.add_argument("--total", type=int, default=0)
    parser.add_argument("--start-threads", action="store_true")
    args = parser.parse_args()
    stop = threading.Event()
    errors: list[str] = []

    def work() -> None:
        rt = Runtime(args.store, lease=args.lease, lock_timeout=30)
        try:
            rt.work(stop, poll=0.2, on_error=lambda exc: errors.append(exc.message))
        finally:
            rt.close()

    workers = [threading.Thread(target=work) for _ in range(args.threads)]
    if args.total:
        for worker in workers:
            worker.start()
    started(args.store, args.lease, args.flow, args.first, args.last, json.loads(args.input), args.start_threads)
    if not args.total:
        return 0
    watch = Runtime(args.store, lease=args.lease)
    try:
        deadline = time.monotonic() + 300
        while not all_ended(watch, args.total) and time.monotonic() < deadline:
            time.sleep(0.25)
    finally:
        watch.close()
        stop.set()
        for worker in workers:
            worker.join(60)
    for line in errors:
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
