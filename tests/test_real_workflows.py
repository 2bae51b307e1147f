"""Real workflows, not just demos: compensation, child runs, event channels, deadlines, fan-out.

Ports of public samples (a money transfer with a refund, a trip booked as a saga, a parent
with children) run in memory and on the file store, with "deaths" after any commit.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from commit_hooks import on_commit

from tinywf_cli import ActionFailed, ChildFailed, EventTimeout, Retry, RunLocked, Runtime, Workflow, step
from tinywf_cli.clock import ManualClock
from tinywf_cli.stores.journal import AuditEntry, SlotEntry
from tinywf_cli.testing import MemoryRuntime

Steps = Generator[Any, Any, Any]
T0 = "2026-01-01T00:00:00Z"


class ProcessDied(KeyboardInterrupt):
    """Stands for the process being killed (a real interrupt: tinywf lets it through)."""


class Calls:
    """Counts calls to the stand-in services of a test."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.order: list[str] = []

    def note(self, name: str) -> None:
        self.counts[name] += 1
        self.order.append(name)


# -- compensation: the money transfer -----------------------------------------------------------------


class InsufficientFunds(Exception):
    """The bank refuses the deposit: retrying will not help."""


TRANSFER = Calls()


def withdraw(account: str, amount: int) -> str:
    TRANSFER.note("withdraw")
    return f"w-{account}-{amount}"


def deposit(account: str, amount: int) -> str:
    TRANSFER.note("deposit")
    raise InsufficientFunds(f"account {account} is frozen")


def refund(account: str, amount: int) -> str:
    TRANSFER.note("refund")
    return f"r-{account}-{amount}"


class MoneyTransfer(Workflow):
    """Withdraw, deposit; when the deposit fails for good, refund the withdrawal."""

    @step
    def transfer(self) -> Steps:
        self.state["withdrawal"] = yield self.action("withdraw", withdraw, "A", 100)
        try:
            self.state["deposit"] = yield self.action(
                "deposit", deposit, "B", 100,
                retry=Retry(attempts=5, delay=1, non_retryable=(InsufficientFunds,)))
        except ActionFailed as failed:
            self.state["failure"] = {"key": failed.key, "type": failed.error_type, "message": failed.message,
                                     "attempts": failed.attempts}
            self.state["refund"] = yield self.action("refund", refund, "A", 100)


def kill_after(runtime: Runtime, n: int) -> Callable[[], int]:
    """Make the process "die" right after commit ``n`` (once); returns the commit count so far."""
    count = [0]

    def hook(head: Any, entries: Any) -> None:
        count[0] += 1
        if count[0] == n:
            raise ProcessDied

    on_commit(runtime.store, hook)
    return lambda: count[0]


def test_a_failed_deposit_is_refunded_once(rt: MemoryRuntime) -> None:
    TRANSFER.__init__()  # type: ignore[misc]
    run = rt.start(MoneyTransfer, run_id="t1")
    assert run.status == "finished"
    assert run.state["failure"] == {"key": "deposit", "type": "InsufficientFunds",
                                    "message": "account B is frozen", "attempts": 1}
    assert run.state["refund"] == "r-A-100"
    assert TRANSFER.counts == {"withdraw": 1, "deposit": 1, "refund": 1}
    logs = [(e.type, e.values.get("key")) for e in rt.get("t1").logs]
    assert ("action_failed", "deposit") in logs and ("action", "refund") in logs
    assert ("action", "deposit") not in logs  # the audit log never shows the failed deposit as done


