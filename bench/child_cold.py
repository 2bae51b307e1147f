"""Cold start as a whole process: ``python child_cold.py dbos DATABASE`` or ``tinywf-lib STATE_DIR``.

``dbos`` imports DBOS, launches it on a SQLite system database and runs a one-step
workflow; ``tinywf-lib`` starts ``cold_flow.py`` through ``tinywf_cli.Runtime`` (the
library under the CLI). Each exits 0 when the workflow finished.
"""

from __future__ import annotations

import sys
from pathlib import Path


def run_dbos(database: Path) -> None:
    """Launch DBOS and run a one-step workflow."""
    from dbos import DBOS

    @DBOS.step()
    def echo(value: int) -> int:
        return value

    @DBOS.workflow()
    def one_step() -> int:
        return echo(1)

    DBOS(config={"name": "tinywf-bench-cold", "system_database_url": f"sqlite:///{database}",
                 "log_level": "WARNING"})
    DBOS.launch()
    assert one_step() == 1
    DBOS.destroy()


def run_tinywf(state_dir: Path) -> None:
    """Start the one-action flow with the library."""
    from tinywf_cli import Runtime

    run = Runtime(state_dir).start(str(Path(__file__).with_name("cold_flow.py")))
    assert run.status == "finished", run.status


if __name__ == "__main__":
    side, target = sys.argv[1], Path(sys.argv[2])
    if side == "dbos":
        run_dbos(target)
    elif side == "tinywf-lib":
        run_tinywf(target)
    else:
        sys.exit(f"unknown side {side!r}")
