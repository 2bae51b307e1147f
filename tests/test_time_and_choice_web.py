"""Contract section 11 over HTTP, through one real ``tinywf serve``: a signal's ``result`` in the
API's document, and the branches of a ``first`` on the run's page, each event answerable by its
own signed link until another branch wins."""

from __future__ import annotations

from clihelpers import Cli
from test_first import RACE
from test_signal_results import SEATS
from webhelpers import Server, server_fixture, web_cli_fixture  # noqa: F401  (fixtures)


def add_flows(cli: Cli) -> None:
    for name, source in (("seats.py", SEATS), ("race.py", RACE)):
        (cli.workspace / "flows" / name).write_text(source.lstrip(), encoding="utf-8")


def test_a_signal_result_over_http(server: Server) -> None:
    add_flows(server.cli)
    server.cli.start("flows/seats.py", "show-h")
    response = server.api.post("/api/runs/show-h/signal/reserve", json={"seats": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == {"seats": [1, 4]} and body["state"] == {"taken": 4}
    assert "result" not in server.api.post("/api/runs/show-h/signal/note", json={"text": "x"}).json()
    refused = server.api.post("/api/runs/show-h/signal/reserve", json={"seats": 40})
    assert refused.status_code == 422 and "only 16 seats left" in refused.json()["error"]["message"]
    schema = server.api.get("/openapi.json").json()["components"]["schemas"]
    assert "result" in schema["SignalDocument"]["properties"]


def test_the_page_shows_each_branch_and_a_link_answers_one_event_of_a_first(server: Server) -> None:
    add_flows(server.cli)
    server.cli.start("flows/race.py", "web-r")
    page = server.api.get("/runs/web-r")
    assert page.status_code == 200
    assert "Waiting for whichever comes first" in page.text
    for resume in ("approval@1", "cancel@1", "deadline@1"):
        assert f'data-resume="{resume}"' in page.text
    approve = server.link("web-r", "approval")
    cancel = server.link("web-r", "cancel")
    form = server.anonymous.get(server.path_of(cancel))
    assert form.status_code == 200 and "Why cancel?" in form.text
    done = server.anonymous.post(server.path_of(cancel), data={"value": "too dear"})
    assert done.status_code == 200 and "your answer was recorded" in done.text
    doc = server.cli.json("show", "web-r")
    assert doc["status"] == "finished" and doc["state"] == {"outcome": "cancelled", "value": "too dear"}
    gone = server.anonymous.get(server.path_of(approve))  # the withdrawn branch's link no longer answers
    assert gone.status_code in (409, 410) and "<form" not in gone.text  # 409: the run has ended
