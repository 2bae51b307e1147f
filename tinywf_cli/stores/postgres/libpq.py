"""A small read-only PostgreSQL client straight over libpq (through ``ctypes``), for the read commands.

``import psycopg`` alone takes longer than the whole of ``tinywf show`` on a state directory.
The read commands ask four things of a database: connect, run a SELECT with parameters,
read its cells as text, disconnect. libpq, the C library psycopg itself drives, does each
in one call; this module declares those few calls and nothing else:

- ``load()``         libpq: the copy the psycopg binary wheel ships (what psycopg uses), else
  the system's ``libpq.so.5``, else any the linker knows; None when there is none (the
  caller then takes psycopg);
- ``parse(libpq, conninfo)``  a connection string as libpq reads it (``PQconninfoParse``);
- ``Connection``     ``PQconnectdbParams``; ``rows(sql, args)`` by ``PQexecParams``: every
  argument a text parameter (``$1``, ``$2``…, never spliced into the SQL), every cell text.

Errors are ``ConnectFailed`` (no session: libpq's message) and ``QueryFailed`` (a statement
refused, with its SQLSTATE; ``lost`` when the session broke). Neither holds a password
unless libpq put one in its message; callers mask it (``connection.first_line``).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from importlib.util import find_spec
from typing import Any

# PQstatus, PQresultStatus and PQresultErrorField codes (libpq-fe.h, postgres_ext.h)
CONNECTION_OK = 0
PGRES_COMMAND_OK = 1
PGRES_TUPLES_OK = 2
PG_DIAG_SQLSTATE = ord("C")

_PTR = ctypes.c_void_p
_TEXT = ctypes.c_char_p
_INT = ctypes.c_int
#: Each function the client calls: (name, result type, argument types).
_FUNCTIONS: tuple[tuple[str, Any, list[Any]], ...] = (
    ("PQconnectdbParams", _PTR, [ctypes.POINTER(_TEXT), ctypes.POINTER(_TEXT), _INT]),
    ("PQstatus", _INT, [_PTR]),
    ("PQerrorMessage", _TEXT, [_PTR]),
    ("PQparameterStatus", _TEXT, [_PTR, _TEXT]),
    ("PQfinish", None, [_PTR]),
    ("PQexecParams", _PTR, [_PTR, _TEXT, _INT, _PTR, ctypes.POINTER(_TEXT), _PTR, _PTR, _INT]),
    ("PQresultStatus", _INT, [_PTR]),
    ("PQresultErrorMessage", _TEXT, [_PTR]),
    ("PQresultErrorField", _TEXT, [_PTR, _INT]),
    ("PQntuples", _INT, [_PTR]),
    ("PQnfields", _INT, [_PTR]),
    ("PQgetvalue", _TEXT, [_PTR, _INT, _INT]),
    ("PQgetisnull", _INT, [_PTR, _INT, _INT]),
    ("PQclear", None, [_PTR]),
    ("PQconninfoParse", _PTR, [_TEXT, ctypes.POINTER(_PTR)]),
    ("PQconninfoFree", None, [_PTR]),
    ("PQfreemem", None, [_PTR]),
)


class _Option(ctypes.Structure):
    """``PQconninfoOption``: one keyword of a parsed connection string."""

    _fields_ = [("keyword", _TEXT), ("envvar", _TEXT), ("compiled", _TEXT), ("val", _TEXT),
                ("label", _TEXT), ("dispchar", _TEXT), ("dispsize", _INT)]


class ConnectFailed(Exception):
    """libpq made no session (the server refused, or did not answer); the text is libpq's."""


class QueryFailed(Exception):
    """A statement was refused: its SQLSTATE (``""`` when libpq gave none), and whether the
    session is lost (then the next statement needs a new connection)."""

    def __init__(self, message: str, sqlstate: str, lost: bool) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.lost = lost


def _candidates() -> list[str]:
    """Where libpq may be, best first: beside psycopg's binary wheel (found without importing
    it), then the names the dynamic linker resolves."""
    found: list[str] = []
    try:
        spec = find_spec("psycopg_binary")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        libs = os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "psycopg_binary.libs")
        with suppress(OSError):
            found += sorted(os.path.join(libs, name) for name in os.listdir(libs) if name.startswith("libpq"))
    found.append("libpq.5.dylib" if sys.platform == "darwin" else "libpq.so.5")
    return found


