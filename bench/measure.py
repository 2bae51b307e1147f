"""Timing, statistics and Markdown tables shared by the benchmark workloads."""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DASH = "\u2013"
TIMES = "\u00d7"


@dataclass
class Stats:
    """Samples of one measurement (in the unit the caller chose) and their median, min and max."""

    samples: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        """Record one sample."""
        self.samples.append(value)

    @property
    def median(self) -> float:
        """The median sample."""
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        """The smallest sample."""
        return min(self.samples)

    @property
    def high(self) -> float:
        """The largest sample."""
        return max(self.samples)

    def scaled(self, factor: float) -> Stats:
        """Every sample multiplied by ``factor`` (e.g. seconds to ms, or totals to per-step)."""
        return Stats([s * factor for s in self.samples])

    def inverted(self, numerator: float = 1.0) -> Stats:
        """``numerator / sample`` for each sample (durations to rates)."""
        return Stats([numerator / s for s in self.samples])

    def cell(self, digits: int = 2) -> str:
        """``median (min-max)`` for a table cell (with an en dash)."""
        return f"{num(self.median, digits)} ({num(self.low, digits)}{DASH}{num(self.high, digits)})"


def num(value: float, digits: int = 2) -> str:
    """A number with ``digits`` significant decimals for its size, thousands separated."""
    if value != value:  # NaN
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:,.{max(digits - 1, 0)}f}"
    return f"{value:,.{digits}f}"


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23x`` (with a multiplication sign)."""
    if b == 0:
        return "n/a"
    value = a / b
    return f"{value:.2f}{TIMES}" if value < 10 else f"{value:.1f}{TIMES}"


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (after a collection, so garbage from earlier runs is not billed)."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(contenders: dict[str, Callable[[], float]], reps: int, *, warmup: bool = False) -> dict[str, Stats]:
    """Run each contender once per round, ``reps`` rounds, in turn; each call returns its own sample.

    ``warmup``: one round first whose samples are dropped (the process's first use of its
    memory and caches is not what a workload costs).
    """
    results = {name: Stats() for name in contenders}
    if warmup:
        for fn in contenders.values():
            fn()
    for _ in range(reps):
        for name, fn in contenders.items():
            results[name].add(fn())
    return results


#: Child processes keep Python's bytecode caches, as every user's do after a program's first run:
#: a ``PYTHONDONTWRITEBYTECODE`` inherited from the shell would otherwise compile every module of
#: the child at every start (about 1.5 ms per module here) and measure that instead.
WARM_BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}


def run_process(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                timeout: float = 120) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall-clock seconds of a whole process, from spawn to exit, and its result (with bytecode
    caches, ``WARM_BYTECODE``, unless ``env`` says otherwise)."""
    full_env = dict(os.environ)
    full_env.update(WARM_BYTECODE)
    full_env.update(env or {})
    start = time.perf_counter()
    done = subprocess.run(list(argv), env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
    return time.perf_counter() - start, done


class Scratch:
    """Temporary folders for state directories and databases, all under one base on the measured disk."""

    def __init__(self, base: Path | None = None) -> None:
        if base is None:
            base = pick_scratch_base()
        base.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="tinywf-bench-", dir=base))
        os.chmod(self.root, 0o700)
        self._count = 0

    def new(self, label: str) -> Path:
        """A fresh empty folder (0700, as a tinywf state directory must be)."""
        self._count += 1
        path = self.root / f"{self._count:05d}-{label}"
        path.mkdir(mode=0o700)
        return path

    @contextmanager
    def folder(self, label: str) -> Iterator[Path]:
        """A fresh folder, removed afterwards."""
        path = self.new(label)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        """Remove every folder made here."""
        shutil.rmtree(self.root, ignore_errors=True)


def pick_scratch_base() -> Path:
    """The system temp folder when it is on the same device as the repository, else ``bench/out``."""
    tmp = Path(tempfile.gettempdir())
    if os.stat(tmp).st_dev == os.stat(REPO_DIR).st_dev:
        return tmp
    return BENCH_DIR / "out"


def filesystem_of(path: Path) -> str:
    """``device (fstype)`` of the mount holding ``path``, from /proc/mounts when available."""
    best = ("?", "?", "")
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    resolved = str(path.resolve())
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mount, fstype = parts[0], parts[1], parts[2]
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[2]):
            best = (device, fstype, mount)
    return f"{best[0]} ({best[1]}, mounted at {best[2]})"


@dataclass
class Table:
    """A Markdown table."""

    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        """Append a row."""
        self.rows.append(list(cells))

    def markdown(self) -> str:
        """The table as Markdown."""
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "|".join(" --- " for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Section:
    """One workload's results: a heading, tables, and notes (goals, caveats, what was measured)."""

    title: str
    blocks: list[str] = field(default_factory=list)
    goals: list[tuple[str, bool | None, str]] = field(default_factory=list)

    def table(self, table: Table) -> None:
        """Add a table."""
        self.blocks.append(table.markdown())

    def note(self, text: str) -> None:
        """Add a paragraph."""
        self.blocks.append(text)

    def goal(self, name: str, met: bool | None, detail: str) -> None:
        """Record a goal: met, missed, or ``None`` when it could not be measured."""
        self.goals.append((name, met, detail))

    def markdown(self) -> str:
        """The section as Markdown (its goals are reported together at the top)."""
        return "\n\n".join([f"## {self.title}", *self.blocks])


def python_command() -> Path:
    """The interpreter running the benchmarks (the virtualenv's, not the one it links to)."""
    return Path(sys.executable)


def tinywf_command() -> tuple[Path | None, str]:
    """The ``tinywf`` console script beside this interpreter, or ``None`` and why it cannot be used."""
    command = python_command().parent / "tinywf"
    if not command.exists():
        return None, f"`{command}` does not exist (install with `pip install -e .`)"
    try:
        _, done = run_process([str(command), "--version"], timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`{command} --version` could not run: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"`{command} --version` exited {done.returncode}: {last}"
    return command, done.stdout.strip()


def check(done: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    """``done`` if it exited 0; else an error naming ``what`` with the end of its stderr."""
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{what} exited {done.returncode}: {tail}")
    return done


def machine_load() -> str:
    """Load average and, where the kernel reports it, CPU and I/O pressure (share of time stalled, last 60 s)."""
    text = "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    stalls = []
    for kind in ("cpu", "io"):
        try:
            line = Path(f"/proc/pressure/{kind}").read_text().splitlines()[0]
        except (OSError, IndexError):
            continue
        fields = dict(part.split("=") for part in line.split()[1:])
        stalls.append(f"{kind} {fields.get('avg60', '?')}%")
    if stalls:
        text += "; stalled (PSI, 60 s): " + ", ".join(stalls)
    return text
