"""The step watchdog watches step code in every thread: an overrun is raised in the thread
whose segment overran, only while that segment runs, and again while the step swallows it.

Budgets are a tenth of a second of real spinning (the watchdog measures real time); no test
sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tinywf_cli.interrupts import WATCHDOG, StepOverrun

BUDGET = 0.1


def forever() -> None:
    while True:
        pass


def watched(body: Callable[[], Any]) -> str:
    """Run ``body`` as one watched segment; what ended it."""
    assert WATCHDOG.arm(BUDGET)
    try:
        try:
            body()
        finally:
            WATCHDOG.disarm()
    except StepOverrun as exc:
        return f"overrun: {exc}"
    return "returned"


def in_thread(fn: Callable[[], Any]) -> Any:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    return box[0]


def test_step_code_in_another_thread_is_interrupted_after_its_budget() -> None:
    started = time.monotonic()
    assert in_thread(lambda: watched(forever)) == f"overrun: ran for more than {BUDGET:g} s without yielding"
    assert BUDGET <= time.monotonic() - started < 10


def test_step_code_in_the_main_thread_is_still_interrupted() -> None:
    assert watched(forever).startswith("overrun")


def test_threads_are_watched_each_on_its_own() -> None:
    """One thread overruns while another runs many quick segments and then, unwatched, code
    longer than the budget: only the first is interrupted."""
    quick_ended: list[str] = []

    def quick() -> str:
        until = time.monotonic() + 3 * BUDGET
        while time.monotonic() < until:  # many segments, each far inside the budget
            assert watched(lambda: sum(range(50))) == "returned"
        until = time.monotonic() + 3 * BUDGET
        while time.monotonic() < until:  # no segment armed: never interrupted
            pass
        quick_ended.append("done")
        return "quick"

    results: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda: results.update(spin=watched(forever))),
               threading.Thread(target=lambda: results.update(quick=quick()))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {"spin": f"overrun: ran for more than {BUDGET:g} s without yielding", "quick": "quick"}
    assert quick_ended == ["done"]


def test_a_step_that_swallows_the_overrun_gets_it_again() -> None:
    caught: list[float] = []

    def swallowing() -> None:
        while True:
            try:
                forever()
            except StepOverrun:
                caught.append(time.monotonic())
                if len(caught) == 2:
                    raise

    assert in_thread(lambda: watched(swallowing)).startswith("overrun")
    assert len(caught) == 2


def test_an_overrun_never_lands_after_its_segment_ended() -> None:
    """Segments that end just at their budget, over and over: nothing is raised outside one."""
    def edge() -> str:
        stray = 0
        for _ in range(5):
            try:
                outcome = watched(lambda: _spin_for(BUDGET))
                until = time.monotonic() + 0.05
                while time.monotonic() < until:  # just after the segment: must never be interrupted
                    pass
            except StepOverrun:
                stray += 1
            else:
                assert outcome in ("returned", f"overrun: ran for more than {BUDGET:g} s without yielding")
        return f"stray {stray}"

    assert in_thread(edge) == "stray 0"


def _spin_for(seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass
