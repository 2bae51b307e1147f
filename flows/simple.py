"""A three-step computation: the smallest tinywf flow.

    tinywf run flows/simple.py

``step_compute`` runs its action once; if the process stopped after it, a later
``tinywf tick`` would carry on without computing again.
"""

import math
import sys

from pydantic import BaseModel

from tinywf_cli import Workflow, step


class SimpleState(BaseModel):
    start_hit: bool = False
    computed: float | None = None
    end_hit: bool = False


def heavy_compute() -> float:
    """The expensive side effect, run once per run."""
    print("\t ... do heavy computed ...", file=sys.stderr)
    return math.pi


class Simple(Workflow[SimpleState]):
    """Begin, compute once (cached), end."""

    @step
    def step_begin(self):
        self.state.start_hit = True
        self.log("start_hit")
        return self.step_compute

    @step
    def step_compute(self):
        value = yield self.action("cache_computed", heavy_compute)
        self.log("computed_hit", action_value=value)
        self.state.computed = value
        return self.step_end

    @step
    def step_end(self):
        self.state.end_hit = True
        self.log("end_hit")
        return None