def load() -> ctypes.CDLL | None:
    """libpq with the functions this client calls declared, or None when none can be loaded."""
    for path in _candidates():
        try:
            return _declared(ctypes.CDLL(path))
        except (OSError, AttributeError):
            continue
    from ctypes.util import find_library  # runs the linker's tools (slow): only when the usual names failed

    name = find_library("pq")
    if name is None:
        return None
    try:
        return _declared(ctypes.CDLL(name))
    except (OSError, AttributeError):
        return None


def _declared(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, result, arguments in _FUNCTIONS:
        function = getattr(lib, name)
        function.restype = result
        function.argtypes = arguments
    return lib


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


def _strings(values: Sequence[str | None]) -> Any:
    """A C array of NUL-terminated UTF-8 strings (NULL for None), ending in NULL."""
    array = (_TEXT * (len(values) + 1))()
    for i, value in enumerate(values):
        array[i] = None if value is None else value.encode()
    return array


def parse(lib: ctypes.CDLL, conninfo: str) -> dict[str, str]:
    """The keywords a connection string sets, as libpq reads it; ValueError with libpq's reason."""
    error = _PTR()
    options = lib.PQconninfoParse(conninfo.encode(), ctypes.byref(error))
    if not options:
        why = "it does not parse" if not error.value else _text(ctypes.string_at(error.value))
        if error.value:
            lib.PQfreemem(error)
        raise ValueError(why.strip())
    try:
        params: dict[str, str] = {}
        option = ctypes.cast(options, ctypes.POINTER(_Option))
        i = 0
        while option[i].keyword is not None:
            if option[i].val is not None:
                params[_text(option[i].keyword)] = _text(option[i].val)
            i += 1
        return params
    finally:
        lib.PQconninfoFree(options)


class Connection:
    """One session of libpq: ``rows(sql, args)`` until ``close()``."""

    def __init__(self, lib: ctypes.CDLL, params: dict[str, str]) -> None:
        self._lib = lib
        keys = list(params)
        self._conn: int | None = lib.PQconnectdbParams(_strings(keys), _strings([params[k] for k in keys]), 0)
        if not self._conn:
            raise ConnectFailed("out of memory")
        if lib.PQstatus(self._conn) != CONNECTION_OK:
            message = _text(lib.PQerrorMessage(self._conn))
            self.close()
            raise ConnectFailed(message)

    def setting(self, name: str) -> str | None:
        """A setting the server reported for the session (``client_encoding``, …)."""
        value = self._lib.PQparameterStatus(self._conn, name.encode())
        return None if value is None else _text(value)

    def rows(self, sql: str, args: Sequence[str | None] = ()) -> list[tuple[str | None, ...]]:
        """The rows of one statement, each cell as text (None for NULL); QueryFailed when refused."""
        lib = self._lib
        if self._conn is None:
            raise QueryFailed("the connection is closed", "", True)
        result = lib.PQexecParams(self._conn, sql.encode(), len(args), None, _strings(args), None, None, 0)
        if not result:
            raise QueryFailed(_text(lib.PQerrorMessage(self._conn)), "", lib.PQstatus(self._conn) != CONNECTION_OK)
        try:
            status = lib.PQresultStatus(result)
            if status not in (PGRES_TUPLES_OK, PGRES_COMMAND_OK):
                raise QueryFailed(_text(lib.PQresultErrorMessage(result)),
                                  _text(lib.PQresultErrorField(result, PG_DIAG_SQLSTATE)),
                                  lib.PQstatus(self._conn) != CONNECTION_OK)
            value, null = lib.PQgetvalue, lib.PQgetisnull
            width = lib.PQnfields(result)
            out: list[tuple[str | None, ...]] = []
            for row in range(lib.PQntuples(result)):
                cells: list[str | None] = []
                for column in range(width):
                    cell = value(result, row, column)
                    # NULL reads as "": ask only then (one call per cell otherwise)
                    cells.append(None if not cell and null(result, row, column) else cell.decode())
                out.append(tuple(cells))
            return out
        finally:
            lib.PQclear(result)

    def close(self) -> None:
        """End the session (again is a no-op)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._lib.PQfinish(conn)
