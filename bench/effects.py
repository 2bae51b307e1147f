"""A countable side effect for the crash-recovery workload, importable without tinywf or DBOS."""

from __future__ import annotations

import os
import signal

#: The step whose effect kills its own process when ``$BENCH_CRASH_AT`` names it.
CRASH_ENV = "BENCH_CRASH_AT"


def effect(number: int, log_path: str) -> int:
    """Record one execution of step ``number`` in ``log_path``; die there if told to."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{number}\n".encode())
    finally:
        os.close(fd)
    if os.environ.get(CRASH_ENV) == str(number):
        os.kill(os.getpid(), signal.SIGKILL)
    return number


def executions(log_path: str) -> dict[int, int]:
    """How often each step's effect ran, from ``log_path``."""
    counts: dict[int, int] = {}
    try:
        with open(log_path) as log:
            for line in log:
                if line.strip():
                    counts[int(line)] = counts.get(int(line), 0) + 1
    except FileNotFoundError:
        pass
    return counts
