"""Book a trip as a saga: a flight, a hotel and a car; when one booking fails, undo the
ones already made, in reverse order.

    tinywf run flows/trip_booking.py                              # all three booked
    tinywf run flows/trip_booking.py --input '{"fail": "car"}'    # the car fails: hotel, then flight undone

Each booking and each undo is an action: it runs once, its result (or its failure) is
recorded, and a replay after a crash neither books twice nor undoes twice. ``fail`` names a
booking the stand-in service refuses (the demo's way to see the compensation).
"""

import os
import sys

from pydantic import BaseModel

from tinywf_cli import ActionFailed, Retry, Workflow, step


class Trip(BaseModel):
    traveller: str = "ada@example.com"
    #: A booking the stand-in service refuses: "flight", "hotel" or "car" (none by default).
    fail: str | None = None
    booked: dict[str, str] = {}
    undone: list[str] = []
    outcome: str | None = None


class BookingRefused(Exception):
    """The service said no (not worth retrying)."""


def record(what: str) -> None:
    """Note a call to the stand-in services (on stderr, and in $TRIP_CALLS when set: tests count them)."""
    print(f"[trip] {what}", file=sys.stderr)
    calls = os.environ.get("TRIP_CALLS")
    if calls:
        with open(calls, "a", encoding="utf-8") as f:
            f.write(what + "\n")


def book(kind: str, traveller: str, refuse: str | None, idempotency_key: str) -> str:
    """Book one part of the trip; returns the confirmation (a real service dedupes on the key)."""
    record(f"book {kind}")
    if kind == refuse:
        raise BookingRefused(f"no {kind} available")
    return f"{kind}-{idempotency_key.rsplit(':', 2)[1]}"


def undo(kind: str, confirmation: str) -> str:
    """Cancel a booking made earlier; returns what was cancelled."""
    record(f"undo {kind}")
    return confirmation


class TripBooking(Workflow[Trip]):
    """Book flight, hotel and car; on a failure, undo what was booked, newest first."""

    @step
    def book_all(self):
        for kind in ("flight", "hotel", "car"):
            try:
                self.state.booked[kind] = yield self.action(
                    f"book_{kind}", book, kind, self.state.traveller, self.state.fail,
                    self.idempotency_key(f"book_{kind}"),
                    retry=Retry(attempts=3, delay=1, non_retryable=(BookingRefused,)))
            except ActionFailed as failed:
                self.log("booking_failed", kind=kind, error=failed.message)
                return self.compensate
        self.state.outcome = "booked"
        return None

    @step
    def compensate(self):
        for kind in reversed(list(self.state.booked)):
            yield self.action(f"undo_{kind}", undo, kind, self.state.booked[kind])
            self.state.undone.append(kind)
        self.state.outcome = "cancelled"
        return None
