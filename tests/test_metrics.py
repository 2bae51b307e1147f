"""``GET /metrics`` of ``tinywf serve`` (contract section 12): Prometheus's text format, parsed
with prometheus-client's own parser, its figures matching ``list --json``, ``limits`` and
``breakers``; the bearer token as the API."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from clihelpers import Cli
from prometheus_client.parser import text_string_to_metric_families
from test_limits_cli import FLOW as LIMITED
from webhelpers import Server

STATUSES = ("running", "waiting", "paused", "blocked", "finished", "failed", "cancelled", "unreadable")


def _scrape(server: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = server.api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    figures: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            figures.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return figures


def _by(figures: dict[tuple[tuple[str, str], ...], float], label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in figures.items()}


@pytest.mark.stores("file", "postgres")
def test_metrics_match_what_list_limits_and_breakers_say(cli: Cli) -> None:
    (cli.workspace / "flows" / "limited.py").write_text(LIMITED, encoding="utf-8")
    cli.start("flows/guess_game.py", "g1", "--no-input")  # waits on an event
    cli.start("flows/guess_game.py", "g2", "--no-input")
    cli.json("pause", "g2")
    cli.start("flows/fail.py", "f1", code=1, env={"TINYWF_TEST_FAIL": "1"})
    cli.start("flows/limited.py", "l1")  # finished
    cli.start("flows/limited.py", "l2")  # waits for the limit's next token
    cli.start("flows/limited.py", "l3", now="2026-01-01T00:05:00Z", env={"SERVICE_DOWN": "1"})  # opens the breaker
    with Server.start(cli) as server:
        figures = _scrape(server)
    rows: list[dict[str, Any]] = cli.json("list")["runs"]
    assert _by(figures["tinywf_runs"], "status") == {s: Counter(r["status"] for r in rows).get(s, 0)
                                                      for s in STATUSES}
    waiting = _by(figures["tinywf_runs_waiting"], "kind")
    assert waiting["event"] == 1 and waiting["limit"] == 1 and waiting["timer"] == 0
    limits = cli.json("limits")["limits"]
    assert {(dict(k)["limit"], v) for k, v in figures["tinywf_limit_waiting"].items()} == \
        {(r["name"], r["waiting"]) for r in limits}
    breakers = cli.json("breakers")["breakers"]
    states = {dict(k)["state"]: v for k, v in figures["tinywf_breaker_state"].items()
              if dict(k)["breaker"] == "service"}
    assert states == {"closed": 0, "open": 0, "half_open": 0, breakers[0]["state"]: 1}
    assert _by(figures["tinywf_breaker_failures"], "breaker") == {"service": breakers[0]["failures"]}


def test_metrics_need_the_token_as_the_api_does(cli: Cli) -> None:
    with Server.start(cli) as server:
        refused = server.anonymous.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "Unauthorized"
        assert server.anonymous.get("/metrics?token=x").status_code == 401  # not a page: no sign-in by query
        empty = _scrape(server)
    assert set(_by(empty["tinywf_runs"], "status").values()) == {0}

