"""``Schedule``: a schedule a flow declares in its code, for ``tinywf schedule apply``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tinywf_cli.clock import as_utc
from tinywf_cli.errors import FlowDefinitionError, InvalidSchedule
from tinywf_cli.schedules.cron import expression, zone
from tinywf_cli.schedules.record import CatchUp, Overlap, check_catch_up, check_name, check_overlap


@dataclass(frozen=True)
class Schedule:
    """A recurring run of the flow that declares it: ``schedules = [Schedule(...)]`` on the class.

    ``tinywf schedule apply flows/x.py`` stores (or changes, or removes) the flow's schedules
    to match; ``tick`` and ``worker`` then start each slot once, as run
    ``<name>-<slot as YYYYMMDDTHHMMZ>``. Checked when the class is defined: a bad expression,
    zone or policy fails the flow's loading with the reason.

    Example::

        class Report(Workflow):
            schedules = [Schedule("weekday-report", "0 9 * * MON-FRI", tz="Europe/Paris",
                                  input={"team": "ops"}, overlap="skip")]

    - ``name``: the schedule's name, unique in the store (it names its runs).
    - ``cron``: 5 fields (``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` too).
    - ``tz``: an IANA zone (default UTC); daylight-saving changes are handled as cron does.
    - ``input``: the input of every run it starts.
    - ``overlap``: ``skip`` (default), ``buffer_one``, ``allow_all`` or ``cancel_other``.
    - ``catch_up``: ``latest`` (default), ``all`` or ``none``.
    - ``start``, ``end``: aware datetimes bounding the slots (naive ones are UTC).
    """

    name: str
    cron: str
    tz: str = "UTC"
    input: dict[str, Any] | None = None
    overlap: Overlap = "skip"
    catch_up: CatchUp = "latest"
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        try:
            check_name(self.name)
            object.__setattr__(self, "cron", expression(self.cron))
            zone(self.tz)
            check_overlap(self.overlap)
            check_catch_up(self.catch_up)
        except InvalidSchedule as exc:
            raise FlowDefinitionError(f"Schedule({self.name!r}, ...): {exc.message}") from None
        if self.input is not None and not isinstance(self.input, dict):
            raise FlowDefinitionError(f"Schedule({self.name!r}, ...): input must be a dict, not {self.input!r}")
        for bound in ("start", "end"):
            value = getattr(self, bound)
            if value is not None:
                if not isinstance(value, datetime):
                    raise FlowDefinitionError(f"Schedule({self.name!r}, ...): {bound} must be a datetime, "
                                              f"not {value!r}")
                object.__setattr__(self, bound, as_utc(value))
        if self.start is not None and self.end is not None and self.end < self.start:
            raise FlowDefinitionError(f"Schedule({self.name!r}, ...): end is before start")
