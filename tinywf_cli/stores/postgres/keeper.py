"""The keeper: one background thread per store, on its own connection, that keeps claims alive
and listens for wake-ups.

- **Heartbeats.** While sessions are open (an action may run for minutes), every third of
  the lease one statement renews the lease of every claim this process holds — while its run
  shows a sign of life (``pulse``: an action attempt that started or called ``heartbeat()``
  within half a lease). A claim the
  statement no longer finds was taken over: it is logged, and the session's next write is
  refused by its epoch. The keeper connects only when a heartbeat is first due, so a short
  command never opens a second connection.
- **Wake-ups.** Once a worker asks for them (``listen``), the keeper ``LISTEN``s on the
  store's channel and sets ``wake`` at each notification. After every (re)connection it
  runs ``LISTEN`` first and then sets ``wake``: notifications sent while it was away are
  lost, so the worker makes a pass over the due runs to catch up.

Its connection fails on its own (a restart, a cut link): it reconnects with a backoff,
and the claims it could not renew run out after their lease, as if the process had died.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tinywf_cli.errors import StoreUnavailable

if TYPE_CHECKING:
    import psycopg

    from tinywf_cli.stores.postgres.store import PostgresStore

log = logging.getLogger("tinywf")

#: How long the keeper's connection may stay silent before it is probed.
PROBE_AFTER = 10.0
#: How long the thread waits for new work before it ends.
LINGER = 2.0
#: The longest pause between two attempts to reconnect.
MAX_BACKOFF = 5.0


class Keeper:
    """Heartbeats of the claims a store's sessions hold, and the store's wake-ups."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        #: Set when a notification arrived (or the keeper reconnected): the due runs may have changed.
        self.wake = threading.Event()
        self._cond = threading.Condition()
        self._held: dict[int, tuple[str, int]] = {}
        #: Whether a held claim's run shows a sign of life (``pulse``): renewed only while it does.
        self._pulses: dict[int, Callable[[float], bool]] = {}
        self._listening = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._next_beat = 0.0

    @property
    def interval(self) -> float:
        """Seconds between heartbeats: a third of the lease."""
        return self.store.lease / 3

    # -- what the store asks ---------------------------------------------------------------

    def hold(self, key: int, run_id: str, epoch: int) -> None:
        """Keep the claim ``(run_id, epoch)`` alive until ``drop(key)``."""
        with self._cond:
            if not self._held:
                self._next_beat = time.monotonic() + self.interval
            self._held[key] = (run_id, epoch)
            self._start()
            self._cond.notify()

    def pulse(self, key: int, alive: Callable[[float], bool]) -> None:
        """Renew the claim of ``key`` only while ``alive(seconds)`` says its run showed a sign of life
        within the last ``seconds`` (half the lease): an action attempt that hangs without a
        heartbeat lets its claim run out, as a process that died would."""
        with self._cond:
            self._pulses[key] = alive

    def drop(self, key: int) -> None:
        """Stop renewing a claim (its session ended)."""
        with self._cond:
            self._held.pop(key, None)
            self._pulses.pop(key, None)

    def listen(self) -> None:
        """Start listening for wake-ups (a worker); ``wake`` is set once listening has begun."""
        with self._cond:
            if not self._listening:
                self._listening = True
                self._start()
                self._cond.notify()

    def close(self) -> None:
        """Stop the thread and close its connection."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._cond:
            self._thread = None
            self._closed = False
            self._listening = False
            self._held.clear()
            self._pulses.clear()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="tinywf-keeper", daemon=True)
            self._thread.start()

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        backoff = 0.1
        last_used = time.monotonic()
        try:
            while True:
                with self._cond:
                    if self._closed:
                        return
                    if not self._listening and not self._held:
                        conn = self._discard(conn)  # nothing to keep alive: hold no connection
                        # linger a little (the next session comes soon in a tick), then end, so that
                        # a store nobody closes does not keep a thread alive
                        self._cond.wait(LINGER)
                        if self._closed or (not self._listening and not self._held):
                            self._thread = None
                            return
                    listening = self._listening
                    claims, pulses = list(self._held.items()), dict(self._pulses)
                # asked outside the lock: a pulse takes its own
                held = [claim for key, claim in claims if key not in pulses or pulses[key](self.store.lease / 2)]
                with self._cond:
                    beat_due = bool(held) and time.monotonic() >= self._next_beat
                if conn is None and (listening or beat_due):
                    try:
                        conn = self._connect(listening)
                        backoff = 0.1
                        last_used = time.monotonic()
                    except StoreUnavailable as exc:
                        log.warning("tinywf: %s (trying again in %.1fs)", exc.message, backoff)
                        self._pause(backoff)
                        backoff = min(backoff * 2, MAX_BACKOFF)
                        continue
                try:
                    if beat_due and conn is not None:
                        self._beat(conn, held)
                        last_used = time.monotonic()
                    elif listening and conn is not None and time.monotonic() - last_used > PROBE_AFTER:
                        conn.execute("SELECT 1")  # a half-open connection shows itself here
                        last_used = time.monotonic()
                    if listening and conn is not None:
                        for _ in conn.notifies(timeout=self._pause_for(held)):
                            self.wake.set()
                    else:
                        self._pause(self._pause_for(held))
                except Exception as exc:  # the connection broke: start again from a new one
                    log.warning("tinywf: the keeper's connection to %s failed (%s); reconnecting",
                                self.store.target, " ".join(str(exc).split()) or type(exc).__name__)
                    conn = self._discard(conn)
        finally:
            self._discard(conn)

    def _connect(self, listening: bool) -> psycopg.Connection[tuple[object, ...]]:
        from tinywf_cli.stores.postgres.connection import connect

        conn = connect(self.store.location, self.store.lease, "keeper")
        if listening:
            try:
                conn.execute(f'LISTEN "{self.store.location.channel}"')
            except Exception:
                self._discard(conn)
                raise StoreUnavailable(self.store.target, "cannot LISTEN for wake-ups") from None
            self.wake.set()  # LISTEN first, then catch up: what was notified meanwhile is gone
        return conn

    def _beat(self, conn: psycopg.Connection[tuple[object, ...]], held: list[tuple[str, int]]) -> None:
        sent = time.monotonic()
        rows = conn.execute(self.store.sql["heartbeat"], {
            "lease": self.store.lease, "run_ids": [r for r, _ in held], "epochs": [e for _, e in held],
        }).fetchall()
        alive = {str(row[0]) for row in rows}
        with self._cond:
            self._next_beat = sent + self.interval
            still = set(self._held.values())
        for run_id, epoch in held:
            if run_id not in alive and (run_id, epoch) in still:
                log.warning("tinywf: lost the claim on run '%s' (epoch %d): another process took it over "
                            "after the lease ran out; its next write here will be refused", run_id, epoch)

    def _pause_for(self, held: list[tuple[str, int]]) -> float:
        if not held:
            return 1.0
        with self._cond:
            left = self._next_beat - time.monotonic()
        return max(0.0, min(left, self.interval / 2, 1.0))

    def _pause(self, seconds: float) -> None:
        with self._cond:
            if not self._closed:
                self._cond.wait(seconds)

    @staticmethod
    def _discard(conn: psycopg.Connection[tuple[object, ...]] | None) -> None:
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection may fail too; it is gone either way
                log.debug("closing the keeper's connection failed", exc_info=True)
        return None
