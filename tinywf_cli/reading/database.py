"""``show`` and ``list`` over a PostgreSQL store without pydantic, the engine or psycopg.

``Database(url)`` reads through ``PostgresReader`` (one connection, libpq itself; one
statement for a run's head and audit entries, one for every head of ``list``, with
``--status`` in its WHERE) and builds the documents ``tinywf_cli.reading.documents`` builds
for a state directory: the same checks of each head, the same byte-for-byte ``--json``.

What it cannot vouch for goes where the file store's read path sends it: a run as a whole
(``show``) to the full path (``Fallback``), one head of ``list`` to ``PostgresStore.head``,
which gives its ``RunHead`` or says what is wrong with it.

``list --status S`` selects by the tables' status column: the heads it reads, and warns
about, are those of runs in S (``list`` and ``list --status unreadable`` read them all).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from tinywf_cli.errors import RunNotFound
from tinywf_cli.jsonio import strict_loads
from tinywf_cli.names import is_run_id
from tinywf_cli.reading.documents import Fallback, RunRows, RunView, listed, view_of_head, with_history
from tinywf_cli.stores.postgres.reader import NotReadable, PostgresReader

if TYPE_CHECKING:
    from tinywf_cli.filters import RunFilter
    from tinywf_cli.stores.postgres.store import PostgresStore


def _parsed(text: str) -> Any:
    head = strict_loads(text)
    if type(head) is not dict:
        raise Fallback
    return head


class Database:
    """The read path of one PostgreSQL store (connected once, until ``close``).

    ``store``: a ``PostgresStore`` of the same URL that is open anyway (a server's), to read
    the heads the read path cannot vouch for; without it, one is opened when one is needed.
    """

    def __init__(self, url: str, store: PostgresStore | None = None) -> None:
        self.url = url
        try:
            self.reader = PostgresReader(url)
        except NotReadable:
            raise Fallback from None
        self._store = store
        self._own_store = store is None

    def show(self, run_id: str, last: int | None) -> RunView:
        """The run ``show`` prints; RunNotFound when there is none; Fallback when the full path
        must read it."""
        from tinywf_cli.stores.journal import AuditEntry, BadEntry, entry_from_json

        if not is_run_id(run_id):
            raise Fallback  # the full path says why
        try:
            found = self.reader.run(run_id)
        except NotReadable:
            raise Fallback from None
        if found is None:
            raise RunNotFound(run_id)
        head, logs = found
        try:
            view = view_of_head(_parsed(head), run_id)
            history = [entry_from_json(item) for item in strict_loads(logs)]
        except (BadEntry, ValueError, TypeError):
            raise Fallback from None
        if not all(type(entry) is AuditEntry for entry in history):
            raise Fallback
        return with_history(view, history, last)

    def list_runs(self, select: RunFilter) -> RunRows:
        """The runs ``select`` picks, newest first: ``list``."""
        one = next(iter(select.statuses)) if len(select.statuses) == 1 else None
        try:
            heads = self.reader.heads(None if one in (None, "unreadable") else one, select.tags)
        except NotReadable:
            raise Fallback from None
        return listed(((run_id, partial(_parsed, head)) for run_id, head in heads), self._full_head, select)

    def _full_head(self, run_id: str) -> Any:
        """A head as ``PostgresStore`` reads it (the reader could not vouch for it)."""
        if self._store is None:
            from tinywf_cli.stores.postgres import PostgresStore

            self._store = PostgresStore(self.url)
        return self._store.head(run_id)

    def close(self) -> None:
        """End the reader's session (and the store's, when it opened one)."""
        self.reader.close()
        if self._store is not None and self._own_store:
            self._store.close()
