"""Limits and breakers from outside the runs: list them, override a limit, close a breaker by
hand; and what a run gives back when it is cancelled or paused while it holds or waits for room."""

from __future__ import annotations

from typing import Any

from tinywf_cli.clock import parse_rate, rate_text
from tinywf_cli.errors import BadInput, LimitNotFound, StorageError
from tinywf_cli.model import BreakerList, BreakerRow, LimitList, LimitRow
from tinywf_cli.names import GATE_NAME
from tinywf_cli.runtime.advancing import Advancing, _Follow
from tinywf_cli.stores.limits import Cells, breaker_row, cells_of, limit_row, reset_breaker


class Limits(Advancing):
    """``tinywf limits``, ``limit set|reset``, ``breakers``, ``breaker reset``."""

    def _cells(self) -> Cells:
        cells = cells_of(self.store)
        if cells is None:
            raise StorageError(self.store.target, "this store keeps no limits or breakers")
        return cells

    def limits(self, name: str | None = None) -> LimitList:
        """Every limit the store has seen (each key of a keyed one on its own row), as it applies
        now: a ``tinywf limit set`` over what the code says; its attempts in flight, its waiting runs."""
        cells = self._cells()
        overrides = {o["name"]: o for o in cells.all_cells("override") if isinstance(o.get("name"), str)}
        rows = [LimitRow(**limit_row(cell, overrides.get(cell["name"]))) for cell in cells.all_cells("limit")
                if isinstance(cell.get("name"), str)]
        seen = {r.name for r in rows}
        for other, override in overrides.items():  # set before any run used it
            if other in seen:
                continue
            layers = [(None, override.get("all")), *list((override.get("keys") or {}).items())]
            for key, layer in layers:
                if layer:
                    rate = layer.get("rate")
                    rows.append(LimitRow(name=other, key=key, rate=None if rate is None else _rate(rate),
                                         concurrency=layer.get("concurrency"), in_flight=0, waiting=0))
        rows.sort(key=lambda r: (r.name, r.key is not None, r.key or ""))
        return LimitList(limits=[r for r in rows if name is None or r.name == name])

    def set_limit(self, name: str, *, key: str | None = None, rate: str | None = None,
                  concurrency: int | None = None) -> LimitList:
        """Override what the code says of limit ``name`` (of one ``key`` of it, with ``key``), for
        every process of the store, until ``reset_limit``; waiting runs look again at once."""
        _check_name(name, "limit")
        if rate is None and concurrency is None:
            raise BadInput("limit set: give --rate N/s|N/m|N/h, --concurrency N, or both")
        layer: dict[str, Any] = {}
        if rate is not None:
            try:
                count, per = parse_rate(rate)
            except ValueError as exc:
                raise BadInput(f"--rate: {exc}") from None
            layer["rate"] = [count, per]
        if concurrency is not None:
            if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
                raise BadInput(f"--concurrency must be an integer >= 1, not {concurrency!r}")
            layer["concurrency"] = concurrency
        if key is not None and not 0 < len(key) <= 200:
            raise BadInput("--key takes 1-200 characters")

        def change(cell: dict[str, Any]) -> None:
            cell["name"] = name
            target = cell.setdefault("all", {}) if key is None else cell.setdefault("keys", {}).setdefault(key, {})
            target.update(layer)

        cells = self._cells()
        cells.change_cell("override", name, None, change)
        self._wake_queued(cells, name, key)
        return self.limits(name)

    def reset_limit(self, name: str) -> LimitList:
        """Drop every override of limit ``name``: the code's word holds again."""
        _check_name(name, "limit")
        cells = self._cells()
        known = any(c.get("name") == name for c in cells.all_cells("limit"))
        if not cells.delete_cell("override", name, None) and not known:
            raise LimitNotFound("limit", name)
        self._wake_queued(cells, name, None)
        return self.limits(name)

    def _wake_queued(self, cells: Cells, name: str, key: str | None) -> None:
        """Wake every run queued under limit ``name`` (one key of it): what applies changed."""
        follow = _Follow()
        for cell in cells.all_cells("limit"):
            if cell.get("name") == name and (key is None or cell.get("key") == key):
                follow.woken.extend(q[1] for q in cell.get("queue") or [])
        self._wake_waiters(follow)

    def breakers(self, name: str | None = None) -> BreakerList:
        """Every breaker the store has seen, its state now, its failures counted, when it half opens."""
        now = self.clock.now()
        rows = [BreakerRow(**breaker_row(cell, now)) for cell in self._cells().all_cells("breaker")
                if isinstance(cell.get("name"), str) and (name is None or cell["name"] == name)]
        return BreakerList(breakers=rows)

    def reset_breaker(self, name: str) -> BreakerList:
        """Close breaker ``name`` by hand; the runs waiting for it go on (``tick`` takes them up)."""
        _check_name(name, "breaker")
        cells = self._cells()
        if cells.read_cell("breaker", name, None) is None:
            raise LimitNotFound("breaker", name)
        follow = _Follow()
        follow.woken = cells.change_cell("breaker", name, None, reset_breaker)
        self._wake_waiters(follow)
        return self.breakers(name)


def _check_name(name: str, kind: str) -> None:
    if not isinstance(name, str) or GATE_NAME.fullmatch(name) is None:
        raise BadInput(f"invalid {kind} name {name!r}: 1-64 characters from A-Z a-z 0-9 . _ - "
                       "starting with a letter or digit")


def _rate(rate: list[Any]) -> str:
    return rate_text(int(rate[0]), float(rate[1]))
