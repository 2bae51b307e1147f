"""What only the PostgreSQL store has to prove: claims with leases and fencing, wake-ups,
first use by many processes, an unreachable server, URLs and passwords, and ``copy``.

The behaviours every store shares are in ``test_store_contract.py``; the CLI and the
lifecycle tests run on PostgreSQL too (``stores`` marks). Processes on several hosts are
in ``test_pg_hosts.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clihelpers import TINYWF, Cli, InProcessCli, assert_error, clean_env, describe, make_workspace
from pgserver import SERVER, fresh_url, require_server

from tinywf_cli.errors import BadInput, ClaimLost, RunLocked, StorageError
from tinywf_cli.model import FlowRef, RunHead
from tinywf_cli.stores.journal import AuditEntry, VisitEntry

try:
    from tinywf_cli.stores.postgres import PostgresStore
except BadInput as missing:  # psycopg is not installed
    if os.environ.get("TINYWF_REQUIRE_PG"):
        raise
    pytest.skip(missing.message, allow_module_level=True)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def url() -> Iterator[str]:
    """A fresh schema's URL."""
    with fresh_url() as made:
        yield made


def head_of(run_id: str, status: str = "running", **fields: object) -> RunHead:
    head = RunHead(run_id=run_id, workflow="flows/x.py:X", flow=FlowRef(file="/x.py", cls="X"),
                   status=status, step="first", state={"n": 0}, visit_state={"n": 0},  # type: ignore[arg-type]
                   created_at=T0, updated_at=T0)
    for name, value in fields.items():
        setattr(head, name, value)
    return head


def log(type_: str) -> AuditEntry:
    return AuditEntry("2026-01-01T00:00:00Z", "first", type_, {})


def create(store: PostgresStore, run_id: str, status: str = "running") -> None:
    with store.open(run_id, 1, create=True) as run:
        run.create(head_of(run_id, status), [log("start"), VisitEntry(1, "first", {"n": 0})])


def expire_claims(url: str, run_id: str) -> None:
    """Make the run's claim run out now, as if its holder had stopped renewing it long ago."""
    import psycopg

    store = PostgresStore(url)
    with psycopg.connect(store.location.conninfo, autocommit=True) as conn:
        conn.execute(f'UPDATE "{store.location.schema}".runs SET lease_until = now() - interval \'1 second\' '
                     "WHERE run_id = %s", (run_id,))


# -- claims, leases, fencing ------------------------------------------------------------------------


def test_a_late_write_after_the_claim_was_taken_over_is_refused(url: str) -> None:
    first, second = PostgresStore(url), PostgresStore(url)
    try:
        create(first, "r1")
        with first.open("r1", 1) as late:
            head = late.load().head
            expire_claims(url, "r1")  # the holder was frozen past its lease...
            with second.open("r1", 0) as taker:  # ...and another process took the run over
                taken = taker.load().head
                taken.state = {"n": 2}
                taker.commit(taken, [log("by the taker")])
            head.state = {"n": 1}
            with pytest.raises(ClaimLost) as caught:
                late.commit(head, [log("late")])
            assert caught.value.exit_code == 4 and "another process took the run over" in caught.value.message
        assert second.head("r1").state == {"n": 2}
        assert [e.type for e in second.history("r1")] == ["start", "by the taker"]  # nothing of the late write
    finally:
        first.close()
        second.close()


def test_a_live_claim_is_never_handed_out_and_heartbeats_keep_it(url: str) -> None:
    holder, other = PostgresStore(url, lease=0.6), PostgresStore(url, lease=0.6)
    try:
        create(holder, "r1")
        with holder.open("r1", 1) as held:
            head = held.load().head
            deadline = time.monotonic() + 2.5  # four leases: only heartbeats keep the claim
            while time.monotonic() < deadline:
                assert "r1" not in other.due(T0 + timedelta(days=1))  # running, and alive: not for recovery
                with pytest.raises(RunLocked), other.open("r1", 0):
                    pass
                time.sleep(0.1)
            held.commit(head, [log("still mine")])
        with other.open("r1", 0) as now_free:
            assert now_free.load().head.run_id == "r1"
    finally:
        holder.close()
        other.close()