@pytest.mark.parametrize("store", ["memory", "files"])
def test_a_death_between_the_failed_deposit_and_the_refund_never_calls_the_deposit_again(
        store: str, tmp_path: Path) -> None:
    TRANSFER.__init__()  # type: ignore[misc]
    clock = ManualClock(T0)
    first: Runtime = Runtime(tmp_path / "state", clock=clock) if store == "files" else MemoryRuntime(T0)
    armed = [True]

    def hook(head: Any, entries: Any) -> None:
        if armed[0] and any(isinstance(e, AuditEntry) and e.type == "action_failed" for e in entries):
            armed[0] = False
            raise ProcessDied  # the deposit's failure is on record; the refund has not run

    on_commit(first.store, hook)
    with pytest.raises(ProcessDied):
        first.start(MoneyTransfer, run_id="t1")
    assert TRANSFER.counts == {"withdraw": 1, "deposit": 1}
    again = Runtime(tmp_path / "state", clock=clock) if store == "files" else first
    report = again.tick()
    assert [a.status for a in report.advanced] == ["finished"]
    assert TRANSFER.counts == {"withdraw": 1, "deposit": 1, "refund": 1}
    assert again.get("t1").state["refund"] == "r-A-100"


# -- the trip, a saga --------------------------------------------------------------------------------------

TRIP_FLOW = Path(__file__).resolve().parent.parent / "flows" / "trip_booking.py"


def trip_calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_the_trip_undoes_what_was_booked_in_reverse_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "calls"
    monkeypatch.setenv("TRIP_CALLS", str(calls))
    rt = Runtime(tmp_path / "state", clock=ManualClock(T0))
    run = rt.start(f"{TRIP_FLOW}:TripBooking", input={"fail": "car"}, run_id="trip")
    assert run.status == "finished" and run.state["outcome"] == "cancelled"
    assert run.state["booked"] == {"flight": "flight-1", "hotel": "hotel-1"}
    assert trip_calls(calls) == ["book flight", "book hotel", "book car", "undo hotel", "undo flight"]
    fine = rt.start(f"{TRIP_FLOW}:TripBooking", run_id="trip-ok")
    assert fine.state["outcome"] == "booked" and set(fine.state["booked"]) == {"flight", "hotel", "car"}


def test_the_trip_undoes_each_booking_exactly_once_whatever_commit_the_process_dies_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commits = None
    n = 1
    while commits is None or n <= commits:
        folder = tmp_path / f"kill-{n}"
        calls = folder / "calls"
        folder.mkdir()
        monkeypatch.setenv("TRIP_CALLS", str(calls))
        clock = ManualClock(T0)
        first = Runtime(folder / "state", clock=clock)
        counted = kill_after(first, n)
        try:
            first.start(f"{TRIP_FLOW}:TripBooking", input={"fail": "car"}, run_id="trip")
            commits = counted()  # no death: this many commits in all
        except ProcessDied:
            again = Runtime(folder / "state", clock=clock)
            for _ in range(5):
                if again.get("trip").status == "finished":
                    break
                again.tick()
        done = Runtime(folder / "state", clock=clock).get("trip")
        assert done.status == "finished" and done.state["undone"] == ["hotel", "flight"], n
        made = Counter(trip_calls(calls))
        # the death comes after a commit, never inside an action: nothing runs twice
        assert made == {"book flight": 1, "book hotel": 1, "book car": 1, "undo hotel": 1, "undo flight": 1}, n
        assert trip_calls(calls)[-2:] == ["undo hotel", "undo flight"], n
        n += 1
    assert commits is not None and commits >= 6


# -- child runs -----------------------------------------------------------------------------------------

CHILDREN = Calls()


def fetch(name: str) -> str:
    CHILDREN.note(name)
    return name.upper()


def explode() -> str:
    CHILDREN.note("explode")
    raise RuntimeError("the child broke")


class Napper(Workflow):
    """Sleeps an hour, then fetches."""

    @step
    def nap(self) -> Steps:
        yield self.sleep("nap", 3600)
        self.state["got"] = yield self.action("fetch", fetch, "napper")


class Breaker(Workflow):
    """Fails in its action."""

    @step
    def only(self) -> Steps:
        yield self.action("explode", explode)


class Quick(Workflow):
    """Fetches at once."""

    @step
    def only(self) -> Steps:
        self.state["got"] = yield self.action("fetch", fetch, self.state.get("name", "quick"))


