"""Signals that answer (contract section 11): a ``@signal`` method's return value is the
document's ``result`` (CLI, ``--json``, ``Runtime``, HTTP); a ``ValueError`` refuses the signal
with exit 2 and leaves the record's bytes as they were. Over HTTP: ``test_time_and_choice_web.py``."""

from __future__ import annotations

import pytest
from clihelpers import RUN_KEYS, Cli, assert_error, assert_run_document

from tinywf_cli import InvalidValue, Workflow, signal, step
from tinywf_cli.testing import MemoryRuntime

SEATS = '''
"""A show with 20 seats: reserve some by signal, and be told which."""

from tinywf_cli import Workflow, signal, step


class Show(Workflow):
    """Sell seats until the curtain."""

    @step
    def sell(self):
        yield self.wait_event("curtain")
        return None

    @signal
    def reserve(self, seats: int):
        taken = self.state.get("taken", 0)
        if seats < 1:
            raise ValueError("reserve at least one seat")
        if taken + seats > 20:
            raise ValueError(f"only {20 - taken} seats left")
        self.state["taken"] = taken + seats
        return {"seats": [taken + 1, taken + seats]}

    @signal
    def note(self, text: str):
        self.state["note"] = text
'''


def seats_workspace(cli: Cli) -> None:
    (cli.workspace / "flows" / "seats.py").write_text(SEATS.lstrip(), encoding="utf-8")


def test_a_signal_result_is_in_the_json_document_and_for_people(cli: Cli) -> None:
    seats_workspace(cli)
    cli.start("flows/seats.py", "show-1")
    doc = cli.json("signal", "show-1", "reserve", '{"seats": 3}')
    assert doc["result"] == {"seats": [1, 3]}
    assert_run_document({k: v for k, v in doc.items() if k != "result"})
    assert doc["state"] == {"taken": 3}
    people = cli("signal", "show-1", "reserve", '{"seats": 2}')
    assert people.returncode == 0, people.stderr
    assert 'result: {"seats": [4, 5]}' in people.stdout
    # a method that returns nothing: no "result" key at all
    assert set(cli.json("signal", "show-1", "note", '{"text": "hi"}')) == RUN_KEYS
    logged = [e["values"] for e in cli.json("show", "show-1")["logs"] if e["type"] == "signal"]
    assert logged[0] == {"name": "reserve", "args": {"seats": 3}, "result": {"seats": [1, 3]}}
    assert "result" not in logged[2]


def test_a_value_error_refuses_the_signal_exit_2_and_the_record_keeps_its_bytes(cli: Cli) -> None:
    seats_workspace(cli)
    cli.start("flows/seats.py", "show-2")
    cli.json("signal", "show-2", "reserve", '{"seats": 19}')
    before = cli.snapshot()
    assert_error(cli("signal", "show-2", "reserve", '{"seats": 2}'), 2, "signal 'reserve' refused: only 1 seats left")
    assert_error(cli("signal", "show-2", "reserve", '{"seats": 0}'), 2, "reserve at least one seat")
    assert_error(cli("signal", "show-2", "reserve", '{"seats": "many"}'), 2, "signal 'reserve'")
    assert cli.snapshot() == before


class Counter(Workflow):
    @step
    def wait(self):  # type: ignore[no-untyped-def]
        yield self.wait_event("stop")

    @signal
    def bump(self, by: int = 1):  # type: ignore[no-untyped-def]
        self.state["n"] = self.state.get("n", 0) + by
        return self.state["n"]

    @signal
    def bad(self):  # type: ignore[no-untyped-def]
        self.state["n"] = -1
        return object()


def test_runtime_signal_returns_the_result_and_replay_keeps_the_state(rt: MemoryRuntime) -> None:
    run = rt.start(Counter)
    assert rt.signal(run.run_id, "bump").result == 1
    assert rt.signal(run.run_id, "bump", by=4).result == 5
    assert rt.signal(run.run_id, "bump", by=0).model_dump(mode="json")["result"] == 5
    before = rt.get(run.run_id).model_dump_json()
    with pytest.raises(InvalidValue, match="returned a value that is not JSON"):
        rt.signal(run.run_id, "bad")
    assert rt.get(run.run_id).model_dump_json() == before
    assert rt.resolve(run.run_id, "stop", None).state == {"n": 5}

