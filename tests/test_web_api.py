"""The JSON API through a real ``tinywf serve`` process: every route, every status of contract
section 8, bad and oversize bodies, the token, and documents equal to the CLI's ``--json``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from clihelpers import RUN_KEYS, SHOW_KEYS, Cli, InProcessCli, assert_error, assert_run_document, snapshot
from webhelpers import TOKEN, Server, server_fixture, web_cli_fixture  # noqa: F401  (fixtures)

#: Every API route, with a body that would be well-formed.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/runs", None),
    ("GET", "/api/runs/r1", None),
    ("POST", "/api/runs", {"flow": "simple.py"}),
    ("POST", "/api/runs/r1/resolve/x", {"value": 1}),
    ("POST", "/api/runs/r1/send/x", {"value": 1}),
    ("POST", "/api/runs/r1/signal/x", {}),
    ("POST", "/api/runs/r1/cancel", None),
    ("POST", "/api/runs/r1/retry", None),
    ("GET", "/openapi.json", None),
]


def without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``doc`` less ``keys``."""
    return {k: v for k, v in doc.items() if k not in keys}


def error_of(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """An error answer: the status, ``{"error": {"type", "message", "exit_code"}}``, the fragments."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "exit_code"}, body
    for fragment in fragments:
        assert fragment in body["error"]["message"], (fragment, body)
    return body["error"]  # type: ignore[no-any-return]


def test_openapi_describes_every_route(server: Server) -> None:
    schema = server.api.get("/openapi.json").json()
    paths = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    assert paths == {
        ("GET", "/api/runs"), ("POST", "/api/runs"), ("GET", "/api/runs/{run_id}"),
        ("POST", "/api/runs/{run_id}/resolve/{resume}"), ("POST", "/api/runs/{run_id}/send/{key}"),
        ("POST", "/api/runs/{run_id}/signal/{name}"), ("POST", "/api/runs/{run_id}/cancel"),
        ("POST", "/api/runs/{run_id}/retry"),
    }
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["security"] == [{"bearer": []}]
    run = schema["components"]["schemas"]["RunDocument"]
    assert set(run["properties"]) >= RUN_KEYS and "expects" not in run["properties"]
    for ops in schema["paths"].values():
        for op in ops.values():
            assert {"401", "413", "503"} <= set(op["responses"]), op["operationId"]
            assert op.get("description"), op["operationId"]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_route_needs_the_token(server: Server, method: str, path: str, body: Any) -> None:
    before = snapshot(server.cli.state_dir)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Cookie": "tinywf_token=wrong"}):
        response = server.anonymous.request(method, path, json=body, headers=headers)
        error_of(response, 401, "Bearer")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert snapshot(server.cli.state_dir) == before


def test_the_bearer_scheme_is_case_insensitive(server: Server) -> None:
    assert server.anonymous.get("/api/runs", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_list_and_show_are_the_cli_documents(server: Server) -> None:
    cli = server.cli
    cli.start("flows/guess_game.py", "list-g", "--input", '{"number": 42}')
    cli.start("flows/simple.py", "list-s")
    assert server.api.get("/api/runs").json() == cli.json("list")
    assert server.api.get("/api/runs", params={"status": "waiting"}).json() == cli.json("list", "--status", "waiting")
    assert server.api.get("/api/runs", params={"status": "finished"}).json() == cli.json("list", "--status",
                                                                                          "finished")
    shown = server.api.get("/api/runs/list-g")
    assert shown.status_code == 200 and shown.headers["content-type"] == "application/json"
    assert assert_run_document(shown.json(), SHOW_KEYS) == cli.json("show", "list-g")
    error_of(server.api.get("/api/runs", params={"status": "sleeping"}), 400, "sleeping")


def test_start_a_run_201(server: Server) -> None:
    response = server.api.post("/api/runs", json={"flow": "guess_game.py", "input": {"number": 7},
                                                  "run_id": "start-1"})
    assert response.status_code == 201, response.text
    doc = assert_run_document(response.json())
    assert (doc["run_id"], doc["status"], doc["workflow"]) == ("start-1", "waiting", "flows/guess_game.py:GuessGame")
    assert doc == without(server.cli.json("show", "start-1"), "logs")
    # the flow named as the CLI names it (relative to the working directory), and with its class
    for flow, run_id in (("flows/simple.py", "start-2"), ("simple.py:Simple", "start-3"), ("simple", "start-4")):
        response = server.api.post("/api/runs", json={"flow": flow, "run_id": run_id})
        assert response.status_code == 201 and response.json()["status"] == "finished", response.text
    generated = server.api.post("/api/runs", json={"flow": "simple.py"}).json()["run_id"]
    assert generated.startswith("simple-")


def test_a_run_that_fails_while_starting_is_still_created(server: Server) -> None:
    response = server.api.post("/api/runs", json={"flow": "retrying.py", "run_id": "start-retrying"})
    assert response.status_code == 201 and response.json()["status"] == "waiting"


@pytest.mark.parametrize("flow", ["../outside.py", "/etc/passwd", "flows/../../outside.py", "../flows/../outside.py",
                                  "linked.py", "linked_dir/x.py"])
def test_only_flows_under_flows_can_be_started(server: Server, flow: str) -> None:
    outside = server.cli.workspace.parent / "outside.py"
    outside.write_text("from tinywf_cli import Workflow, step\n\nclass Out(Workflow):\n    @step\n"
                       "    def go(self):\n        return None\n", encoding="utf-8")
    (server.cli.workspace / "outside.py").write_text(outside.read_text(encoding="utf-8"), encoding="utf-8")
    flows = server.cli.workspace / "flows"
    if not (flows / "linked.py").is_symlink():
        (flows / "linked.py").symlink_to(outside)
        (flows / "linked_dir").symlink_to(server.cli.workspace.parent)
    before = snapshot(server.cli.state_dir)
    error_of(server.api.post("/api/runs", json={"flow": flow}), 400, "only flows under")
    assert snapshot(server.cli.state_dir) == before


def test_start_errors(server: Server) -> None:
    server.cli.start("flows/simple.py", "taken")
    before = snapshot(server.cli.state_dir)
    error_of(server.api.post("/api/runs", json={"flow": "nope.py"}), 400, "not found")
    error_of(server.api.post("/api/runs", json={"flow": "broken.py"}), 400, "syntax error")
    error_of(server.api.post("/api/runs", json={"flow": ""}), 400)
    error_of(server.api.post("/api/runs", json={"flow": "a" * 300}), 400, "too long")  # found by the fuzzer
    error_of(server.api.post("/api/runs", json={"flow": "a/" * 3000}), 400, "too long")
    error_of(server.api.post("/api/runs", json={"flow": "simple.py/x.py"}), 400)
    error_of(server.api.post("/api/runs", json={"flow": "/"}), 400, "only flows under")
    error_of(server.api.post("/api/runs", json={"flow": "simple.py", "run_id": "taken"}), 409, "already taken")
    error_of(server.api.post("/api/runs", json={"flow": "simple.py", "run_id": "bad id!"}), 400, "invalid run id")
    error_of(server.api.post("/api/runs", json={"flow": "guess_game.py", "input": {"number": "many"}}), 422)
    error_of(server.api.post("/api/runs", json={"flow": "guess_game.py", "input": {"colour": 1}}), 422, "colour")
    assert snapshot(server.cli.state_dir) == before


@pytest.mark.parametrize(("content", "fragment"), [
    (b"{", "JSON"), (b'{"flow": 3}', "flow"), (b'{"flow": "simple.py", "inputs": {}}', "inputs"),
    (b"[1, 2]", ""), (b'{"flow": "simple.py", "input": [1]}', "input"), (b"", ""), (b"NaN", ""),
])
def test_invalid_bodies_are_400(server: Server, content: bytes, fragment: str) -> None:
    before = snapshot(server.cli.state_dir)
    response = server.api.post("/api/runs", content=content, headers={"content-type": "application/json"})
    error_of(response, 400, fragment)
    assert snapshot(server.cli.state_dir) == before


def test_a_body_that_is_not_json_is_400(server: Server) -> None:
    error_of(server.api.post("/api/runs", content=b"flow=simple.py",
                             headers={"content-type": "application/x-www-form-urlencoded"}), 400, "application/json")


def test_oversize_bodies_are_413(server: Server) -> None:
    before = snapshot(server.cli.state_dir)
    big = {"flow": "simple.py", "input": {"x": "a" * (1024 * 1024)}}
    error_of(server.api.post("/api/runs", json=big), 413, "larger than")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield b'{"value": "'
        for _ in range(40):
            yield b"b" * 65536
        yield b'"}'

    error_of(server.api.post("/api/runs/x/send/y", content=chunks(), headers={"content-type": "application/json"}),
             413)
    assert snapshot(server.cli.state_dir) == before


def test_resolve(server: Server) -> None:
    cli = server.cli
    cli.start("flows/guess_game.py", "res-1", "--input", '{"number": 42}')
    before = snapshot(cli.state_dir)
    error_of(server.api.post("/api/runs/res-1/resolve/ask_0", json={"value": 500}), 422, "less than or equal to 100")
    error_of(server.api.post("/api/runs/res-1/resolve/ask_0", json={"value": "ten"}), 422)
    error_of(server.api.post("/api/runs/res-1/resolve/nope", json={"value": 5}), 404, "no pending event 'nope'")
    error_of(server.api.post("/api/runs/nobody/resolve/ask_0", json={"value": 5}), 404, "no run 'nobody'")
    error_of(server.api.post("/api/runs/res-1/resolve/ask_0", json={}), 400, "value")
    assert snapshot(cli.state_dir) == before
    response = server.api.post("/api/runs/res-1/resolve/ask_0", json={"value": 42})
    assert response.status_code == 200 and response.json()["status"] == "finished"
    assert response.json() == without(cli.json("show", "res-1"), "logs")
    error_of(server.api.post("/api/runs/res-1/resolve/ask_0", json={"value": 42}), 409, "finished")


def test_resolve_by_resume_id_with_special_characters(server: Server) -> None:
    server.cli.start("flows/approve.py", "res-2")
    response = server.api.post("/api/runs/res-2/resolve/first%401", json={"value": True})
    assert response.status_code == 200 and response.json()["state"] == {"first": True}


def test_a_timer_is_not_an_event_400(server: Server) -> None:
    server.cli.start("flows/fifo.py", "res-timer")
    error_of(server.api.post("/api/runs/res-timer/resolve/settle", json={"value": 1}), 400, "not an event")


def test_a_run_that_fails_while_advancing_is_200_with_its_document(server: Server) -> None:
    server.cli.start("flows/fail.py", "res-fail")
    response = server.api.post("/api/runs/res-fail/resolve/note", json={"value": "boom"})
    assert response.status_code == 200
    doc = assert_run_document(response.json())
    assert doc["status"] == "failed" and "the note went boom" in doc["error"]["message"]
    assert doc == without(server.cli.json("show", "res-fail"), "logs")


def test_send(server: Server) -> None:
    server.cli.start("flows/fifo.py", "send-1")
    response = server.api.post("/api/runs/send-1/send/item", json={"value": "apple"})
    assert response.status_code == 200 and response.json()["status"] == "waiting"
    assert response.json() == without(server.cli.json("show", "send-1"), "logs")
    error_of(server.api.post("/api/runs/ghost/send/item", json={"value": 1}), 404)


def test_signal(server: Server) -> None:
    server.cli.start("flows/choices.py", "sig-1")
    response = server.api.post("/api/runs/sig-1/signal/note", json={"text": "hello"})
    assert response.status_code == 200 and response.json()["state"] == {"note": "hello"}
    assert response.json() == without(server.cli.json("show", "sig-1"), "logs")
    error_of(server.api.post("/api/runs/sig-1/signal/shout", json={}), 404, "no signal 'shout'")
    error_of(server.api.post("/api/runs/sig-1/signal/note", json={"text": 3}), 422)
    error_of(server.api.post("/api/runs/sig-1/signal/note", json={"colour": "x"}), 422)
    error_of(server.api.post("/api/runs/sig-1/signal/note", json=[1]), 400)


def test_cancel(server: Server) -> None:
    server.cli.start("flows/choices.py", "can-1")
    response = server.api.post("/api/runs/can-1/cancel", json={"reason": "no longer needed"})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json() == without(server.cli.json("show", "can-1"), "logs")
    assert server.cli.json("show", "can-1")["logs"][-1]["values"] == {"reason": "no longer needed"}
    error_of(server.api.post("/api/runs/can-1/cancel"), 409, "cancelled")
    server.cli.start("flows/choices.py", "can-2")
    assert server.api.post("/api/runs/can-2/cancel").json()["status"] == "cancelled"  # no body at all


def test_retry(server: Server) -> None:
    server.cli.start("flows/fail.py", "retry-1", code=1, env={"TINYWF_TEST_FAIL": "1"})
    response = server.api.post("/api/runs/retry-1/retry")  # the server's environment lets the charge pass
    assert response.status_code == 200 and response.json()["status"] == "waiting"
    assert response.json() == without(server.cli.json("show", "retry-1"), "logs")
    error_of(server.api.post("/api/runs/retry-1/retry"), 409, "waiting")


def test_a_locked_run_is_409(server: Server) -> None:
    from filelock import FileLock

    server.cli.start("flows/choices.py", "locked-1")
    with FileLock(server.cli.state_dir / "locked-1.lock"):
        error_of(server.api.post("/api/runs/locked-1/cancel"), 409, "locked")


def test_an_unreadable_record_is_503(server: Server) -> None:
    server.cli.start("flows/simple.py", "broken-1")
    (server.cli.state_dir / "broken-1.json").write_text("{not json", encoding="utf-8")
    error_of(server.api.get("/api/runs/broken-1"), 503, "broken-1.json")
    error_of(server.api.post("/api/runs/broken-1/cancel"), 503)
    listed = server.api.get("/api/runs", params={"status": "unreadable"}).json()["runs"]
    assert [r["run_id"] for r in listed] == ["broken-1"]


@pytest.mark.stores("file", "postgres")
def test_the_list_of_runs_is_the_cli_s_on_either_store_unreadable_heads_too(cli: Cli) -> None:
    cli.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    for run_id in ("s1", "s2", "bad-1"):
        cli.start("flows/simple.py", run_id)
    damage_head(cli, "bad-1")
    with Server.start(cli) as server:
        for status in (None, "waiting", "finished", "unreadable"):
            params = {} if status is None else {"status": status}
            argv = ["list"] if status is None else ["list", "--status", status]
            assert server.api.get("/api/runs", params=params).json() == cli.json(*argv), status
        page = server.api.get("/")
        assert page.status_code == 200 and "s2" in page.text and "unreadable: " in page.text
    assert [r["run_id"] for r in cli.json("list", "--status", "unreadable")["runs"]] == ["bad-1"]


def damage_head(cli: Cli, run_id: str) -> None:
    """Give a run a head that fails the model (its status kept, where the store keeps one apart)."""
    import json

    if cli.store is None:
        path = cli.state_dir / f"{run_id}.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        record["run"]["step"] = 7
        path.write_text(json.dumps(record), encoding="utf-8")
        return
    import psycopg

    from tinywf_cli.stores.postgres.connection import parse_target

    target = parse_target(cli.store)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute(f"""UPDATE "{target.schema}".runs SET head = json_build_object('run_id', run_id)
                         WHERE run_id = %s""", (run_id,))


def test_unknown_routes_and_methods(server: Server) -> None:
    error_of(server.api.get("/api/nothing"), 404, "no such route")
    assert server.api.delete("/api/runs").status_code == 405
    error_of(server.api.get("/api/runs/bad%20id"), 400, "invalid run id")


def test_cookie_login_and_csrf(server: Server) -> None:
    login = server.anonymous.get("/", params={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN.lower() in cookie
    server.anonymous.cookies.clear()
    error_of(server.anonymous.get("/api/runs", params={"token": TOKEN}), 401)  # the API takes no ?token=
    jar = {"tinywf_token": TOKEN}
    with httpx.Client(base_url=server.url, cookies=jar) as browser:
        page = browser.get("/")
        assert page.status_code == 200 and "<h1>Runs</h1>" in page.text
        assert browser.get("/api/runs").status_code == 200
        server.cli.start("flows/choices.py", "csrf-1")
        before = snapshot(server.cli.state_dir)
        error_of(browser.post("/api/runs/csrf-1/cancel"), 403, "CSRF")
        error_of(browser.post("/api/runs/csrf-1/cancel", headers={"x-csrf-token": "wrong"}), 403, "CSRF")
        assert browser.post("/runs/csrf-1/cancel", data={"csrf": "wrong"}).status_code == 403
        assert browser.post("/runs/csrf-1/cancel").status_code == 403
        cross = browser.post("/runs/csrf-1/cancel", data={"csrf": csrf_of(page.text)},
                             headers={"origin": "http://evil.example"})
        assert cross.status_code == 403
        assert snapshot(server.cli.state_dir) == before
        done = browser.post("/runs/csrf-1/cancel", data={"csrf": csrf_of(page.text) or csrf_of(
            browser.get("/runs/csrf-1").text)}, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == "/runs/csrf-1"
        assert server.cli.json("show", "csrf-1")["status"] == "cancelled"



@pytest.mark.parametrize(("path", "back"), [
    ("/runs/token-1?token=T", "/runs/token-1"),
    ("/runs/token-1?page=2&token=T", "/runs/token-1?page=2"),
    ("/?token=T&status=waiting", "/?status=waiting"),
    ("/runs/token%2F1?token=T", "/runs/token%2F1"),  # the path as sent, not decoded
    ("//evil.example/x?token=T", "/evil.example/x"),  # never another host
    ("/nothing?token=T", "/nothing"),
])
def test_every_page_takes_the_token_and_redirects_without_it(server: Server, path: str, back: str) -> None:
    server.cli("run", "flows/approve.py", "--run-id", "token-1")
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        login = browser.get(server.url + path.replace("=T", f"={TOKEN}"), follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == back
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert browser.get("/runs/token-1").status_code == 200  # the cookie now serves every page
        again = browser.get(server.url + path.replace("=T", f"={TOKEN}"), follow_redirects=False)
        assert again.status_code == 303 and again.headers["location"] == back  # signed in: dropped all the same
    # opened from another site's page, where a browser would not send the new cookie on a redirect:
    # a page of ours goes on instead
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        hop = browser.get(server.url + path.replace("=T", f"={TOKEN}"), headers={"sec-fetch-site": "cross-site"})
        assert hop.status_code == 200 and "set-cookie" in hop.headers and TOKEN not in hop.text
        assert f'<meta http-equiv="refresh" content="0; url={back}">' in hop.text.replace("&amp;", "&")


def test_a_wrong_token_on_a_page_or_any_token_on_the_api_is_401(server: Server) -> None:
    server.cli("run", "flows/approve.py", "--run-id", "token-2")
    for path in ("/runs/token-2?token=wrong", "/runs/token-2?token=", "/?token=wrong"):
        page = server.anonymous.get(path, headers={"accept": "text/html"}, follow_redirects=False)
        assert page.status_code == 401 and "set-cookie" not in page.headers, path
    for path in ("/api/runs", "/api/runs/token-2", "/openapi.json"):  # scripts send the header
        error_of(server.anonymous.get(path, params={"token": TOKEN}), 401)
    assert server.anonymous.post(f"/runs/token-2/cancel?token={TOKEN}").status_code == 401

def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry (empty when the page has no form)."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    return found.group(1) if found else ""


def test_security_headers(server: Server) -> None:
    response = server.api.get("/api/runs")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"


def test_default_bind_is_loopback_and_the_token_is_never_logged(web_cli: Cli) -> None:
    with Server.start(web_cli, token=None) as running:  # a generated token, printed once
        token = running.started["token"]
        assert running.url.startswith("http://127.0.0.1:") and len(token) >= 40
        port = int(running.url.rsplit(":", 1)[1])
        assert listening_on(port) == {"127.0.0.1"}
        assert running.anonymous.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert running.anonymous.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
        assert running.anonymous.get("/", params={"token": token}, follow_redirects=False).status_code == 303
        assert running.stop() == 0
    log = running.log.read_text(encoding="utf-8")
    assert "GET /api/runs 200" in log and "GET / 303" in log
    assert token not in log and "token=" not in log


def listening_on(port: int) -> set[str]:
    """The local IPv4 addresses a TCP socket listens on at ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_serve_errors(web_cli: Cli) -> None:
    assert_error(web_cli("serve", "--flows", "no-such-dir", "--port", "0"), 2, "not a directory")
    with Server.start(web_cli) as running:
        port = running.url.rsplit(":", 1)[1]
        assert_error(web_cli("serve", "--port", port), 4, "cannot listen")


def test_serve_without_the_web_extra_says_how_to_install_it(web_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tinywf_cli.web.server", None)  # importing it raises ImportError
    result = InProcessCli(web_cli.workspace, web_cli.state_dir)("serve", "--port", "0")
    assert_error(result, 2, "pip install 'tinywf[web]'")


def test_other_commands_do_not_import_the_web_server(web_cli: Cli) -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom tinywf_cli.cli import main\ntry:\n    main(['list', '--json'])\nexcept SystemExit:\n"
            "    pass\nassert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules, 'imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=web_cli.workspace, capture_output=True, text=True,
                            env={**os.environ, "TINYWF_STATE_DIR": str(web_cli.state_dir)}, check=False)
    assert result.returncode == 0, result.stderr
