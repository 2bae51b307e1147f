"""The outermost layer of ``tinywf serve``: who may be served, how much they may send, and what
every answer carries.

``Gate`` wraps the application (plain ASGI): it checks the bearer token (constant time) or the
cookie a browser got from any page's ``?token=`` (answered with the cookie and a redirect to the
same page without the token), lets a link's own page and POST through without either,
refuses cross-site writes and cookie-only API writes without the CSRF token, reads request
bodies up to ``--max-body`` (413 past it), adds the security headers to every answer, turns
every redirect into a path on this server (never the host a request names), and writes one
access-log line per request that holds no token, whatever the request: no query string, no
link token, no API token.
"""

from __future__ import annotations

import hmac
import re
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import parse_qs, quote, unquote_plus, urlsplit

from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tinywf_cli.web import pages

#: Request bodies larger than this are refused with 413 (``tinywf serve --max-body``).
DEFAULT_MAX_BODY = 1024 * 1024
#: The cookie the HTML pages authenticate with, set after ``?token=TOKEN`` on any page.
COOKIE = "tinywf_token"
#: The header a script that authenticates with the cookie sends its CSRF token in.
CSRF_HEADER = "x-csrf-token"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Settings:
    """How ``tinywf serve`` was started."""

    #: The bearer token every request but a link's needs.
    token: str
    #: Only flows under this folder can be started.
    flows_dir: Path
    max_body: int = DEFAULT_MAX_BODY
    #: What the top bar shows (the state directory).
    where: str | None = None
    #: Where the access log goes (None: nowhere).
    access_log: TextIO | None = field(default_factory=lambda: sys.stderr)

    @property
    def csrf(self) -> str:
        """The token the HTML forms carry: derived from the API token, useless without it."""
        return hmac.new(self.token.encode(), b"tinywf-csrf", "sha256").hexdigest()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _same(given: str | None, expected: str) -> bool:
    """Constant-time equality of a presented secret and the expected one."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


#: What a link token (``PAYLOAD.SIGNATURE``, base64url) or a good part of one looks like.
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{12,}|[A-Za-z0-9_-]{40,}")
#: The methods the access log names; any other is the client's text, and could be anything.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})


def shown_path(path: str, secret: str = "") -> str:
    """A path for the access log, holding no credential whatever the request said.

    Everything after a ``link`` segment is cut (``/link/TOKEN``, ``//link/TOKEN``,
    ``/x/link/TOKEN/y``), as is anything shaped like a link token or a long random string
    anywhere, and ``secret`` (the API token) wherever it occurs. Characters that are not
    printable are escaped, so that one request is one log line.
    """
    segments = path.split("/")
    lowered = [segment.lower() for segment in segments]
    if "link" in lowered:
        cut = lowered.index("link") + 1
        segments = [*segments[:cut], "…"] if any(segments[cut:]) else segments
    shown = "/".join(segments)
    if secret:
        shown = shown.replace(secret, "…")
    shown = _TOKEN_LIKE.sub("…", shown)
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in shown)


def _is_page(path: str) -> bool:
    """Whether ``path`` is one of the HTML pages (which take ``?token=``), not the API or a link."""
    return not path.startswith(("/api/", "/link/")) and path not in ("/openapi.json", "/metrics")


def _raw_path(scope: Scope) -> str:
    """The request's path as sent (percent-escapes kept), without the query string, starting with
    one ``/`` (``//host/x`` would name another host in a ``Location``)."""
    raw = scope.get("raw_path")
    path = bytes(raw).decode("latin-1") if raw else quote(scope.get("path", "/"))
    return "/" + path.lstrip("/\\")


def _without_token(scope: Scope) -> str:
    """The request's path and query string, with every ``token`` parameter left out."""
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    kept = [part for part in query.split("&") if part and unquote_plus(part.partition("=")[0]) != "token"]
    return _raw_path(scope) + ("?" + "&".join(kept) if kept else "")


def relative_location(location: str) -> str:
    """A redirect's target as a path on this server: its scheme and host (which come from the
    request's ``Host`` header) left out, and never ``//`` or ``/\\`` (which a browser would read
    as another host)."""
    parts = urlsplit(location)
    path = "/" + parts.path.lstrip("/\\")
    return f"{path}?{parts.query}" if parts.query else path


class Gate:
    """The outermost ASGI layer: authentication, body cap, security headers, access log."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.policy = ("default-src 'none'; style-src " + pages.stylesheet_hash() + "; img-src 'self' data:; "
                       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

    def auth(self, scope: Scope) -> Literal["bearer", "cookie", "query", "link"] | None:
        """How the request proves it may be served, if it does."""
        path = scope.get("path", "")
        if path.startswith("/link/") and path.count("/") == 2 and len(path) > len("/link/"):
            return "link"
        authorization = _header(scope, b"authorization") or ""
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), self.settings.token):
            return "bearer"
        if _is_page(path) and scope.get("method") == "GET":
            query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
            if _same(next(iter(query.get("token", [])), None), self.settings.token):
                return "query"  # before the cookie: the token leaves the address bar anyway
        cookie = SimpleCookie()
        try:
            cookie.load(_header(scope, b"cookie") or "")
        except Exception:  # a malformed cookie header is no cookie
            cookie = SimpleCookie()
        if COOKIE in cookie and _same(cookie[COOKIE].value, self.settings.token):
            return "cookie"
        return None

    async def sign_in(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``PAGE?token=TOKEN``: the cookie set, and a redirect to ``PAGE`` without the token, so that
        the address bar, the history and a bookmark never hold it."""
        target = relative_location(_without_token(scope))
        response: Response
        if _header(scope, b"sec-fetch-site") == "cross-site":
            # a SameSite=Strict cookie is not sent on a redirect that another site's page started:
            # this page, on our own site, takes the next step, so the cookie goes with it
            response = HTMLResponse(pages.continue_page(target))
        else:
            response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, self.settings.token, httponly=True, samesite="strict", path="/")
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (lifespan and other scopes pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_seen = [0]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
                headers = [(key, relative_location(value.decode("latin-1")).encode("latin-1"))
                           if key.lower() == b"location" else (key, value)
                           for key, value in message.get("headers", [])]
                headers += [(b"content-security-policy", self.policy.encode()),
                            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store")]
                message["headers"] = headers
            await send(message)

        try:
            await self.serve(scope, receive, send_with_headers)
        finally:
            self.log(scope, status_seen[0], time.perf_counter() - started)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse what needs refusing; otherwise hand the request (body read and capped) to the app."""
        how = self.auth(scope)
        scope.setdefault("state", {})["auth"] = how
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if how is None:
            await self.refuse_token(scope, receive, send)
            return
        if how == "query":
            await self.sign_in(scope, receive, send)
            return
        if method not in ("GET", "HEAD", "OPTIONS"):
            origin = _header(scope, b"origin")
            host = _header(scope, b"host")
            if origin and origin != "null" and host and origin.split("://", 1)[-1] != host:
                await self.refuse(scope, receive, send, 403, "cross-site requests are refused")
                return
            if how == "cookie" and path.startswith("/api/") and not _same(_header(scope, CSRF_HEADER.encode()),
                                                                           self.settings.csrf):
                await self.refuse(scope, receive, send, 403,
                                  "a request authenticated by the cookie must send the page's CSRF token "
                                  f"in {CSRF_HEADER}, or use Authorization: Bearer")
                return
        body = await self.read_body(scope, receive, send)
        if body is None:
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body, only a disconnect can come
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole request body, or None once a 413 was sent for one over the cap."""
        limit = self.settings.max_body
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > limit):
            await self.refuse(scope, receive, send, 413, f"the request body is larger than {limit} bytes")
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self.refuse(scope, receive, send, 413, f"the request body is larger than {limit} bytes")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def refuse_token(self, scope: Scope, receive: Receive, send: Send) -> None:
        """401: JSON for the API, a page saying where the token is for browsers."""
        path = scope.get("path", "")
        wants_page = "text/html" in (_header(scope, b"accept") or "")
        if path.startswith("/api/") or path in ("/openapi.json", "/metrics") or not wants_page:
            response: Response = JSONResponse(
                {"error": {"type": "Unauthorized", "exit_code": 2,
                           "message": "send Authorization: Bearer TOKEN (the token `tinywf serve` printed, "
                                      "or $TINYWF_API_TOKEN)"}},
                status_code=401, headers={"www-authenticate": 'Bearer realm="tinywf"'})
        else:
            response = HTMLResponse(pages.sign_in_page(), status_code=401,
                                    headers={"www-authenticate": 'Bearer realm="tinywf"'})
        await response(scope, receive, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        """An error answer from the gate itself."""
        kind = {403: "Forbidden", 413: "TooLarge"}.get(status, "Refused")
        response = JSONResponse({"error": {"type": kind, "message": message, "exit_code": 2}}, status_code=status)
        await response(scope, receive, send)

    def log(self, scope: Scope, status: int, seconds: float) -> None:
        """One access-log line: method, path (``shown_path``: no query string, no token), status, time."""
        out = self.settings.access_log
        if out is None:
            return
        method = scope.get("method", "-")
        try:
            out.write(f"{method if method in _METHODS else 'OTHER'} "
                      f"{shown_path(scope.get('path', ''), self.settings.token)} {status} "
                      f"{seconds * 1000:.1f}ms\n")
            out.flush()
        except (OSError, ValueError):  # a closed log must not break serving
            pass
