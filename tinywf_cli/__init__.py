"""tinywf: durable workflows in Python, one JSON record per run, driven from the shell.

Everything a flow author or an embedding program needs is importable from here::

    from tinywf_cli import Workflow, step, signal, Retry, EventTimeout, ActionFailed, ChildFailed, Runtime
    from tinywf_cli import Limit, Breaker, Schedule
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinywf_cli.authoring.commands import Retry
    from tinywf_cli.authoring.limits import Breaker, Limit
    from tinywf_cli.authoring.workflow import Workflow, signal, step
    from tinywf_cli.engine.attempts import heartbeat, last_heartbeat
    from tinywf_cli.errors import (
        ActionFailed,
        ActionTimeout,
        BadInput,
        BreakerOpen,
        ChildFailed,
        ClaimLost,
        Conflict,
        EventTimeout,
        FlowDefinitionError,
        FlowError,
        FlowLoadError,
        InvalidRunId,
        InvalidValue,
        LimitNotFound,
        NonDeterminismError,
        NotAnEvent,
        NotFound,
        QueueFull,
        ResumeNotFound,
        RunExists,
        RunLocked,
        RunNotFound,
        SignalNotFound,
        StatusConflict,
        StorageError,
        StoreNotFound,
        StoreUnavailable,
        TinyWFError,
        WaitTimeout,
    )
    from tinywf_cli.model import (
        BreakerList,
        CheckReport,
        CheckResult,
        CopyReport,
        ErrorInfo,
        LimitList,
        LogEntry,
        PendingResume,
        PruneReport,
        RunDocument,
        RunList,
        RunSummary,
        ScheduleChanges,
        ScheduleDocument,
        ScheduleList,
        ShowDocument,
        SignalDocument,
        TickReport,
    )
    from tinywf_cli.runtime.runtime import Runtime
    from tinywf_cli.schedules.spec import Schedule

__version__ = "0.1.0"

# Imported on first use, so that `tinywf --version` and friends start fast.
_EXPORTS = {
    "ActionFailed": "tinywf_cli.errors",
    "ActionTimeout": "tinywf_cli.errors",
    "BadInput": "tinywf_cli.errors",
    "Breaker": "tinywf_cli.authoring.limits",
    "BreakerList": "tinywf_cli.model",
    "BreakerOpen": "tinywf_cli.errors",
    "CheckReport": "tinywf_cli.model",
    "CheckResult": "tinywf_cli.model",
    "CopyReport": "tinywf_cli.model",
    "ChildFailed": "tinywf_cli.errors",
    "ClaimLost": "tinywf_cli.errors",
    "Conflict": "tinywf_cli.errors",
    "ErrorInfo": "tinywf_cli.model",
    "EventTimeout": "tinywf_cli.errors",
    "FlowDefinitionError": "tinywf_cli.errors",
    "FlowError": "tinywf_cli.errors",
    "FlowLoadError": "tinywf_cli.errors",
    "InvalidRunId": "tinywf_cli.errors",
    "InvalidValue": "tinywf_cli.errors",
    "Limit": "tinywf_cli.authoring.limits",
    "LimitList": "tinywf_cli.model",
    "LimitNotFound": "tinywf_cli.errors",
    "LogEntry": "tinywf_cli.model",
    "NonDeterminismError": "tinywf_cli.errors",
    "NotAnEvent": "tinywf_cli.errors",
    "NotFound": "tinywf_cli.errors",
    "PendingResume": "tinywf_cli.model",
    "PruneReport": "tinywf_cli.model",
    "QueueFull": "tinywf_cli.errors",
    "ResumeNotFound": "tinywf_cli.errors",
    "Retry": "tinywf_cli.authoring.commands",
    "RunDocument": "tinywf_cli.model",
    "RunExists": "tinywf_cli.errors",
    "RunList": "tinywf_cli.model",
    "RunLocked": "tinywf_cli.errors",
    "RunNotFound": "tinywf_cli.errors",
    "RunSummary": "tinywf_cli.model",
    "Runtime": "tinywf_cli.runtime.runtime",
    "Schedule": "tinywf_cli.schedules.spec",
    "ScheduleChanges": "tinywf_cli.model",
    "ScheduleDocument": "tinywf_cli.model",
    "ScheduleList": "tinywf_cli.model",
    "ShowDocument": "tinywf_cli.model",
    "SignalDocument": "tinywf_cli.model",
    "SignalNotFound": "tinywf_cli.errors",
    "StatusConflict": "tinywf_cli.errors",
    "StorageError": "tinywf_cli.errors",
    "StoreNotFound": "tinywf_cli.errors",
    "StoreUnavailable": "tinywf_cli.errors",
    "TickReport": "tinywf_cli.model",
    "TinyWFError": "tinywf_cli.errors",
    "WaitTimeout": "tinywf_cli.errors",
    "Workflow": "tinywf_cli.authoring.workflow",
    "heartbeat": "tinywf_cli.engine.attempts",
    "last_heartbeat": "tinywf_cli.engine.attempts",
    "signal": "tinywf_cli.authoring.workflow",
    "step": "tinywf_cli.authoring.workflow",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tinywf_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ActionFailed",
    "ActionTimeout",
    "BadInput",
    "Breaker",
    "BreakerList",
    "BreakerOpen",
    "CheckReport",
    "CheckResult",
    "CopyReport",
    "ChildFailed",
    "ClaimLost",
    "Conflict",
    "ErrorInfo",
    "EventTimeout",
    "FlowDefinitionError",
    "FlowError",
    "FlowLoadError",
    "InvalidRunId",
    "InvalidValue",
    "Limit",
    "LimitList",
    "LimitNotFound",
    "LogEntry",
    "NonDeterminismError",
    "NotAnEvent",
    "NotFound",
    "PendingResume",
    "PruneReport",
    "QueueFull",
    "ResumeNotFound",
    "Retry",
    "RunDocument",
    "RunExists",
    "RunList",
    "RunLocked",
    "RunNotFound",
    "RunSummary",
    "Runtime",
    "Schedule",
    "ScheduleChanges",
    "ScheduleDocument",
    "ScheduleList",
    "ShowDocument",
    "SignalDocument",
    "SignalNotFound",
    "StatusConflict",
    "StorageError",
    "StoreNotFound",
    "StoreUnavailable",
    "TickReport",
    "TinyWFError",
    "WaitTimeout",
    "Workflow",
    "__version__",
    "heartbeat",
    "last_heartbeat",
    "signal",
    "step",
]
