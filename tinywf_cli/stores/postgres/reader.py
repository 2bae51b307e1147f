"""What the read commands ask of a PostgreSQL store: one run, or every head, one statement each.

``PostgresReader(url)`` connects once, with the store's URL handling and settings
(``connection.py``), through libpq itself (``libpq.py``), or psycopg when no libpq can be
loaded; then it reads the schema's version, the one check a read makes: it creates and
migrates nothing. Tables that are missing or at another version, a session that cannot
speak UTF-8, a statement refused: ``NotReadable``, and the caller asks ``PostgresStore``,
which says what is wrong (or makes the tables). A connection that cannot be made, or is
lost, is ``StoreUnavailable`` naming where (exit 5), never the password.

Cells come back as text: the head and the journal exactly as stored (``json`` keeps its
text), for the caller to parse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from tinywf_cli.errors import BadInput, StoreUnavailable
from tinywf_cli.stores.postgres import libpq, schema
from tinywf_cli.stores.postgres.connection import (
    DEFAULT_LEASE,
    Target,
    first_line,
    parse_target,
    require_psycopg,
    session_params,
    unreachable,
)
from tinywf_cli.stores.postgres.libpq import QueryFailed

if TYPE_CHECKING:
    from ctypes import CDLL

    import psycopg


class NotReadable(Exception):
    """The reader cannot vouch for what it would read: let ``PostgresStore`` answer."""


class Client(Protocol):
    """A session that runs one statement at a time and gives its cells as text."""

    def rows(self, sql: str, args: Sequence[str | None] = ()) -> list[tuple[str | None, ...]]:
        """The rows of one statement; QueryFailed when refused."""

    def close(self) -> None:
        """End the session."""


class PostgresReader:
    """Reads runs of a PostgreSQL store without claiming them: ``run(run_id)``, ``heads(status)``.

    ``use_libpq=False`` goes through psycopg even when libpq can be loaded (as it does,
    anyway, when none can).
    """

    def __init__(self, url: str, *, use_libpq: bool = True) -> None:
        require_psycopg(load=False)  # as every command on the store does
        self.location: Target = parse_target(url)
        self.sql = schema.statements(self.location.schema, schema.READS)
        lib = libpq.load() if use_libpq else None
        self._client: Client = _libpq_client(lib, self.location) if lib is not None else _PsycopgClient(self.location)
        try:
            version = self._rows("version", (), "reading the schema version")
            if version != [(str(schema.SCHEMA_VERSION),)]:
                raise NotReadable("the tables are missing or at another version")
        except BaseException:
            self.close()
            raise

    @property
    def target(self) -> str:
        """The store's URL, without its password."""
        return self.location.shown

    def _rows(self, name: str, args: Sequence[str], doing: str) -> list[tuple[str | None, ...]]:
        try:
            return self._client.rows(self.sql[name], args)
        except QueryFailed as exc:
            if exc.lost:
                raise StoreUnavailable(self.target, f"PostgreSQL failed while {doing}: {first_line(exc, '')}") from None
            raise NotReadable(f"{exc.sqlstate}: {first_line(exc, '')}") from None

    def run(self, run_id: str) -> tuple[str, str] | None:
        """The run's head and its audit entries (a JSON array of journal entries, oldest first),
        as stored; None when there is no such run."""
        rows = self._rows("run", (run_id,), f"reading run '{run_id}'")
        if not rows:
            return None
        head, logs = rows[0]
        if head is None or logs is None:
            raise NotReadable("a NULL where the tables hold none")
        return head, logs

    def heads(self, status: str | None = None, tags: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
        """``(run_id, head)`` of every run (of those whose status column is ``status``, and whose
        head's tags hold all of ``tags``), oldest first."""
        if tags:
            wanted = json.dumps(dict(tags))
            rows = (self._rows("heads_tagged", (wanted,), "listing runs") if status is None
                    else self._rows("heads_tagged_in", (wanted, status), "listing runs"))
        elif status is None:
            rows = self._rows("heads", (), "listing runs")
        else:
            rows = self._rows("heads_in", (status,), "listing runs")
        out: list[tuple[str, str]] = []
        for run_id, head in rows:
            if run_id is None or head is None:
                raise NotReadable("a NULL where the tables hold none")
            out.append((run_id, head))
        return out

    def close(self) -> None:
        """End the session (again is a no-op)."""
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()


def _libpq_client(lib: CDLL, target: Target) -> libpq.Connection:
    """A libpq session with the store's settings (UTF-8 text: the cells are decoded as such)."""
    try:
        params = libpq.parse(lib, target.conninfo)
    except ValueError as exc:
        raise BadInput(f"invalid PostgreSQL URL {target.shown}: {first_line(exc, '')}") from None
    params = session_params(target, params, DEFAULT_LEASE, "read")
    params["client_encoding"] = "UTF8"
    try:
        client = libpq.Connection(lib, params)
    except libpq.ConnectFailed as exc:
        raise unreachable(target, params, exc) from None
    if client.setting("client_encoding") != "UTF8":
        client.close()
        raise NotReadable("the session's client_encoding is not UTF8")
    return client


class _PsycopgClient:
    """The same, through psycopg (its libpq wrapper, ``pgconn``: ``$n`` parameters, text cells)."""

    def __init__(self, target: Target) -> None:
        from tinywf_cli.stores.postgres.connection import connect

        require_psycopg()
        self._conn: psycopg.Connection[tuple[object, ...]] = connect(target, DEFAULT_LEASE, "read")
        self._encoding = self._conn.info.encoding

    def rows(self, sql: str, args: Sequence[str | None] = ()) -> list[tuple[str | None, ...]]:
        """The rows of one statement; QueryFailed when refused."""
        import psycopg
        from psycopg import pq

        pgconn, encoding = self._conn.pgconn, self._encoding
        try:
            result = pgconn.exec_params(sql.encode(encoding), [None if a is None else a.encode(encoding) for a in args])
        except psycopg.Error as exc:
            raise QueryFailed(str(exc), "", pgconn.status != pq.ConnStatus.OK) from None
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE) or b""
            raise QueryFailed(result.get_error_message(encoding), sqlstate.decode(),
                              pgconn.status != pq.ConnStatus.OK)
        return [tuple(None if (cell := result.get_value(row, column)) is None else bytes(cell).decode(encoding)
                      for column in range(result.nfields)) for row in range(result.ntuples)]

    def close(self) -> None:
        """End the session."""
        self._conn.close()
