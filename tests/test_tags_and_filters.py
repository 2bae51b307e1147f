"""Tags (``run --tag``, ``Runtime.start(tags=)``, ``self.tag``), ``list``'s filters, and
``cancel``/``retry``/``pause``/``resume`` by filter (contract section 12)."""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clihelpers import SUMMARY_KEYS, Cli, InProcessCli, assert_error, assert_run_document, make_workspace

from tinywf_cli import Runtime
from tinywf_cli.errors import BadInput, RunChanged
from tinywf_cli.filters import RunFilter
from tinywf_cli.reading.files import list_runs
from tinywf_cli.stores.files.tagindex import TagIndex, tag_folder
from tinywf_cli.testing import ManualClock

TAGGED = '''"""Waits, fails or finishes as its input says; tags itself with the outcome."""
from pydantic import BaseModel

from tinywf_cli import Workflow, step


class Order(BaseModel):
    outcome: str = "wait"
    parts: int = 0


class Tagged(Workflow[Order]):
    @step
    def begin(self):
        self.tag(outcome=self.state.outcome)
        if self.state.outcome == "fail":
            raise RuntimeError("asked to fail")
        if self.state.outcome == "wait":
            yield self.wait_event("go", type=int)
        if self.state.parts:
            yield self.child("part", "tagged.py", {"outcome": "finish"})
        return None
'''
#: Fails at every attempt until ``fixed`` exists beside it; counts its attempts in ``attempts``.
FAILING = '''"""Fails until the file `fixed` exists beside it."""
from pathlib import Path

from tinywf_cli import Retry, Workflow, step

HERE = Path(__file__).parent


def call() -> str:
    with open(HERE / "attempts", "a") as out:
        out.write("x")
    if not (HERE / "fixed").exists():
        raise RuntimeError("the service is down")
    return "ok"


class Failing(Workflow):
    @step
    def begin(self):
        yield self.action("call", call, retry=Retry(attempts=1))
        return None
'''


@pytest.fixture
def work(tmp_path: Path) -> Cli:
    """A workspace with the test flows, through the installed ``tinywf``."""
    workspace = make_workspace(tmp_path)
    (workspace / "tagged.py").write_text(TAGGED, encoding="utf-8")
    (workspace / "failing.py").write_text(FAILING, encoding="utf-8")
    return Cli(workspace)


@pytest.fixture
def quick(work: Cli) -> InProcessCli:
    """The same workspace, in this process."""
    return InProcessCli(work.workspace, work.state_dir)


# -- tags ---------------------------------------------------------------------------------------------


def test_run_tags_are_in_every_document(work: Cli) -> None:
    doc = work.start("tagged.py", "o1", "--tag", "customer=acme", "--tag", "region=eu")
    assert_run_document(doc)
    assert doc["tags"] == {"customer": "acme", "region": "eu", "outcome": "wait"}
    shown = work.json("show", "o1")
    assert shown["tags"] == doc["tags"]
    resolved = work.json("resolve", "o1", "go", "1")
    assert resolved["status"] == "finished" and resolved["tags"] == doc["tags"]
    row = work.json("list")["runs"][0]
    assert set(row) == SUMMARY_KEYS and row["tags"] == doc["tags"]
    people = work("show", "o1")
    assert "customer=acme region=eu outcome=wait" in people.stdout


def test_self_tag_is_recorded_once_across_replays(quick: InProcessCli) -> None:
    quick.start("tagged.py", "o1")
    quick.json("send", "o1", "go", "1")  # the visit replays from its top: self.tag runs again
    logs = quick.json("show", "o1")["logs"]
    assert [e["values"] for e in logs if e["type"] == "tag"] == [{"outcome": "wait"}]


def test_a_later_tag_replaces_the_value_of_its_key(quick: InProcessCli) -> None:
    doc = quick.start("tagged.py", "o1", "--tag", "outcome=unknown", "--input", '{"outcome": "finish"}')
    assert doc["tags"] == {"outcome": "finish"}


