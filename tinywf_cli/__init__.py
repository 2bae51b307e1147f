"""tinywf: durable workflows in Python, one JSON record per run, driven from the shell.

Everything a flow author or an embedding program needs is importable from here::

    from tinywf_cli import Workflow, step, signal, Retry, EventTimeout, Runtime
"""

from tinywf_cli.errors import (
    BadInput,
    Conflict,
    EventTimeout,
    FlowDefinitionError,
    FlowError,
    FlowLoadError,
    InvalidRunId,
    InvalidValue,
    NonDeterminismError,
    NotAnEvent,
    NotFound,
    ResumeNotFound,
    RunExists,
    RunLocked,
    RunNotFound,
    SignalNotFound,
    StatusConflict,
    StorageError,
    TinyWFError,
)
from tinywf_cli.model import (
    ErrorInfo,
    LogEntry,
    PendingResume,
    RunDocument,
    RunList,
    RunSummary,
    ShowDocument,
    TickReport,
)
from tinywf_cli.runtime import Runtime
from tinywf_cli.workflow import Retry, Workflow, signal, step

__version__ = "0.1.0"

__all__ = [
    "BadInput",
    "Conflict",
    "ErrorInfo",
    "EventTimeout",
    "FlowDefinitionError",
    "FlowError",
    "FlowLoadError",
    "InvalidRunId",
    "InvalidValue",
    "LogEntry",
    "NonDeterminismError",
    "NotAnEvent",
    "NotFound",
    "PendingResume",
    "ResumeNotFound",
    "Retry",
    "RunDocument",
    "RunExists",
    "RunList",
    "RunLocked",
    "RunNotFound",
    "RunSummary",
    "Runtime",
    "ShowDocument",
    "SignalNotFound",
    "StatusConflict",
    "StorageError",
    "TickReport",
    "TinyWFError",
    "Workflow",
    "__version__",
    "signal",
    "step",
]