HOLD_AND_DIE = """
import sys, time
from tinywf_cli.stores.postgres import PostgresStore

store = PostgresStore(sys.argv[1], lease=float(sys.argv[3]))
with store.open(sys.argv[2], 5):
    print("claimed", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_stopped_processes_run_is_recovered_after_its_lease(url: str, how: str) -> None:
    store = PostgresStore(url, lease=5)
    create(store, "r1")
    proc = subprocess.Popen([sys.executable, "-c", HOLD_AND_DIE, url, "r1", "1"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "claimed\n"
        proc.send_signal(getattr(signal, how))
        stopped = time.monotonic()
        assert store.due(T0) == []  # its lease still runs
        with pytest.raises(RunLocked), store.open("r1", 0):
            pass
        with store.open("r1", 5) as taken:  # waits for the lease, not for the process
            waited = time.monotonic() - stopped
            assert taken.load().head.run_id == "r1"
        assert 0.5 < waited < 3, waited
    finally:
        proc.kill()
        proc.wait()
        store.close()


def test_waiting_for_a_claim_held_elsewhere_ends_at_its_release(url: str) -> None:
    holder, waiter = PostgresStore(url), PostgresStore(url)
    try:
        create(holder, "r1")
        released = threading.Event()

        def hold() -> None:
            with holder.open("r1", 1):
                time.sleep(0.5)
            released.set()

        thread = threading.Thread(target=hold)
        thread.start()
        time.sleep(0.1)
        started = time.monotonic()
        with waiter.open("r1", 10):
            waited = time.monotonic() - started
            assert released.wait(5)
        thread.join()
        assert 0.3 < waited < 1.0, waited  # the holder kept it 0.5 s; its release was heard at once
    finally:
        holder.close()
        waiter.close()


# -- wake-ups -----------------------------------------------------------------------------------------


@contextmanager
def listening(url: str) -> Iterator[tuple[PostgresStore, PostgresStore, threading.Event]]:
    """A worker's store already listening for changes, another store of the same database that
    holds a waiting run ``r1``, and the worker's stop event; both stores closed after."""
    worker, other = PostgresStore(url), PostgresStore(url)
    try:
        create(other, "r1", status="waiting")
        stop = threading.Event()
        worker.wait_for_work(0.5, stop)  # starts listening (and wakes once, to catch up)
        worker.wait_for_work(0.2, stop)
        yield worker, other, stop
    finally:
        worker.close()
        other.close()


def test_a_release_anywhere_wakes_a_waiting_worker_at_once(url: str) -> None:
    with listening(url) as (worker, other, stop):
        woken: list[float] = []

        def wait() -> None:
            started = time.monotonic()
            worker.wait_for_work(10, stop)
            woken.append(time.monotonic() - started)

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.2)
        with other.open("r1", 1) as run:
            run.commit(run.load().head, [log("changed")])  # a release after a change notifies
        thread.join(10)
        assert woken and woken[0] < 1.0, woken


def test_a_session_that_changed_nothing_wakes_nobody(url: str) -> None:
    with listening(url) as (worker, other, stop):
        with other.open("r1", 1) as run:
            run.load()  # looked, changed nothing (a run a worker cannot load would wake them all, forever)
        started = time.monotonic()
        worker.wait_for_work(0.6, stop)
        assert time.monotonic() - started >= 0.55


def test_wake_ups_come_back_after_the_listening_connection_is_killed(url: str) -> None:
    import psycopg

    with listening(url) as (worker, other, stop):
        with psycopg.connect(SERVER, autocommit=True) as admin:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE application_name LIKE %s", (f"tinywf {worker.location.schema} keeper%",)
                                   ).fetchone()
        assert killed is not None and killed[0] >= 1
        started = time.monotonic()
        worker.wait_for_work(10, stop)  # reconnected, LISTENed again, and woke to catch up
        assert time.monotonic() - started < 5
        time.sleep(0.3)
        started = time.monotonic()
        with other.open("r1", 1) as run:
            run.commit(run.load().head, [log("changed")])
        worker.wait_for_work(10, stop)  # and a release after that is heard
        assert time.monotonic() - started < 1.0


# -- first use, secrets, values ----------------------------------------------------------------------

FIRST_USE = """
import sys
from tinywf_cli.stores.postgres import PostgresStore

store = PostgresStore(sys.argv[1])
print(store.secret("shared").hex(), len(store.run_ids()), flush=True)
"""


