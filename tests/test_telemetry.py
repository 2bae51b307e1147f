"""OpenTelemetry (contract section 12): spans per advance, step visit and action attempt, one
trace id per run across processes and days, children linked, metrics that agree with the
audit logs — recorded by the SDK's in-memory exporters in processes of their own (a provider
is set once per process) — and nothing imported without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from clihelpers import TINYWF, clean_env

pytest.importorskip("opentelemetry.sdk", reason="the [otel] extra is not installed")

FLOW = '''
from pathlib import Path

from tinywf_cli import Retry, Workflow, step

HERE = Path(__file__).parent


def flaky(n):
    marker = HERE / f"tried-{n}"
    if not marker.exists():
        marker.touch()
        raise ConnectionError("try again")
    return n * 2


class Nightly(Workflow):
    @step
    def fetch(self):
        self.state["x"] = yield self.action("flaky", flaky, 21, retry=Retry(attempts=3, delay=1))
        yield self.sleep("night", 86400)
        return self.store


    @step
    def store(self):
        yield self.child("part", Part)
        return None


class Part(Workflow):
    @step
    def only(self):
        return None
'''

#: Runs one Runtime call with the SDK's in-memory exporters, then writes what they hold as JSON.
PROBE = '''
import json, sys
from datetime import datetime, timedelta, UTC

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

from tinywf_cli import Runtime
from tinywf_cli.testing import ManualClock

state, flow, command, now = sys.argv[1:5]
rt = Runtime(state, clock=ManualClock(datetime.fromisoformat(now)))
if command == "start":
    rt.start(flow, run_id="n1")
else:
    rt.tick()
out = {"spans": [], "metrics": {}}
for span in spans.get_finished_spans():
    out["spans"].append({"name": span.name, "trace_id": format(span.context.trace_id, "032x"),
                         "attributes": dict(span.attributes), "status": span.status.status_code.name,
                         "links": [format(link.context.trace_id, "032x") for link in span.links]})
for resource in reader.get_metrics_data().resource_metrics:
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            for point in metric.data.data_points:
                key = metric.name + json.dumps(dict(point.attributes), sort_keys=True)
                out["metrics"][key] = getattr(point, "value", getattr(point, "count", None))
print(json.dumps(out))
'''


def _probe(tmp_path: Path, command: str, now: str) -> dict[str, Any]:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    flow = f"{tmp_path / 'nightly.py'}:Nightly"
    result = subprocess.run([sys.executable, str(probe), str(tmp_path / "state"), flow, command, now],
                            capture_output=True, text=True, timeout=120, check=False, env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _audit(tmp_path: Path, run_id: str) -> list[dict[str, Any]]:
    from tinywf_cli import Runtime

    return [entry.model_dump() for entry in Runtime(tmp_path / "state").get(run_id).logs]


def _metric(figures: dict[str, Any], name: str) -> float:
    return sum(value for key, value in figures.items() if key.startswith(name + "{"))


def test_one_trace_for_a_run_across_two_processes_and_a_day(tmp_path: Path) -> None:
    (tmp_path / "nightly.py").write_text(FLOW, encoding="utf-8")
    first = _probe(tmp_path, "start", "2026-01-01T00:00:00+00:00")  # the first attempt fails: retry in 1 s
    second = _probe(tmp_path, "tick", "2026-01-01T00:00:02+00:00")  # the retry, then a night's sleep
    third = _probe(tmp_path, "tick", "2026-01-02T00:00:03+00:00")  # the next day: store, its child
    spans = first["spans"] + second["spans"] + third["spans"]
    own = [s for s in spans if s["name"] != "tinywf.advance" or s["attributes"]["tinywf.run_id"] == "n1"]
    child_advances = [s for s in spans if s["name"] == "tinywf.advance" and s["attributes"]["tinywf.run_id"] != "n1"]
    run_traces = {s["trace_id"] for s in own if s not in child_advances and
                  (s["name"] != "tinywf.step" or s["attributes"]["tinywf.step"] != "only")}
    assert len(run_traces) == 1, run_traces
    [trace] = run_traces
    assert child_advances and all(s["trace_id"] != trace and s["links"] == [trace] for s in child_advances)
    advances = [s for s in spans if s["name"] == "tinywf.advance" and s["attributes"]["tinywf.run_id"] == "n1"]
    assert [a["attributes"]["tinywf.status"] for a in advances][-1] == "finished"
    attempts = [s for s in spans if s["name"] == "tinywf.action"]
    assert [(a["attributes"]["tinywf.action.key"], a["attributes"]["tinywf.action.attempt"],
             a["attributes"]["tinywf.action.outcome"], a["status"]) for a in attempts] == [
        ("flaky", 1, "error", "ERROR"), ("flaky", 2, "ok", "UNSET")]
    assert attempts[0]["attributes"]["error.type"] == "ConnectionError"
    assert {s["attributes"]["tinywf.step"] for s in spans if s["name"] == "tinywf.step"} == {"fetch", "store", "only"}


def test_metrics_counters_equal_the_counts_in_the_audit_logs(tmp_path: Path) -> None:
    (tmp_path / "nightly.py").write_text(FLOW, encoding="utf-8")
    probes = [_probe(tmp_path, "start", "2026-01-01T00:00:00+00:00"),
              _probe(tmp_path, "tick", "2026-01-01T00:00:02+00:00"),
              _probe(tmp_path, "tick", "2026-01-02T00:00:03+00:00")]
    logs = [e["type"] for run_id in ("n1", "n1.part") for e in _audit(tmp_path, run_id)]
    counted = Counter(logs)

    def total(name: str) -> float:
        return sum(_metric(p["metrics"], name) for p in probes)

    assert total("tinywf.action.attempts") == counted["action"] + counted["retry"] + counted["action_failed"] == 2
    assert total("tinywf.action.failures") == counted["retry"] + counted["action_failed"] == 1
    assert total("tinywf.action.retries") == counted["retry"] == 1
    assert total("tinywf.runs.started") == counted["start"] == 2
    assert total("tinywf.runs.ended") == counted["finish"] == 2
    assert total("tinywf.action.duration") == 2 and total("tinywf.advance.duration") >= 3  # histogram counts


def test_console_exporter_from_the_environment_keeps_stdout_for_the_document(tmp_path: Path) -> None:
    (tmp_path / "nightly.py").write_text(FLOW, encoding="utf-8")
    env = clean_env(OTEL_TRACES_EXPORTER="console", TINYWF_NOW="2026-01-01T00:00:00Z")
    result = subprocess.run([TINYWF, "run", "nightly.py:Nightly", "--run-id", "n1", "--json", "--state-dir",
                             str(tmp_path / "state")], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "waiting"
    assert '"name": "tinywf.advance"' in result.stderr and '"name": "tinywf.action"' in result.stderr


@pytest.mark.parametrize("command", [["show", "n1"], ["run", "nightly.py:Part", "--run-id", "p2"], ["list"]])
def test_without_configuration_no_opentelemetry_module_is_imported(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "nightly.py").write_text(FLOW, encoding="utf-8")
    env = clean_env(TINYWF_NOW="2026-01-01T00:00:00Z")
    state = ["--state-dir", str(tmp_path / "state")]
    setup = subprocess.run([TINYWF, "run", "nightly.py:Part", "--run-id", "n1", *state], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, check=False)
    assert setup.returncode == 0, setup.stderr
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tinywf_cli", *command, *state], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    imported = [line for line in result.stderr.splitlines() if "import time:" in line]
    assert imported and not [line for line in imported if "opentelemetry" in line]
    assert "OTEL_TRACES_EXPORTER" not in os.environ  # the test's own environment names none
