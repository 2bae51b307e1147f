"""The tinywf exception family: one root, structured fields, one exit code each.

Every error a user can cause is a :class:`TinyWFError`. The CLI maps ``exit_code`` to
the process exit status in exactly one place; library callers catch the classes.
"""

from __future__ import annotations

from pathlib import Path


class TinyWFError(Exception):
    """Root of every tinywf error; ``exit_code`` is what the CLI exits with."""

    exit_code = 70

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- 1: the run failed -------------------------------------------------------


class EventTimeout(TinyWFError):
    """Raised at ``yield self.wait_event(...)`` when the wait's ``timeout`` passed.

    Catch it inside the step to take another path; left uncaught it fails the run.
    """

    exit_code = 1

    def __init__(self, key: str, deadline: str) -> None:
        super().__init__(f"event '{key}' was not resolved before {deadline}")
        self.key = key
        self.deadline = deadline


class NonDeterminismError(TinyWFError):
    """The step yields something other than what the run recorded at that point (the run is blocked)."""

    exit_code = 1

    def __init__(self, run_id: str, step: str, index: int, recorded: str, current: str) -> None:
        super().__init__(
            f"run '{run_id}', step '{step}': at position {index + 1} the run recorded {recorded} "
            f"but the code now yields {current}; the flow changed under a live run — put the new "
            "behaviour behind `if self.patched(\"some-id\"):` (or a new key or a new step), then "
            f"`tinywf retry {run_id}`; or `tinywf cancel` the run"
        )
        self.run_id = run_id
        self.step = step
        self.index = index
        self.recorded = recorded
        self.current = current


class FlowError(TinyWFError):
    """A step broke a rule of the authoring API while running (duplicate key, bad yield)."""

    exit_code = 1


class ActionFailed(TinyWFError):
    """Raised at ``yield self.action(...)`` when the action finally failed.

    Its attempts ran out, or it raised one of its ``Retry.non_retryable`` errors. Catch it
    in the step to compensate or take another path: the failure is recorded, so a replay
    raises it again at the same yield without calling the function. Left uncaught, it
    fails the run. ``message`` is the action's own error message.
    """

    exit_code = 1

    def __init__(self, key: str, error_type: str, message: str, attempts: int) -> None:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        super().__init__(f"action '{key}' failed after {tries}: {error_type}: {message}")
        self.key = key
        self.error_type = error_type
        self.message = message
        self.attempts = attempts

    @property
    def failure(self) -> str:
        """``action 'KEY' failed after N attempts: MESSAGE``: what a failed run's ``error`` says
        beside its ``type`` (which is the action's error type, so not said twice)."""
        return f"action '{self.key}' failed after {self._tries()}: {self.message}"

    def _tries(self) -> str:
        return f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"

    def __str__(self) -> str:
        return f"action '{self.key}' failed after {self._tries()}: {self.error_type}: {self.message}"


class BreakerOpen(TinyWFError):
    """The error of an attempt refused by an open breaker (``Breaker(on_open="fail")``): no call
    was made. The step sees ``ActionFailed`` with ``error_type`` ``"BreakerOpen"`` once the action's
    attempts ran out; ``Retry(non_retryable=(BreakerOpen,))`` gives up at once."""

    exit_code = 1

    def __init__(self, name: str, half_open_at: str | None) -> None:
        when = f" until {half_open_at}" if half_open_at else ""
        super().__init__(f"breaker '{name}' is open{when}: the call was not made")
        self.name = name
        self.half_open_at = half_open_at


class ActionTimeout(TinyWFError):
    """An attempt of an action did not return within its ``timeout``: its failure, retried per its
    ``Retry`` (list it in ``non_retryable`` to fail at once). An ``async def`` was cancelled; a
    plain function may still be running in its thread, and what it returns is discarded."""

    exit_code = 1

    def __init__(self, key: str, timeout: float, attempt: int) -> None:
        super().__init__(f"attempt {attempt} of action '{key}' did not return within {timeout:g}s")
        self.key = key
        self.timeout = timeout
        self.attempt = attempt