def test_child_runs_carry_their_parents_tags(quick: InProcessCli) -> None:
    doc = quick.start("tagged.py", "o1", "--tag", "customer=acme", "--input", '{"outcome": "finish", "parts": 1}')
    assert doc["status"] == "finished"
    child = quick.json("show", "o1.part")
    assert child["tags"] == {"customer": "acme", "outcome": "finish"}
    assert sorted(r["run_id"] for r in quick.json("list", "--tag", "customer=acme")["runs"]) == ["o1", "o1.part"]


def test_runtime_start_takes_tags(tmp_path: Path) -> None:
    (tmp_path / "tagged.py").write_text(TAGGED, encoding="utf-8")
    rt = Runtime(tmp_path / "state")
    doc = rt.start(tmp_path / "tagged.py", {"outcome": "finish"}, run_id="o1", tags={"customer": "acme"})
    assert doc.tags == {"customer": "acme", "outcome": "finish"}
    assert [r.run_id for r in rt.list(tags={"customer": "acme"}).runs] == ["o1"]
    assert rt.list(tags={"customer": "other"}).runs == []
    with pytest.raises(BadInput, match="string"):
        rt.start(tmp_path / "tagged.py", run_id="o2", tags={"n": 1})  # type: ignore[dict-item]
    assert [r.run_id for r in rt.list().runs] == ["o1"]


@pytest.mark.parametrize("bad", ["customer", "=acme", "9x=1", "a b=c", "k=" + "v" * 300, "k=a\x01b"])
def test_a_bad_tag_is_exit_2_and_nothing_is_written(work: Cli, bad: str) -> None:
    result = work("run", "tagged.py", "--tag", bad)
    assert_error(result, 2, "--tag")
    assert not work.state_dir.exists() or not list(work.state_dir.glob("*.json"))


def test_a_step_tagging_with_a_non_string_fails_the_run_saying_so(quick: InProcessCli) -> None:
    (quick.workspace / "badtag.py").write_text(
        "from tinywf_cli import Workflow, step\n\nclass BadTag(Workflow):\n    @step\n    def begin(self):\n"
        "        self.tag(n=1)\n        return None\n", encoding="utf-8")
    doc = quick.start("badtag.py", "b1", code=1)
    assert doc["status"] == "failed" and "string" in doc["error"]["message"]


# -- list's filters -------------------------------------------------------------------------------------


def test_filters_combine_with_and(quick: InProcessCli) -> None:
    for i, (customer, outcome) in enumerate(itertools.product(["acme", "c42"], ["wait", "fail", "finish"])):
        quick.start("tagged.py", f"r{i}", "--tag", f"customer={customer}", "--input", json.dumps({"outcome": outcome}),
                    code=1 if outcome == "fail" else 0)
    def ids(*args: str, **kwargs: Any) -> list[str]:
        return sorted(r["run_id"] for r in quick.json("list", *args, **kwargs)["runs"])

    assert ids("--tag", "customer=c42", "--status", "failed") == ["r4"]
    assert ids("--tag", "customer=c42", "--tag", "outcome=wait") == ["r3"]
    assert ids("--status", "failed,waiting") == ["r0", "r1", "r3", "r4"]
    assert ids("--flow", "Tagged", "--tag", "customer=acme") == ["r0", "r1", "r2"]
    assert ids("--flow", "tagged.py:Tagged", "--status", "finished") == ["r2", "r5"]
    assert ids("--flow", "other.py") == []
    assert ids("--since", "1h") == [f"r{i}" for i in range(6)]
    assert ids("--since", "1h", now="2026-01-01T02:00:00Z") == []
    assert ids("--stuck", "1h", now="2026-01-01T02:00:00Z") == ["r0", "r3"]  # waiting for two hours
    assert ids("--stuck", "1h") == []


