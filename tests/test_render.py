"""The rendering functions, into ``Console(width=100, file=io.StringIO())``: pure functions
from run documents to rich renderables."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from clihelpers import FLOWS
from rich.console import Console, Group, RenderableType

from tinywf_cli.cli.render import (
    ago,
    make_console,
    pending_lines,
    placeholder_for,
    run_outcome,
    runs_table,
    show_view,
    span,
    tick_lines,
)
from tinywf_cli.model import (
    ErrorInfo,
    PendingResume,
    RunDocument,
    RunList,
    RunSummary,
    TickAdvanced,
    TickReport,
    TickSkipped,
)
from tinywf_cli.testing import MemoryRuntime

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def render(renderable: RenderableType, width: int = 100, **options: bool) -> str:
    """What a 100-column console without colours shows (``options`` as the CLI prints with)."""
    console = Console(width=width, file=io.StringIO(), color_system=None, highlight=False)
    console.print(renderable, **options)  # type: ignore[arg-type]
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


@pytest.fixture
def rt() -> MemoryRuntime:
    return MemoryRuntime(T0)


def test_show_view_has_header_state_pending_visits_and_timeline(rt: MemoryRuntime) -> None:
    run = rt.start(str(FLOWS / "guess_game.py"), input={"number": 42}, run_id="g1")
    rt.clock.advance(90)
    rt.resolve("g1", "ask_0", 50)
    rt.clock.advance(timedelta(hours=2))
    out = render(show_view(rt.get("g1"), rt.clock.now()))
    lines = out.splitlines()
    assert lines[0].startswith("╭─ g1 ")  # the header panel, titled with the run id
    header = "\n".join(lines[: lines.index(next(line for line in lines if line.startswith("╰")))])
    for text in ("GuessGame", "Guess a number between 0 and 100; each guess", "waiting", "at step step_play",
                 "created   2026-01-01T00:00:00Z (2h 1m ago)", "updated   2026-01-01T00:01:30Z (2h ago)"):
        assert text in header, text
    sections = [line for line in lines if line in ("State", "Pending", "Step visits", "Timeline")]
    assert sections == ["State", "Pending", "Step visits", "Timeline"]
    assert '"answers": [' in out and "50" in out
    assert "waits for event ask_1 (ask_1@2): 50 is greater than the number" in out
    assert "answer: tinywf resolve g1 ask_1@2 <integer>" in out
    assert "wait_begin" in out and "transition" in out and "2h 1m ago" in out
    assert run.run_id == "g1"


def test_show_view_shows_the_error_of_a_failed_run(rt: MemoryRuntime) -> None:
    rt.start(str(FLOWS / "guess_game.py"), input={"number": 42}, run_id="g1")
    doc = rt.get("g1").model_copy(update={"status": "failed", "error": ErrorInfo(type="KeyError", message="'x'"),
                                          "pending": []})
    out = render(show_view(doc, T0))
    assert "error" in out and "KeyError: 'x'" in out and "Pending" not in out


def test_a_resolve_line_per_pending_event() -> None:
    doc = RunDocument(
        run_id="order-17", workflow="flows/checkout.py:Checkout", version=1, parent=None, status="waiting",
        step="approve", state={},
        pending=[PendingResume(resume_id="approval@2", kind="event", key="approval",
                               request={"question": "Ship it?"}, due_at=T0 + timedelta(days=2)),
                 PendingResume(resume_id="note@2", kind="event", key="note", request={})],
        error=None, created_at=T0, updated_at=T0, expects={"approval@2": "boolean (true or false)"})
    out = render(Group(*pending_lines(doc, T0, " --state-dir /srv/state")))
    commands = [line.strip() for line in out.splitlines() if "tinywf resolve" in line]
    assert commands == ["answer: tinywf resolve --state-dir /srv/state order-17 approval@2 <boolean>",
                        "answer: tinywf resolve --state-dir /srv/state order-17 note@2 <value>"]
    assert "Ship it?" in out and "times out in 2d" in out


def test_a_resolve_line_is_never_wrapped(rt: MemoryRuntime) -> None:
    run_id = "a-rather-long-run-id-for-a-narrow-terminal"
    rt.start(str(FLOWS / "guess_game.py"), run_id=run_id)
    out = render(show_view(rt.get(run_id), T0, " --state-dir /x/y/z"), 50, crop=False)
    [line] = [line for line in out.splitlines() if "tinywf resolve" in line]
    assert line.endswith("a-rather-long-run-id-for-a-narrow-terminal ask_0@2 <integer>")


def test_run_outcome_for_each_status(rt: MemoryRuntime) -> None:
    finished = rt.start(str(FLOWS / "simple.py"), run_id="s1")
    out = render(run_outcome(finished, T0), soft_wrap=True)
    assert out.startswith("run s1 (") and "finished at step step_end" in out and '"end_hit": true' in out
    timer = rt.start(str(FLOWS / "user_onboarding.py"), input={"promotion_after": 3600}, run_id="u1")
    out = render(run_outcome(timer, T0), soft_wrap=True)
    assert "waits for timer wait_before_promotion_email" in out and "due 2026-01-01T01:00:00Z (in 1h)" in out
    assert "`tinywf tick`" in out
    failed = finished.model_copy(update={"status": "failed", "error": ErrorInfo(type="OSError", message="disk")})
    out = render(run_outcome(failed, T0, " --state-dir st"), soft_wrap=True)
    assert "error: OSError: disk" in out and "tinywf retry --state-dir st s1" in out


def test_runs_table_lists_rows_and_says_when_there_are_none() -> None:
    runs = RunList(runs=[
        RunSummary(run_id="b", workflow="flows/simple.py:Simple", status="finished", step="step_end",
                   updated_at=T0 - timedelta(minutes=5)),
        RunSummary(run_id="a", workflow="?", status="unreadable", step=None, updated_at=None)])
    out = render(runs_table(runs, T0))
    lines = out.splitlines()
    assert lines[0].split() == ["run", "workflow", "status", "step", "updated"]
    assert lines[1].split() == ["b", "flows/simple.py:Simple", "finished", "step_end", "5m", "ago"]
    assert lines[2].split() == ["a", "?", "unreadable", "-", "-"]
    assert render(runs_table(RunList(runs=[]), T0)).strip() == "no runs"


def test_tick_lines_say_what_was_advanced_and_skipped() -> None:
    report = TickReport(due=3, advanced=[TickAdvanced(run_id="u1", status="finished"),
                                         TickAdvanced(run_id="r1", status="failed")],
                        skipped=[TickSkipped(run_id="x", reason="locked by another process")])
    assert render(tick_lines(report)).splitlines() == [
        "advanced u1 -> finished", "advanced r1 -> failed", "skipped  x: locked by another process",
        "3 due, 2 advanced, 1 skipped"]


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "0.25s"), (5, "5s"), (59, "59s"), (61, "1m 1s"),
                                                (3600, "1h"), (90061, "1d 1h"), (86400 * 3, "3d")])
def test_span_in_two_largest_units(seconds: float, text: str) -> None:
    assert span(seconds) == text


def test_ago_is_relative_to_now() -> None:
    assert ago(T0 - timedelta(minutes=3), T0) == "3m ago"
    assert ago(T0 + timedelta(hours=2, minutes=5), T0) == "in 2h 5m"
    assert ago(T0, T0) == "now" and ago(None, T0) == "-"


def test_placeholder_names_the_expected_type() -> None:
    assert placeholder_for("integer (0..100)") == "<integer>"
    assert placeholder_for(None) == placeholder_for("any JSON") == "<value>"


def test_make_console_with_no_color_writes_no_ansi_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")  # even where colour would be forced
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    console = make_console(io.StringIO())
    console.print(run_outcome(RunDocument(run_id="r", workflow="w", version=1, parent=None, status="failed", step="s",
                                          state={}, pending=[],
                                          error=ErrorInfo(type="E", message="m"), created_at=T0, updated_at=T0), T0))
    assert "\x1b[" not in console.file.getvalue()  # type: ignore[attr-defined]
    monkeypatch.delenv("NO_COLOR")
    coloured = make_console(io.StringIO())
    coloured.print(run_outcome(RunDocument(run_id="r", workflow="w", version=1, parent=None, status="failed", step="s",
                                           state={},
                                           pending=[], error=None, created_at=T0, updated_at=T0), T0))
    assert "\x1b[" in coloured.file.getvalue()  # type: ignore[attr-defined]
