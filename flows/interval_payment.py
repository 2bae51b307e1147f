"""A subscription billed every interval: usage comes in by signal, a receipt goes out per cycle.

    tinywf run flows/interval_payment.py --run-id sub-1 --input '{"user_email": "info@company.com"}'
    tinywf signal sub-1 add_usage '{"item": "api-calls", "amount": 120}'
    tinywf tick                                  # from cron: closes due cycles, sends receipts
    tinywf signal sub-1 cancel_subscription      # the next tick bills what is left and ends

Signals run under the run's lock against its latest state, so usage added while a cycle
closes is never lost: it lands in this receipt or the next.
"""

import sys
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel

from tinywf_cli import Retry, Workflow, signal, step


class UsageItem(BaseModel):
    item: str
    amount: int


class Receipt(BaseModel):
    cycle: int
    created_at: datetime
    usages: list[UsageItem]
    delivery_id: str | None = None


class Subscription(BaseModel):
    user_email: str = "info@company.com"
    payment_interval: float = 60.0  # seconds between billing cycles
    cycle: int = 0
    next_payment_at: datetime | None = None
    status: Literal["active", "cancel"] = "active"
    current_usages: list[UsageItem] = []
    receipts: list[Receipt] = []


def send_receipt(email: str, receipt: dict) -> str:
    """Email a receipt; returns the delivery id."""
    total = sum(u["amount"] for u in receipt["usages"])
    print(f"[mail] receipt for cycle {receipt['cycle']} to {email}: {total} units", file=sys.stderr)
    return f"rcpt-{receipt['cycle']}-{total}"


class IntervalPayment(Workflow[Subscription]):
    """Bill a subscription's usage once per interval until it is cancelled."""

    @step
    def step_begin(self):
        started = yield self.sleep("start", 0)  # the run's clock, durably: a timer already due
        self.state.status = "active"
        self.state.cycle = 0
        self.state.next_payment_at = started + timedelta(seconds=self.state.payment_interval)
        return self.step_wait

    @step
    def step_wait(self):
        while self.state.status == "active":
            cycle = self.state.cycle
            closed_at = yield self.sleep_until(f"wait_for_end_cycle_{cycle}", self.state.next_payment_at)
            if self.state.status != "active":
                return self.step_cancel
            self.state.cycle = cycle + 1
            self.state.next_payment_at = closed_at + timedelta(seconds=self.state.payment_interval)
            if self.state.current_usages:
                self.state.receipts.append(
                    Receipt(cycle=cycle, created_at=closed_at, usages=list(self.state.current_usages)))
                self.state.current_usages = []
                return self.step_send_receipt
        return self.step_cancel

    @step
    def step_send_receipt(self):
        receipt = self.state.receipts[-1]
        delivery = yield self.action(f"send_receipt_email_{receipt.cycle}", send_receipt,
                                     self.state.user_email, receipt.model_dump(mode="json"),
                                     retry=Retry(attempts=5, delay=10, backoff=2))
        receipt.delivery_id = delivery
        self.log("bill_sent", cycle=receipt.cycle, delivery_id=delivery)
        return self.step_wait if self.state.status == "active" else self.step_end

    @step
    def step_cancel(self):
        if self.state.current_usages:
            self.state.receipts.append(Receipt(cycle=self.state.cycle, created_at=self.state.next_payment_at,
                                               usages=list(self.state.current_usages)))
            self.state.current_usages = []
            return self.step_send_receipt
        return self.step_end

    @step
    def step_end(self):
        return None

    @signal
    def add_usage(self, item: str, amount: int):
        """Record usage for the current cycle."""
        if self.state.status != "active":
            raise ValueError("the subscription is cancelled; no more usage")
        self.state.current_usages.append(UsageItem(item=item, amount=amount))
        self.log("add_usage", item=item, amount=amount)

    @signal
    def cancel_subscription(self):
        """Stop billing after the current cycle."""
        if self.state.status != "active":
            raise ValueError("the subscription is already cancelled")
        self.state.status = "cancel"
        self.log("cancel")
