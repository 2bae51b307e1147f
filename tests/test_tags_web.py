"""Tags on ``tinywf serve``'s runs page: shown, and each a link to the runs that share it."""

from __future__ import annotations

from clihelpers import Cli
from webhelpers import Server


def test_the_runs_page_shows_tags_and_filters_by_them(cli: Cli) -> None:
    cli.start("flows/guess_game.py", "g1", "--no-input", "--tag", "customer=acme")
    cli.start("flows/guess_game.py", "g2", "--no-input", "--tag", "customer=globex")
    with Server.start(cli) as server:
        page = server.api.get("/").text
        assert "customer=acme" in page and 'href="/?tag=customer%3Dacme"' in page
        only = server.api.get("/?tag=customer=acme").text
        assert 'data-run="g1"' in only and 'data-run="g2"' not in only
        none = server.api.get("/?tag=customer=nobody&status=waiting").text
        assert "No runs in status waiting tagged customer=nobody." in none