class Family(Workflow):
    """Three children: one waited for through a timer, one that fails, one started and left alone."""

    @step
    def start(self) -> Steps:
        self.state["background"] = yield self.start_child("bg", Quick, input={"name": "background"})
        self.state["napper"] = yield self.child("napper", Napper)
        try:
            yield self.child("breaker", Breaker)
        except ChildFailed as failed:
            self.state["breaker"] = {"run_id": failed.run_id, "status": failed.status,
                                     "error": (failed.error or {}).get("type")}
        return None


def test_a_parent_with_three_children_in_memory(rt: MemoryRuntime) -> None:
    CHILDREN.__init__()  # type: ignore[misc]
    run = rt.start(Family, run_id="p")
    assert run.status == "waiting"
    assert [(p.kind, p.key, p.request) for p in run.pending] == [("child", "napper", {"run_id": "p.napper"})]
    assert rt.get("p.bg").status == "finished" and rt.get("p.bg").parent == "p"
    assert rt.get("p.napper").status == "waiting"
    rt.clock.advance(3600)
    report = rt.tick()
    assert {a.run_id: a.status for a in report.advanced} == {"p.napper": "finished", "p": "finished",
                                                             "p.breaker": "failed"}
    parent = rt.get("p")
    assert parent.state == {"background": "p.bg", "napper": {"got": "NAPPER"},
                            "breaker": {"run_id": "p.breaker", "status": "failed", "error": "RuntimeError"}}
    assert CHILDREN.counts == {"background": 1, "napper": 1, "explode": 1}
    assert parent.children == ["p.bg", "p.napper", "p.breaker"]
    assert rt.tick().due == 0  # every child woke its parent: nothing is left due


KILLER = {"armed": True}


def dying_fetch(name: str) -> str:
    CHILDREN.note(name)
    if KILLER["armed"]:
        KILLER["armed"] = False
        raise ProcessDied
    return name.upper()


class DyingChild(Workflow):
    """Its process dies in its action the first time."""

    @step
    def only(self) -> Steps:
        self.state["got"] = yield self.action("fetch", dying_fetch, "child")


class WaitingParent(Workflow):
    """Waits for a DyingChild."""

    @step
    def only(self) -> Steps:
        self.state["child"] = yield self.child("kid", DyingChild)


def test_a_child_killed_mid_action_is_recovered_and_its_parent_gets_the_result(tmp_path: Path) -> None:
    CHILDREN.__init__()  # type: ignore[misc]
    KILLER["armed"] = True
    clock = ManualClock(T0)
    with pytest.raises(ProcessDied):
        Runtime(tmp_path / "state", clock=clock).start(WaitingParent, run_id="p")
    again = Runtime(tmp_path / "state", clock=clock)  # a new process: classes found by their module
    assert again.get("p").status == "waiting" and again.get("p.kid").status == "running"
    again.tick()
    assert again.get("p.kid").status == "finished"
    assert again.get("p").state == {"child": {"got": "CHILD"}} and again.get("p").status == "finished"
    assert CHILDREN.counts == {"child": 2}  # once in the dead process, once recovered


def test_cancelling_a_parent_cancels_its_unfinished_children(rt: MemoryRuntime) -> None:
    rt.start(Family, run_id="p")
    cancelled = rt.cancel("p", reason="no longer needed")
    assert cancelled.status == "cancelled"
    assert rt.get("p.napper").status == "cancelled"
    assert rt.get("p.bg").status == "finished"  # it had ended already
    assert rt.tick().due == 0


def test_a_child_id_taken_by_another_run_fails_the_parent_clearly(rt: MemoryRuntime) -> None:
    rt.start(Napper, run_id="p.napper")

    class Parent(Workflow):
        @step
        def only(self) -> Steps:
            yield self.child("napper", Napper)

    run = rt.start(Parent, run_id="p")
    assert run.status == "failed" and "already taken" in (run.error.message if run.error else "")


# -- a Runtime call on the run's own id, from its action --------------------------------------------------


SEEN: dict[str, Any] = {}


