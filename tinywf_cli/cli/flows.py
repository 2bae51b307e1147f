"""Commands that read a flow rather than a run: ``graph`` (from its source) and ``schema``."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated, Any

import typer

from tinywf_cli.cli.app import (
    Debug,
    Json,
    ReadLockTimeout,
    StateDir,
    StoreTarget,
    app,
)
from tinywf_cli.cli.session import DEFAULT_LOCK_TIMEOUT, Session
from tinywf_cli.errors import BadInput

FlowSpec = Annotated[str, typer.Argument(metavar="FLOW", help="path.py or path.py:Class", show_default=False)]
GRAPH_FORMATS = ("mermaid", "dot")


@app.command()
def graph(
    flow: FlowSpec,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT",
                                     help="mermaid (a stateDiagram-v2) or dot (Graphviz).")] = "mermaid",
    run_id: Annotated[str | None, typer.Option("--run", metavar="RUN",
                                               help="Mark the steps this run visited, and how often.")] = None,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: ReadLockTimeout = DEFAULT_LOCK_TIMEOUT,
    debug: Debug = False,
) -> None:
    """Draw FLOW's steps and transitions, read from its source without running it.

    Each step's note lists its actions, sleeps and waits in source order; a transition
    computed at run time is drawn as "?". With --run, the steps the run visited are
    marked with their visit counts. Pipe --format dot into Graphviz (`dot -Tsvg`) for
    an image; --json prints what was read as one document.

    \b
    Example:
        tinywf graph flows/guess_game.py --run game-1
    """
    if fmt not in GRAPH_FORMATS:
        raise BadInput(f"--format must be one of {', '.join(GRAPH_FORMATS)}, not {fmt!r}")
    from tinywf_cli.analysis.graph import RunTrace, flow_document, to_dot, to_mermaid
    from tinywf_cli.authoring.loader import read_flow

    workflow, shown = read_flow(flow)
    trace = None
    if run_id is not None:
        trace = RunTrace.of(Session(store, state_dir, as_json).runtime.get(run_id))
        for warning in trace.mismatches(workflow):
            print(f"warning: {warning}", file=sys.stderr)
    for problem in workflow.problems:
        print(f"warning: {shown.rpartition(':')[0]}:{problem.line}: {problem.message}", file=sys.stderr)
    if as_json:
        sys.stdout.write(json.dumps(flow_document(workflow, shown, trace), indent=2) + "\n")
        return
    sys.stdout.write((to_dot if fmt == "dot" else to_mermaid)(workflow, trace))


@app.command()
def schema(
    flow: FlowSpec,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Print the JSON schema of FLOW's state model (the pydantic model of Workflow[Model]).

    The flow is imported (unlike `graph`). For an untyped Workflow, whose state is a plain
    dict, says so; with --json prints {"workflow": ..., "schema": ...}, the schema null then.

    \b
    Example:
        tinywf schema flows/interval_payment.py
    """
    from tinywf_cli.authoring.loader import FlowLoader

    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the schema, not the flow's prints
        cls, _, shown = FlowLoader().load(flow)
    model = cls.__tinywf_model__
    document: dict[str, Any] | None = None
    if model is not None:
        from pydantic.errors import PydanticUserError

        try:
            document = model.model_json_schema()
        except PydanticUserError as exc:
            raise BadInput(f"{shown}: no JSON schema for {model.__name__}: {exc.message}") from None
    if as_json:
        sys.stdout.write(json.dumps({"workflow": shown, "schema": document}, indent=2) + "\n")
    elif document is None:
        print(f"{shown} is an untyped Workflow: its state is a plain dict, with no schema "
              "(use Workflow[Model] with a pydantic model for one)")
    else:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
