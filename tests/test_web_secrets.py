"""What ``tinywf serve`` is trusted with, through the real process: a link answers only the run
it was made for, under the store's current key; no log line holds a token; redirects never
point at the host a request names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from clihelpers import Cli, assert_error, at
from webhelpers import TOKEN, WEB_FLOWS, Server, add_web_flows, server_fixture, web_cli_fixture  # noqa: F401  (fixtures)

from tinywf_cli.clock import ManualClock
from tinywf_cli.errors import RunNotFound
from tinywf_cli.runtime.runtime import Runtime


def token_of(url: str) -> str:
    """The token at the end of a link."""
    return url.rsplit("/", 1)[1]


def refused(server: Server, path: str, status: int, words: str) -> None:
    """GET and POST of a link's path are refused with ``status`` and a page saying ``words``; the
    store is unchanged."""
    before = server.cli.snapshot()
    page = server.anonymous.get(path)
    assert page.status_code == status and words in page.text, (page.status_code, page.text[-600:])
    answer = server.anonymous.post(path, data={"value": "true"})
    assert answer.status_code == status and words in answer.text, (answer.status_code, answer.text[-600:])
    assert server.cli.snapshot() == before


def remove_key(cli: Cli) -> None:
    """Remove the store's link key, as the README says to rotate it."""
    if cli.store is None:
        (cli.state_dir / ".secret~link").unlink()
        return
    import psycopg

    from tinywf_cli.stores.postgres.connection import parse_target

    target = parse_target(cli.store)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        deleted = conn.execute(f'DELETE FROM "{target.schema}".secrets WHERE name = %s', ("link",)).rowcount
    assert deleted == 1


# -- a link is bound to its run ----------------------------------------------------------------------------


@pytest.mark.stores("file", "postgres")
def test_a_link_never_answers_a_new_run_with_its_runs_id(cli: Cli) -> None:
    add_web_flows(cli.workspace)
    cli.start("flows/approve.py", "again-1")
    with Server.start(cli) as server:
        old = server.path_of(server.link("again-1", "first"))
        assert server.anonymous.get(old).status_code == 200
        cli.json("cancel", "again-1")
        later = at(3600)
        assert cli.json("prune", "--older-than", "1m", now=later)["pruned"] == ["again-1"]
        # a new run with the same id, waiting for the same event under the same resume id
        assert cli.start("flows/approve.py", "again-1", now=later)["pending"][0]["resume_id"] == "first@1"
        refused(server, old, 404, "no longer exists")
        assert cli.json("show", "again-1")["state"] == {}
        fresh = server.path_of(server.link("again-1", "first", now=later))
        assert server.anonymous.post(fresh, data={"value": "true"}).status_code == 200
        assert cli.json("show", "again-1")["state"] == {"first": True}


