"""What every store promises, run against each store: memory, files, PostgreSQL.

One suite, every backend (the ``store_kind`` fixture of ``conftest.py``): create, commit and
load; the audit history; the current visit's slots; the due index; locks and their
timeouts; deletion; secrets; recovery after a session that failed; damaged data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tinywf_cli.errors import RunExists, RunLocked, RunNotFound, StorageError
from tinywf_cli.model import FlowRef, PendingResume, RunHead
from tinywf_cli.stores.base import RUNNING_DUE, Store
from tinywf_cli.stores.journal import AuditEntry, PartEntry, Slot, SlotEntry, VisitEntry

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def head_of(run_id: str, status: str = "running", wake_at: datetime | None = None, **fields: object) -> RunHead:
    head = RunHead(run_id=run_id, workflow="flows/x.py:X", flow=FlowRef(file="/x.py", cls="X"),
                   status=status, step="first", state={"n": 0}, visit_state={"n": 0},  # type: ignore[arg-type]
                   created_at=T0, updated_at=T0, wake_at=wake_at)
    for name, value in fields.items():
        setattr(head, name, value)
    return head


def log(type_: str, **values: object) -> AuditEntry:
    return AuditEntry("2026-01-01T00:00:00Z", "first", type_, dict(values))


def slot(index: int, key: str, status: str = "done", **fields: object) -> SlotEntry:
    return SlotEntry(Slot(index, "action", key, status, **fields).to_json())  # type: ignore[arg-type]


def create(store: Store, head: RunHead, *entries: object) -> None:
    with store.open(head.run_id, 1, create=True) as run:
        run.create(head, [log("start"), VisitEntry(1, "first", {"n": 0}), *entries])  # type: ignore[list-item]


# -- create, commit, load ----------------------------------------------------------------------------------


def test_a_created_run_loads_back_as_it_was_stored(store: Store) -> None:
    head = head_of("r1", state={"n": 1, "text": "héllo ✓"})
    create(store, head, slot(0, "a", value={"x": [1, 2]}))
    with store.open("r1", 1) as run:
        loaded = run.load()
    assert loaded.head == head
    assert [(s.index, s.key, s.value) for s in loaded.slots] == [(0, "a", {"x": [1, 2]})]
    assert store.head("r1") == head
    assert store.run_ids() == ["r1"]


def test_a_run_id_is_created_once(store: Store) -> None:
    create(store, head_of("r1"))
    with pytest.raises(RunExists), store.open("r1", 1, create=True) as run:
        run.create(head_of("r1"), [])
    assert store.head("r1").status == "running"


def test_a_commit_replaces_the_head_and_appends_entries(store: Store) -> None:
    create(store, head_of("r1"))
    with store.open("r1", 1) as run:
        loaded = run.load()
        loaded.head.state = {"n": 2}
        loaded.head.status = "waiting"
        run.commit(loaded.head, [log("one"), slot(0, "a")])
        loaded.head.state = {"n": 3}
        run.commit(loaded.head, [log("two"), slot(0, "a", value=5)])  # a later entry for a slot wins
    with store.open("r1", 1) as run:
        again = run.load()
    assert again.head.state == {"n": 3} and again.head.status == "waiting"
    assert [s.value for s in again.slots] == [5]
    assert [e.type for e in store.history("r1")] == ["start", "one", "two"]


def test_what_is_read_back_is_a_copy_and_the_head_is_copied_at_commit(store: Store) -> None:
    create(store, head_of("r1"), slot(0, "a", value={"xs": [1]}))
    with store.open("r1", 1) as run:
        head = run.load().head
        head.state = {"n": [1]}
        run.commit(head, [log("one", items=[1]), VisitEntry(2, "second", {"n": [1]})])
        head.state["n"].append("changed after the commit")  # the caller's head, not the store's
    for entry in store.entries("r1"):  # change everything read back
        if isinstance(entry, AuditEntry):
            entry.values["changed"] = True
        elif isinstance(entry, VisitEntry) and isinstance(entry.state, dict):
            entry.state["changed"] = True
        elif isinstance(entry, SlotEntry):
            entry.slot["value"]["changed"] = True
    store.head("r1").state["n"].append("changed a read head")
    assert store.head("r1").state == {"n": [1]}
    assert [e.values for e in store.history("r1")] == [{}, {"items": [1]}]
    assert [e.state for e in store.entries("r1") if isinstance(e, VisitEntry)] == [{"n": 0}, {"n": [1]}]
    assert [e.slot.get("value") for e in store.entries("r1") if isinstance(e, SlotEntry)] == [{"xs": [1]}]


def test_loading_gives_only_the_current_visits_slots(store: Store) -> None:
    create(store, head_of("r1"), slot(0, "a"), slot(1, "b"))
    with store.open("r1", 1) as run:
        head = run.load().head
        head.visit = 2
        run.commit(head, [log("transition"), VisitEntry(2, "second", {"n": 5}), slot(0, "c")])
    assert [s.key for s in store.load("r1").slots] == ["c"]
    visits = [e for e in store.entries("r1") if isinstance(e, VisitEntry)]
    assert [(v.n, v.step, v.state) for v in visits] == [(1, "first", {"n": 0}), (2, "second", {"n": 5})]


def test_parts_fold_into_their_parallel_slot(store: Store) -> None:
    parallel = Slot(0, "parallel", 'parallel["x","y"]', "running", parts={})
    create(store, head_of("r1"), SlotEntry(parallel.to_json()))
    with store.open("r1", 1) as run:
        head = run.load().head
        run.commit(head, [PartEntry(0, Slot(0, "action", "x", "done", value=1).to_json())])
        run.commit(head, [PartEntry(0, Slot(0, "action", "y", "failed", error={"type": "E", "message": "m"},
                                            attempt=1).to_json())])
    parts = store.load("r1").slots[0].parts
    assert parts is not None and {k: (p.status, p.value) for k, p in parts.items()} == {
        "x": ("done", 1), "y": ("failed", None)}


def test_many_commits_keep_every_entry_in_order(store: Store) -> None:
    create(store, head_of("r1"))
    with store.open("r1", 1) as run:
        head = run.load().head
        for i in range(300):  # past any in-record tail: entries move to a journal
            head.progress = i
            run.commit(head, [log("step", i=i, pad="x" * 50)])
    assert [e.values["i"] for e in store.history("r1") if e.type == "step"] == list(range(300))
    assert store.head("r1").progress == 299


def test_unknown_runs_are_not_found(store: Store) -> None:
    with pytest.raises(RunNotFound):
        store.head("nope")
    with pytest.raises(RunNotFound):
        store.history("nope")
    with pytest.raises(RunNotFound), store.open("nope", 1) as run:
        run.load()
    assert store.run_ids() == []
    assert store.due(T0) == []


# -- the due index -------------------------------------------------------------------------------------------


def test_due_follows_what_each_commit_says(store: Store) -> None:
    create(store, head_of("running"))
    create(store, head_of("later", status="waiting", wake_at=T0 + timedelta(hours=1)))
    create(store, head_of("soon", status="waiting", wake_at=T0 + timedelta(minutes=1)))
    create(store, head_of("idle", status="waiting"))
    create(store, head_of("done", status="finished"))
    assert store.due(T0) == ["running"]
    assert store.due(T0 + timedelta(minutes=5)) == ["running", "soon"]
    assert store.due(T0 + timedelta(days=1)) == ["running", "soon", "later"]
    assert store.next_due() == RUNNING_DUE
    with store.open("running", 1) as run:
        head = run.load().head
        head.status = "finished"
        run.commit(head, [log("finish")])
    with store.open("soon", 1) as run:
        head = run.load().head
        head.wake_at = T0 + timedelta(hours=2)
        run.commit(head, [])
    assert store.due(T0 + timedelta(days=1)) == ["later", "soon"]
    assert store.next_due() == T0 + timedelta(hours=1)


def test_paused_blocked_and_ended_runs_are_never_due(store: Store) -> None:
    for status in ("paused", "blocked", "finished", "failed", "cancelled"):
        create(store, head_of(status, status=status, wake_at=T0))
    assert store.due(T0 + timedelta(days=1)) == []
    assert store.next_due() is None


# -- locks -----------------------------------------------------------------------------------------------------


def test_a_held_run_is_locked_for_everyone_else(store: Store) -> None:
    create(store, head_of("r1"))
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.open("r1", 1):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        with pytest.raises(RunLocked), store.open("r1", 0):
            pass
        with pytest.raises(RunLocked), store.open("r1", 0.3):
            pass
        waited = time.monotonic() - started
        assert 0.3 <= waited < 5
    finally:
        release.set()
        holder.join()
    with store.open("r1", 1) as run:  # released
        assert run.load().head.run_id == "r1"


def test_a_waiting_opener_gets_the_run_once_it_is_released(store: Store) -> None:
    create(store, head_of("r1"))
    order: list[str] = []
    held = threading.Event()

    def hold() -> None:
        with store.open("r1", 1):
            held.set()
            time.sleep(0.2)
            order.append("holder done")

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    with store.open("r1", 10):
        order.append("waiter in")
    holder.join()
    assert order == ["holder done", "waiter in"]


def test_a_session_that_fails_releases_the_run_and_keeps_the_last_commit(store: Store) -> None:
    create(store, head_of("r1"))
    with pytest.raises(ZeroDivisionError), store.open("r1", 1) as run:
        head = run.load().head
        head.state = {"n": 7}
        run.commit(head, [log("kept")])
        head.state = {"n": 8}
        _ = 1 / 0
    with store.open("r1", 0) as run:
        assert run.load().head.state == {"n": 7}
    assert [e.type for e in store.history("r1")] == ["start", "kept"]


def test_sessions_of_different_runs_do_not_wait_for_each_other(store: Store) -> None:
    create(store, head_of("r1"))
    create(store, head_of("r2"))
    with store.open("r1", 0), store.open("r2", 0) as second:
        assert second.load().head.run_id == "r2"


# -- deleting, secrets ----------------------------------------------------------------------------------------


def test_a_deleted_run_is_gone_everywhere(store: Store) -> None:
    create(store, head_of("r1"))
    create(store, head_of("r2", status="waiting", wake_at=T0))
    with store.open("r1", 1) as run:
        run.delete()
    with store.open("r2", 1) as run:
        run.delete()
    assert store.run_ids() == []
    assert store.due(T0 + timedelta(days=1)) == []
    with pytest.raises(RunNotFound):
        store.head("r1")
    create(store, head_of("r1"))  # the id can be used again, with nothing of the old run
    assert [e.type for e in store.history("r1")] == ["start"]


def test_a_secret_is_made_once_and_kept(store: Store) -> None:
    first = store.secret("link")
    assert len(first) >= 32 and store.secret("link") == first
    assert store.secret("other") != first


# -- damage ------------------------------------------------------------------------------------------------------


def test_damaged_data_is_refused_naming_where(store: Store, damage: Callable[[Store, str], None]) -> None:
    create(store, head_of("r1"), slot(0, "a"))
    damage(store, "r1")
    with pytest.raises(StorageError) as caught:
        store.load("r1")
    assert caught.value.exit_code == 5 and caught.value.path
    with pytest.raises(StorageError), store.open("r1", 1) as run:
        run.load()


def test_a_pending_resume_round_trips(store: Store) -> None:
    pending = [PendingResume(resume_id="ev@1", kind="event", key="ev", request={"question": "?"}),
               PendingResume(resume_id="t@1", kind="timer", key="t", due_at=T0)]
    create(store, head_of("r1", status="waiting", pending=pending, wake_at=T0))
    assert store.head("r1").pending == pending


def test_every_head_field_round_trips(store: Store) -> None:
    """A store keeps every field of a head, however it marshals them (a field it forgets reads back
    as its default: caught here)."""
    import dataclasses

    head = head_of("r1", status="failed", tags={"customer": "acme"}, alerts=["page", "ticket"], alert_attempt=2,
                   alert_due=T0 + timedelta(seconds=5), trace="ab" * 16, parent_trace="cd" * 16, parent="p1",
                   children=["r1.c"], version=3, visit=4, visit_logs=2, progress=7, dropped_logs=1,
                   history_limit=50, code="c0ffee", doc="Docs.", scheduled_at=T0, deadline=T0 + timedelta(days=1),
                   held_limit=("api", "k"), paused_from=None)
    create(store, head)
    back = store.head("r1")
    defaults = {f.name for f in dataclasses.fields(RunHead)
                if getattr(back, f.name) == getattr(head_of("x"), f.name) and f.name != "run_id"}
    assert dataclasses.asdict(back) == dataclasses.asdict(head)
    assert not defaults & {"tags", "alerts", "alert_attempt", "alert_due", "trace", "parent_trace"}
    with store.open("r1", 1) as run:  # and after a commit
        loaded = run.load().head
        run.commit(loaded, [log("x")])
    assert dataclasses.asdict(store.head("r1")) | {"progress": 0, "updated_at": None} == \
        dataclasses.asdict(head) | {"progress": 0, "updated_at": None}


# -- a bounded history ----------------------------------------------------------------------------------------


def test_history_limit_keeps_the_newest_entries_and_the_current_visit(store: Store) -> None:
    create(store, head_of("r1", history_limit=20))
    with store.open("r1", 1) as run:
        head = run.load().head
        for visit in range(2, 1001):
            head.visit = visit
            run.commit(head, [log("transition", visit=visit), VisitEntry(visit, "first", {"n": visit}),
                              slot(0, f"a{visit}"), log("action", visit=visit)])
    history = store.history("r1")
    assert len(history) <= 20 + max(20, 100) + 1 and history[-1].values == {"visit": 1000}
    assert [e.values["visit"] for e in history] == sorted(e.values["visit"] for e in history)
    head = store.head("r1")
    assert head.dropped_logs + len(history) == 1 + 2 * 999  # the start entry and two per visit
    assert [s.key for s in store.load("r1").slots] == ["a1000"]  # the current visit loads whole
    with store.open("r1", 1) as run:
        loaded = run.load()
        assert loaded.head.dropped_logs == head.dropped_logs
        run.commit(loaded.head, [log("later")])
    assert store.history("r1")[-1].type == "later"
