"""The test `tinywf new billing --from flows/billing.json` wrote for flows/billing.py: a
run walked through it in memory, its clock moved by hand. It passes with the stubs as
written; keep it passing as you fill them in."""

from datetime import timedelta
from pathlib import Path

from tinywf_cli.testing import MemoryRuntime

FLOW = Path(__file__).resolve().parent.parent / "flows" / "billing.py"


def test_a_run_goes_to_the_end() -> None:
    rt = MemoryRuntime()
    run = rt.start(FLOW)
    assert run.status == "waiting"
    assert run.step == "wait_payment"
    run = rt.resolve(run.run_id, "paid", True)
    assert run.status == "finished"
    logs = rt.get(run.run_id).logs
    assert [e.values["to"] for e in logs if e.type == "transition"] == [
        "send", "wait_payment", "close"
    ]


def test_no_answer_to_paid_is_logged() -> None:
    rt = MemoryRuntime()
    run = rt.start(FLOW)
    rt.clock.advance(timedelta(days=7))
    rt.tick()
    logs = rt.get(run.run_id).logs
    assert [e.values for e in logs if e.type == "no_answer"] == [{"event": "paid"}]
