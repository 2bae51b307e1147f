"""Due work: ``tick`` advances every due run, ``work`` is the worker's loop of ticks.

Many runs at once: with ``concurrency=N`` a pass hands its due runs to a crew of up to N
threads (``crew.py``), one run to one thread, which holds it under its lock or claim while
it advances, then advances the children it started and wakes the parents of children that
ended, each after the run's own session closed — per thread, as with one thread. A run is
taken (its lock tried, or on PostgreSQL its claim made) only once a thread is free for it:
no run waits claimed for a thread. On PostgreSQL the pass claims a run in the thread that
hands it over and the crew thread uses the session (a session is not tied to a connection:
each thread runs its statements on its own), while the keeper renews every claim the
process holds, an action running for minutes included.

A ``tick`` waits for every run it handed out. A worker keeps one crew for its whole loop and
does not: each pass hands out the due runs not already in flight, and the loop looks again
as soon as a run ends (room was made), the next run not in flight comes due, or the store
wakes it, so one slow action never holds up the runs behind it. A pass's report is handed on
once all its runs have ended.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from tinywf_cli.clock import MIN_IDLE, wait_for_any
from tinywf_cli.errors import BadInput, RunLocked, RunNotFound, StoreUnavailable, TinyWFError
from tinywf_cli.model import TickAdvanced, TickReport, TickSkipped
from tinywf_cli.runtime.advancing import _Follow
from tinywf_cli.runtime.base import due_now
from tinywf_cli.runtime.crew import DEFAULT_CONCURRENCY, Crew
from tinywf_cli.runtime.schedules import Scheduling
from tinywf_cli.stores.base import RunSession, wakes_parent

#: Why ``tick`` skipped a run that another process of a shared store holds a live claim on.
CLAIMED_ELSEWHERE = "claimed by another worker"

#: The first pause of a worker whose store cannot be reached (doubling up to its poll).
MIN_BACKOFF = 0.5


def _itself(session: AbstractContextManager[RunSession]) -> AbstractContextManager[RunSession]:
    return session


class _InFlight:
    """A worker's runs in flight, across its passes: which they are, the reports of the passes
    whose runs have all ended (for the loop to hand on, in that order), and an interrupt that
    ended one of them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: set[str] = set()
        self.reports: deque[TickReport] = deque()
        self.failure: BaseException | None = None
        #: Set when a run in flight advanced and ended: the loop looks for work again (the run
        #: may have made more due; one that was skipped did not).
        self.changed = threading.Event()

    def took(self, run_id: str) -> None:
        """A run was handed to a thread."""
        with self.lock:
            self.runs.add(run_id)

    def ended(self, run_id: str, report: TickReport | None, *, moved: bool) -> None:
        """A run's thread let it go (``report``: its pass is complete; ``moved``: it advanced a run,
        which may have made more due)."""
        with self.lock:
            self.runs.discard(run_id)
            if report is not None:
                self.reports.append(report)
        if moved:
            self.changed.set()

    def complete(self, report: TickReport) -> None:
        """A pass whose runs all ended before it was over (or that handed out none)."""
        with self.lock:
            self.reports.append(report)

    def now_flying(self) -> frozenset[str]:
        """The runs in flight now."""
        with self.lock:
            return frozenset(self.runs)

    def finished_reports(self) -> list[TickReport]:
        """The reports of complete passes not handed on yet."""
        with self.lock:
            reports, self.reports = list(self.reports), deque()
        return reports


