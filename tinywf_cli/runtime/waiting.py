"""``Runtime.wait``: block until a run ended (or waits for an event), whoever advances it.

Waiting holds no lock and changes nothing: it reads the run's head, and between two reads
waits on the store's watch of the run (``Store.watch``: inotify on a state directory, LISTEN
on PostgreSQL, a condition in memory), which wakes it as soon as another process (or host, or
thread) changed the run. A run that the watch missed for any reason is still looked at again
every ``RECHECK`` seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Literal

from tinywf_cli.errors import BadInput, WaitTimeout
from tinywf_cli.model import RunDocument, RunHead
from tinywf_cli.runtime.base import RuntimeBase, check_run_id
from tinywf_cli.stores.base import RunWatch

#: What ``wait`` waits for: the run's end, or its wait for an event.
Until = Literal["ended", "waiting"]
UNTIL: tuple[str, ...] = ("ended", "waiting")
#: Statuses ``wait`` stops at, whatever it waits for: nothing changes them by itself.
STOPPED = frozenset({"finished", "failed", "blocked", "cancelled"})
#: How often a run is read again while its store's watch says nothing (a missed wake-up costs this).
RECHECK = 5.0
#: How often a store without a watch is read.
POLL = 0.25


def arrived(head: RunHead, until: str) -> bool:
    """Whether a run is where ``wait(until=...)`` waits for it to be."""
    if head.status in STOPPED:
        return True
    return until == "waiting" and head.status == "waiting" and any(p.kind == "event" for p in head.pending)


class _Polling:
    """The watch of a store that offers none: every look is a possible change."""

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        stop.wait(min(seconds, POLL))
        return True


class Waiting(RuntimeBase):
    """``wait``: until a run ended or waits for an event."""

    def wait(self, run_id: str, *, timeout: float | None = None, until: Until = "ended") -> RunDocument:
        """Block until the run ended (finished, failed, blocked or cancelled), or with
        ``until="waiting"`` until it waits for an event (or ended); returns its document.

        The run may be advanced by any process or host: this call only watches. ``timeout`` is
        seconds on the runtime's clock (a ``ManualClock`` jumps there instead of sleeping);
        past it, WaitTimeout (exit 6). A run that does not exist is RunNotFound (exit 3).
        """
        check_run_id(run_id)
        if until not in UNTIL:
            raise BadInput(f"wait for one of {', '.join(UNTIL)}, not {until!r}")
        if timeout is not None and not 0 <= timeout < 100 * 366 * 86400:  # False for NaN too
            raise BadInput(f"the timeout must be a number of seconds >= 0, not {timeout!r}")
        clock = self.clock
        deadline = None if timeout is None else clock.now() + timedelta(seconds=timeout)
        stop = threading.Event()
        with self._watch(run_id) as watch:
            while True:
                head = self.store.head(run_id)
                if arrived(head, until):
                    return RunDocument.of(head)
                if deadline is not None and clock.now() >= deadline:
                    assert timeout is not None
                    raise WaitTimeout(run_id, timeout, head.status, until)
                clock.idle(deadline, RECHECK, stop, watch.wait)

    @contextmanager
    def _watch(self, run_id: str) -> Iterator[RunWatch]:
        watch: Any = getattr(self.store, "watch", None)
        if watch is None:
            yield _Polling()
            return
        with watch(run_id) as watching:
            yield watching
