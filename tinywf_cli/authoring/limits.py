"""``Limit`` and ``Breaker``: what a flow author declares to share a service politely.

Both are plain values, checked when they are made (a bad rate or a negative count is
refused with the fix in the message). Their state — tokens, slots in flight, waiting runs,
failures counted — lives in the store (``tinywf_cli.stores.limits``), shared by every run
and every process of it; these objects only name a limit or breaker and carry what the
code says about it.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import timedelta
from typing import Literal

from tinywf_cli.authoring.commands import seconds_of
from tinywf_cli.clock import parse_rate
from tinywf_cli.names import GATE_NAME

#: The longest key of a keyed limit (``LIMIT.key(value)``), in characters.
MAX_KEY = 200


def check_name(name: object, what: str) -> str:
    """``name`` when it can name a limit or breaker; ValueError saying what a name may hold."""
    if not isinstance(name, str) or GATE_NAME.fullmatch(name) is None:
        raise ValueError(f"{what} name must be 1-64 characters from A-Z a-z 0-9 . _ - starting with a letter "
                         f"or digit, not {name!r}")
    return name


def check_concurrency(value: object, what: str = "concurrency") -> int:
    """``value`` when it is a whole number of attempts >= 1; ValueError otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1 (attempts in flight at once), not {value!r}")
    return value


@dataclass(frozen=True)
class Limit:
    """A limit shared by every run and every process of the store.

    ``rate`` is ``"N/s"``, ``"N/m"`` or ``"N/h"``: a token bucket that holds at most N tokens,
    one taken per attempt started. ``concurrency`` is how many attempts under the limit may
    be in flight at once, anywhere. ``LIMIT.key(value)`` is the same limit kept apart per
    key (one bucket and one count per customer, say).

    Example::

        STRIPE = Limit("stripe", rate="20/s", concurrency=5)
        receipt = yield self.action("charge", charge, order, limit=STRIPE)
        yield self.action("sync", sync, customer, limit=SYNC.key(customer))
    """

    name: str
    _: KW_ONLY
    rate: str | None = None
    concurrency: int | None = None
    #: The key this limit is kept under (``None``: one state for the whole limit).
    keyed: str | None = field(default=None)

    def __post_init__(self) -> None:
        check_name(self.name, "a Limit's")
        if self.rate is None and self.concurrency is None:
            raise ValueError(f"Limit({self.name!r}) needs rate='N/s' or concurrency=N (or both)")
        if self.rate is not None:
            parse_rate(self.rate)
        if self.concurrency is not None:
            check_concurrency(self.concurrency, f"Limit({self.name!r}, concurrency=...)")

    def key(self, value: object) -> Limit:
        """The same limit, kept separately for ``value`` (a string or number: a customer's id)."""
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"Limit({self.name!r}).key() takes a string or an integer, not {value!r}")
        text = str(value)
        if not text or len(text) > MAX_KEY:
            raise ValueError(f"Limit({self.name!r}).key() takes 1-{MAX_KEY} characters, got {len(text)}")
        return replace(self, keyed=text)

    @property
    def tokens(self) -> tuple[int, float] | None:
        """``(N, seconds)`` of the rate, or ``None``."""
        return None if self.rate is None else parse_rate(self.rate)

    def describe(self) -> str:
        """``limit 'stripe'`` / ``limit 'sync' (key 'acme')``: how messages name it."""
        return f"limit '{self.name}'" + (f" (key {self.keyed!r})" if self.keyed is not None else "")


OnOpen = Literal["wait", "fail"]


@dataclass(frozen=True)
class Breaker:
    """A circuit breaker shared by every run and every process of the store.

    While closed, calls go through and each failed attempt is counted; ``failures`` failed
    attempts within ``within`` seconds open it. While open no call is made: with
    ``on_open="wait"`` the run waits durably until it half opens (no attempt is used up);
    with ``on_open="fail"`` the attempt fails at once with ``BreakerOpen``. ``reset``
    seconds after it opened it is half open: exactly one attempt, anywhere, goes through;
    success closes it, failure opens it for another ``reset``.

    Example::

        PARTNER = Breaker("partner", failures=5, within=60, reset=30)
        yield self.action("push", push, item, breaker=PARTNER, retry=Retry(attempts=3))
    """

    name: str
    _: KW_ONLY
    failures: int = 5
    within: float | timedelta = 60.0
    reset: float | timedelta = 30.0
    on_open: OnOpen = "wait"

    def __post_init__(self) -> None:
        check_name(self.name, "a Breaker's")
        if not isinstance(self.failures, int) or isinstance(self.failures, bool) or self.failures < 1:
            raise ValueError(f"Breaker({self.name!r}, failures=...) must be an integer >= 1, not {self.failures!r}")
        for what in ("within", "reset"):
            seconds = seconds_of(getattr(self, what), f"Breaker({self.name!r}, {what}=...)")
            if not 0 < seconds < math.inf:
                raise ValueError(f"Breaker({self.name!r}, {what}=...) must be more than 0 seconds")
        if self.on_open not in ("wait", "fail"):
            raise ValueError(f"Breaker({self.name!r}, on_open=...) is 'wait' or 'fail', not {self.on_open!r}")

    @property
    def within_seconds(self) -> float:
        """``within`` in seconds."""
        return seconds_of(self.within, "within")

    @property
    def reset_seconds(self) -> float:
        """``reset`` in seconds."""
        return seconds_of(self.reset, "reset")
