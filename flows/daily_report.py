"""A report each weekday morning in Paris, started by `tinywf tick` from its schedule.

    tinywf schedule apply flows/daily_report.py     # store the schedule (again at each deploy)
    tinywf schedule trigger daily-report            # or run one now

``self.scheduled_at`` is the slot the run was started for (09:00 in Paris, as UTC); the run id
says it too: ``daily-report-20260302T0800Z``.
"""

import sys

from pydantic import BaseModel

from tinywf_cli import Schedule, Workflow, step


class ReportState(BaseModel):
    team: str = "ops"
    covering: str | None = None
    sent_to: str | None = None


def send_report(team: str, day: str) -> str:
    """The side effect: mail the team its report for ``day`` (a stand-in service)."""
    print(f"[mail] report for {day} sent to {team}@example.com", file=sys.stderr)
    return f"{team}@example.com"


class DailyReport(Workflow[ReportState]):
    """Mail the team yesterday's figures, once per weekday."""

    schedules = (Schedule("daily-report", "0 9 * * MON-FRI", tz="Europe/Paris", input={"team": "ops"},
                          overlap="skip", catch_up="latest"),)

    @step
    def send(self):
        day = self.scheduled_at.date().isoformat() if self.scheduled_at else "today"
        self.state.covering = day
        self.state.sent_to = yield self.action("send", send_report, self.state.team, day)
        return None
