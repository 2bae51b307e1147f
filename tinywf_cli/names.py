"""The names of the authoring API on ``Workflow`` (no imports: ``graph`` reads flows without pydantic).

A step or signal may not take one of these names, and the static analysis knows that
``self.<name>`` is never a step.
"""

WORKFLOW_API = frozenset({
    "action", "sleep", "sleep_until", "wait_event", "parallel", "child", "start_child", "patched", "log",
    "run_id", "state", "idempotency_key", "store_target", "version", "migrations", "history_limit",
    "step_timeout",
})
