"""A crew: the threads that advance runs at once for one ``tick`` or one ``worker``.

A crew of N runs at most N tasks at a time, each in a thread of its own; threads are made
as tasks come (a pass that finds two due runs starts two) and live until the crew is
closed, so a worker's threads (and their database connections) last across its passes.
Each task runs in a copy of the context of the thread that handed it over: a ``tick`` called
inside an action still refuses that action's own run.

The threads are daemons: a second signal to a worker ends the process at once, whatever they
are doing, and their runs are left as a killed process leaves them (recovered by the next
``tick``; on PostgreSQL once their lease has run out). A store that keeps something per
thread (PostgreSQL: a connection) is told when each thread ends (``on_exit``).
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Callable

from tinywf_cli.clock import STOP_POLL

#: How many runs ``tick`` and ``worker`` advance at once unless told (``--concurrency``).
DEFAULT_CONCURRENCY = 8


class Crew:
    """Up to ``size`` threads taking tasks in the order they were handed over."""

    def __init__(self, size: int, *, name: str = "tinywf-crew", on_exit: Callable[[], None] | None = None) -> None:
        if size < 1:
            raise ValueError(f"a crew needs at least one thread, not {size}")
        self.size = size
        self.name = name
        self.on_exit = on_exit
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # a task was handed over, or the crew closes
        self._done = threading.Condition(self._lock)  # a task ended
        self._tasks: deque[tuple[contextvars.Context, Callable[[], None]]] = deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        #: Tasks handed over and not ended yet.
        self.busy = 0
        self._closed = False
        #: The idents of the crew's threads.
        self.idents: set[int] = set()

    def wait_for_room(self, stop: threading.Event | None = None) -> bool:
        """Wait until fewer than ``size`` tasks are in hand; False when ``stop`` was set first."""
        with self._lock:
            while self.busy >= self.size:
                if stop is not None and stop.is_set():
                    return False
                self._done.wait(STOP_POLL if stop is not None else None)
        return stop is None or not stop.is_set()

    def submit(self, task: Callable[[], None]) -> None:
        """Hand a task over: an idle thread takes it, or a new one while the crew has fewer than ``size``."""
        context = contextvars.copy_context()
        with self._lock:
            if self._closed:
                raise RuntimeError("the crew is closed")
            self.busy += 1
            self._tasks.append((context, task))
            if self._idle == 0 and len(self._threads) < self.size:
                thread = threading.Thread(target=self._serve, name=f"{self.name}-{len(self._threads) + 1}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._work.notify()

    def drain(self) -> None:
        """Wait until every task handed over has ended."""
        with self._lock:
            while self.busy:
                self._done.wait()

    def close(self, *, wait: bool = True) -> None:
        """Let the threads end once their tasks are done; with ``wait``, wait for them (after ``drain``)."""
        with self._lock:
            self._closed = True
            self._work.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()

    def _serve(self) -> None:
        self.idents.add(threading.get_ident())
        try:
            while True:
                with self._lock:
                    while not self._tasks and not self._closed:
                        self._idle += 1
                        self._work.wait()
                        self._idle -= 1
                    if not self._tasks:
                        return
                    context, task = self._tasks.popleft()
                try:
                    context.run(task)
                finally:
                    with self._lock:
                        self.busy -= 1
                        self._done.notify_all()
        finally:
            if self.on_exit is not None:
                self.on_exit()
