"""OpenTelemetry: spans and metrics of advancing runs (``pip install "tinywf[otel]"``).

Only the code that advances runs asks for ``current()``; it imports ``opentelemetry`` only
when the process may have it configured — an ``OTEL_*`` variable is set, or the embedding
program imported it already — and answers None (nothing is recorded, nothing costs) when it
is not installed or no SDK is configured. With ``OTEL_TRACES_EXPORTER`` or
``OTEL_METRICS_EXPORTER`` (``console``, or ``otlp`` with ``opentelemetry-exporter-otlp-proto-http``)
and no provider set by the program, tinywf sets one up itself, exports to stderr for
``console`` (stdout is the ``--json`` document's) and flushes at exit.

Spans: ``tinywf.advance`` per advance of a run (``tinywf.run_id``, ``tinywf.workflow``,
``tinywf.step``, ``tinywf.status``), with a ``tinywf.step`` span per step visit and a
``tinywf.action`` span per action attempt (``tinywf.action.key``, ``tinywf.action.attempt``,
``tinywf.action.outcome``, ``error.type``; error status when it failed). Every span of a run
has the trace id kept in its record (``RunHead.trace``), whatever process and day it comes
from; a child run's advances link to its parent's trace.

Metrics: ``tinywf.runs.started``, ``tinywf.runs.ended`` (by ``tinywf.status``),
``tinywf.action.attempts``, ``tinywf.action.failures``, ``tinywf.action.retries`` (counted
where the audit log records them, so they agree with it), ``tinywf.action.duration`` and
``tinywf.advance.duration`` (seconds).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from tinywf_cli.model import RunHead

_UNSET: Any = object()
_current: Any = _UNSET
_setup_lock = threading.Lock()


def trace_id_of(run_id: str, created_at: datetime) -> str:
    """The trace id of the run created as ``run_id`` at ``created_at`` (32 hex digits, never all
    zeros): drawn from both, so the same run has the same one whoever computes it, and a run
    made again under the same id later another."""
    import hashlib

    digest = hashlib.sha256(f"tinywf-trace\0{run_id}\0{created_at.isoformat()}".encode()).hexdigest()[:32]
    return digest if digest.strip("0") else "1".rjust(32, "0")


def current() -> Telemetry | None:
    """The process's telemetry, or None when OpenTelemetry is not installed or not configured."""
    global _current
    if _current is _UNSET:
        with _setup_lock:
            if _current is _UNSET:
                _current = _set_up()
    return _current  # type: ignore[no-any-return]


def reset() -> None:
    """Look again at the next ``current()`` (tests that set a provider call this)."""
    global _current
    _current = _UNSET


