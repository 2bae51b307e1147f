"""Start-up of this checkout beside an earlier revision, in one run: ``python bench/startup_versus.py REV``.

A change that reshapes the package (issue 19's layout) must not make the command slower to
start. This checks out ``REV`` into a temporary worktree, and times whole processes of
``python -m tinywf_cli`` from both trees, alternating run by run, beside ``python -c pass``:
``--version``, ``show RUN`` and ``show RUN --json`` on one finished run in a fresh state
directory. It prints medians (min–max) and the ratio of this checkout to ``REV``, the
median of the per-round ratios. Each tree imports its own code (``PYTHONPATH``), with the
same interpreter and the same installed libraries.

Example::

    python bench/startup_versus.py 8c1d0ce            # 21 rounds
    python bench/startup_versus.py 8c1d0ce --rounds 41
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import Stats, num, run_process

REPO = Path(__file__).resolve().parent.parent
COMMANDS: dict[str, list[str]] = {
    "--version": ["--version"],
    "show RUN": ["show", "RUN"],
    "show RUN --json": ["show", "RUN", "--json"],
}


def start_run(tree: Path, state: Path) -> str:
    """Start and finish one run of the seed's ``simple`` flow with ``tree``'s code; its id."""
    flow = f"{REPO / 'bench' / 'sample_flows.py'}:Simple"
    code = f"from tinywf_cli import Runtime; print(Runtime({str(state)!r}).start({flow!r}).run_id)"
    # run in the tree: `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH
    _, done = run_process([sys.executable, "-c", code], env={"PYTHONPATH": str(tree)}, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"could not start a run with {tree}: {done.stderr.strip()}")
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    """Time both trees' start-up and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the earlier revision to compare with (a commit or branch)")
    parser.add_argument("--rounds", type=int, default=21, help="rounds; each runs every command once per tree")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tinywf-startup-") as scratch:
        old = Path(scratch) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(old), args.rev],
                       check=True)
        try:
            return compare(old, Path(scratch), args.rev, args.rounds)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)


def compare(old: Path, scratch: Path, rev: str, rounds: int) -> int:
    """Alternate the commands of both trees for ``rounds`` rounds and print medians and ratios."""
    trees = {"this": REPO, rev: old}
    states = {name: scratch / f"state-{index}" for index, name in enumerate(trees)}
    runs = {name: start_run(tree, states[name]) for name, tree in trees.items()}
    samples: dict[tuple[str, str], Stats] = {}

    def once(name: str, command: str) -> float:
        argv = [sys.executable, "-m", "tinywf_cli", *[runs[name] if a == "RUN" else a for a in COMMANDS[command]]]
        seconds, done = run_process(argv, env={"PYTHONPATH": str(trees[name]), "TINYWF_STATE_DIR": str(states[name]),
                                               "NO_COLOR": "1"}, cwd=states[name])
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return seconds * 1e3

    baseline = Stats()
    for command in COMMANDS:  # warm-up: bytecode caches written, as after a first run
        for name in trees:
            once(name, command)
    for _ in range(rounds):
        start = run_process([sys.executable, "-c", "pass"])[0]
        baseline.add(start * 1e3)
        for command in COMMANDS:
            for name in trees:
                samples.setdefault((name, command), Stats()).add(once(name, command))
    print(f"`python -c pass`: {baseline.cell(1)} ms; {rounds} rounds, alternating")
    print(f"| command | {rev} ms | this ms | this / {rev} (median of per-round ratios) |")
    print("| --- | --- | --- | --- |")
    for command in COMMANDS:
        before, after = samples[(rev, command)], samples[("this", command)]
        per_round = statistics.median(a / b for a, b in zip(after.samples, before.samples, strict=True))
        print(f"| `tinywf {command}` | {before.cell(1)} | {after.cell(1)} | {num(per_round, 3)}\u00d7 |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
