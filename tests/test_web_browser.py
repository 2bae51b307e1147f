"""The pages in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright,
with JavaScript off (the pages must work without it). Each page is saved as a screenshot under
``bench/out/screenshots/`` (or ``$TINYWF_SCREENSHOTS``).

Without Chromium or Playwright these tests skip, saying why; with ``TINYWF_REQUIRE_BROWSER=1``
(as ``.ci/run`` sets) they fail instead, so CI cannot pass without having run them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clihelpers import REPO
from webhelpers import LINK, TOKEN, Server, server_fixture, web_cli_fixture  # noqa: F401  (fixtures)

CHROMIUM = os.environ.get("TINYWF_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("TINYWF_SCREENSHOTS") or REPO / "bench" / "out" / "screenshots")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $TINYWF_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (skipped, or failed under TINYWF_REQUIRE_BROWSER=1, when it is missing)."""
    reason = missing_browser()
    if reason is not None:
        if os.environ.get("TINYWF_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but cannot run: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab with JavaScript off, 1100 pixels wide."""
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact; returns (and prints) its path."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def sign_in(page: Any, server: Server) -> None:
    """Open ``/?token=…`` as the printed address says: the cookie is set, the token leaves the URL."""
    page.goto(f"{server.url}/?token={TOKEN}")
    assert page.url == f"{server.url}/"


def test_open_a_link_from_an_email_and_approve(server: Server, page: Any) -> None:
    started = server.api.post("/api/runs", json={"flow": "expense_approval.py", "run_id": "expense-7",
                                                 "input": {"employee": "ada@example.com", "amount": 240.5}})
    assert started.status_code == 201 and started.json()["status"] == "waiting", started.text
    email = (server.cli.workspace / "outbox" / "expense-7.eml").read_text(encoding="utf-8")
    found = LINK.search(email)
    assert found is not None, email
    url = server.url + "/link/" + found.group(0).rsplit("/", 1)[1]  # the email names the public address
    response = page.goto(url)
    assert response.status == 200
    assert page.get_by_role("heading").inner_text() == "Approve 240.50 for ada@example.com?"
    assert page.get_by_text("conference travel").is_visible()
    shot(page, "link")
    page.get_by_role("button", name="Approve").click()
    assert "your answer was recorded" in page.get_by_role("heading").inner_text()
    shot(page, "link-answered")
    doc = server.api.get("/api/runs/expense-7").json()
    assert doc["status"] == "finished" and doc["state"]["approved"] is True and doc["state"]["paid"] is True
    again = page.goto(url)
    assert again.status == 409 and "has ended" in page.get_by_role("heading").inner_text()  # used up
    shot(page, "link-used")


def test_the_run_page_shows_the_timeline_and_the_graph(server: Server, page: Any) -> None:
    server.cli.start("flows/guess_game.py", "game-9", "--input", '{"number": 77}')
    for guess in range(10, 22):  # enough wrong guesses for two pages of timeline
        assert server.api.post("/api/runs/game-9/send/" + f"ask_{guess - 10}", json={"value": guess}).status_code == 200
    logs = server.api.get("/api/runs/game-9").json()["logs"]
    sign_in(page, server)
    page.goto(f"{server.url}/?status=waiting")
    assert page.locator("tr[data-run=game-9]").count() == 1
    assert page.locator("nav.filters a.on").inner_text() == "waiting"
    shot(page, "runs")
    page.get_by_role("link", name="game-9").click()
    assert page.url == f"{server.url}/runs/game-9"
    assert page.locator("h1 .badge").inner_text() == "waiting"
    entries = page.locator("#timeline tr.entry")
    assert entries.count() == 25 and len(logs) > 25
    assert entries.first.get_attribute("data-type") == logs[-1]["type"]  # newest first
    graph = page.locator("#graph svg.graph")
    assert graph.is_visible()
    assert page.locator("g.step.visited[data-step=step_begin]").count() == 1
    assert page.locator("g.step.current[data-step=step_play]").count() == 1
    assert page.locator("g.edge.taken").count() >= 2
    assert page.locator("#pending .card .question").inner_text() == logs[-1]["values"].get("question", (
        server.api.get("/api/runs/game-9").json()["pending"][0]["request"]["question"]))
    shot(page, "run")
    page.get_by_role("link", name="older →").click()
    assert page.locator("#timeline tr.entry").count() == len(logs) - 25
    assert re.search(r"page 2 of 2", page.locator("#timeline .pager").inner_text())


def test_answer_on_the_run_page_with_a_validation_error(server: Server, page: Any) -> None:
    server.cli.start("flows/choices.py", "choices-3")
    sign_in(page, server)
    page.goto(f"{server.url}/runs/choices-3")
    page.get_by_role("button", name="green").click()
    assert page.url == f"{server.url}/runs/choices-3"
    assert page.locator("#pending .question").inner_text() == "How many?"
    page.get_by_label("answer").fill("99")
    page.get_by_role("button", name="Answer").click()
    alert = page.get_by_role("alert")
    assert "less than or equal to 10" in alert.inner_text()
    assert page.get_by_label("answer").input_value() == "99"
    shot(page, "run-invalid")
    page.get_by_label("answer").fill("4")
    page.get_by_role("button", name="Answer").click()
    page.get_by_label("answer").fill("Ada <b>Lovelace</b>")
    page.get_by_role("button", name="Answer").click()
    assert page.locator("h1 .badge").inner_text() == "finished"
    assert server.api.get("/api/runs/choices-3").json()["state"] == {"colour": "green", "count": 4,
                                                                      "name": "Ada <b>Lovelace</b>"}
    assert "Ada <b>Lovelace</b>" in page.locator("#state pre").inner_text()
    shot(page, "run-finished")


#: Every word of an element's text that the browser laid out on more than one line (a word cut in
#: two). A line may end after a hyphen, as in print, so the parts between hyphens count as words.
SPLIT_WORDS = """element => {
    const split = [];
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (const match of node.data.matchAll(/[^\\s-]+/g)) {
            const range = document.createRange();
            range.setStart(node, match.index);
            range.setEnd(node, match.index + match[0].length);
            const lines = new Set([...range.getClientRects()].map(rect => Math.round(rect.top)));
            if (lines.size > 1) split.push(match[0]);
        }
    }
    return split;
}"""


@pytest.mark.parametrize("width", [1100, 390])
def test_a_link_pages_heading_wraps_between_words(server: Server, browser: Any, width: int) -> None:
    run_id = f"wrap-{width}"
    server.cli.start("flows/guess_game.py", run_id, "--input", '{"number": 77}')
    assert server.api.post(f"/api/runs/{run_id}/send/ask_0", json={"value": 10}).status_code == 200
    context = browser.new_context(java_script_enabled=False, viewport={"width": width, "height": 800})
    try:
        page = context.new_page()
        page.goto(server.link(run_id, "ask_1"))
        shot(page, f"link-wrapped-{width}")
        heading = page.get_by_role("heading")
        assert heading.inner_text() == "10 is smaller than the number - guess again (0-100)"
        assert heading.evaluate("e => e.offsetHeight > 1.5 * parseFloat(getComputedStyle(e).lineHeight)")  # wraps
        assert heading.evaluate(SPLIT_WORDS) == []
        assert heading.evaluate("e => e.scrollWidth <= e.clientWidth")
    finally:
        context.close()


def test_a_long_string_wraps_inside_the_state_box(server: Server, page: Any) -> None:
    server.cli.start("flows/choices.py", "long-state")
    for key, value in (("colour", "red"), ("count", 3), ("name", "Ada" + "x" * 400 + " Lovelace")):
        assert server.api.post(f"/api/runs/long-state/send/{key}", json={"value": value}).status_code == 200
    sign_in(page, server)
    page.goto(f"{server.url}/runs/long-state")
    shot(page, "run-long-state")
    state = page.locator("#state pre")
    assert "x" * 400 in state.inner_text().replace("\n", "")
    assert state.evaluate("e => e.scrollWidth <= e.clientWidth"), "the State box scrolls sideways"
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    assert page.locator("h1").evaluate(SPLIT_WORDS) == []



def test_any_page_takes_the_token_once_then_drops_it_from_the_address(server: Server, page: Any) -> None:
    server.cli.start("flows/approve.py", "token-page")
    page.goto(f"{server.url}/runs/token-page?token={TOKEN}")
    assert page.url == f"{server.url}/runs/token-page"
    assert page.locator("h1 .badge").inner_text() == "waiting"
    page.goto(f"{server.url}/?status=waiting")  # the cookie it set serves the other pages
    assert page.locator("tr[data-run=token-page]").count() == 1


def test_a_tokened_address_opened_from_another_site_signs_in(server: Server, page: Any) -> None:
    server.cli.start("flows/approve.py", "token-elsewhere")
    elsewhere = server.url.replace("127.0.0.1", "localhost")  # another site, to the browser
    page.goto(f"{elsewhere}/nothing")
    page.set_content(f'<a href="{server.url}/runs/token-elsewhere?token={TOKEN}">the run</a>')
    page.get_by_role("link", name="the run").click()
    page.wait_for_url(f"{server.url}/runs/token-elsewhere")
    assert page.locator("h1 .badge").inner_text() == "waiting"
    page.go_back()  # the address with the token is not kept in the history
    assert TOKEN not in page.url and page.url.startswith(elsewhere), page.url
