"""Test your own flows in pytest: an in-memory store and a clock you move by hand.

Example::

    from tinywf_cli.testing import MemoryRuntime

    def test_checkout_times_out():
        rt = MemoryRuntime()
        run = rt.start(Checkout, input={"email": "a@b.c"})
        assert run.status == "waiting"
        rt.clock.advance(timedelta(days=2))
        rt.tick()
        assert rt.get(run.run_id).state["approved"] is False

``MemoryRuntime`` is a ``Runtime``: every call of the library API works the same way. Its
store's target (``rt.store_target``, ``self.store_target`` in flow code) is ``memory://`` and
a token: ``Runtime(self.store_target)`` inside an action reaches the same runs, on the same
clock, and no directory is ever made.
"""

from __future__ import annotations

from datetime import datetime

from tinywf_cli.clock import ManualClock
from tinywf_cli.runtime.runtime import Runtime
from tinywf_cli.stores.memory import MemoryStore

__all__ = ["ManualClock", "MemoryRuntime", "MemoryStore"]


class MemoryRuntime(Runtime):
    """A ``Runtime`` over a ``MemoryStore`` with a ``ManualClock`` (``rt.clock``)."""

    clock: ManualClock

    def __init__(self, now: datetime | str | None = None, lock_timeout: float = 10) -> None:
        store = MemoryStore()
        super().__init__(store, clock=ManualClock(now), lock_timeout=lock_timeout)
        store.clock = self.clock  # ``Runtime(self.store_target)`` in an action moves with this clock
