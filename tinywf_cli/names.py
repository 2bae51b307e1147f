"""The names tinywf gives and accepts: run ids, schedule names, and the authoring API on ``Workflow``.

No imports beyond ``re``: the read path (``show``, ``list``) and ``graph`` use these without
pydantic or the engine.
"""

import re

#: The contract's run-id charset. ASCII classes and ``fullmatch``: no ``ü``, no trailing newline.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)


#: A limit's or breaker's name: it names their state in the store (a file name, a row).
GATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


def is_run_id(run_id: object) -> bool:
    """Whether ``run_id`` is a run id a store may turn into a file name or key."""
    return isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None


#: A schedule's name: a run id's charset, short enough that ``<name>-<YYYYMMDDTHHMMZ>`` (the run
#: id of one of its slots) is a run id too.
SCHEDULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", re.ASCII)


def is_schedule_name(name: object) -> bool:
    """Whether ``name`` is a schedule name a store may turn into a file name or key."""
    return isinstance(name, str) and SCHEDULE_NAME.fullmatch(name) is not None


#: The names of the authoring API: a step or signal may not take one of them, and the static
#: analysis knows that ``self.<name>`` is never a step. Names the API gained later (``first``,
#: ``max_duration``, ``tag``) are not among them: flows that have a step of that name keep loading (and
#: do without that part of the API).
WORKFLOW_API = frozenset({
    "action", "sleep", "sleep_until", "wait_event", "parallel", "child", "start_child", "patched", "log",
    "run_id", "state", "idempotency_key", "store_target", "version", "migrations", "history_limit",
    "step_timeout", "limit", "schedules", "scheduled_at",
})
