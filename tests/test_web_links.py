"""Signed links through a real ``tinywf serve``: one event, one use, until expiry, untamperable.

A refused link changes nothing: the state directory's bytes are compared before and after.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from clihelpers import Cli, assert_error, at, snapshot
from webhelpers import LINK, TOKEN, Server, server_fixture, web_cli_fixture  # noqa: F401  (fixtures)

from tinywf_cli.errors import InvalidValue
from tinywf_cli.web.forms import enum_values, form_for, parse_answer
from tinywf_cli.web.links import parse_duration


def token_of(url: str) -> str:
    """The token at the end of a link."""
    return url.rsplit("/", 1)[1]


def forge(token: str, **changes: Any) -> str:
    """``token`` with fields of its payload changed, keeping the signature."""
    payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    encoded = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{encoded}.{signature}"


def refused(server: Server, token: str, status: int, words: str, value: str = "true") -> None:
    """GET and POST of the link are refused with ``status`` and a page saying ``words``; nothing changes."""
    before = snapshot(server.cli.state_dir)
    page = server.anonymous.get(f"/link/{token}")
    assert page.status_code == status and words in page.text, (page.status_code, page.text[-600:])
    assert "text/html" in page.headers["content-type"] and "<form" not in page.text
    answer = server.anonymous.post(f"/link/{token}", data={"value": value})
    assert answer.status_code == status and words in answer.text, (answer.status_code, answer.text[-600:])
    assert snapshot(server.cli.state_dir) == before


def test_a_link_answers_its_event_once_without_the_token(server: Server) -> None:
    server.cli.start("flows/approve.py", "once-1")
    url = server.link("once-1", "first")
    assert LINK.fullmatch(url) and url.startswith(f"{server.url}/link/")
    page = server.anonymous.get(server.path_of(url))
    assert page.status_code == 200 and "First approval?" in page.text
    assert 'value="true"' in page.text and ">Approve</button>" in page.text and ">Reject</button>" in page.text
    done = server.anonymous.post(server.path_of(url), data={"value": "true"})
    assert done.status_code == 200 and "your answer was recorded" in done.text
    doc = server.cli.json("show", "once-1")
    assert doc["state"] == {"first": True} and doc["pending"][0]["key"] == "second"
    # replayed after use: the run now waits on another event of the same run, which the link cannot answer
    refused(server, token_of(url), 410, "already answered")
    assert server.cli.json("show", "once-1")["pending"][0]["key"] == "second"


def test_a_link_for_run_a_cannot_answer_run_b_or_another_event(server: Server) -> None:
    server.cli.start("flows/approve.py", "run-a")
    server.cli.start("flows/approve.py", "run-b")
    token = token_of(server.link("run-a", "first"))
    refused(server, forge(token, r="run-b"), 403, "not valid")
    refused(server, forge(token, e="second@2"), 403, "not valid")
    refused(server, forge(token, x=2_000_000_000), 403, "not valid")
    assert server.anonymous.get(f"/link/{token}").status_code == 200  # the real one still works


def test_a_link_with_any_one_character_changed_does_nothing(server: Server) -> None:
    server.cli.start("flows/approve.py", "tamper-1")
    token = token_of(server.link("tamper-1", "first"))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    positions = sorted({0, 1, len(token) // 3, token.index(".") - 1, token.index("."), token.index(".") + 1,
                        len(token) - 2, len(token) - 1})
    for position in positions:
        for replacement in {alphabet[(alphabet.index(token[position]) + 1) % 64], "A" if token[position] != "A"
                            else "B"}:
            changed = token[:position] + replacement + token[position + 1:]
            assert changed != token
            refused(server, changed, 403, "not valid")
    refused(server, token[:-1], 403, "not valid")
    refused(server, token + "A", 403, "not valid")
    refused(server, token.split(".")[0], 403, "not valid")
    before = snapshot(server.cli.state_dir)
    assert server.anonymous.get(f"/link/{token}/extra").status_code == 401  # not a link's own page
    assert snapshot(server.cli.state_dir) == before
    assert server.cli.json("show", "tamper-1")["status"] == "waiting"


def test_an_expired_link_does_nothing(server: Server) -> None:
    server.cli.start("flows/approve.py", "expired-1")
    old = server.link("expired-1", "first", "--expires", "1h", now=at(-7200))  # made two hours ago
    refused(server, token_of(old), 410, "expired")
    fresh = server.link("expired-1", "first", "--expires", "2h", now=at(-3600))
    assert server.anonymous.get(server.path_of(fresh)).status_code == 200


def test_a_link_signed_with_another_key_does_nothing(server: Server, tmp_path: Path) -> None:
    server.cli.start("flows/approve.py", "foreign-1")
    other = Cli(server.cli.workspace, tmp_path / "other-state")
    other.start("flows/approve.py", "foreign-1")
    foreign = other("link", "foreign-1", "first", "--base-url", server.url).stdout.strip()
    refused(server, token_of(foreign), 403, "not valid")


def test_a_link_to_an_ended_run_or_a_removed_run(server: Server) -> None:
    server.cli.start("flows/approve.py", "ended-1")
    url = server.link("ended-1", "first")
    server.cli.json("cancel", "ended-1")
    refused(server, token_of(url), 409, "has ended")
    server.cli.start("flows/approve.py", "gone-1")
    url = server.link("gone-1", "first")
    for name in ("gone-1.json", "gone-1.journal", "gone-1.lock"):
        (server.cli.state_dir / name).unlink(missing_ok=True)
    refused(server, token_of(url), 404, "no longer exists")


def test_the_link_token_is_no_api_token(server: Server) -> None:
    server.cli.start("flows/approve.py", "scope-1")
    token = token_of(server.link("scope-1", "first"))
    for path in ("/api/runs", "/api/runs/scope-1", "/runs/scope-1", "/"):
        response = server.anonymous.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, path
    response = server.anonymous.post("/api/runs/scope-1/resolve/first", json={"value": True},
                                     headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_every_page_but_a_links_needs_the_token(server: Server) -> None:
    server.cli.start("flows/approve.py", "pages-1")
    before = snapshot(server.cli.state_dir)
    for method, path in (("GET", "/"), ("GET", "/?status=waiting"), ("GET", "/runs/pages-1"),
                         ("POST", "/runs/pages-1/resolve/first"), ("POST", "/runs/pages-1/cancel"),
                         ("POST", "/runs/pages-1/retry"), ("GET", "/docs"), ("GET", "/nothing"),
                         ("GET", "/link/"), ("GET", "/?token=wrong")):
        response = server.anonymous.request(method, path, data={"value": "true"} if method == "POST" else None,
                                            headers={"accept": "text/html"})
        assert response.status_code == 401, (method, path)
        assert "This server needs its token" in response.text and "pages-1" not in response.text
    assert snapshot(server.cli.state_dir) == before


def test_the_form_fits_the_events_type_and_shows_validation_errors(server: Server) -> None:
    server.cli.start("flows/choices.py", "form-1")
    colour = server.link("form-1", "colour")
    page = server.anonymous.get(server.path_of(colour)).text
    assert [f'value="&quot;{c}&quot;"' in page for c in ("red", "green", "blue")] == [True] * 3
    assert server.anonymous.post(server.path_of(colour), data={"value": '"green"'}).status_code == 200
    count = server.link("form-1", "count")
    page = server.anonymous.get(server.path_of(count)).text
    assert 'type="number"' in page and "integer (1..10)" in page
    before = snapshot(server.cli.state_dir)
    wrong = server.anonymous.post(server.path_of(count), data={"value": "99"})
    assert wrong.status_code == 422 and "less than or equal to 10" in wrong.text and 'value="99"' in wrong.text
    assert snapshot(server.cli.state_dir) == before
    assert server.anonymous.post(server.path_of(count), data={"value": "3"}).status_code == 200
    name = server.link("form-1", "name")
    page = server.anonymous.get(server.path_of(name)).text
    assert 'type="text"' in page
    done = server.anonymous.post(server.path_of(name), data={"value": "1234"})  # text stays text
    assert done.status_code == 200
    assert server.cli.json("show", "form-1")["state"] == {"colour": "green", "count": 3, "name": "1234"}



def notice_of(page: str) -> str:
    """The text of the thank-you page's notice: the question and the answer given."""
    found = re.search(r'<p class="notice">(.*?)</p>', page, re.S)
    assert found is not None, page
    return re.sub(r"<[^>]+>", "", found.group(1))


