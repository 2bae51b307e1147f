"""Fuzz the API from its own OpenAPI schema (schemathesis) against a real ``tinywf serve``:
valid and invalid bodies, paths and queries; no answer is a 500, every answer fits the schema."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from test_web_api import ROUTES
from webhelpers import TOKEN, Server, server_fixture, web_cli_fixture  # noqa: F401  (fixtures)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Cases per operation and mode: 8 operations x 2 modes x this, in a few seconds. The cases are
#: the same on every run (derandomized: CI must not fail by chance); set $TINYWF_FUZZ_EXAMPLES
#: to explore more, and differently each time.
WIDE = os.environ.get("TINYWF_FUZZ_EXAMPLES")
EXAMPLES = int(WIDE or 40)
OPERATIONS = [("GET", "/api/runs"), ("POST", "/api/runs"), ("GET", "/api/runs/{run_id}"),
              ("POST", "/api/runs/{run_id}/resolve/{resume}"), ("POST", "/api/runs/{run_id}/send/{key}"),
              ("POST", "/api/runs/{run_id}/signal/{name}"), ("POST", "/api/runs/{run_id}/cancel"),
              ("POST", "/api/runs/{run_id}/retry")]
assert len(OPERATIONS) == len([r for r in ROUTES if r[1].startswith("/api/")])


@pytest.fixture(scope="module")
def api_schema(server: Server) -> Any:
    """The schema the server serves (fetched with the token), and runs for the fuzzer to hit."""
    server.cli.start("flows/choices.py", "r1")
    server.cli.start("flows/approve.py", "r2")
    server.cli.start("flows/simple.py", "r3")
    server.cli.start("flows/fail.py", "r4", code=1, env={"TINYWF_TEST_FAIL": "1"})
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=AUTH)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_api_never_answers_500_and_keeps_to_its_schema(api_schema: Any, method: str, path: str,
                                                           mode: GenerationMode) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not WIDE,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        response = case.call(headers=AUTH)
        assert response.status_code < 500 or response.status_code == 503, (case.path, response.text)
        operation.validate_response(response)

    check()
