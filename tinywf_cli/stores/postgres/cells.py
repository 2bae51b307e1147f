"""The PostgreSQL store's limits and breakers: one row of ``cells`` per limit (and key) and breaker.

A change reads the row (its JSON and version), applies the rule of
``tinywf_cli.stores.limits`` here, and writes it back in one ``UPDATE`` fenced by the version
it read (an ``INSERT … ON CONFLICT DO NOTHING`` for a new cell): of two processes taking the
last slot at once, one statement wins and the other matches no row, reads again and decides
again. No transaction stays open and nothing is locked while the rule runs. A change that
changes nothing writes nothing.

A slot's holder carries the epoch of its run's claim: it counts while that claim is alive
(the database's clock), so the slots of a process that died come back once its lease ran out.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tinywf_cli.errors import StorageError
from tinywf_cli.jsonio import dumps
from tinywf_cli.stores.limits import LET_GO, CellKind, alive_by_head

if TYPE_CHECKING:
    from tinywf_cli.stores.postgres.store import PostgresStore

T = TypeVar("T")

#: Tries of a change that keeps losing the race for its row before it gives up.
MAX_TRIES = 200


class PostgresCells:
    """The ``cells`` table of a PostgreSQL store."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    def _where(self, kind: CellKind, name: str, key: str | None) -> dict[str, Any]:
        return {"kind": kind, "name": name, "key": "" if key is None else key}

    def read_cell(self, kind: CellKind, name: str, key: str | None) -> dict[str, Any] | None:
        """The cell as last written."""
        rows = self.store._execute("cell_read", self._where(kind, name, key), f"reading {kind} '{name}'")
        return None if not rows else dict(json.loads(rows[0][0]))

    def change_cell(self, kind: CellKind, name: str, key: str | None, change: Callable[[dict[str, Any]], T]) -> T:
        """Read, change, and write back only if nobody wrote the cell in between (else again)."""
        store = self.store
        where = self._where(kind, name, key)
        doing = f"changing {kind} '{name}'"
        for tries in range(MAX_TRIES):
            rows = store._execute("cell_read", where, doing)
            cell: dict[str, Any] = {} if not rows else dict(json.loads(rows[0][0]))
            old = None if not rows else dumps(cell)  # before the change: it changes nested lists in place
            result = change(cell)
            new = dumps(cell)
            if new == old:
                return result
            if not rows:
                if not cell or store._execute("cell_insert", dict(where, state=new), doing):
                    return result
            elif store._execute("cell_update", dict(where, state=new, version=rows[0][1]), doing):
                return result
            if tries > 2:  # a busy cell: let the others through before reading it again
                time.sleep(random.uniform(0, 0.002 * min(tries, 20)))
        raise StorageError(store.target, f"{kind} '{name}' kept changing under {MAX_TRIES} tries; try again")

    def delete_cell(self, kind: CellKind, name: str, key: str | None) -> bool:
        """Remove a cell; whether there was one."""
        return bool(self.store._execute("cell_delete", self._where(kind, name, key), f"removing {kind} '{name}'"))

    def all_cells(self, kind: CellKind) -> list[dict[str, Any]]:
        """Every cell of ``kind``, by name and key."""
        rows = self.store._execute("cell_all", {"kind": kind}, f"listing {kind}s")
        return [dict(json.loads(row[0])) for row in rows]

    def holder_alive(self, holder: list[Any]) -> bool:
        """A whole run holds until it ends; an attempt while the claim it was made under is alive."""
        rows = self.store._execute("slot_holder", {"run_id": holder[1], "epoch": holder[3]},
                                   f"reading run '{holder[1]}'")
        if not rows:
            return False
        status, visit, claimed = rows[0]
        if holder[2] is None:
            return status not in LET_GO
        if holder[3] is None:
            return alive_by_head(status, visit, holder)
        return bool(claimed) and visit == holder[2]
