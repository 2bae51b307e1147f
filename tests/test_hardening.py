"""What a careless operator or a hostile environment does to tinywf: other users' state, full
disks, closed or non-UTF-8 outputs, signals at bad moments, records copied in by hand."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from clihelpers import TINYWF, Cli, InProcessCli, assert_error, at, describe

from tinywf_cli import Runtime, StorageError
from tinywf_cli.clock import ManualClock
from tinywf_cli.stores.files import fileio

T0 = "2026-01-01T00:00:00Z"
NOBODY = 65534


def wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# -- state that belongs to someone else -------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: only root can hand a directory to another user")
def test_a_state_directory_of_another_user_is_refused_naming_its_owner(cli: Cli, tmp_path: Path) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60}')
    planted = tmp_path / "planted.py"
    marker = tmp_path / "executed"
    planted.write_text(f"open({str(marker)!r}, 'w').close()\n")
    record = json.loads((cli.state_dir / "u1.json").read_text())
    record["run"]["flow"]["file"] = str(planted)  # the other user points their run at any file
    (cli.state_dir / "u1.json").write_text(json.dumps(record))
    for path in [cli.state_dir, *cli.state_dir.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    result = cli("tick", now=at(120))
    line = assert_error(result, 5, "belongs to")
    assert "uid 65534" in line and "run it as that user" in line
    assert not marker.exists()  # the planted file never ran as root
    assert all(p.stat().st_uid == NOBODY for p in cli.state_dir.rglob("*"))  # nothing rewritten as root
    for args in (("show", "u1"), ("list",), ("resolve", "u1", "x", "1"), ("cancel", "u1")):
        assert_error(cli(*args), 5, "belongs to")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: only root can hand a file to another user")
def test_a_record_of_another_user_in_our_directory_is_refused(cli: Cli) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/simple.py", "s1")
    os.lchown(cli.state_dir / "s1.json", NOBODY, NOBODY)
    assert_error(cli("show", "s1"), 5, "belongs to")
    listed = cli("list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["runs"][0]["status"] == "unreadable"


# -- a full disk after part of a command was saved ----------------------------------------------------------------


def test_a_write_that_fails_after_an_event_was_saved_says_what_was_saved(
        cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/fail.py", "f1")  # charges, then waits for a note
    writes = {"n": 0}
    real_replace, real_append = fileio.atomic_replace, fileio.Appender.append

    def second_fails(target: Path) -> None:
        writes["n"] += 1
        if writes["n"] == 2:  # the first write records the event; the second fails
            raise StorageError(target, f"cannot write: No space left on device (ENOSPC); {fileio.UNCHANGED}")

    def replace(path: Path, tmp: Path, data: bytes) -> None:
        second_fails(tmp)
        real_replace(path, tmp, data)

    def append(self: fileio.Appender, at: int, data: bytes) -> None:
        second_fails(self.path)
        real_append(self, at, data)

    monkeypatch.setattr("tinywf_cli.stores.files.session.atomic_replace", replace)
    monkeypatch.setattr(fileio.Appender, "append", append)
    rt = Runtime(cli.state_dir, clock=ManualClock(T0))
    with pytest.raises(StorageError) as caught:
        rt.resolve("f1", "note", "boom")  # the step raises after the event: the failure's commit fails
    message = caught.value.message
    assert "the run is unchanged" not in message
    assert "this last change was not saved" in message and "1 change this command made before it was" in message
    monkeypatch.undo()
    logs = [e["type"] for e in fast.json("show", "f1")["logs"]]
    assert "wait_end" in logs  # the event was recorded, as the message said


# -- signals -------------------------------------------------------------------------------------------------

SLOW_FLOWS = '''
import os
import time
from pathlib import Path

from tinywf_cli import Workflow, step


def slow(name):
    Path(os.environ["MARKS_DIR"], name).touch()
    time.sleep(float(os.environ.get("SLOW", "1")))
    return name


class Slow(Workflow):
    @step
    def work(self):
        self.state["done"] = yield self.action("slow", slow, self.run_id)


class Spin(Workflow):
    step_timeout = None

    @step
    def work(self):
        yield self.action("mark", slow, "spin")
        while True:
            pass
'''


@pytest.fixture
def slow_cli(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    (cli.workspace / "flows" / "slowness.py").write_text(SLOW_FLOWS, encoding="utf-8")
    (tmp_path / "marks").mkdir()
    monkeypatch.setenv("MARKS_DIR", str(tmp_path / "marks"))  # every command's environment takes it
    return cli


@pytest.mark.parametrize("concurrency", [1, 2])
def test_sigterm_stops_a_worker_after_the_runs_in_progress(slow_cli: Cli, tmp_path: Path, concurrency: int) -> None:
    """The runs in flight (one per thread) finish; no run is taken after the signal."""
    cli = slow_cli
    fast = InProcessCli(cli.workspace, cli.state_dir)
    (cli.workspace / "flows" / "later.py").write_text(
        SLOW_FLOWS + '''

class Later(Workflow):
    @step
    def nap(self):
        yield self.sleep("nap", 60)
        self.state["done"] = yield self.action("slow", slow, self.run_id)
''', encoding="utf-8")
    for i in range(5):
        fast.start("flows/later.py:Later", f"s{i}")
    proc = cli.spawn(("worker", "--json", "--concurrency", str(concurrency)), at(60), {"SLOW": "2"})
    try:
        for i in range(concurrency):
            wait_for(tmp_path / "marks" / f"s{i}")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < 5, f"the worker took {took:.1f} s to stop (each action takes 2 s)"
    statuses = [fast.json("show", f"s{i}")["status"] for i in range(5)]
    assert statuses[:concurrency] == ["finished"] * concurrency and statuses.count("waiting") >= 5 - concurrency - 1
    assert statuses.count("finished") <= concurrency + 1  # at most one more, taken before the signal came


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_second_signal_stops_a_worker_at_once_leaving_the_run_recoverable(
        slow_cli: Cli, tmp_path: Path, concurrency: int) -> None:
    cli = slow_cli
    fast = InProcessCli(cli.workspace, cli.state_dir)
    (cli.workspace / "flows" / "later.py").write_text(
        SLOW_FLOWS + '''

class LaterSpin(Spin):
    @step(start=True)
    def nap(self):
        yield self.sleep("nap", 60)
        return self.work
''', encoding="utf-8")
    fast.start("flows/later.py:LaterSpin", "spin")
    proc = cli.spawn(("worker", "--concurrency", str(concurrency)), at(60), {"SLOW": "0"})
    try:
        wait_for(tmp_path / "marks" / "spin")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None  # the step never yields: the first signal waits for it
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130
    assert proc.stderr is not None and "error: interrupted" in proc.stderr.read()
    doc = fast.json("show", "spin")
    assert doc["status"] == "running"  # left for tick to recover


def test_sigint_in_an_action_of_run_is_one_line_and_the_run_recoverable(slow_cli: Cli, tmp_path: Path) -> None:
    cli = slow_cli
    proc = cli.spawn(("run", "flows/slowness.py:Slow", "--run-id", "r1"), None, {"SLOW": "60"})
    try:
        wait_for(tmp_path / "marks" / "r1")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130
    assert proc.stderr is not None
    lines = proc.stderr.read().splitlines()
    assert lines == ["error: interrupted; a run being advanced is left running, and `tinywf tick` recovers it"]
    fast = InProcessCli(cli.workspace, cli.state_dir)
    assert fast.json("show", "r1")["status"] == "running"
    report = fast.json("tick", env={"SLOW": "0"})
    assert report["advanced"] == [{"run_id": "r1", "status": "finished"}]


def test_an_action_calling_sys_exit_fails_its_run_and_tinywf_exits_1(cli: Cli) -> None:
    (cli.workspace / "flows" / "leaver.py").write_text('''
import sys

from tinywf_cli import Workflow, step


def leave():
    sys.exit(3)


class Leaver(Workflow):
    @step
    def only(self):
        yield self.action("leave", leave)
''', encoding="utf-8")
    doc = cli.json("run", "flows/leaver.py", "--run-id", "l1", code=1)
    assert doc["status"] == "failed" and doc["error"]["type"] == "SystemExit"


# -- outputs ------------------------------------------------------------------------------------------------------


def test_an_ascii_terminal_gets_escapes_not_a_traceback(cli: Cli) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/echo.py", "e1")
    fast.json("resolve", "e1", "value", '"héllo ✓ 🎉"')
    for env in ({"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "POSIX", "PYTHONUTF8": "0", "LANG": ""}):
        human = cli("show", "e1", env=env)
        assert human.returncode == 0 and "Traceback" not in human.stderr, describe(human)
        as_json = cli("show", "e1", "--json", env=env)
        assert as_json.returncode == 0, describe(as_json)
        assert json.loads(as_json.stdout)["state"] == {"value": "héllo ✓ 🎉"}
        listed = cli("list", env=env)
        assert listed.returncode == 0, describe(listed)


def test_a_closed_stdout_is_one_error_line_and_the_work_is_kept(cli: Cli) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60}')
    for args in (("tick", "--json"), ("show", "u1", "--json"), ("list",)):
        argv, env = cli.prepare(args, at(120), None, True)
        done = subprocess.run([TINYWF, *argv], cwd=cli.workspace, env=env, text=True, stderr=subprocess.PIPE,
                              preexec_fn=lambda: os.close(1), check=False, timeout=60)
        assert done.returncode == 5, (args, done.stderr)
        assert done.stderr.splitlines()[-1] == "error: cannot write the output to stdout: it is closed", done.stderr
        assert "Traceback" not in done.stderr
    assert fast.json("show", "u1")["pending"][0]["key"] != "wait_before_promotion_email"  # the tick's work kept


def test_a_full_stdout_is_one_error_line(cli: Cli) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/simple.py", "s1")
    for args in (("list",), ("list", "--json"), ("show", "s1")):
        argv, env = cli.prepare(args, None, None, True)
        with open("/dev/full", "w") as full:
            done = subprocess.run([TINYWF, *argv], cwd=cli.workspace, env=env, text=True, stdout=full,
                                  stderr=subprocess.PIPE, check=False, timeout=60)
        assert done.returncode == 5, (args, done.stderr)
        assert done.stderr.splitlines() == [
            f"error: cannot write the output to stdout: No space left on device ({errno.errorcode[errno.ENOSPC]})"]


def test_a_reader_that_goes_away_is_no_error(cli: Cli) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    for i in range(300):
        fast.start("flows/simple.py", f"s{i:03d}")
    proc = cli.spawn(("list",), None, None, text=False)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # like `tinywf list | head -1`
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""


# -- the due index and copied records ------------------------------------------------------------------------------


def test_a_record_copied_in_by_hand_is_found_by_tick_reindex_and_the_worker(cli: Cli, tmp_path: Path) -> None:
    other = InProcessCli(cli.workspace, tmp_path / "other")
    other.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60, "end_after": 60}')
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/simple.py", "s1")  # the target directory has its index already
    for path in (tmp_path / "other").glob("u1*"):
        shutil.copy2(path, cli.state_dir / path.name)
    assert fast.json("tick", now=at(120))["due"] == 0  # not in the index: tick does not know it
    report = fast.json("tick", "--reindex", now=at(120))
    assert report["advanced"] == [{"run_id": "u1", "status": "waiting"}]


def test_a_lock_file_without_a_record_is_swept(cli: Cli) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/simple.py", "s1")
    (cli.state_dir / "ghost.lock").touch(mode=0o600)  # what a create killed before its first write leaves
    fast.json("tick", "--reindex")
    assert not (cli.state_dir / "ghost.lock").exists() and (cli.state_dir / "s1.json").exists()


def test_tick_counts_a_run_whose_advance_fails_once(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/user_onboarding.py", "u1", "--input", '{"promotion_after": 60}')

    def full(path: Path, tmp: Path, data: bytes) -> None:
        raise StorageError(tmp, f"cannot write: No space left on device (ENOSPC); {fileio.UNCHANGED}")

    monkeypatch.setattr("tinywf_cli.stores.files.session.atomic_replace", full)
    report = Runtime(cli.state_dir, clock=ManualClock("2026-01-01T00:02:00Z")).tick()
    assert report.due == 1 and [s.run_id for s in report.skipped] == ["u1"] and report.advanced == []


# -- small things ------------------------------------------------------------------------------------------------


def test_small_messages_read_well(cli: Cli) -> None:
    fast = InProcessCli(cli.workspace, cli.state_dir)
    fast.start("flows/interval_payment.py", "sub-1")
    fast.json("cancel", "sub-1")
    line = assert_error(fast("signal", "sub-1", "add_usage", '{"item": "a", "amount": 1}'), 4)
    assert line == "error: run 'sub-1' is cancelled: cannot signal it (signal 'add_usage')"
    (cli.workspace / "flows" / "binary.py").write_bytes(b"\x00\x01 not python")
    line = assert_error(fast("run", "flows/binary.py"), 2)
    assert "None" not in line
    from datetime import UTC, datetime, timedelta

    from tinywf_cli.clock import ago

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert ago(now + timedelta(seconds=0.5), now) == "in 0.50s"
    assert ago(now, now) == "now"
