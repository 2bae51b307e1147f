"""Invoice: draft an invoice, send it, wait to be paid (a reminder a week), close it.

Made by `tinywf new billing --from flows/billing.json`: the control flow is the Invoice
class at the end; the tasks it calls are the functions above it, stubs to fill in (each
has a TODO). A task's work is done once per step visit and recorded; a step's own code
runs again on replay, so it only decides. Then its tasks and its choice were filled in by
hand (stand-ins that print what a mailer and the books would do); writing it anew would
bring the stubs back.

    tinywf run flows/billing.py
    tinywf graph flows/billing.py
    pytest tests/test_billing.py
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Generator
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel

from tinywf_cli import EventTimeout, Workflow, step

#: A step: yields tinywf commands, returns the next step's name (None ends the run).
Steps = Generator[Any, Any, str | None]


class InvoiceState(BaseModel):
    """The state of one Invoice run: what its steps and tasks read and change."""

    customer: str = ""
    amount: int = 0
    invoice_id: str | None = None
    reminders: int = 0
    paid: bool | None = None


# -- tasks: the work, done once per step visit and recorded; fill them in --------------


def draft_invoice(state: InvoiceState) -> InvoiceState:
    """A task of step 'draft': number the invoice."""
    state.invoice_id = f"inv-{secrets.token_hex(4)}"
    return state


def send_invoice(state: InvoiceState) -> InvoiceState:
    """A task of step 'send'."""
    print(f"[mail] invoice {state.invoice_id} of {state.amount} sent to {state.customer}",
          file=sys.stderr)
    return state


def send_reminder(state: InvoiceState) -> InvoiceState:
    """A task of step 'remind'."""
    state.reminders += 1
    print(f"[mail] reminder {state.reminders} of invoice {state.invoice_id} sent",
          file=sys.stderr)
    return state


def settle(state: InvoiceState) -> InvoiceState:
    """A task of step 'close'."""
    outcome = "paid" if state.paid else f"written off after {state.reminders} reminders"
    print(f"[books] invoice {state.invoice_id}: {outcome}", file=sys.stderr)
    return state


# -- choices: which step comes next, decided from the state ----------------------------


def next_after_wait_payment(state: InvoiceState) -> Literal["close", "remind"]:
    """The step after 'wait_payment': "close" once paid or after three reminders, else
    "remind"."""
    return "close" if state.paid or state.reminders >= 3 else "remind"


# -- the control flow ------------------------------------------------------------------


class Invoice(Workflow[InvoiceState]):
    """Draft an invoice, send it, wait to be paid (a reminder a week), close it."""

    @step
    def draft(self) -> Steps:
        self.state = yield self.action("draft_invoice", draft_invoice, self.state)
        return "send"

    @step
    def send(self) -> Steps:
        self.state = yield self.action("send_invoice", send_invoice, self.state)
        return "wait_payment"

    @step
    def wait_payment(self) -> Steps:
        try:
            self.state.paid = yield self.wait_event(
                "paid",
                type=bool,
                timeout=timedelta(days=7),
                question="Has the invoice been paid?",
            )
        except EventTimeout:  # no answer in time: logged, and the run goes on
            self.log("no_answer", event="paid")
        # each way out is written out, so that `tinywf graph` can draw it
        match next_after_wait_payment(self.state):
            case "close":
                return "close"
            case _:
                return "remind"

    @step
    def remind(self) -> Steps:
        self.state = yield self.action("send_reminder", send_reminder, self.state)
        return "wait_payment"

    @step
    def close(self) -> Steps:
        self.state = yield self.action("settle", settle, self.state)
        return None
