"""``tinywf new``: a flow file and its test, from ``--steps`` or a ``--from SPEC.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tinywf_cli.cli.app import Debug, Json, StateDir, StoreTarget, app
from tinywf_cli.errors import BadInput


@app.command()
def new(
    name: Annotated[str, typer.Argument(metavar="NAME", show_default=False,
                                        help="The flow's name: the file DIR/NAME.py, its test tests/test_NAME.py.")],
    steps: Annotated[str | None, typer.Option("--steps", metavar="A,B,C",
                                              help="The steps, in order: each does one task of its name and goes "
                                                   "to the next. Default: start,finish.")] = None,
    spec_file: Annotated[Path | None, typer.Option("--from", metavar="SPEC.json", show_default=False,
                                                   help="A spec of the flow: its state, steps, tasks, waits, "
                                                        "timers and transitions.")] = None,
    directory: Annotated[Path, typer.Option("--dir", metavar="DIR",
                                            help="The folder of the flow file.")] = Path("flows"),
    force: Annotated[bool, typer.Option("--force", help="Replace the files when they exist.")] = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Write a new flow, DIR/NAME.py, and its test, tests/test_NAME.py, ready to run.

    The flow file holds the control flow (the Workflow class: its state model, steps,
    transitions, waits and timers) apart from the task functions it calls: stubs to fill
    in, each with a TODO. The test walks a run through the flow in memory and passes as
    written. A spec is {"name", "doc", "state": {field: "type"}, "steps": [{"name",
    "tasks": [...], "wait": {"event": KEY, "type": "bool", "timeout": "2d"} or {"timer":
    "1d"}, "next": [...]}]}: the first step starts, an empty next ends the run. An existing
    file is replaced only with --force (else exit 4); a bad spec is exit 2. Nothing is
    written unless all is well.

    \b
    Example:
        tinywf new refund --steps ask,approve,pay
        tinywf run flows/refund.py
    """
    from tinywf_cli.authoring.scaffold import new_flow
    from tinywf_cli.authoring.spec import read_spec, steps_spec

    if steps is not None and spec_file is not None:
        raise BadInput("give --steps or --from SPEC.json, not both")
    if spec_file is None:
        spec = steps_spec(name, steps)
    else:
        try:
            text = spec_file.read_bytes()
        except OSError as exc:
            raise BadInput(f"cannot read the spec '{spec_file}': {exc.strerror}") from None
        spec = read_spec(text, name, str(spec_file))
    made = new_flow(spec, directory, force=force)
    if as_json:
        document = {"flow": str(made.flow), "test": str(made.test), "workflow": spec.workflow,
                    "steps": [s.name for s in spec.steps]}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    print(f"wrote {made.flow} ({spec.workflow}: {len(spec.steps)} steps, {len(spec.tasks())} tasks to fill in) "
          f"and its test {made.test}")
    print(f"  tinywf run {made.flow}")
    print(f"  tinywf graph {made.flow}")
    print(f"  pytest {made.test}")