@pytest.mark.parametrize("args, fragment", [
    (["--since", "30"], "--since"), (["--stuck", "soon"], "--stuck"), (["--status", "done"], "--status"),
    (["--tag", "x"], "--tag"),
])
def test_a_bad_filter_is_exit_2(work: Cli, args: list[str], fragment: str) -> None:
    assert_error(work("list", *args), 2, fragment)


def _make_runs(root: Path, flow: Path, count: int) -> Runtime:
    """``count`` runs of ``flow`` in ``root``: three outcomes, some paused and cancelled, 7 customers,
    3 regions, each updated a minute after the one before."""
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    rt = Runtime(root, clock=clock)
    for i in range(count):
        tags = {"customer": f"c{i % 7}"}
        if i % 3:
            tags["region"] = ("eu", "us")[i % 2]
        doc = rt.start(flow, {"outcome": ("wait", "fail", "finish", "wait")[i % 4]}, run_id=f"r{i:05}", tags=tags)
        if doc.status == "waiting" and i % 5 == 0:
            rt.pause(doc.run_id)
        elif doc.status == "waiting" and i % 7 == 3:
            rt.cancel(doc.run_id)
        clock.advance(timedelta(minutes=1))
    return rt


def _brute(rows: list[dict[str, Any]], select: RunFilter) -> list[str]:
    """What ``select`` should pick, from ``list --json``'s rows alone."""
    def keep(row: dict[str, Any]) -> bool:
        updated = datetime.fromisoformat(row["updated_at"])
        return ((not select.statuses or row["status"] in select.statuses)
                and (select.flow is None or select.flow in (row["workflow"], row["workflow"].split(":")[-1]))
                and all(row["tags"].get(k) == v for k, v in select.tags.items())
                and (select.since is None or updated >= select.since)
                and (select.stuck_before is None or (row["status"] in ("running", "waiting")
                                                     and updated < select.stuck_before)))
    return [row["run_id"] for row in rows if keep(row)]


