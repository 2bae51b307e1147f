"""Writing to stdout and stderr safely: a closed, full or non-UTF-8 stream is an error line, never a traceback.

``guard_streams`` wraps both streams for one command: text that the stream's encoding
cannot hold is escaped (``\\u2713``) rather than raising, and an OS error on stdout
becomes ``OutputError``, which the CLI reports in one line. A reader that went away
(EPIPE) ends the command quietly: ``tinywf list | head`` is not an error.
"""

from __future__ import annotations

import errno
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, TextIO

from tinywf_cli.errors import TinyWFError


class OutputError(TinyWFError):
    """The command's output could not be written (stdout closed, disk full); exit 5."""

    exit_code = 5

    def __init__(self, problem: str) -> None:
        super().__init__(f"cannot write the output to stdout: {problem}")


class _Closed(io.TextIOBase):
    """What stdout is when the command was started with it closed."""

    def write(self, text: str) -> int:
        raise OutputError("it is closed")


class GuardedStream:
    """A text stream whose OS errors become OutputError (EPIPE stays BrokenPipeError)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write, reporting a failure as OutputError."""
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, 'error')})") from None

    def flush(self) -> None:
        """Flush, reporting a failure as OutputError."""
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, 'error')})") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def is_utf8(stream: Any) -> bool:
    """Whether a stream writes UTF-8 (so JSON needs no escapes)."""
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    return encoding in ("utf8", "utf8sig")


def _escape_unencodable(stream: Any) -> None:
    if not is_utf8(stream) and hasattr(stream, "reconfigure"):
        with suppress(ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")


@contextmanager
def guard_streams() -> Iterator[None]:
    """For one command: escape what the streams cannot encode, and guard stdout's OS errors."""
    saved = sys.stdout, sys.stderr
    stdout: Any = sys.stdout if sys.stdout is not None else _Closed()
    if sys.stderr is None:
        sys.stderr = io.StringIO()  # nowhere to report: errors are dropped, the exit code still says it
    _escape_unencodable(stdout)
    _escape_unencodable(sys.stderr)
    sys.stdout = GuardedStream(stdout)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


_CONTROL = {c: f"\\x{c:02x}" for c in range(32)} | {0x7F: "\\x7f"}


def one_line(message: str) -> str:
    """An error message as one line: control characters (a newline in a damaged key) escaped."""
    return message.translate(_CONTROL)
