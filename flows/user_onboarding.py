"""Onboarding emails: welcome now, a promotion days later, done a few days after that.

Start one run per user, let cron carry them on:

    for i in $(seq 0 9); do
      tinywf run flows/user_onboarding.py --run-id onboard-$i --input "{\"email\": \"user$i@example.com\"}"
    done
    tinywf tick        # from cron: sends what is due, finishes what is done

The delays are picked at random once per run (inside an action, so replays keep them).
"""

import random
import sys

from pydantic import BaseModel

from tinywf_cli import Retry, Workflow, step

DAY = 24 * 3600.0


class Onboarding(BaseModel):
    email: str = "user@example.com"
    promotion_after: float | None = None  # seconds; random 1-3 days when not given
    end_after: float | None = None  # seconds; random 1-2 days when not given
    deliveries: list[str] = []


def send_email(kind: str, to: str, idempotency_key: str) -> str:
    """Send one email; returns its delivery id. A mail API would dedupe on the key."""
    print(f"[mail] {kind} email to {to} (key {idempotency_key})", file=sys.stderr)
    return f"{kind}-{abs(hash(idempotency_key)) % 10**8:08d}"


def pick_delay(low_days: float, high_days: float) -> float:
    """A random delay in seconds (an action: chosen once, the same on replay)."""
    return random.uniform(low_days * DAY, high_days * DAY)


class UserOnboarding(Workflow[Onboarding]):
    """Welcome a new user, follow up with a promotion, then end."""

    @step
    def step_begin(self):
        return self.step_process

    @step
    def step_process(self):
        delivery = yield self.action("send_email_welcome", send_email, "welcome", self.state.email,
                                     self.idempotency_key("send_email_welcome"), retry=Retry(attempts=3))
        self.state.deliveries.append(delivery)

        if self.state.promotion_after is None:
            self.state.promotion_after = yield self.action("pick_promotion_delay", pick_delay, 1, 3)
        yield self.sleep("wait_before_promotion_email", self.state.promotion_after)

        delivery = yield self.action("send_email_promotion", send_email, "promotion", self.state.email,
                                     self.idempotency_key("send_email_promotion"), retry=Retry(attempts=3))
        self.state.deliveries.append(delivery)

        if self.state.end_after is None:
            self.state.end_after = yield self.action("pick_end_delay", pick_delay, 1, 2)
        yield self.sleep("wait_before_end", self.state.end_after)
        return self.step_end

    @step
    def step_end(self):
        self.log("onboarded", email=self.state.email, emails=len(self.state.deliveries))
        return None
