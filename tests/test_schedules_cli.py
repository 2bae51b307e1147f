"""``tinywf schedule ...`` through the installed command: documents, exit codes, bad input that
writes nothing, and days of fake time ticked by ``tinywf tick`` processes."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from typing import Any

import pytest
from clihelpers import Cli, InProcessCli, at, describe, one_document

ROW_KEYS = {"name", "flow", "cron", "tz", "overlap", "paused", "next_at", "last_run_id", "skipped", "missed"}

DAILY = '''
"""A report each morning."""

from tinywf_cli import Schedule, Workflow, step


class Report(Workflow):
    """Notes its slot."""

    schedules = [Schedule("morning", "0 9 * * *", tz="Europe/Paris", input={"team": "ops"})]

    @step
    def write(self):
        self.state["slot"] = self.scheduled_at.isoformat()
        return None
'''


def schedule(cli: Cli, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``tinywf schedule SUB --store ... ARGS`` (the store after the sub-command)."""
    return cli("schedule", args[0], *cli.store_args, *args[1:], state_dir=False, **kwargs)


def schedule_json(cli: Cli, *args: str, code: int = 0, **kwargs: Any) -> Any:
    """``schedule`` with ``--json``: its one document, after checking the exit code."""
    result = schedule(cli, args[0], "--json", *args[1:], **kwargs)
    assert result.returncode == code, describe(result)
    return one_document(result.stdout)


@pytest.fixture
def daily(cli: Cli) -> str:
    (cli.workspace / "flows" / "daily.py").write_text(DAILY.lstrip(), encoding="utf-8")
    return "flows/daily.py"


@pytest.mark.stores("file", "postgres")
def test_bad_input_is_one_line_the_contract_exit_code_and_nothing_written(cli: Cli, fast: InProcessCli,
                                                                         daily: str) -> None:
    schedule_json(fast, "add", "taken", daily, "--cron", "@daily")
    before = cli.snapshot()
    cases = [
        (["add", "x", daily, "--cron", "0 9 * *"], 2, "4 fields"),
        (["add", "x", daily, "--cron", "0 9 * * *", "--tz", "Europe/Atlantis"], 2, "unknown time zone"),
        (["add", "x", "flows/no_such.py", "--cron", "@daily"], 2, "not found"),
        (["add", "x", "flows/broken.py", "--cron", "@daily"], 2, "broken.py"),
        (["add", "x", daily, "--cron", "@daily", "--overlap", "often"], 2, "overlap policy"),
        (["add", "x y", daily, "--cron", "@daily"], 2, "invalid schedule name"),
        (["add", "x", daily, "--cron", "@daily", "--input", "[1]"], 2, "JSON object"),
        (["add", "x", daily, "--cron", "@daily", "--start", "soon"], 2, "invalid time"),
        (["add", "taken", daily, "--cron", "@hourly"], 4, "already taken"),
        (["apply", "flows/broken.py"], 2, "broken.py"),
        (["show", "nope"], 3, "no schedule 'nope'"),
        (["pause", "nope"], 3, "no schedule 'nope'"),
        (["trigger", "nope"], 3, "no schedule 'nope'"),
        (["remove", "nope"], 3, "no schedule 'nope'"),
        (["backfill", "taken", "--from", at(0), "--to", at(-60)], 2, "before --from"),
        (["backfill", "taken", "--from", at(0), "--to", at(86400)], 2, "in the future"),
    ]
    for number, (args, code, says) in enumerate(cases):
        result = schedule(cli if number < 2 else fast, *args)  # the real command, then in this process
        lines = result.stderr.splitlines()
        assert result.returncode == code and result.stdout == "", (args, describe(result))
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], (args, result.stderr)
        assert cli.snapshot() == before, args


def test_list_show_pause_resume_remove_documents(cli: Cli, fast: InProcessCli, daily: str) -> None:
    added = schedule_json(fast, "add", "sync", daily, "--cron", "*/15 * * * *", "--overlap", "buffer_one",
                      "--input", '{"team": "db"}')
    assert added["next_at"] == "2026-01-01T00:15:00Z" and added["upcoming"][:2] == [
        "2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"]
    listed = schedule_json(cli, "list")
    assert list(listed) == ["schedules"] and set(listed["schedules"][0]) == ROW_KEYS
    assert listed["schedules"][0] | {"flow": None} == {
        "name": "sync", "flow": None, "cron": "*/15 * * * *", "tz": "UTC", "overlap": "buffer_one", "paused": False,
        "next_at": "2026-01-01T00:15:00Z", "last_run_id": None, "skipped": 0, "missed": 0}
    assert schedule_json(fast, "pause", "sync")["paused"] is True
    assert schedule(cli, "pause", "sync").returncode == 4
    assert schedule_json(fast, "resume", "sync")["paused"] is False
    shown = schedule(cli, "show", "sync")
    assert shown.returncode == 0 and "*/15 * * * *" in shown.stdout and "buffer_one" in shown.stdout
    triggered = schedule_json(fast, "trigger", "sync", now=at(90))
    assert triggered["run_id"] == "sync-20260101T0001Z" and triggered["status"] == "finished"
    assert schedule_json(fast, "remove", "sync")["name"] == "sync"
    assert schedule_json(fast, "list") == {"schedules": []}
    assert fast.json("show", "sync-20260101T0001Z")["status"] == "finished"  # its runs stay


def test_apply_says_what_changed(fast: InProcessCli, daily: str) -> None:
    assert schedule_json(fast, "apply", daily) == {"added": ["morning"], "changed": [], "removed": [],
                                                      "unchanged": []}
    assert schedule_json(fast, "apply", daily)["unchanged"] == ["morning"]


def test_three_days_of_tick_processes_every_hour_start_each_morning_once(cli: Cli, daily: str) -> None:
    """The subprocess version of the library's year: real ``tinywf tick`` commands on $TINYWF_NOW,
    across the spring-forward night in Paris."""
    start = "2026-03-28T00:00:00Z"
    assert schedule(cli, "apply", daily, now=start).returncode == 0
    for hour in range(4, 3 * 24, 8):  # 04:00, 12:00 (twice) and 20:00 UTC each day
        for _ in range(2 if hour % 24 == 12 else 1):
            result = cli("tick", "--json", now=at(timedelta(days=86, hours=hour)))
            assert result.returncode == 0, describe(result)
    ids = sorted(r["run_id"] for r in cli.json("list", now=at(timedelta(days=90)))["runs"])
    assert ids == ["morning-20260328T0800Z", "morning-20260329T0700Z", "morning-20260330T0700Z"]  # 09:00 local
    shown = schedule_json(cli, "show", "morning")
    assert (shown["skipped"], shown["missed"], shown["next_at"]) == (0, 0, "2026-03-31T07:00:00Z")
