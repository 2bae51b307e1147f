"""The ``tinywf`` command (``tinywf_cli.cli:main`` is its entry point).

``main`` runs it and maps errors to exit codes; ``app`` is the Typer app and the options its
commands share; ``session`` what one command shares (where runs live, the runtime);
``prompts`` what follows a command that moved a run. The commands, by group: ``runs``
(run, resolve, send, signal, show, list), ``workers`` (tick, worker), ``control`` (cancel,
retry, pause, resume), ``maintenance`` (fork, prune, check, copy), ``flows`` (graph, schema),
``serving`` (serve, link), ``schedules`` (schedule add, apply, list, show, pause, resume,
trigger, backfill, remove), ``scaffold`` (new). ``render`` draws for people; ``output`` guards the streams.
"""

from tinywf_cli.cli.main import app, main

__all__ = ["app", "main"]
