"""Where a PostgreSQL store lives (its URL, schema and wake-up channel) and how to connect to it.

A store URL is libpq's (``postgresql://user@host:port/dbname``) plus one parameter of
tinywf's own, ``schema=`` (default ``tinywf``), which libpq would refuse and is removed
before connecting. What is shown to people (``Target.shown``) never holds a password.

Every connection is autocommit: each store operation is one statement, hence its own
transaction, and no transaction is ever left open while flow code runs. Defaults are
merged *under* the user's URL (the user's keys win):

- ``connect_timeout`` 5 s (psycopg's own default waits 130 s for a host that does not answer);
- client keepalives, and ``tcp_user_timeout`` of half the lease: a send on a link that
  went silent fails after that, instead of blocking for minutes;
- server keepalives through ``options``, so the server drops a session whose client
  vanished; ``statement_timeout`` and ``lock_timeout`` bound what a statement can wait for.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tinywf_cli.errors import BadInput, StorageError, StoreUnavailable

if TYPE_CHECKING:
    import psycopg

#: The lease a claim gets unless told otherwise (``--lease``).
DEFAULT_LEASE = 30.0
#: The schema a URL without ``schema=`` uses.
DEFAULT_SCHEMA = "tinywf"
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}", re.ASCII)
#: PostgreSQL truncates identifiers (a LISTEN channel too) past 63 bytes.
MAX_IDENTIFIER = 63
#: What tinywf asks of the server for each of its sessions (the user's ``options`` come after, and win).
SERVER_OPTIONS = ("-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=3 -c tcp_keepalives_count=3 "
                  "-c statement_timeout=60s -c lock_timeout=10s -c idle_in_transaction_session_timeout=60s")
INSTALL_HINT = 'the PostgreSQL store needs psycopg 3, which is not installed: pip install "tinywf[postgres]"'


def require_psycopg(*, load: bool = True) -> None:
    """Refuse a PostgreSQL URL clearly when psycopg is not installed (exit 2, how to install it).

    ``load=False`` only looks for it, without importing it: the read commands need no
    psycopg, but a store it is not installed for is refused by every command alike.
    """
    if not load:
        from importlib.util import find_spec

        try:
            if find_spec("psycopg") is not None:
                return
        except (ImportError, ValueError):
            pass
        raise BadInput(INSTALL_HINT)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise BadInput(INSTALL_HINT) from None


@dataclass(frozen=True)
class Target:
    """A parsed store URL."""

    #: The URL libpq connects with (``schema=`` removed; the password, if any, kept).
    conninfo: str
    #: The URL for people: no password, ``schema=`` kept when it is not the default.
    shown: str
    schema: str
    #: The LISTEN/NOTIFY channel of this store's wake-ups.
    channel: str


def parse_target(url: str) -> Target:
    """Split a store URL into what libpq gets and what tinywf keeps; raises BadInput.

    A URL that libpq and Python's ``urllib`` would split differently is refused, since what
    tinywf shows is cut by ``urllib``: a password holding ``@``, ``/``, ``?`` or ``#`` (libpq
    ends the user info at the first ``@``, ``urllib`` at the last, and ends the host at any
    of the others) would otherwise be shown in part as a host or a port.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # its text may hold the URL: never shown
        why = ("an unclosed '[' or ']' (an IPv6 host is written [::1]; in a user name or password, "
               "write them as %5B and %5D)") if "IPv6" in str(exc) else "it does not parse as a URL"
        raise BadInput(f"invalid store URL: {why}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise BadInput(f"not a PostgreSQL URL: {shown_url(url)!r} (use postgresql://user@host:port/dbname)")
    if _libpq_user_info(url) != _user_info(parts.netloc) or "@" in parts.path:
        raise BadInput("the store URL is ambiguous: a user name or password holds '@', '/', '?' or '#', which "
                       "end that part of a URL; write them as %40, %2F, %3F and %23")
    schema = DEFAULT_SCHEMA
    kept: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    if not SCHEMA_NAME.fullmatch(schema):
        raise BadInput(f"invalid schema {schema!r} in the store URL: use 1-63 letters, digits and _, "
                       "not starting with a digit")
    conninfo = urlunsplit(parts._replace(query=urlencode(kept)))
    shown_query = [(k, v) for k, v in kept if k != "password"]
    if schema != DEFAULT_SCHEMA:
        shown_query.append(("schema", schema))
    shown = urlunsplit(parts._replace(netloc=_without_password(parts.netloc), query=urlencode(shown_query)))
    channel = f"tinywf_{schema}"
    if len(channel) > MAX_IDENTIFIER:
        import hashlib  # a few ms at every start of a read command, for a rare schema name

        channel = "tinywf_" + hashlib.sha256(schema.encode()).hexdigest()[:32]
    return Target(conninfo=conninfo, shown=shown, schema=schema, channel=channel)


def _libpq_user_info(url: str) -> str | None:
    """The user info as libpq reads it: up to the first ``@``, unless a ``/`` comes first."""
    rest = url.partition("://")[2]
    for i, char in enumerate(rest):
        if char == "@":
            return rest[:i]
        if char == "/":
            break
    return None


def _user_info(netloc: str) -> str | None:
    """The user info as ``urllib`` reads it: up to the last ``@`` of the host part."""
    info, at, _ = netloc.rpartition("@")
    return info if at else None


def _without_password(netloc: str) -> str:
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return netloc
    return f"{userinfo.partition(':')[0]}@{hosts}"


def shown_url(url: str) -> str:
    """``url`` without its password (for messages about a URL that did not parse)."""
    try:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=_without_password(parts.netloc), query=""))
    except ValueError:
        return "the store URL"