def test_many_processes_using_a_new_store_at_once_agree_on_tables_and_secrets(url: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_USE, url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    assert len({out.split()[0] for out, _ in outputs}) == 1  # one key, made once
    assert {out.split()[1] for out, _ in outputs} == {"0"}


def test_any_json_text_round_trips_nul_characters_included(url: str) -> None:
    store = PostgresStore(url)
    try:
        value = {"nul": "a\x00b", "emoji": "héllo ✓ 😀", "big": 2**62, "nested": [{"k": None}], "quote": '"\\'}
        with store.open("r1", 1, create=True) as run:
            run.create(head_of("r1", state=value), [AuditEntry("2026-01-01T00:00:00Z", None, "x", value)])
        assert store.head("r1").state == value
        assert store.history("r1")[0].values == value
    finally:
        store.close()


def test_tables_newer_than_this_tinywf_are_refused(url: str) -> None:
    import psycopg

    store = PostgresStore(url)
    store.run_ids()  # made at version 1
    store.close()
    with psycopg.connect(store.location.conninfo, autocommit=True) as conn:
        conn.execute(f'UPDATE "{store.location.schema}".schema_version SET version = 99')
    with pytest.raises(StorageError) as caught:
        PostgresStore(url).run_ids()
    assert caught.value.exit_code == 5 and "newer than this tinywf knows" in caught.value.message


# -- URLs, passwords, an unreachable server ----------------------------------------------------------


def test_the_target_shown_never_holds_the_password() -> None:
    store = PostgresStore("postgresql://alice:s3cret@db.example:6543/app?schema=runs&sslmode=require")
    assert store.target == "postgresql://alice@db.example:6543/app?sslmode=require&schema=runs"
    assert "s3cret" not in repr(store)
    assert PostgresStore("postgres://db/app").target == "postgres://db/app"  # the default schema is not shown
    assert PostgresStore("postgresql://u:pw@h/d?password=x").target == "postgresql://u@h/d"


def test_an_unreachable_database_is_exit_5_naming_host_and_database_never_the_password(tmp_path: Path) -> None:
    fast = InProcessCli(make_workspace(tmp_path))
    for args in (("show", "r1"), ("list",), ("run", "flows/simple.py"), ("tick",)):
        result = fast(*args, "--store", "postgresql://root:s3cret@127.0.0.1:9/nowhere", state_dir=False)
        line = assert_error(result, 5, "127.0.0.1", "port 9", "nowhere")
        assert "s3cret" not in line and "postgresql://root@127.0.0.1:9/nowhere" in line


@pytest.mark.parametrize(("url", "fragment"), [
    ("postgresql://root:hunter2@Tail-S3cret@127.0.0.1:1/nope", "ambiguous"),  # libpq splits at the first @
    ("postgresql://root:hunter2?Tail-S3cret@127.0.0.1:1/nope", "ambiguous"),  # urllib ends the host at ?
    ("postgresql://root:hunter2#Tail-S3cret@127.0.0.1:1/nope", "ambiguous"),
    ("postgresql://root:hunter2/Tail-S3cret@127.0.0.1:1/nope", "ambiguous"),  # both: host root, port hunter2
    ("postgresql://root:hunter2@[::1:1/nope", "unclosed '['"),
    ("postgresql://root:hunter2[Tail-S3cret@127.0.0.1:1/nope", "unclosed '['"),
], ids=["two-at", "question-mark", "hash", "slash", "ipv6-unclosed", "bracket-in-password"])
def test_a_store_url_read_two_ways_or_not_at_all_is_exit_2_and_never_shows_the_password(
        tmp_path: Path, url: str, fragment: str) -> None:
    for env in ({}, {"TINYWF_STORE": url}):
        args = ["list"] if env else ["list", "--store", url]
        result = subprocess.run([TINYWF, *args], cwd=tmp_path, env=clean_env(**env), capture_output=True,
                                text=True, check=False)
        line = assert_error(result, 2, fragment)
        assert "hunter2" not in line and "Tail" not in line and "S3cret" not in line, line
    assert not (tmp_path / "state").exists()


def test_a_password_written_with_percent_escapes_is_taken_whole_and_never_shown(tmp_path: Path) -> None:
    store = PostgresStore("postgresql://root:hunter2%40Tail-S3cret@127.0.0.1:9/nope")
    assert store.target == "postgresql://root@127.0.0.1:9/nope"
    fast = InProcessCli(make_workspace(tmp_path))
    line = assert_error(fast("list", "--store", "postgresql://root:hunter2%40Tail-S3cret@127.0.0.1:9/nope",
                             state_dir=False), 5, "host 127.0.0.1, port 9, database nope")
    assert "hunter2" not in line and "S3cret" not in line


def test_a_database_that_does_not_exist_is_exit_5_saying_so(tmp_path: Path) -> None:
    require_server()
    fast = InProcessCli(make_workspace(tmp_path))
    server = SERVER.rsplit("/", 1)[0]
    result = fast("show", "r1", "--store", f"{server}/tinywf_no_such_db", state_dir=False)
    assert_error(result, 5, "tinywf_no_such_db", "does not exist")


def test_a_bad_schema_name_is_exit_2(tmp_path: Path) -> None:
    fast = InProcessCli(make_workspace(tmp_path))
    assert_error(fast("list", "--store", "postgresql://h/d?schema=no-dash", state_dir=False), 2, "schema")


WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # as if it were not installed
from tinywf_cli.cli import main
main(sys.argv[1:])
"""


def test_without_psycopg_a_url_says_how_to_install_it(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", WITHOUT_PSYCOPG, "list", "--store", "postgresql://h/d"],
                            capture_output=True, text=True, check=False, cwd=tmp_path)
    assert_error(result, 2, 'pip install "tinywf[postgres]"')
    files = subprocess.run([sys.executable, "-c", WITHOUT_PSYCOPG, "list", "--state-dir", "state"],
                           capture_output=True, text=True, check=False, cwd=tmp_path)
    assert files.returncode == 0, describe(files)  # a directory never needs it


def test_reading_runs_in_a_directory_never_imports_psycopg(tmp_path: Path) -> None:
    code = ("import sys; from tinywf_cli.cli import main\n"
            "try:\n    main(['list', '--state-dir', 'state'])\n"
            "except SystemExit:\n    pass\n"
            "assert 'psycopg' not in sys.modules, 'psycopg was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, describe(result)


# -- copy -------------------------------------------------------------------------------------------------


def seed_runs(fast: InProcessCli) -> list[str]:
    """Runs of every kind: finished, waiting on an event and a timer, failed, with signals and queued events."""
    fast.start("flows/simple.py", "s1")
    fast.start("flows/guess_game.py", "g1", "--input", '{"number": 42}')
    fast.json("resolve", "g1", "ask_0", "10")
    fast.start("flows/user_onboarding.py", "u1")
    fast.start("flows/fail.py", "f1", code=1, env={"TINYWF_TEST_FAIL": "1"})
    fast.json("send", "f1", "note", "kept for later")
    fast.start("flows/interval_payment.py", "sub-1")
    fast.json("signal", "sub-1", "add_usage", '{"item": "api", "amount": 3}')
    fast.start("flows/dag_task.py", "d1")
    return ["d1", "f1", "g1", "s1", "sub-1", "u1"]


def documents(cli: Cli, run_ids: list[str]) -> dict[str, str]:
    """``show --json`` of each run, as printed (the bytes)."""
    found = {}
    for run_id in run_ids:
        result = cli("show", run_id, "--json")
        assert result.returncode == 0, describe(result)
        found[run_id] = result.stdout
    return found


def test_copy_a_directory_into_postgresql_and_back_keeps_every_document(tmp_path: Path, url: str) -> None:
    source = InProcessCli(make_workspace(tmp_path / "ws"))
    run_ids = seed_runs(source)
    before = documents(source, run_ids)
    report = source.json("copy", "--to", url)
    assert sorted(report["copied"]) == run_ids and report["skipped"] == []
    assert "?schema=" in report["to"]
    database = InProcessCli(source.workspace, store=url)
    assert documents(database, run_ids) == before
    back = tmp_path / "back"
    assert sorted(database.json("copy", "--to", str(back))["copied"]) == run_ids
    assert documents(InProcessCli(source.workspace, back), run_ids) == before
    # the copies are live runs: they go on in the database
    assert database.json("resolve", "g1", "ask_1", "42")["status"] == "finished"


def test_copy_refuses_ids_that_exist_unless_told_to_skip_them(tmp_path: Path, url: str) -> None:
    source = InProcessCli(make_workspace(tmp_path / "ws"))
    source.start("flows/simple.py", "s1")
    source.start("flows/guess_game.py", "g1")
    database = InProcessCli(source.workspace, store=url)
    database.start("flows/simple.py", "g1")
    line = assert_error(source("copy", "--to", url), 4, "'g1'", "--skip-existing")
    assert "s3cret" not in line
    assert [r["run_id"] for r in database.json("list")["runs"]] == ["g1"]  # nothing was copied
    report = source.json("copy", "--to", url, "--skip-existing")
    assert report["copied"] == ["s1"] and [s["run_id"] for s in report["skipped"]] == ["g1"]
    people = source("copy", "--to", url, "--skip-existing")
    assert people.returncode == 0 and "copied 0 runs" in people.stdout and "2 skipped" in people.stdout


def test_copy_takes_the_schedules_along_and_refuses_a_name_that_exists(tmp_path: Path, url: str) -> None:
    source = InProcessCli(make_workspace(tmp_path / "ws"))

    def schedules(cli: InProcessCli, *args: str) -> Any:
        result = cli("schedule", args[0], *cli.store_args, "--json", *args[1:], state_dir=False)
        assert result.returncode == 0, describe(result)
        return json.loads(result.stdout)

    schedules(source, "add", "nightly", "flows/simple.py", "--cron", "0 2 * * *", "--tz", "Europe/Paris")
    schedules(source, "add", "hourly", "flows/simple.py", "--cron", "@hourly")
    schedules(source, "pause", "hourly")
    source.start("flows/simple.py", "s1")
    before = schedules(source, "list")
    report = source.json("copy", "--to", url)
    assert report["copied"] == ["s1"]
    assert sorted(report["schedules"]["copied"]) == ["hourly", "nightly"] and report["schedules"]["skipped"] == []
    database = InProcessCli(source.workspace, store=url)
    assert schedules(database, "list") == before  # paused or not, the same next slot
    back = tmp_path / "back"
    assert sorted(database.json("copy", "--to", str(back))["schedules"]["copied"]) == ["hourly", "nightly"]
    assert schedules(InProcessCli(source.workspace, back), "list") == before
    # a name taken at the target stops the copy before anything is copied, unless told to skip it
    other = tmp_path / "other"
    target = InProcessCli(source.workspace, other)
    schedules(target, "add", "nightly", "flows/simple.py", "--cron", "@daily")
    assert_error(source("copy", "--to", str(other)), 4, "schedule 'nightly'", "--skip-existing")
    assert target.json("list")["runs"] == [] and len(schedules(target, "list")["schedules"]) == 1
    report = source.json("copy", "--to", str(other), "--skip-existing")
    assert report["copied"] == ["s1"] and report["schedules"]["copied"] == ["hourly"]
    assert [s["name"] for s in report["schedules"]["skipped"]] == ["nightly"]
    people = source("copy", "--to", str(other), "--skip-existing")
    assert people.returncode == 0 and "copied 0 runs" in people.stdout and "0 schedules, 2 skipped" in people.stdout


def test_copy_through_the_installed_command(tmp_path: Path, url: str) -> None:
    cli = Cli(make_workspace(tmp_path / "ws"))
    cli.start("flows/simple.py", "s1")
    result = subprocess.run([TINYWF, "copy", "--state-dir", str(cli.state_dir), "--to", url, "--json"],
                            cwd=cli.workspace, env=clean_env(), capture_output=True, text=True, check=False)
    assert result.returncode == 0, describe(result)
    assert json.loads(result.stdout)["copied"] == ["s1"]
    assert os.path.isdir(cli.state_dir)


CLAIM_DUE = """
import sys, json
from datetime import datetime, timezone
from tinywf_cli.stores.postgres import PostgresStore

store = PostgresStore(sys.argv[1])
store.run_ids()  # connected
print("ready", flush=True)
sys.stdin.readline()  # all start claiming at once
got = []
while (session := store.claim_due(datetime(2030, 1, 1, tzinfo=timezone.utc))) is not None:
    got.append(session.run_id)  # kept claimed: each process takes a run at most once
print(json.dumps(got), flush=True)
"""


def claim_in_processes(url: str, count: int) -> list[list[str]]:
    """What each of ``count`` processes claimed, all starting at once."""
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM_DUE, url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(count)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]


def test_processes_claiming_due_runs_at_once_each_get_different_ones_and_never_a_live_claim(url: str) -> None:
    store = PostgresStore(url)
    try:
        for i in range(200):
            create(store, f"r{i:03d}", status="waiting")
        with store.open("r000", 1) as held:
            head = held.load().head
            head.status = "running"
            held.commit(head, [])  # running, and held by a live process: never handed out
            claimed = claim_in_processes(url, 4)
        everything = [run_id for got in claimed for run_id in got]
        assert len(everything) == len(set(everything)) == 0  # waiting runs without a due time are not due
        import psycopg

        with psycopg.connect(store.location.conninfo, autocommit=True) as conn:
            conn.execute(f'UPDATE "{store.location.schema}".runs SET due_at = %s', (T0,))
        claimed = claim_in_processes(url, 4)
        everything = [run_id for got in claimed for run_id in got]
        assert len(everything) == len(set(everything)) == 200  # each once; r000 too: its holder released it
        assert sum(1 for got in claimed if got) >= 2, [len(got) for got in claimed]  # they shared the work
    finally:
        store.close()


HANDOFF = '''
from tinywf_cli import Workflow, step


class Handoff(Workflow):
    """Waits for go; a 1 ms timer then hands the rest to a worker."""

    @step
    def wait(self):
        self.state["go"] = yield self.wait_event("go")
        yield self.sleep("handoff", 0.001)
        self.state["done"] = True
        return None
'''


def test_a_resolve_here_wakes_a_worker_there_which_finishes_the_run_at_once(tmp_path: Path, url: str) -> None:
    (tmp_path / "handoff.py").write_text(HANDOFF)
    worker = subprocess.Popen([TINYWF, "worker", "--store", url, "--poll", "60", "--json"], cwd=tmp_path,
                              env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    from tinywf_cli import Runtime

    runtime = Runtime(url)
    try:
        took = []
        for _ in range(40):
            run = runtime.start(str(tmp_path / "handoff.py"))
            time.sleep(0.03)
            started = time.monotonic()
            assert runtime.resolve(run.run_id, "go", 1).status == "waiting"  # on its 1 ms timer
            while runtime.get(run.run_id).status != "finished":
                assert time.monotonic() - started < 10, "the worker was not woken (its poll is 60 s)"
                time.sleep(0.002)
            took.append(time.monotonic() - started)
        assert sorted(took)[len(took) // 2] < 0.5, took
    finally:
        runtime.close()
        worker.send_signal(signal.SIGTERM)
        _, errors = worker.communicate(timeout=30)
    assert worker.returncode == 0, errors



NAPS = '''
from tinywf_cli import Workflow, step


def work(n: int) -> int:
    return n + 1


class Naps(Workflow):
    """Three short naps, an action after each."""

    @step
    def nap(self):
        yield self.sleep("nap", 0.2)
        self.state["n"] = yield self.action("work", work, self.state.get("n", 0))
        return self.nap if self.state["n"] < 3 else None
'''


def test_two_workers_never_report_the_runs_the_other_one_holds(tmp_path: Path, url: str) -> None:
    (tmp_path / "naps.py").write_text(NAPS)
    env = clean_env()
    from tinywf_cli import Runtime

    runtime = Runtime(url)
    try:
        workers = [subprocess.Popen([TINYWF, "worker", "--store", url, "--poll", "0.1"], cwd=tmp_path, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for i in range(4):
            runtime.start(str(tmp_path / "naps.py"), run_id=f"pg-exp-{i}")
        deadline = time.monotonic() + 60
        while {r.status for r in runtime.list().runs} != {"finished"}:
            assert time.monotonic() < deadline, "the workers never finished the runs"
            time.sleep(0.05)
    finally:
        runtime.close()
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
    outputs = [worker.communicate(timeout=30) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in outputs]
    advanced = [line for out, _ in outputs for line in out.splitlines() if line.startswith("advanced ")]
    assert len(advanced) == 4 * 3, advanced  # each run: its three naps
    for out, _ in outputs:  # a run the other worker holds is none of this one's business
        assert "skipped " not in out and "locked" not in out, out
        summaries = [line for line in out.splitlines() if " due, " in line]
        assert all(line.endswith(", 0 skipped") and not line.startswith("0 due") for line in summaries), out
