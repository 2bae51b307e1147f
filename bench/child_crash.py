"""One phase of the crash-recovery workload: ``python child_crash.py SIDE PHASE DIR``.

SIDE is ``tinywf`` or ``dbos``. PHASE ``start`` starts the five-step workflow (the caller
sets ``$BENCH_CRASH_AT`` so the process kills itself inside a step); ``recover`` carries
the run on to its end the way each side recovers (``Runtime.tick`` / ``DBOS.launch``) and
prints the seconds that took as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

RUN_ID = "crash-five"


def tinywf_phase(phase: str, folder: Path) -> float:
    """Start or recover the tinywf run; returns the seconds the call took."""
    from sample_flows import FiveSteps
    from tinywf_cli import Runtime

    start = time.perf_counter()
    runtime = Runtime(folder / "state")
    if phase == "start":
        runtime.start(FiveSteps, input={"log": str(folder / "effects.log")}, run_id=RUN_ID)
    else:
        report = runtime.tick()
        status = runtime.get(RUN_ID).status
        if status != "finished":
            raise SystemExit(f"run is {status} after tick: {report.model_dump_json()}")
    return time.perf_counter() - start


def dbos_phase(phase: str, folder: Path) -> float:
    """Start or recover the DBOS workflow; returns the seconds from launch to its result."""
    from dbos import DBOS, SetWorkflowID

    import dbos_app

    start = time.perf_counter()
    dbos_app.launch(folder / "dbos.sqlite")
    if phase == "start":
        with SetWorkflowID(RUN_ID):
            dbos_app.five_steps(str(folder / "effects.log"))
    else:
        result: object = DBOS.retrieve_workflow(RUN_ID).get_result(polling_interval_sec=0.01)
        if result != 5:
            raise SystemExit(f"workflow returned {result!r}")
    seconds = time.perf_counter() - start
    dbos_app.shutdown()
    return seconds


if __name__ == "__main__":
    side, phase, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    seconds = tinywf_phase(phase, folder) if side == "tinywf" else dbos_phase(phase, folder)
    print(json.dumps({"seconds": seconds}))