def where(params: dict[str, str]) -> str:
    """``host H, port P, database D`` as libpq will resolve them (defaults included)."""
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "the local socket"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    user = params.get("user") or os.environ.get("PGUSER") or ""
    database = params.get("dbname") or os.environ.get("PGDATABASE") or user or "?"
    return f"host {host}, port {port}, database {database}"


def connect(target: Target, lease: float, role: str) -> psycopg.Connection[tuple[object, ...]]:
    """A new autocommit connection with tinywf's defaults; raises StoreUnavailable naming where."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(target.conninfo).items()}
    except psycopg.ProgrammingError as exc:
        raise BadInput(f"invalid PostgreSQL URL {target.shown}: {first_line(exc, '')}") from None
    params = session_params(target, params, lease, role)
    try:
        return psycopg.connect(make_conninfo(**params), autocommit=True)
    except psycopg.Error as exc:
        raise unreachable(target, params, exc) from None


def session_params(target: Target, params: dict[str, str], lease: float, role: str) -> dict[str, str]:
    """The keywords of the user's URL (as libpq parsed them) with tinywf's defaults merged under
    them, and tinywf's server options before the user's."""
    defaults = {
        "connect_timeout": "5",
        "keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "3", "keepalives_count": "3",
        "tcp_user_timeout": str(max(int(lease * 1000 / 2), 500)),
        "application_name": f"tinywf {target.schema} {role} {socket.gethostname()}:{os.getpid()}"[:MAX_IDENTIFIER],
    }
    params = dict(params)
    for key, value in defaults.items():
        params.setdefault(key, value)
    params["options"] = f"{SERVER_OPTIONS} {params['options']}" if params.get("options") else SERVER_OPTIONS
    return params


def unreachable(target: Target, params: dict[str, str], exc: BaseException) -> StoreUnavailable:
    """The error for a connection that could not be made: where, and the driver's first line
    (its password masked)."""
    return StoreUnavailable(target.shown, f"cannot connect to PostgreSQL ({where(params)}): "
                                          f"{first_line(exc, params.get('password', ''))}")


def first_line(exc: BaseException, password: str) -> str:
    """The first meaningful line of a driver error, with any password masked (libpq names none,
    but a URL echoed back might)."""
    text = str(exc).strip()
    text = text.removeprefix("connection failed: ")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    line = " ".join(line.split())
    if password:
        line = line.replace(password, "***")
    return line


def fail(target: Target, exc: BaseException, doing: str) -> NoReturn:
    """Turn a driver error into tinywf's: a lost or refused connection is StoreUnavailable (exit 5,
    a worker waits and tries again), anything else a StorageError naming the store."""
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        raise StoreUnavailable(target.shown, f"PostgreSQL failed while {doing}: {first_line(exc, '')}") from None
    raise StorageError(target.shown, f"PostgreSQL refused {doing}: {type(exc).__name__}: "
                                     f"{first_line(exc, '')}") from None