class _Pass:
    """One pass of ``tick``: its report, shared by the threads that add to it, and when to stop
    handing out runs."""

    def __init__(self, limit: int | None, stop: threading.Event | None, flight: _InFlight | None = None) -> None:
        self.report = TickReport(due=0)
        self.limit = limit
        self.stop = stop
        self.flight = flight
        self.lock = threading.Lock()
        #: Runs handed to a thread and not done yet; whether the pass hands out no more.
        self.in_flight = 0
        self.handed_out = False
        #: An interrupt (or ``SystemExit``) that ended a crew thread's run: raised once the others are done.
        self.failure: BaseException | None = None

    def took(self, run_id: str) -> None:
        """A run was handed to a thread."""
        with self.lock:
            self.in_flight += 1
        if self.flight is not None:
            self.flight.took(run_id)

    def ended(self, run_id: str, failure: BaseException | None, *, moved: bool = True) -> None:
        """A run of this pass was let go by its thread (``failure``: an interrupt ended it;
        ``moved``: it, or a run it woke, advanced)."""
        with self.lock:
            self.in_flight -= 1
            if failure is not None and self.failure is None:
                self.failure = failure
            complete = self.handed_out and self.in_flight == 0
        if self.flight is not None:
            if failure is not None and self.flight.failure is None:
                self.flight.failure = failure
            self.flight.ended(run_id, self.report if complete else None, moved=moved)

    def close(self) -> None:
        """The pass hands out no more runs; its report is complete once the last of them ended."""
        with self.lock:
            self.handed_out = True
            complete = self.in_flight == 0
        if complete and self.flight is not None:
            self.flight.complete(self.report)

    def done(self) -> bool:
        """Whether to hand out no more runs: enough advanced (counting those in flight), stopped, or failed."""
        if self.failure is not None or (self.stop is not None and self.stop.is_set()):
            return True
        if self.flight is not None and self.flight.failure is not None:
            return True
        return self.limit is not None and len(self.report.advanced) + self.in_flight >= self.limit

    def due(self) -> None:
        """One more run was due."""
        with self.lock:
            self.report.due += 1

    def advanced(self, entries: list[TickAdvanced]) -> None:
        """Runs that advanced, in the order they finished."""
        if entries:
            with self.lock:
                self.report.advanced.extend(entries)

    def skipped(self, entry: TickSkipped, *, counted: bool) -> None:
        """A run left alone (and counted as due now, unless it was already)."""
        with self.lock:
            self.report.skipped.append(entry)
            if not counted:
                self.report.due += 1


