"""``Runtime``: the library API under the CLI — start, resolve, send, signal, tick, and more.

Each call opens the run's session (its lock), loads it, makes one engine call, and returns
the pydantic document the CLI prints with ``--json``. Errors are the typed ``TinyWFError``
family. Runs never hold two locks in an order that could deadlock: a parent creates its
child while holding its own lock (nobody else can hold a lock of a run not yet created);
children are advanced, and parents woken, only after the session that asked for it closed.

``Runtime`` is made of one part per concern, each a module beside this one:

- ``base``: the store, clock and loader, a run's session and lock, run ids;
- ``advancing``: advancing a run with the engine, its child runs, waking parents;
- ``commands``: the commands on one run (start, resolve, send, signal, cancel, …);
- ``schedules``: the store's schedules, and starting their due slots at the top of each ``tick``;
- ``ticking``: ``tick`` and the worker's loop;
- ``maintenance``: reindex, check, fork, prune, copy;
- ``limits``: limits and breakers seen from outside the runs (list, override, reset);
- ``reading``: ``get`` and ``list``;
- ``bulk``: ``cancel``, ``retry``, ``pause``, ``resume`` of every run a filter picks;
- ``waiting``: ``wait``, until a run ended (or waits for an event), whoever advances it.
"""

from __future__ import annotations

from tinywf_cli.runtime.base import (
    check_run_id,
    clean_doc,
    due_now,
    new_run_id,
    new_run_id_suffix,
    own_doc,
    start_values,
)
from tinywf_cli.runtime.bulk import Bulk
from tinywf_cli.runtime.commands import MAX_QUEUED_EVENTS
from tinywf_cli.runtime.maintenance import PRUNABLE, Maintenance, parse_age
from tinywf_cli.runtime.ticking import CLAIMED_ELSEWHERE, MIN_BACKOFF, Ticking
from tinywf_cli.runtime.waiting import Waiting

__all__ = [
    "CLAIMED_ELSEWHERE",
    "MAX_QUEUED_EVENTS",
    "MIN_BACKOFF",
    "PRUNABLE",
    "Runtime",
    "check_run_id",
    "clean_doc",
    "due_now",
    "new_run_id",
    "new_run_id_suffix",
    "own_doc",
    "parse_age",
    "start_values",
]


class Runtime(Ticking, Maintenance, Bulk, Waiting):
    """Runs workflows stored in a state directory, a PostgreSQL database, or any ``Store``.

    Example::

        rt = Runtime("state")
        run = rt.start("flows/guess_game.py")
        run = rt.resolve(run.run_id, run.pending[0].resume_id, 42)
    """

    def close(self) -> None:
        """Release what the store holds open (database connections); the runtime may be used again."""
        self.store.close()