def test_the_thank_you_page_names_the_button_that_was_pressed(server: Server) -> None:
    server.cli.start("flows/approve.py", "thanks-1")
    first = server.anonymous.post(server.path_of(server.link("thanks-1", "first")), data={"value": "true"})
    assert first.status_code == 200 and notice_of(first.text) == "First approval? Approve"
    second = server.anonymous.post(server.path_of(server.link("thanks-1", "second")), data={"value": "false"})
    assert second.status_code == 200 and notice_of(second.text) == "Second approval? Reject"
    server.cli.start("flows/choices.py", "thanks-2")
    colour = server.anonymous.post(server.path_of(server.link("thanks-2", "colour")), data={"value": '"blue"'})
    assert notice_of(colour.text) == "Which colour? blue"
    count = server.anonymous.post(server.path_of(server.link("thanks-2", "count")), data={"value": "7"})
    assert notice_of(count.text) == "How many? 7"  # typed, not chosen: the value as given

def test_markup_in_questions_and_state_is_shown_not_run(server: Server) -> None:
    server.cli.start("flows/markup.py", "xss-1")
    server.api.post("/api/runs/xss-1/signal/note", json={"text": "<img src=x onerror=alert(1)>"})
    page = server.anonymous.get(server.path_of(server.link("xss-1", "answer"))).text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    run_page = server.api.get("/runs/xss-1").text
    assert "<script>" not in run_page and "<img src=x" not in run_page and "&lt;img src=x" in run_page