def poke_myself(store: str, run_id: str) -> str:
    try:
        Runtime(store, lock_timeout=30).send(run_id, "note", "hi")
    except RunLocked as exc:
        SEEN["message"] = exc.message
        return "refused"
    return "sent"


def poke_sibling(store: str) -> str:
    Runtime(store).send("sibling", "note", "hi")
    return "sent"


class Sibling(Workflow):
    """Waits for a note."""

    @step
    def wait(self) -> Steps:
        self.state["note"] = yield self.wait_event("note")


class Poker(Workflow):
    """Uses Runtime from its actions: on itself (refused), on its sibling (fine)."""

    @step
    def only(self) -> Steps:
        self.state["self"] = yield self.action("self", poke_myself, self.store_target, self.run_id)
        self.state["sibling"] = yield self.action("sibling", poke_sibling, self.store_target)


def test_an_action_using_runtime_on_its_own_run_is_refused_at_once(tmp_path: Path) -> None:
    rt = Runtime(tmp_path / "state", clock=ManualClock(T0))
    rt.start(Sibling, run_id="sibling")
    started = datetime.now(UTC)
    run = rt.start(Poker, run_id="poker")
    assert (datetime.now(UTC) - started).total_seconds() < 10  # refused at once, not after the lock timeout
    assert run.state == {"self": "refused", "sibling": "sent"}, run.error
    assert "this very call" in SEEN["message"]
    assert rt.get("sibling").state == {"note": "hi"}


# -- channels, deadlines ------------------------------------------------------------------------------------


class Guesses(Workflow):
    """Three guesses on one key, within one deadline."""

    @step
    def play(self) -> Steps:
        deadline = datetime(2026, 1, 1, 0, 3, tzinfo=UTC)
        guesses = []
        try:
            for _ in range(3):
                guesses.append((yield self.wait_event("guess", type=int, timeout=deadline)))
        except EventTimeout:
            self.state["timed_out"] = True
        self.state["guesses"] = guesses


def test_three_waits_on_one_key_take_three_values_in_order(rt: MemoryRuntime) -> None:
    run = rt.start(Guesses, run_id="g")
    assert [p.resume_id for p in run.pending] == ["guess@1"]
    run = rt.resolve("g", "guess", 5)
    assert [p.resume_id for p in run.pending] == ["guess@1.2"]
    assert [p.due_at for p in run.pending] == [datetime(2026, 1, 1, 0, 3, tzinfo=UTC)]
    run = rt.send("g", "guess", 6)
    run = rt.send("g", "guess", 7)
    assert run.status == "finished" and run.state == {"guesses": [5, 6, 7]}


def test_values_sent_early_on_a_channel_are_taken_one_per_wait(rt: MemoryRuntime) -> None:
    class Later(Workflow):
        @step
        def nap(self) -> Steps:
            yield self.sleep("nap", 10)
            return self.play

        play = Guesses.play

    rt.start(Later, run_id="g")
    for value in (1, 2, 3):
        rt.send("g", "guess", value)
    rt.clock.advance(10)
    rt.tick()
    assert rt.get("g").state == {"guesses": [1, 2, 3]}


def test_a_deadline_shared_by_three_waits_times_out_the_one_pending(rt: MemoryRuntime) -> None:
    rt.start(Guesses, run_id="g")
    rt.resolve("g", "guess", 5)
    rt.clock.advance(timedelta(minutes=3))
    rt.tick()
    assert rt.get("g").state == {"timed_out": True, "guesses": [5]}


def test_a_deadline_already_past_times_out_at_once(rt: MemoryRuntime) -> None:
    class Late(Workflow):
        @step
        def only(self) -> Steps:
            try:
                self.state["value"] = yield self.wait_event("x", timeout=timedelta(seconds=-30))
            except EventTimeout:
                self.state["value"] = "too late"
            try:
                yield self.wait_event("y", timeout=datetime(2020, 1, 1, tzinfo=UTC))
            except EventTimeout:
                self.state["y"] = "too late"

    run = rt.start(Late)
    assert run.status == "finished" and run.state == {"value": "too late", "y": "too late"}


