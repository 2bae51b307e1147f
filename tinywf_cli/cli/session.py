"""What one ``tinywf`` command shares: where runs live, the runtime over them (opened on
first use), the consoles and the output mode.

``Session`` needs neither pydantic nor the engine until a command asks for its runtime:
``show`` and ``list`` answer from the read path (``Session.read``) without them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from tinywf_cli.cli.output import is_utf8
from tinywf_cli.errors import BadInput

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console

    from tinywf_cli.reading.sources import Source
    from tinywf_cli.runtime.runtime import Runtime


T = TypeVar("T")

DEFAULT_LOCK_TIMEOUT = 10.0

#: The runtimes the command being run opened: ``main`` closes them (database connections) when it ends.
OPENED: contextvars.ContextVar[list[Runtime] | None] = contextvars.ContextVar("tinywf_opened", default=None)


class Session:
    """What one command invocation shares: its runtime, consoles and output mode."""

    def __init__(self, store: str | None, state_dir: str | None, as_json: bool,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT, lease: float | None = None) -> None:
        self.target, self.named_by = store_source(store, state_dir)
        self.as_json = as_json
        self.lock_timeout = lock_timeout
        self.lease = lease
        self._runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        """The ``Runtime`` over the state directory (created on first use)."""
        if self._runtime is None:
            from tinywf_cli.runtime.runtime import Runtime

            check_store_exists(self.target, self.named_by)
            self._runtime = Runtime(self.target, lock_timeout=self.lock_timeout, lease=self.lease)
            opened = OPENED.get()
            if opened is not None:
                opened.append(self._runtime)
        return self._runtime

    @property
    def console(self) -> Console:
        """Output for people (stdout)."""
        from tinywf_cli.cli.render import make_console

        return make_console()

    @property
    def state_hint(self) -> str:
        """``--state-dir X`` (or ``--store URL``) for ready-to-paste commands, when X is not what
        they would find anyway."""
        if self.target == store_target(None, None):
            return ""
        import shlex

        if is_url(self.target):
            from tinywf_cli.stores import shown_target

            return f" --store {shlex.quote(shown_target(self.target))}"
        return f" --state-dir {shlex.quote(self.target)}"

    @contextlib.contextmanager
    def flow_output(self) -> Iterator[None]:
        """While flow code runs: with ``--json`` its prints go to stderr, keeping stdout one document."""
        if self.as_json:
            with contextlib.redirect_stdout(sys.stderr):
                yield
        else:
            yield

    def emit(self, document: BaseModel) -> None:
        """Print a document as JSON (with ``\\u`` escapes where stdout cannot take UTF-8)."""
        self.emit_text(document.model_dump_json(indent=2))

    def emit_text(self, text: str) -> None:
        """Print a document's JSON text (with ``\\u`` escapes where stdout cannot take UTF-8)."""
        if not is_utf8(sys.stdout):
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=True)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def read(self, read: Callable[[Source], T]) -> T | None:
        """``read(source)`` on the read path that needs neither pydantic nor the engine
        (``tinywf_cli.reading.sources``); ``None`` when the full path must answer (another kind
        of store, a record only it may judge)."""
        check_store_exists(self.target, self.named_by)
        from tinywf_cli.reading.sources import read_from

        return read_from(self.target, read)

    def now(self) -> datetime:
        """The clock of this command (``$TINYWF_NOW`` or the wall clock), without the runtime."""
        if self._runtime is not None:
            return self._runtime.clock.now()
        from tinywf_cli.clock import clock_from_env

        return clock_from_env().now()

    def call(self, fn: Callable[[], T]) -> T:
        """Run a runtime call with flow output redirected as needed."""
        with self.flow_output():
            return fn()


def is_url(target: str) -> bool:
    """Whether a store target is a database URL rather than a directory."""
    return "://" in target


def store_source(store: str | None, state_dir: str | None) -> tuple[str, str | None]:
    """Where runs live (``--store``, else ``--state-dir``, else ``$TINYWF_STORE``, else
    ``$TINYWF_STATE_DIR``, else ``./state``), and what named it when that must be a store that
    exists already (``--store``, ``$TINYWF_STORE``); None for a state directory, which is made
    when it is missing."""
    for given, what in ((store, "--store"), (state_dir, "--state-dir")):
        if given is not None:
            if not given.strip():
                raise BadInput(f"{what} is empty: name a directory (or a postgresql:// URL)")
            return given, what if what == "--store" else None
    named = os.environ.get("TINYWF_STORE")
    if named:
        return named, "$TINYWF_STORE"
    return os.environ.get("TINYWF_STATE_DIR") or "state", None


def store_target(store: str | None, state_dir: str | None) -> str:
    """Where runs live: ``--store``, else ``--state-dir``, else ``$TINYWF_STORE``, else
    ``$TINYWF_STATE_DIR``, else ``./state``."""
    return store_source(store, state_dir)[0]


def check_store_exists(target: str, named_by: str | None) -> None:
    """Refuse a target named by ``--store`` or ``$TINYWF_STORE`` that is neither a URL nor an
    existing directory: a typo must not become a new, empty store that runs start in unseen."""
    if named_by is None or is_url(target) or os.path.lexists(target):
        return
    from tinywf_cli.errors import StoreNotFound

    instead = "--state-dir" if named_by == "--store" else "$TINYWF_STATE_DIR"
    raise StoreNotFound(target, f"no such directory, and not a postgresql:// URL ({named_by} names a store "
                                f"that exists; to make a new state directory there, use {instead})")