def test_concurrent_answers_to_one_link_record_one(server: Server) -> None:
    import concurrent.futures

    server.cli.start("flows/approve.py", "race-1")
    url = server.link("race-1", "first")

    def answer(value: str) -> int:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return client.post(server.path_of(url), data={"value": value}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(answer, ["true", "false"] * 4))
    assert codes.count(200) == 1 and set(codes) <= {200, 410}, codes
    waits = [e for e in server.cli.json("show", "race-1")["logs"] if e["type"] == "wait_end"]
    assert len(waits) == 1


def test_link_command_errors(web_cli: Cli) -> None:
    web_cli.start("flows/approve.py", "cmd-1")
    web_cli.start("flows/fifo.py", "cmd-timer")
    assert_error(web_cli("link", "nobody", "first"), 3, "no run 'nobody'")
    assert_error(web_cli("link", "cmd-1", "second"), 3, "no pending event 'second'")
    assert_error(web_cli("link", "cmd-timer", "settle"), 2, "not an event")
    assert_error(web_cli("link", "cmd-1", "first", "--expires", "soon"), 2, "invalid duration")
    assert_error(web_cli("link", "cmd-1", "first", "--expires", "0d"), 2, "longer than zero")
    assert_error(web_cli("link", "cmd-1", "first", "--expires", "400d"), 2, "at most")
    assert_error(web_cli("link", "cmd-1", "first", "--base-url", "ftp://x"), 2, "--base-url")
    assert_error(web_cli("link", "bad id!", "first"), 2, "invalid run id")
    doc = web_cli.json("link", "cmd-1", "first", "--expires", "36h", "--base-url", "https://wf.example.com/")
    assert set(doc) == {"url", "run_id", "resume_id", "expires_at"}
    assert doc["url"].startswith("https://wf.example.com/link/") and doc["resume_id"] == "first@1"
    assert doc["expires_at"] == at(36 * 3600)
    web_cli.json("cancel", "cmd-1")
    assert_error(web_cli("link", "cmd-1", "first"), 4, "cancelled")


def test_the_link_command_keeps_the_key_in_the_store(web_cli: Cli) -> None:
    web_cli.start("flows/approve.py", "key-1")
    first = web_cli("link", "key-1", "first").stdout
    assert first == web_cli("link", "key-1", "first").stdout  # same key, same clock: the same link
    key = web_cli.state_dir / ".secret~link"
    assert key.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("text", "seconds"), [("7d", 604800), ("12h", 43200), ("30m", 1800), ("45s", 45),
                                               ("1d12h", 129600), ("2w", 1209600), (" 1H ", 3600)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize(("expects", "kind", "labels"), [
    ("boolean", "buttons", ["Approve", "Reject"]),
    ("boolean or null", "buttons", ["Approve", "Reject"]),
    ('one of "red", "green"', "buttons", ["red", "green"]),
    ('one of "a, b", 1, true', "buttons", ["a, b", "1", "true"]),
    ("integer (0..100)", "json", []),
    ("string", "text", []),
    ("object", "json", []),
    (None, "json", []),
])
def test_forms_follow_the_type(expects: str | None, kind: str, labels: list[str]) -> None:
    form = form_for(expects)
    assert form.kind == kind and [c.label for c in form.choices] == labels


def test_answers_are_read_as_the_cli_reads_values() -> None:
    assert parse_answer(form_for("string"), "1234") == "1234"
    assert parse_answer(form_for("integer"), "12") == 12
    assert parse_answer(form_for(None), "hello") == "hello"
    assert parse_answer(form_for(None), "NaN") == "NaN"
    assert parse_answer(form_for("boolean"), "false") is False
    assert enum_values('one of "x", "y') is None
    # JSON tinywf could not keep is refused, as the CLI refuses it: never a string, never a crash
    for text, words in (('"\\ud800"', "lone surrogate"), ("[" * 5000 + "]" * 5000, "nested more than 200")):
        with pytest.raises(InvalidValue, match=words):
            parse_answer(form_for(None), text, "stop")


def test_a_link_to_an_unreadable_run_says_so_without_its_path(server: Server) -> None:
    server.cli.start("flows/approve.py", "unreadable-1")
    url = server.link("unreadable-1", "first")
    (server.cli.state_dir / "unreadable-1.json").write_text("{broken", encoding="utf-8")
    refused(server, token_of(url), 503, "cannot be used right now")
    page = server.anonymous.get(server.path_of(url)).text
    assert str(server.cli.state_dir) not in page and "unreadable-1.json" not in page


def test_random_tokens_and_answers_never_break_a_link_page(server: Server) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    server.cli.start("flows/approve.py", "random-1")
    token = token_of(server.link("random-1", "first"))
    before = snapshot(server.cli.state_dir)
    pieces = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"),
                                        exclude_characters="/?#%\\"), max_size=80)

    @given(forged=st.one_of(pieces, pieces.map(lambda s: token[: len(token) // 2] + s),
                            st.builds(lambda a, b: f"{a}.{b}", pieces, pieces)),
           value=st.text(max_size=40))
    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(forged: str, value: str) -> None:
        for response in (server.anonymous.get(f"/link/{forged}"),
                         server.anonymous.post(f"/link/{forged}", data={"value": value})):
            assert 400 <= response.status_code < 500, (forged, response.status_code, response.text[-300:])

    check()
    assert snapshot(server.cli.state_dir) == before
