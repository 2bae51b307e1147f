"""The docs' example of testing a flow in memory (docs/testing.md): flows/checkout.py with a clock moved by hand."""

from datetime import timedelta

from flows.checkout import Checkout
from tinywf_cli.testing import MemoryRuntime


def test_unanswered_order_is_not_shipped():
    rt = MemoryRuntime()                           # in-memory store, rt.clock is a ManualClock
    run = rt.start(Checkout, input={"email": "a@b.c"})
    assert run.status == "waiting" and run.pending[0].key == "approval"
    rt.clock.advance(timedelta(days=2))
    rt.tick()                                      # the event timed out
    assert rt.get(run.run_id).state["approved"] is False


def test_approved_order_ships_after_cool_down():
    rt = MemoryRuntime()
    run = rt.start(Checkout, input={"email": "a@b.c"})
    run = rt.resolve(run.run_id, "approval", True)
    assert run.pending[0].kind == "timer"
    rt.clock.advance(timedelta(minutes=5))
    assert rt.tick().advanced[0].status == "finished"