class ChildFailed(TinyWFError):
    """Raised at ``yield self.child(...)`` when the child run failed or was cancelled."""

    exit_code = 1

    def __init__(self, run_id: str, status: str, error: dict[str, str] | None) -> None:
        why = f": {error.get('type')}: {error.get('message')}" if error else ""
        super().__init__(f"child run '{run_id}' {status}{why}")
        self.run_id = run_id
        self.status = status
        self.error = error


# -- 2: bad usage or bad input -------------------------------------------------


class BadInput(TinyWFError):
    """Bad usage or bad input: malformed JSON, a value that fails validation, a bad id."""

    exit_code = 2


class InvalidRunId(BadInput):
    """A run id outside ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``."""

    def __init__(self, run_id: str) -> None:
        shown = repr(run_id) if len(run_id) <= 60 else f"{run_id[:40]!r}… ({len(run_id):,} characters)"
        super().__init__(
            f"invalid run id {shown}: use 1-128 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
        self.run_id = run_id


class InvalidValue(BadInput):
    """A value (input, event value, signal arguments) failed validation."""


class FlowLoadError(BadInput):
    """A flow file cannot be loaded: missing, broken, or no workflow to run."""


class FlowDefinitionError(BadInput):
    """A workflow class breaks a rule of the authoring API; raised when it is defined."""


class StoreNotFound(BadInput):
    """A store target that names no store: a directory that does not exist where none is
    made, a URL of a kind tinywf has no store for, an in-memory store of another process."""

    def __init__(self, target: str, problem: str) -> None:
        super().__init__(f"{target}: {problem}")
        self.target = target
        self.problem = problem


class NotAnEvent(BadInput):
    """A resume id that names a timer or a retry was given to ``resolve``."""


class InvalidSchedule(BadInput):
    """A schedule that cannot be kept: a bad cron expression, an unknown zone, a bad name or policy."""


# -- 3: not found ------------------------------------------------------------


class NotFound(TinyWFError):
    """Something named by the user does not exist."""

    exit_code = 3


class RunNotFound(NotFound):
    """No run with this id in the state directory."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run '{run_id}' (see `tinywf list`)")
        self.run_id = run_id


class ResumeNotFound(NotFound):
    """The run has no pending resume with this id or event key."""

    def __init__(self, run_id: str, resume: str, pending: list[str]) -> None:
        hint = f"pending: {', '.join(pending)}" if pending else "nothing is pending"
        super().__init__(f"run '{run_id}' has no pending event '{resume}' ({hint})")
        self.run_id = run_id
        self.resume = resume


class SignalNotFound(NotFound):
    """The workflow has no ``@signal`` method with this name."""

    def __init__(self, workflow: str, name: str, known: list[str]) -> None:
        hint = f"signals: {', '.join(known)}" if known else "it defines no signals"
        super().__init__(f"workflow {workflow} has no signal '{name}' ({hint})")
        self.workflow = workflow
        self.name = name


class LimitNotFound(NotFound):
    """The store has seen no limit (or breaker) with this name."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"no {kind} '{name}' (see `tinywf {kind}s`)")
        self.kind = kind
        self.name = name


class ScheduleNotFound(NotFound):
    """No schedule with this name in the store."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule '{name}' (see `tinywf schedule list`)")
        self.name = name


# -- 4: conflict ---------------------------------------------------------------


class Conflict(TinyWFError):
    """The command cannot run now: locked, taken, or not allowed in this status."""

    exit_code = 4


class RunLocked(Conflict):
    """Another process held the run's lock past the lock timeout (or ``reason`` says why it cannot be had)."""

    def __init__(self, run_id: str, timeout: float, reason: str | None = None) -> None:
        super().__init__(
            reason or f"run '{run_id}' is locked by another process (waited {timeout:g}s; "
                      "raise --lock-timeout or try again)"
        )
        self.run_id = run_id
        self.timeout = timeout


class QueueFull(Conflict):
    """A run already holds as many queued early events as it may."""

    def __init__(self, run_id: str, limit: int) -> None:
        super().__init__(f"run '{run_id}' already holds {limit} queued events, the most it keeps; "
                         "let it consume some (or cancel it) before sending more")
        self.run_id = run_id
        self.limit = limit


class RunExists(Conflict):
    """A run with this id already exists."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run id '{run_id}' is already taken")
        self.run_id = run_id


class ClaimLost(Conflict):
    """The run was taken over: this process's claim ran out (its lease passed without a heartbeat)
    and another process claimed the run, so what this process would write is refused."""

    def __init__(self, run_id: str, lease: float) -> None:
        super().__init__(
            f"run '{run_id}': this process lost its claim (no heartbeat within its {lease:g}s lease) and "
            "another process took the run over; this write was refused and the run is left to it"
        )
        self.run_id = run_id
        self.lease = lease


class RunsExistAtTarget(Conflict):
    """``copy``: runs with these ids (or schedules with these names) already exist in the store
    copied into."""

    def __init__(self, target: str, run_ids: list[str], schedules: list[str] | None = None) -> None:
        taken = [f"run '{r}'" for r in run_ids] + [f"schedule '{n}'" for n in schedules or []]
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        super().__init__(f"{taken[0]}{more} already exist{'s' if not more else ''} in {target}; "
                         "nothing was copied (--skip-existing copies the others)")
        self.target = target
        self.run_ids = run_ids
        self.schedules = list(schedules or [])


class ScheduleExists(Conflict):
    """A schedule with this name already exists."""

    def __init__(self, name: str, flow: str | None = None) -> None:
        whose = f" (by {flow})" if flow else ""
        super().__init__(f"schedule name '{name}' is already taken{whose}; pick another name, or "
                         f"`tinywf schedule remove {name}` first")
        self.name = name


class ScheduleLocked(Conflict):
    """Another process held the schedule past the lock timeout."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"schedule '{name}' is being changed by another process (waited {timeout:g}s; "
                         "raise --lock-timeout or try again)")
        self.name = name
        self.timeout = timeout


class ScheduleConflict(Conflict):
    """The schedule's state does not allow the command (pausing a paused schedule, say)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"schedule '{name}' {message}")
        self.name = name


class StatusConflict(Conflict):
    """The run's status does not allow the command."""

    def __init__(self, run_id: str, status: str, command: str) -> None:
        super().__init__(f"run '{run_id}' is {status}: cannot {command}")
        self.run_id = run_id
        self.status = status
        self.command = command


class RunChanged(Conflict):
    """A command given many runs by a filter found one changed since it was selected (another
    command got there first): it is left alone rather than acted on twice."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run '{run_id}' changed since it was selected (another command got there first)")
        self.run_id = run_id


# -- 5: storage ------------------------------------------------------------------


class StorageError(TinyWFError):
    """A run's record cannot be read or written; the message names the path."""

    exit_code = 5

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class StoreUnavailable(StorageError):
    """The store's server cannot be reached (or the connection broke); the message names the host
    and database, never a password. A worker waits and tries again."""


# -- 6: a wait that timed out ---------------------------------------------------------


class WaitTimeout(TinyWFError):
    """``tinywf wait`` / ``Runtime.wait``: the timeout passed before the run got where it was waited for."""

    exit_code = 6

    def __init__(self, run_id: str, timeout: float, status: str, until: str) -> None:
        goal = "ended" if until == "ended" else "waited for an event (or ended)"
        super().__init__(f"run '{run_id}' had not {goal} after {timeout:g}s; it is {status}")
        self.run_id = run_id
        self.timeout = timeout
        self.status = status
        self.until = until
