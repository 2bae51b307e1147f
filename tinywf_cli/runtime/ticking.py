"""Due work: ``tick`` advances every due run, ``work`` is the worker's loop of ticks."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from tinywf_cli.errors import RunLocked, RunNotFound, StoreUnavailable, TinyWFError
from tinywf_cli.model import TickAdvanced, TickReport, TickSkipped
from tinywf_cli.runtime.advancing import _Follow
from tinywf_cli.runtime.base import due_now
from tinywf_cli.runtime.schedules import Scheduling
from tinywf_cli.stores.base import RunSession, wakes_parent

#: Why ``tick`` skipped a run that another process of a shared store holds a live claim on.
CLAIMED_ELSEWHERE = "claimed by another worker"

#: The first pause of a worker whose store cannot be reached (doubling up to its poll).
MIN_BACKOFF = 0.5


def _itself(session: AbstractContextManager[RunSession]) -> AbstractContextManager[RunSession]:
    return session


class Ticking(Scheduling):
    """Start the due slots of schedules, and advance the runs that are due, once (``tick``) or
    until stopped (``work``)."""

    def tick(self, limit: int | None = None, *, stop: threading.Event | None = None) -> TickReport:
        """Start the due slots of schedules, advance every due run (timers, retry delays, event
        timeouts, the runs of those slots), recover dead ones, and wake the parents of children
        that ended.

        Runs locked by another process are skipped and reported, never waited for; so is a
        run that cannot be read or loaded: one bad run never stops the others. On a store
        that claims runs (PostgreSQL), a run another process holds a live claim on is
        another worker's: skipped as ``claimed by another worker`` and not counted as due.
        With ``stop``, the pass ends after the run in progress once it is set.
        """
        now = self.clock.now()
        self.start_due_slots(now)
        report = TickReport(due=0)
        claims = hasattr(self.store, "claim_due")

        def done() -> bool:
            return (limit is not None and len(report.advanced) >= limit) or (stop is not None and stop.is_set())

        for run_id, opening in self._due_runs(now, done):
            counted = False
            follow = _Follow()
            try:
                with self._held(run_id), opening() as session:
                    try:
                        run = session.load()
                    except RunNotFound:  # a create that never committed left an index entry
                        continue
                    head = run.head
                    if not due_now(head, now):
                        continue  # a stale index entry: the session drops it
                    report.due += 1
                    counted = True
                    if wakes_parent(head):
                        follow.after(None, head)
                    else:
                        self._advance(session, run, follow, recover=head.status == "running")
                        report.advanced.append(TickAdvanced(run_id=run_id, status=head.status))
                report.advanced.extend(self._settle(follow))
            except RunLocked:
                if claims:  # a live claim: another worker advances it; not due for this one
                    report.skipped.append(TickSkipped(run_id=run_id, reason=CLAIMED_ELSEWHERE, elsewhere=True))
                else:  # a directory's lock: its holder may be stuck, so it is reported
                    report.due += 0 if counted else 1
                    report.skipped.append(TickSkipped(run_id=run_id, reason="locked by another process"))
            except TinyWFError as exc:
                report.due += 0 if counted else 1
                report.skipped.append(TickSkipped(run_id=run_id, reason=exc.message))
            except Exception as exc:  # a fault of tinywf's own with this run: the others still go on
                report.due += 0 if counted else 1
                report.skipped.append(TickSkipped(run_id=run_id,
                                                  reason=f"internal error: {type(exc).__name__}: {exc}"))
        return report

    def _due_runs(self, now: datetime, done: Callable[[], bool]
                  ) -> Iterator[tuple[str, Callable[[], AbstractContextManager[RunSession]]]]:
        """The runs due by ``now``, each with how to hold it, until ``done()``.

        A store that claims its next due run itself (PostgreSQL: ``claim_due``, one statement,
        skipping runs others are claiming) is asked run by run; what it never hands out (a run
        another process holds) comes after, from ``due``, to be reported as locked.
        """
        claim = getattr(self.store, "claim_due", None)
        seen: set[str] = set()
        while claim is not None and not done():
            session: Any = claim(now, seen)  # a session that releases the run when it exits
            if session is None:
                break
            seen.add(session.run_id)
            yield session.run_id, functools.partial(_itself, session)
        for run_id in self.store.due(now):
            if done():
                return
            if run_id not in seen:
                yield run_id, functools.partial(self.store.open, run_id, 0)

    def next_due(self) -> datetime | None:
        """When the earliest waiting run will be due, or the earliest slot of a schedule comes,
        whichever is first (for ``worker``)."""
        times = [when for when in (self.store.next_due(), self.next_slot()) if when is not None]
        return min(times, default=None)

    def work(self, stop: threading.Event, *, poll: float = 5.0,
             on_tick: Callable[[TickReport], None] | None = None,
             on_error: Callable[[TinyWFError], None] | None = None,
             on_unavailable: Callable[[StoreUnavailable], None] | None = None) -> None:
        """Tick until ``stop`` is set, waiting on the runtime's clock until the next due time
        (at most ``poll`` seconds) between passes: ``tinywf worker`` is this loop.

        A pass ends after the run in progress once ``stop`` is set. ``on_tick`` receives the
        report of each pass that found due runs. A store that can wake workers (PostgreSQL:
        ``wait_for_work``) cuts the wait short when a run is released anywhere. A store that
        cannot be reached is waited for (``on_unavailable`` hears of it), never given up on; a
        pass that fails as a whole otherwise (a directory that cannot be listed) goes to
        ``on_error`` and the loop goes on after ``poll``.
        """
        wait = getattr(self.store, "wait_for_work", None)
        backoff = MIN_BACKOFF
        while not stop.is_set():
            try:
                started = self.clock.now()
                report = self.tick(stop=stop)
                if report.due and on_tick is not None:
                    on_tick(report)
                until = self.next_due()
                # a run that came due while the pass went on was not seen by it: go again at once
                # (a due time that had passed before the pass is a run it skipped: wait for it)
                if not stop.is_set() and not (until is not None and started < until <= self.clock.now()):
                    self.clock.idle(until, poll, stop, wait)
                backoff = MIN_BACKOFF
            except StoreUnavailable as exc:
                if on_unavailable is not None:
                    on_unavailable(exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, max(poll, MIN_BACKOFF))
            except TinyWFError as exc:
                if on_error is None:
                    raise
                on_error(exc)
                stop.wait(poll)
