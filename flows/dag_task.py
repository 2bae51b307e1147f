"""Chains of tasks run on an outside system: start each, poll until done, in parallel.

    t1_1 --> t1_2 --> t1_3
    t2_1
    t3_1 --> t3_2

    tinywf run flows/dag_task.py --wait      # polls every 0.5 s with a durable sleep

Every poll round is one ``self.parallel`` over the chains' current tasks; between rounds
the run sleeps durably, so a killed process (or a cron-driven ``tick``) picks up at the
next round without starting any task twice.
"""

import sys
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from tinywf_cli import Workflow, step


class Task(BaseModel):
    id: str
    duration: float  # seconds the outside system takes
    status: Literal["waiting", "processing", "end"] = "waiting"
    started_at: datetime | None = None
    ended_at: datetime | None = None


def chains() -> list[list[Task]]:
    spec = [[("t1_1", 1), ("t1_2", 1), ("t1_3", 1)], [("t2_1", 2)], [("t3_1", 1), ("t3_2", 3)]]
    return [[Task(id=i, duration=d) for i, d in chain] for chain in spec]


class DagState(BaseModel):
    sequences: list[list[Task]] = chains()
    poll_interval: float = 0.5
    rounds: int = 0


def start_task(task_id: str) -> str:
    """Ask the outside system to start a task."""
    print(f"start task {task_id}", file=sys.stderr)
    return "processing"


def poll_task(task_id: str, started_at: str, duration: float, now: str) -> str:
    """Ask the outside system how a task is doing (simulated from the times given)."""
    elapsed = (datetime.fromisoformat(now) - datetime.fromisoformat(started_at)).total_seconds()
    status = "end" if elapsed >= duration else "processing"
    print(f"poll task {task_id} -> {status}", file=sys.stderr)
    return status


class DagTask(Workflow[DagState]):
    """Run task chains with dependencies; finish when every task has ended."""

    @step
    def step_begin(self):
        return self.step_process

    @step
    def step_process(self):
        now = yield self.sleep("start", 0)
        rounds = 0
        while True:
            current = [t for t in (self.next_task(c) for c in self.state.sequences) if t is not None]
            if not current:
                break
            calls = {}
            for task in current:
                if task.status == "waiting":
                    calls[task.id] = self.action(f"start_{task.id}", start_task, task.id)
                else:
                    calls[task.id] = self.action(f"poll_{task.id}_{rounds}", poll_task, task.id,
                                                 task.started_at.isoformat(), task.duration, now.isoformat())
            results = yield self.parallel(calls)
            for task in current:
                if task.status == "waiting":
                    task.status, task.started_at = "processing", now
                    self.log("start_hit", id=task.id)
                elif results[task.id] == "end":
                    task.status, task.ended_at = "end", now
                    self.log("end_hit", id=task.id)
            rounds += 1
            self.state.rounds = rounds
            if all(self.next_task(c) is None for c in self.state.sequences):
                break
            now = yield self.sleep(f"poll_{rounds}", self.state.poll_interval)
        return self.step_end

    @step
    def step_end(self):
        return None

    @staticmethod
    def next_task(chain: list[Task]) -> Task | None:
        """The first task of a chain that has not ended."""
        return next((t for t in chain if t.status != "end"), None)