def _wanted() -> bool:
    """Whether OpenTelemetry may be configured here, judged without importing it."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return "opentelemetry" in sys.modules or any(name.startswith("OTEL_") for name in os.environ)


def _set_up() -> Telemetry | None:
    if not _wanted():
        return None
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return None
    _configure_from_environment(trace, metrics)
    tracing = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    measuring = type(metrics.get_meter_provider()).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")
    if not (tracing or measuring):
        return None
    from tinywf_cli import __version__

    return Telemetry(trace.get_tracer("tinywf", __version__), metrics.get_meter("tinywf", __version__))


def _exporter_names(variable: str) -> list[str]:
    return [n.strip().lower() for n in os.environ.get(variable, "").split(",") if n.strip()]


def _configure_from_environment(trace: Any, metrics: Any) -> None:
    """Set up the SDK's providers from ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` when
    the program set none (and the SDK is installed); they are shut down (flushed) at exit."""
    import atexit

    traces = [n for n in _exporter_names("OTEL_TRACES_EXPORTER") if n != "none"]
    measures = [n for n in _exporter_names("OTEL_METRICS_EXPORTER") if n != "none"]
    if not traces and not measures:
        return
    try:
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        return
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "tinywf")})
    if traces and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        tracer_provider = TracerProvider(resource=resource)
        for name in traces:
            if name == "console":
                tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(tracer_provider)
        atexit.register(tracer_provider.shutdown)
    if measures and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

        readers = []
        for name in measures:
            if name == "console":
                readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr)))
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

                readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
        atexit.register(meter_provider.shutdown)


class Telemetry:
    """The spans and instruments tinywf records through the OpenTelemetry API."""

    def __init__(self, tracer: Any, meter: Any) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = tracer
        self.started = meter.create_counter("tinywf.runs.started", description="Runs started")
        self.ended = meter.create_counter("tinywf.runs.ended", description="Runs that finished, failed, "
                                                                           "were blocked or cancelled")
        self.attempts = meter.create_counter("tinywf.action.attempts", description="Action attempts")
        self.failures = meter.create_counter("tinywf.action.failures", description="Action attempts that failed")
        self.retries = meter.create_counter("tinywf.action.retries", description="Failed attempts to be retried")
        self.action_seconds = meter.create_histogram("tinywf.action.duration", unit="s",
                                                     description="How long action attempts took")
        self.advance_seconds = meter.create_histogram("tinywf.advance.duration", unit="s",
                                                      description="How long advances of runs took")

    def _context_of(self, trace_id: str) -> Any:
        """A context whose (remote, never exported) parent span carries ``trace_id``."""
        trace = self._trace
        number = int(trace_id, 16)
        parent = trace.SpanContext(trace_id=number, span_id=(number & ((1 << 64) - 1)) or 1, is_remote=True,
                                   trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
        return trace.set_span_in_context(trace.NonRecordingSpan(parent))

    @contextmanager
    def advance(self, head: RunHead, parent_trace: str | None) -> Iterator[Any]:
        """The ``tinywf.advance`` span of one advance of ``head``'s run (current while it lasts)."""
        import time

        from tinywf_cli.model import ENDED

        trace = self._trace
        if head.trace is None:
            head.trace = trace_id_of(head.run_id, head.created_at)  # recorded before tinywf kept one
        links = [trace.Link(trace.get_current_span(self._context_of(parent_trace)).get_span_context())] \
            if parent_trace else []
        before = head.status
        started = time.perf_counter()
        attributes = {"tinywf.run_id": head.run_id, "tinywf.workflow": head.workflow, "tinywf.step": head.step}
        # a step stops by raising (a wait, the end): no exception of the run's is an error of the span's
        with self.tracer.start_as_current_span("tinywf.advance", context=self._context_of(head.trace),
                                               links=links, attributes=attributes, record_exception=False,
                                               set_status_on_exception=False) as span:
            try:
                yield span
            finally:
                span.set_attribute("tinywf.step", head.step)
                span.set_attribute("tinywf.status", head.status)
                if head.status in ("failed", "blocked") and head.error is not None:
                    span.set_attribute("error.type", head.error.type)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, head.error.message))
                self.advance_seconds.record(time.perf_counter() - started, {"tinywf.workflow": head.workflow})
                if head.status != before and (head.status in ENDED or head.status in ("failed", "blocked")):
                    self.run_ended(head)

    def run_ended(self, head: RunHead) -> None:
        """Count a run that finished, failed, was blocked or cancelled."""
        self.ended.add(1, {"tinywf.workflow": head.workflow, "tinywf.status": head.status})

    def visit(self, step: str, visit: int) -> AbstractContextManager[Any]:
        """The ``tinywf.step`` span of one step visit."""
        return self.tracer.start_as_current_span(  # type: ignore[no-any-return]
            "tinywf.step", attributes={"tinywf.step": step, "tinywf.visit": visit}, record_exception=False,
            set_status_on_exception=False)

    @contextmanager
    def attempt(self, key: str, number: int) -> Iterator[Any]:
        """The ``tinywf.action`` span of one attempt; the caller sets its outcome (``attempt_ended``)."""
        import time

        started = time.perf_counter()
        with self.tracer.start_as_current_span(
                "tinywf.action", attributes={"tinywf.action.key": key, "tinywf.action.attempt": number},
                record_exception=False, set_status_on_exception=False) as span:
            try:
                yield span
            finally:
                self.action_seconds.record(time.perf_counter() - started, {"tinywf.action.key": key})

    def attempt_ended(self, span: Any, error: BaseException | None) -> None:
        """Mark an attempt's span: ``ok``, or ``error`` with the error's type and an error status."""
        if error is None:
            span.set_attribute("tinywf.action.outcome", "ok")
            return
        span.set_attribute("tinywf.action.outcome", "error")
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error) or type(error).__name__))

    def counted(self, kind: str, key: str) -> None:
        """An attempt the audit log records: ``action`` (done), ``retry`` or ``action_failed``."""
        labels = {"tinywf.action.key": key}
        self.attempts.add(1, labels)
        if kind != "action":
            self.failures.add(1, labels)
        if kind == "retry":
            self.retries.add(1, labels)

