"""Checkout: charge the card, wait up to two days for someone to approve, ship after a cool-down.

    tinywf run flows/checkout.py --input '{"email": "a@b.c"}' --run-id order-17
    tinywf resolve order-17 approval true        # ship it (false, or no answer in 2 days: don't)
    tinywf tick                                  # from cron: the cool-down, the 2-day timeout

The README's example and the first of docs/getting-started.md, as a file. ``charge_card``
stands in for a payment service: it notes the charge on stderr and returns a receipt id.
"""

import secrets
import sys
from datetime import timedelta

from pydantic import BaseModel

from tinywf_cli import EventTimeout, Retry, Workflow, signal, step


def charge_card(email: str) -> str:
    """Charge the card on file for ``email``; returns the receipt id (a stand-in service)."""
    receipt = f"rcpt-{secrets.token_hex(4)}"
    print(f"[card] charged the card of {email}: {receipt}", file=sys.stderr)
    return receipt


class Order(BaseModel):
    email: str
    receipt: str | None = None
    approved: bool | None = None


class Checkout(Workflow[Order]):
    """Charge, wait for approval, ship."""                # `tinywf show` prints the docstring

    @step(start=True)                                     # without start=True: the first @step
    def charge(self):
        self.state.receipt = yield self.action("charge", charge_card, self.state.email,
                                               retry=Retry(attempts=5, delay=1, backoff=2), timeout=30)
        return self.approve                               # the next step: a method, or its name

    @step
    def approve(self):
        try:
            ok = yield self.wait_event("approval", type=bool, timeout=timedelta(days=2),
                                       question="Ship the order?")
        except EventTimeout:
            ok = False
        self.state.approved = ok
        return "ship" if ok else None                     # None finishes the run

    @step
    def ship(self):
        yield self.sleep("cool_down", timedelta(minutes=5))
        self.log("shipped", receipt=self.state.receipt)   # an entry of its own in the audit log
        return None

    @signal
    def set_email(self, email: str):                      # tinywf signal RUN set_email '{"email": "x@y.z"}'
        self.state.email = email
