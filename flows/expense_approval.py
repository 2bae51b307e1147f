"""An expense claim approved by email: the manager gets a link that answers one question.

    tinywf run flows/expense_approval.py --input '{"employee": "ada@example.com", "amount": 120}'
    tinywf serve                       # the link in the email opens a page served here

The action writes the email to ./outbox (a mail drop; hand it to your mail system, or
replace ``deliver`` with smtplib). The link works once, for three days, for this claim only.
Whichever comes first decides: the manager's answer, the employee withdrawing the claim
(``tinywf send RUN withdraw "booked it myself"``), or three days without either.
"""

import os
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from tinywf_cli import Workflow, step
from tinywf_cli.web.links import make_link


class Claim(BaseModel):
    employee: str = "ada@example.com"
    manager: str = "grace@example.com"
    amount: float = 120.0
    reason: str = "conference travel"
    link: str | None = None
    approved: bool | None = None
    withdrawn: str | None = None
    paid: bool = False


def deliver(to: str, subject: str, body: str) -> str:
    """Drop the email into ./outbox (or $TINYWF_OUTBOX); returns the file written."""
    outbox = Path(os.environ.get("TINYWF_OUTBOX", "outbox"))
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{subject.split()[-1]}.eml"
    path.write_text(f"To: {to}\nSubject: {subject}\n\n{body}\n", encoding="utf-8")
    return str(path)


def email_manager(store: str, run_id: str, resume_id: str, manager: str, employee: str, amount: float) -> str:
    """Sign a link for the approval and mail it to the manager; returns the link."""
    url = make_link(store, run_id, resume_id, expires="3d")
    deliver(manager, f"Approve expense {run_id}",
            f"{employee} claims {amount:.2f}. Approve or reject (one click, valid 3 days):\n\n{url}")
    return url


def pay(employee: str, amount: float) -> bool:
    """Pay the claim (a stand-in for the payment system)."""
    return True


class ExpenseApproval(Workflow[Claim]):
    """Ask the manager by email to approve an expense claim; pay it when approved."""

    @step
    def approve(self):
        store = self.store_target  # the store this run lives in: the key that signs links is kept there
        visit = self.idempotency_key("approval").split(":", 2)[1]  # RUN:VISIT:KEY
        self.state.link = yield self.action("email_manager", email_manager, str(store), self.run_id,
                                            f"approval@{visit}", self.state.manager, self.state.employee,
                                            self.state.amount)
        came, value = yield self.first(
            answered=self.wait_event("approval", type=bool, reason=self.state.reason,
                                     question=f"Approve {self.state.amount:.2f} for {self.state.employee}?"),
            withdrawn=self.wait_event("withdraw", type=str, question="Why is the claim withdrawn?"),
            expired=self.sleep("deadline", timedelta(days=3)))
        self.state.approved = came == "answered" and value
        if came == "withdrawn":
            self.state.withdrawn = value
        return self.pay if self.state.approved else None

    @step
    def pay(self):
        self.state.paid = yield self.action("pay", pay, self.state.employee, self.state.amount)
        return None