def test_a_value_queued_before_a_past_deadline_still_wins(rt: MemoryRuntime) -> None:
    class Late(Workflow):
        @step
        def nap(self) -> Steps:
            yield self.sleep("nap", 10)
            return self.take

        @step
        def take(self) -> Steps:
            try:
                self.state["value"] = yield self.wait_event("x", timeout=0)
            except EventTimeout:
                self.state["value"] = "too late"

    rt.start(Late, run_id="l")
    rt.send("l", "x", "early")
    rt.clock.advance(10)
    rt.tick()
    assert rt.get("l").state == {"value": "early"}


def test_a_naive_datetime_deadline_is_refused_clearly(rt: MemoryRuntime) -> None:
    class Naive(Workflow):
        @step
        def only(self) -> Steps:
            yield self.wait_event("x", timeout=datetime(2030, 1, 1))

    run = rt.start(Naive)
    assert run.status == "failed" and "timezone-aware" in (run.error.message if run.error else "")


# -- fan-out -------------------------------------------------------------------------------------------------


def test_parallel_of_an_empty_dict_gives_an_empty_dict(rt: MemoryRuntime) -> None:
    class Empty(Workflow):
        @step
        def only(self) -> Steps:
            self.state["r"] = yield self.parallel({})
            self.state["again"] = yield self.parallel({})

    assert rt.start(Empty).state == {"r": {}, "again": {}}


def test_a_failed_part_raises_after_the_others_finished_and_were_recorded(rt: MemoryRuntime) -> None:
    calls = Calls()

    def good(name: str) -> str:
        calls.note(name)
        return name

    def bad() -> str:
        calls.note("bad")
        raise ValueError("no")

    class Fan(Workflow):
        @step
        def only(self) -> Steps:
            try:
                yield self.parallel({"a": self.action("a", good, "a"), "bad": self.action("bad", bad),
                                     "c": self.action("c", good, "c")})
            except ActionFailed as failed:
                self.state["failed"] = failed.key
            again = yield self.action("after", good, "after")
            self.state["after"] = again

    run = rt.start(Fan, run_id="f")
    assert run.state == {"failed": "bad", "after": "after"}
    assert calls.counts == {"a": 1, "bad": 1, "c": 1, "after": 1}


def run_sizes(root: Path, run_id: str) -> int:
    return sum(p.stat().st_size for p in root.iterdir() if p.name.startswith(run_id) and p.is_file())


@pytest.mark.slow
def test_a_fan_out_of_3000_actions_stores_about_what_the_same_actions_in_sequence_do(tmp_path: Path) -> None:
    threads: list[int] = []

    def work(i: int) -> int:
        threads.append(threading.active_count())
        return i

    class Fan(Workflow):
        @step
        def only(self) -> Steps:
            results = yield self.parallel({f"a{i}": self.action(f"a{i}", work, i) for i in range(3000)},
                                          max_workers=8)
            self.state["total"] = sum(results.values())

    class Sequence(Workflow):
        @step
        def only(self) -> Steps:
            total = 0
            for i in range(3000):
                total += yield self.action(f"a{i}", work, i)
            self.state["total"] = total

    rt = Runtime(tmp_path / "state", clock=ManualClock(T0))
    before = threading.active_count()
    assert rt.start(Fan, run_id="fan").state == {"total": sum(range(3000))}
    assert max(threads) <= before + 8 + 2  # max_workers, and not one thread per action
    assert rt.start(Sequence, run_id="seq").state == {"total": sum(range(3000))}
    fan, seq = run_sizes(tmp_path / "state", "fan"), run_sizes(tmp_path / "state", "seq")
    print(f"3,000 actions: parallel {fan:,} bytes, sequence {seq:,} bytes ({fan / seq:.2f}x)")
    assert fan <= 3 * seq
    assert len(rt.get("fan").logs) >= 3000
    parts = [e for e in rt.store.entries("fan") if isinstance(e, SlotEntry)]
    assert len(parts) <= 2  # the parallel slot is recorded once; each part on its own entry