def test_every_filter_combination_agrees_with_a_brute_force_filter(tmp_path: Path) -> None:
    count = int(os.environ.get("TINYWF_FILTER_RUNS", "2000"))
    (tmp_path / "tagged.py").write_text(TAGGED, encoding="utf-8")
    root = tmp_path / "state"
    rt = _make_runs(root, tmp_path / "tagged.py", count)
    everything = json.loads(list_runs(root, RunFilter()).json())["runs"]
    assert len(everything) == count
    now = rt.clock.now()
    tag_sets: list[dict[str, str]] = [{}, {"customer": "c3"}, {"customer": "c3", "region": "eu"}, {"region": "us"}]
    status_sets: list[frozenset[str]] = [frozenset(), frozenset({"waiting"}), frozenset({"failed", "paused"})]
    checked = 0
    for tags, statuses, flow, since, stuck in itertools.product(
            tag_sets, status_sets, [None, "Tagged", "Other"], [None, timedelta(minutes=count // 2)],
            [None, timedelta(minutes=count // 3)]):
        select = RunFilter(tags=tags, statuses=statuses, flow=flow, since=None if since is None else now - since,
                           stuck_before=None if stuck is None else now - stuck)
        want = _brute(everything, select)
        fast = [r.run_id for r in list_runs(root, select).runs]
        full = [r.run_id for r in rt.select(select).runs]
        assert fast == want == full, select
        checked += bool(want)
    assert checked > 50  # most combinations pick something: the comparisons are not of empty lists


# -- bulk commands ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["cancel", "retry", "pause", "resume"])
def test_bulk_commands_refuse_to_touch_every_run(work: Cli, command: str) -> None:
    work.start("tagged.py", "o1")
    before = work.snapshot()
    assert_error(work(command), 2, "filter")
    assert_error(work(command, "o1", "--tag", "customer=acme"), 2, "not both")
    assert work.snapshot() == before


def _failed_runs(cli: InProcessCli, count: int) -> None:
    for i in range(count):
        cli.json("run", "failing.py", "--run-id", f"f{i:03}", "--tag", f"batch={'ab'[i % 2]}", code=1)


def test_dry_run_lists_what_it_would_touch_and_changes_no_byte(quick: InProcessCli) -> None:
    _failed_runs(quick, 6)
    quick.start("tagged.py", "w1", "--tag", "batch=a")
    before = quick.snapshot()
    report = quick.json("retry", "--tag", "batch=a", "--dry-run")
    assert report == {"runs": [{"run_id": f"f{i:03}", "status": "failed"} for i in (0, 2, 4)],
                      "skipped": [{"run_id": "w1", "reason": "waiting: only failed or blocked runs are retried"}]}
    assert quick.snapshot() == before
    people = quick("cancel", "--status", "failed", "--dry-run")
    assert people.returncode == 0 and "6 would be cancelled" in people.stdout
    assert quick.snapshot() == before


def test_bulk_retry_retries_each_picked_run_once(quick: InProcessCli) -> None:
    _failed_runs(quick, 10)
    (quick.workspace / "fixed").touch()
    report = quick.json("retry", "--status", "failed", "--tag", "batch=b")
    assert report == {"runs": [{"run_id": f"f{i:03}", "status": "finished"} for i in range(1, 10, 2)],
                      "skipped": []}
    statuses = {r["run_id"]: r["status"] for r in quick.json("list")["runs"]}
    assert statuses == {f"f{i:03}": "failed" if i % 2 == 0 else "finished" for i in range(10)}


def test_two_bulk_retries_at_once_never_retry_a_run_twice(work: Cli) -> None:
    count = 500  # the bar: 500 failed runs, two bulk retries at once
    _failed_runs(InProcessCli(work.workspace, work.state_dir), count)
    (work.workspace / "attempts").unlink()
    (work.workspace / "fixed").touch()
    racers = [work.spawn(("retry", "--status", "failed", "--json"), None, None) for _ in range(2)]
    reports = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        reports.append(json.loads(out))
    retried = [r["run_id"] for report in reports for r in report["runs"]]
    assert sorted(retried) == [f"f{i:03}" for i in range(count)]  # each once, by one of the two
    assert (work.workspace / "attempts").read_text() == "x" * count
    for run_id in retried[:10]:
        logs = work.json("show", run_id)["logs"]
        assert sum(e["type"] == "retried" for e in logs) == 1
    for skipped in (s for report in reports for s in report["skipped"]):
        assert any(why in skipped["reason"] for why in (
            "changed since it was selected (another command got there first)", "locked by another process",
            "finished: only failed or blocked runs are retried")), skipped


def test_a_run_changed_since_it_was_picked_is_left_alone(tmp_path: Path) -> None:
    """A run retried by another command meanwhile that failed again is `failed` still: only the
    time it was picked at tells the bulk command that another got there first."""
    (tmp_path / "failing.py").write_text(FAILING, encoding="utf-8")
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    rt = Runtime(tmp_path / "state", clock=clock)
    rt.start(tmp_path / "failing.py", run_id="f1")
    picked = rt.store.head("f1")
    clock.advance(timedelta(seconds=1))
    assert rt.retry("f1").status == "failed"  # another command got there first, and it failed again
    with pytest.raises(RunChanged):
        rt.retry("f1", _seen=picked.progress)
    assert (tmp_path / "attempts").read_text() == "xx"


def test_bulk_pause_resume_and_cancel(quick: InProcessCli) -> None:
    for i in range(4):
        quick.start("tagged.py", f"w{i}", "--tag", f"team={'xy'[i % 2]}")
    paused = quick.json("pause", "--tag", "team=x")
    assert [r["run_id"] for r in paused["runs"]] == ["w0", "w2"] and {r["status"] for r in paused["runs"]} == {"paused"}
    again = quick.json("pause", "--tag", "team=x")
    assert again["runs"] == [] and [s["run_id"] for s in again["skipped"]] == ["w0", "w2"]
    resumed = quick.json("resume", "--status", "paused")
    assert resumed["runs"] == [{"run_id": "w0", "status": "waiting"}, {"run_id": "w2", "status": "waiting"}]
    cancelled = quick.json("cancel", "--tag", "team=y", "--reason", "closed")
    assert cancelled["runs"] == [{"run_id": "w1", "status": "cancelled"}, {"run_id": "w3", "status": "cancelled"}]
    logs = quick.json("show", "w1")["logs"]
    assert logs[-1]["type"] == "cancel" and logs[-1]["values"] == {"reason": "closed"}


@pytest.mark.stores("file", "postgres")
def test_filters_and_bulk_on_each_store(cli: Cli) -> None:
    (cli.workspace / "tagged.py").write_text(TAGGED, encoding="utf-8")
    for i in range(6):
        cli.json("run", "tagged.py", "--run-id", f"r{i}", "--tag", f"customer=c{i % 3}", "--input",
                 json.dumps({"outcome": ("wait", "fail")[i % 2]}), code=i % 2)
    rows = cli.json("list", "--tag", "customer=c1", "--status", "failed")["runs"]
    assert [r["run_id"] for r in rows] == ["r1"] and rows[0]["tags"] == {"customer": "c1", "outcome": "fail"}
    assert sorted(r["run_id"] for r in cli.json("list", "--status", "waiting", "--flow", "Tagged")["runs"]) == \
        ["r0", "r2", "r4"]
    report = cli.json("cancel", "--tag", "outcome=wait")
    assert sorted(r["run_id"] for r in report["runs"]) == ["r0", "r2", "r4"]
    assert cli.json("list", "--status", "cancelled")["runs"][0]["tags"]["outcome"] == "wait"


def test_unreadable_records_are_listed_only_without_filters_on_their_fields(quick: InProcessCli) -> None:
    quick.start("tagged.py", "o1", "--tag", "customer=acme")
    (quick.state_dir / "o2.json").write_text("{not json", encoding="utf-8")
    everything = quick("list", "--json")
    assert {r["status"] for r in json.loads(everything.stdout)["runs"]} == {"waiting", "unreadable"}
    tagged = quick("list", "--json", "--tag", "customer=acme")  # the tag index names o1 alone: o2 is not read
    assert [r["run_id"] for r in json.loads(tagged.stdout)["runs"]] == ["o1"]
    recent = quick("list", "--json", "--since", "1h")  # every record is read: o2 is warned of, not listed
    assert [r["run_id"] for r in json.loads(recent.stdout)["runs"]] == ["o1"]
    assert "warning:" in recent.stderr


# -- the file store's tag index ----------------------------------------------------------------------------


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run ids whose records the read path reads, from now on."""
    import tinywf_cli.reading.files as files

    read: list[str] = []
    real = files.read_head

    def counting(run_files: Any, run_id: str) -> Any:
        read.append(run_id)
        return real(run_files, run_id)

    monkeypatch.setattr(files, "read_head", counting)
    return read


def test_a_tag_filter_reads_only_the_records_of_runs_with_the_tag(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tagged.py").write_text(TAGGED, encoding="utf-8")
    root = tmp_path / "state"
    _make_runs(root, tmp_path / "tagged.py", 140)
    read = _count_reads(monkeypatch)
    picked = list_runs(root, RunFilter(tags={"customer": "c3"}, statuses=frozenset({"failed"})))
    assert [r.run_id for r in picked.runs] and all(r.status == "failed" for r in picked.runs)
    assert sorted(read) == [f"r{i:05}" for i in range(140) if i % 7 == 3]  # the 20 with the tag, no other
    read.clear()
    list_runs(root, RunFilter(statuses=frozenset({"failed"})))
    assert len(read) == 140  # no tag: every record


def test_a_crash_around_a_tag_change_leaves_a_stale_entry_and_the_right_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry is added before the commit and the old one removed after: a commit that never
    happened, or a removal that never happened, leaves an entry the record does not back."""
    import tinywf_cli.stores.files.session as session

    (tmp_path / "tagged.py").write_text(TAGGED, encoding="utf-8")
    root = tmp_path / "state"
    rt = Runtime(root)
    rt.start(tmp_path / "tagged.py", run_id="o1", tags={"customer": "acme"})

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError(5, "simulated crash before the record is written")

    with monkeypatch.context() as patch:
        patch.setattr(session, "atomic_replace", crash)
        with pytest.raises(Exception, match="simulated crash"):
            rt.start(tmp_path / "tagged.py", run_id="o2", tags={"customer": "acme"})
    assert (root / ".tags").is_dir()
    assert [r.run_id for r in list_runs(root, RunFilter(tags={"customer": "acme"})).runs] == ["o1"]
    with rt.store.open("o1", 1) as held:  # a commit that changes the tag's value ...
        head = held.load().head
        head.tags["customer"] = "globex"
        with monkeypatch.context() as patch:  # ... killed before the old value's entry went
            patch.setattr(TagIndex, "remove", lambda *args: None)
            held.commit(head, [])
    assert "o1" in os.listdir(root / ".tags" / tag_folder("customer", "acme"))
    assert [r.run_id for r in list_runs(root, RunFilter(tags={"customer": "acme"})).runs] == []
    assert [r.run_id for r in list_runs(root, RunFilter(tags={"customer": "globex"})).runs] == ["o1"]
    assert [r.run_id for r in rt.list(tags={"customer": "acme"}).runs] == []


def test_reindex_indexes_records_copied_in_by_hand(tmp_path: Path) -> None:
    (tmp_path / "tagged.py").write_text(TAGGED, encoding="utf-8")
    first, second = tmp_path / "first", tmp_path / "second"
    Runtime(first).start(tmp_path / "tagged.py", run_id="o1", tags={"customer": "acme"})
    Runtime(second).start(tmp_path / "tagged.py", run_id="o2", tags={"customer": "acme"})
    for path in first.glob("o1*"):
        (second / path.name).write_bytes(path.read_bytes())
    assert [r.run_id for r in list_runs(second, RunFilter(tags={"customer": "acme"})).runs] == ["o2"]
    assert Runtime(second).reindex() >= 1
    assert sorted(r.run_id for r in list_runs(second, RunFilter(tags={"customer": "acme"})).runs) == ["o1", "o2"]


def test_a_missing_index_is_built_whole_by_the_next_tagged_commit(tmp_path: Path) -> None:
    (tmp_path / "tagged.py").write_text(TAGGED, encoding="utf-8")
    root = tmp_path / "state"
    rt = Runtime(root)
    for i in range(3):
        rt.start(tmp_path / "tagged.py", run_id=f"o{i}", tags={"customer": "acme"})
    import shutil

    shutil.rmtree(root / ".tags")  # lost, as a `cp -r state/* elsewhere/` loses dot files
    assert sorted(r.run_id for r in list_runs(root, RunFilter(tags={"customer": "acme"})).runs) == ["o0", "o1", "o2"]
    rt.start(tmp_path / "tagged.py", run_id="o3", tags={"customer": "acme"})
    assert sorted(os.listdir(root / ".tags" / tag_folder("customer", "acme"))) == ["o0", "o1", "o2", "o3"]
    assert not (root / ".tags~build").exists()


def test_a_tag_value_that_is_not_utf8_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "tagged.py").write_text(TAGGED, encoding="utf-8")
    rt = Runtime(tmp_path / "state")
    with pytest.raises(BadInput, match="UTF-8"):
        rt.start(tmp_path / "tagged.py", run_id="o1", tags={"k": "\ud800"})
    assert not list((tmp_path / "state").glob("o1*"))