class Ticking(Scheduling):
    """Start the due slots of schedules, and advance the runs that are due, once (``tick``) or
    until stopped (``work``)."""

    def tick(self, limit: int | None = None, *, stop: threading.Event | None = None,
             concurrency: int = DEFAULT_CONCURRENCY) -> TickReport:
        """Start the due slots of schedules, advance every due run (timers, retry delays, event
        timeouts, the runs of those slots), recover dead ones, and wake the parents of children
        that ended.

        Up to ``concurrency`` runs are advanced at once, each in a thread of its own (``1``:
        one run after the other, in this thread); ``advanced`` lists them in the order they
        finished. Runs locked by another process are skipped and reported, never waited for;
        so is a run that cannot be read or loaded: one bad run never stops the others. On a
        store that claims runs (PostgreSQL), a run another process holds a live claim on is
        another worker's: skipped as ``claimed by another worker`` and not counted as due.
        With ``stop``, no run is taken once it is set, and the pass ends when the runs in
        progress are done.
        """
        with self._crew(concurrency) as crew:
            return self._pass(limit, stop, crew)

    @contextmanager
    def _crew(self, concurrency: int) -> Iterator[Crew | None]:
        """A crew of ``concurrency`` threads for the block (None for one: the caller's thread
        advances the runs). After an interrupt its threads are left to finish, or to end with
        the process."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise BadInput(f"concurrency must be a whole number of runs at once, 1 or more, not {concurrency!r}")
        if concurrency == 1:
            yield None
            return
        crew = Crew(concurrency, name="tinywf-tick", on_exit=getattr(self.store, "end_thread", None))
        try:
            yield crew
        except BaseException:
            crew.close(wait=False)
            raise
        crew.close()

    def _pass(self, limit: int | None, stop: threading.Event | None, crew: Crew | None,
              flight: _InFlight | None = None) -> TickReport:
        """Hand out the due runs (to ``crew``, else advancing each here), then wait for them; with
        ``flight`` (a worker's), skip the runs still in flight from earlier passes and return once
        every run is handed out: the report goes to ``flight`` when its runs have ended."""
        now = self.clock.now()
        self.start_due_slots(now)
        this = _Pass(limit, stop, flight)
        claims = hasattr(self.store, "claim_due")
        skip = flight.now_flying() if flight is not None else frozenset()

        def done() -> bool:
            if crew is not None and not crew.wait_for_room(stop):
                return True
            return this.done()

        try:
            for run_id, opening in self._due_runs(now, done, skip):
                if crew is None:
                    self._tick_run(this, run_id, opening, now, claims, None)
                    continue
                this.took(run_id)
                crew.submit(functools.partial(self._crew_run, this, run_id, opening, now, claims, crew))
        finally:
            this.close()
        if flight is not None:
            return this.report
        if crew is not None:
            crew.drain()
        if this.failure is not None:
            raise this.failure
        return this.report

    def _crew_run(self, this: _Pass, run_id: str, opening: Callable[[], AbstractContextManager[RunSession]],
                  now: datetime, claims: bool, crew: Crew) -> None:
        """One due run, in a crew thread: an interrupt is kept for the pass to raise once the
        other threads are done (no run is taken after it), never lost in a thread."""
        failure: BaseException | None = None
        moved = False
        try:
            moved = self._tick_run(this, run_id, opening, now, claims, crew)
        except BaseException as exc:
            failure = exc
        finally:
            this.ended(run_id, failure, moved=moved)

    def _tick_run(self, this: _Pass, run_id: str, opening: Callable[[], AbstractContextManager[RunSession]],
                  now: datetime, claims: bool, crew: Crew | None) -> bool:
        """Advance one due run (or wake its parent), then what follows; add what happened to the
        pass. Whether any run advanced (a run skipped or no longer due changed nothing)."""
        counted = False
        follow = _Follow()
        try:
            while True:
                try:
                    with self._held(run_id), opening() as session:
                        try:
                            run = session.load()
                        except RunNotFound:  # a create that never committed left an index entry
                            return False
                        head = run.head
                        if not due_now(head, now):
                            return False  # a stale index entry: the session drops it
                        this.due()
                        counted = True
                        if wakes_parent(head):
                            follow.after(None, head)
                        else:
                            self._advance(session, run, follow, recover=head.status == "running")
                            this.advanced([TickAdvanced(run_id=run_id, status=head.status)])
                    break
                except RunLocked:
                    # another thread of this tick holds it (waking it as a parent): once that one
                    # let go, the run is looked at again (it may be due no more)
                    if counted or crew is None or not self._hands.wait_for(run_id, crew.idents):
                        raise
                    opening = functools.partial(self.store.open, run_id, 0)
            this.advanced(self._settle(follow))
            return True
        except RunLocked:
            if claims:  # a live claim: another worker advances it; not due for this one
                this.skipped(TickSkipped(run_id=run_id, reason=CLAIMED_ELSEWHERE, elsewhere=True), counted=True)
            else:  # a directory's lock: its holder may be stuck, so it is reported
                this.skipped(TickSkipped(run_id=run_id, reason="locked by another process"), counted=counted)
        except TinyWFError as exc:
            this.skipped(TickSkipped(run_id=run_id, reason=exc.message), counted=counted)
        except Exception as exc:  # a fault of tinywf's own with this run: the others still go on
            this.skipped(TickSkipped(run_id=run_id, reason=f"internal error: {type(exc).__name__}: {exc}"),
                         counted=counted)
        return counted  # a run that was due may have changed before it failed; one never loaded did not

    def _due_runs(self, now: datetime, done: Callable[[], bool], skip: frozenset[str] = frozenset()
                  ) -> Iterator[tuple[str, Callable[[], AbstractContextManager[RunSession]]]]:
        """The runs due by ``now`` (but those in ``skip``: in flight here), each with how to hold
        it, until ``done()``.

        A store that claims its next due run itself (PostgreSQL: ``claim_due``, one statement,
        skipping runs others are claiming) is asked run by run; what it never hands out (a run
        another process holds) comes after, from ``due``, to be reported as locked.
        """
        claim = getattr(self.store, "claim_due", None)
        seen: set[str] = set(skip)
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

    def next_due(self, exclude: Collection[str] = ()) -> datetime | None:
        """When the earliest waiting run (but those in ``exclude``) will be due, or the earliest
        slot of a schedule comes, whichever is first (for ``worker``)."""
        times = [when for when in (self.store.next_due(exclude), self.next_slot()) if when is not None]
        return min(times, default=None)

    def work(self, stop: threading.Event, *, poll: float = 5.0, concurrency: int = DEFAULT_CONCURRENCY,
             on_tick: Callable[[TickReport], None] | None = None,
             on_error: Callable[[TinyWFError], None] | None = None,
             on_unavailable: Callable[[StoreUnavailable], None] | None = None) -> None:
        """Tick until ``stop`` is set, waiting on the runtime's clock until the next due time
        (at most ``poll`` seconds) between passes: ``tinywf worker`` is this loop.

        Up to ``concurrency`` runs are advanced at once, in threads that last as long as the
        loop (``1``: one after the other, in this thread, a pass at a time); a pass does not
        wait for its runs, so a run that comes due while a slow one is in flight is taken at
        once. Once ``stop`` is set no run is taken, and the loop ends when the runs in progress
        are done. ``on_tick`` receives, in this thread, the report of each pass that found due
        runs, once all of its runs have ended. A store that can wake workers (PostgreSQL:
        ``wait_for_work``) cuts the wait short when a run is released anywhere. A store that
        cannot be reached is waited for (``on_unavailable`` hears of it), never given up on; a
        pass that fails as a whole otherwise (a directory that cannot be listed) goes to
        ``on_error`` and the loop goes on after ``poll``.
        """
        with self._crew(concurrency) as crew:
            if crew is None:
                self._loop(stop, poll, on_tick, on_error, on_unavailable)
            else:
                self._keep_going(stop, poll, crew, on_tick, on_error, on_unavailable)

    def _loop(self, stop: threading.Event, poll: float, on_tick: Callable[[TickReport], None] | None,
              on_error: Callable[[TinyWFError], None] | None,
              on_unavailable: Callable[[StoreUnavailable], None] | None) -> None:
        """The worker's loop with one thread: a pass, then a wait until the next due time."""
        wait = getattr(self.store, "wait_for_work", None)
        backoff = MIN_BACKOFF
        while not stop.is_set():
            try:
                started = self.clock.now()
                report = self._pass(None, stop, None)
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

    def _keep_going(self, stop: threading.Event, poll: float, crew: Crew,
                    on_tick: Callable[[TickReport], None] | None, on_error: Callable[[TinyWFError], None] | None,
                    on_unavailable: Callable[[StoreUnavailable], None] | None) -> None:
        """The worker's loop with a crew: a pass hands out the due runs that are not in flight and
        does not wait for them, so a slow run never holds up the next pass; the loop looks again
        when a run ends, when the next run not in flight is due, or when the store says. Each
        pass's report is handed on (here, in this thread) once its runs have ended; a stopped
        loop ends when every run in flight has."""
        flight = _InFlight()
        store_wait = getattr(self.store, "wait_for_work", None)

        def wait(seconds: float, stop: threading.Event) -> None:
            if store_wait is not None:  # a run that ends here wakes it too: its release notifies
                store_wait(seconds, stop)
            else:
                wait_for_any(seconds, stop, flight.changed)

        def hand_on() -> None:
            for report in flight.finished_reports():
                if report.due and on_tick is not None:
                    on_tick(report)

        backoff = MIN_BACKOFF
        while not stop.is_set() and flight.failure is None:
            try:
                flight.changed.clear()
                started = self.clock.now()
                self._pass(None, stop, crew, flight)
                hand_on()
                flying = flight.now_flying()
                until = self.next_due(flying)
                if stop.is_set() or flight.failure is not None:
                    break
                now = self.clock.now()
                if flight.changed.is_set() or (until is not None and started < until <= now):
                    pass  # a run ended, or one came due during the pass: look again at once
                elif flying:  # runs in flight: wait in real time, so that a clock that jumps never leaps past them
                    ahead = (until - now).total_seconds() if until is not None and until > now else poll
                    wait(max(min(ahead, poll), MIN_IDLE), stop)
                else:
                    self.clock.idle(until, poll, stop, wait)
                hand_on()
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
        crew.drain()
        hand_on()
        if flight.failure is not None:
            raise flight.failure