def test_a_link_made_before_links_named_their_run_is_refused(server: Server) -> None:
    server.cli.start("flows/approve.py", "older-1")
    server.link("older-1", "first")  # makes the key
    key = (server.cli.state_dir / ".secret~link").read_bytes()
    body = {"r": "older-1", "e": "first@1", "x": 2_000_000_000}  # what a link held until it named its run
    payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).rstrip(b"=").decode()
    mac = hmac.new(key, b"tinywf-link-v1:" + payload.encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    refused(server, f"/link/{payload}.{signature}", 403, "made by an older tinywf")


@pytest.mark.stores("file", "postgres")
def test_a_link_a_flow_sends_itself_answers_its_run_on_either_store(cli: Cli) -> None:
    doc = cli.start("flows/expense_approval.py", "expense-1", env={"TINYWF_OUTBOX": str(cli.workspace / "outbox")})
    url = doc["state"]["link"]
    assert url.startswith("http://127.0.0.1:8080/link/")
    with Server.start(cli) as server:
        path = url.removeprefix("http://127.0.0.1:8080")
        assert server.anonymous.post(path, data={"value": "true"}).status_code == 200
    assert cli.json("show", "expense-1")["state"]["paid"] is True
    assert not any(cli.workspace.glob("postgresql*"))  # the key is the store's, not a directory named after it


def test_resolve_with_created_at_answers_only_the_run_created_then(tmp_path: Path, clock: ManualClock) -> None:
    flow = tmp_path / "approve.py"
    flow.write_text(WEB_FLOWS["approve.py"], encoding="utf-8")
    runtime = Runtime(tmp_path / "state", clock=clock)
    created = runtime.start(str(flow), run_id="guard-1").created_at
    with pytest.raises(RunNotFound):  # what a link's answer meets when its run was replaced meanwhile
        runtime.resolve("guard-1", "first", True, created_at=created + timedelta(microseconds=1))
    assert runtime.get("guard-1").state == {}
    assert runtime.resolve("guard-1", "first", True, created_at=created).state == {"first": True}

# -- the store's current key ---------------------------------------------------------------------------------


@pytest.mark.stores("file", "postgres")
def test_a_running_server_uses_the_stores_current_key(cli: Cli) -> None:
    add_web_flows(cli.workspace)
    cli.start("flows/approve.py", "rotate-1")
    with Server.start(cli) as server:
        old = server.path_of(server.link("rotate-1", "first"))
        assert server.anonymous.get(old).status_code == 200
        remove_key(cli)  # rotate: the next link made has a new key
        new = server.path_of(server.link("rotate-1", "first"))
        assert new != old
        refused(server, old, 403, "not valid")
        assert server.anonymous.get(new).status_code == 200
        if cli.store is None:  # a key others can read is refused by the CLI and the server alike
            key = cli.state_dir / ".secret~link"
            key.chmod(0o644)
            assert_error(cli("link", "rotate-1", "first"), 5, "readable by its owner only")
            refused(server, new, 503, "cannot be used right now")
            assert str(key) in server.log.read_text(encoding="utf-8")  # the operator is told why
            key.chmod(0o600)
        assert server.anonymous.post(new, data={"value": "true"}).status_code == 200
        assert cli.json("show", "rotate-1")["state"] == {"first": True}


# -- the access log ---------------------------------------------------------------------------------------------


def test_no_access_log_line_holds_a_token(server: Server) -> None:
    server.cli.start("flows/approve.py", "log-1")
    token = token_of(server.link("log-1", "first"))
    signature = token.split(".")[1]
    paths = [f"//link/{token}", f"///link/{token}", f"/link/{token}/extra", f"/link//{token}", f"/x/link/{token}",
             f"/%2Flink/{token}", f"/Link/{token}", f"/link/{token[:-1]}", f"/runs/{token}", f"/api/runs/{token}",
             f"/{token}", f"/runs/x/resolve/{token}", f"/link/{token}?token={TOKEN}", f"/?token={token}",
             f"/runs/{TOKEN}", f"/{TOKEN}/x", "/runs/x%0AGET%20/forged%20200%200.1ms"]
    start = len(server.log.read_text(encoding="utf-8").splitlines())
    for path in paths:
        server.anonymous.get(path)
        server.api.get(path)
    server.anonymous.request(token, "/")  # a method is the client's to choose, too
    server.api.get(f"/link/{token}")  # served, and still logged without its token
    # a line is written once its answer has gone out: the client may read the answer first
    deadline = time.monotonic() + 10
    while True:
        lines = server.log.read_text(encoding="utf-8").splitlines()[start:]
        if len(lines) >= 2 * len(paths) + 2 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(lines) == 2 * len(paths) + 2, lines
    assert not any(line.startswith("GET /forged ") for line in lines)
    assert lines[-1].startswith("GET /link/… 200 ")
    for line in lines:
        assert TOKEN not in line, line
        assert not any(signature[i:i + 12] in line for i in range(len(signature) - 11)), line


# -- redirects --------------------------------------------------------------------------------------------------


def test_redirects_name_no_host(server: Server) -> None:
    server.cli.start("flows/approve.py", "redirect-1")
    evil = {"host": "evil.example"}
    for path, where in (("/api/runs/", "/api/runs"), ("/api/runs/?status=waiting", "/api/runs?status=waiting"),
                        ("/runs/redirect-1/", "/runs/redirect-1")):
        response = server.api.get(path, headers=evil, follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == where, (path, response.headers)
    response = server.anonymous.get("/", params={"token": TOKEN}, headers=evil, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert server.api.get("/api/runs/", follow_redirects=True).status_code == 200  # still followed home


@pytest.mark.parametrize(("location", "shown"), [
    ("http://evil.example/api/runs", "/api/runs"), ("https://evil.example/runs/a?page=2", "/runs/a?page=2"),
    ("//evil.example/x", "/x"), ("/\\evil.example/x", "/evil.example/x"),
    ("http://h//evil.example", "/evil.example"), ("/runs/r1", "/runs/r1"), ("http://h", "/")])
def test_a_redirect_is_a_path_a_browser_keeps_on_this_server(location: str, shown: str) -> None:
    from tinywf_cli.web.gate import relative_location

    assert relative_location(location) == shown
