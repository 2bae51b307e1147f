"""Signed links: a URL that answers one pending event of one run, until it expires or is used.

A link's token is ``PAYLOAD.SIGNATURE``: the payload is base64url JSON naming the run (its id
and the instant it was created, in microseconds), the resume id and the expiry (Unix
seconds); the signature is an HMAC-SHA256 of the payload's text under the store's ``link``
secret. Any change to either part fails the check (the text is signed, not what it decodes
to). A link stops working once its event is no longer pending: resume ids are never reused
within a run, so a link is good for one answer. It never answers another run that got the
same id after its run was removed: that run was created at another instant.

The key is read from the store at every use, so removing it (a new one is made on first
use) revokes every link signed with it, on running servers too.

Standard library only: ``tinywf link`` signs without importing the web server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tinywf_cli import clock
from tinywf_cli.errors import BadInput, StorageError

if TYPE_CHECKING:
    from tinywf_cli.model import PendingResume, RunDocument
    from tinywf_cli.runtime.runtime import Runtime

#: The store secret that signs links.
SECRET_NAME = "link"
#: Domain separation: a signature made for something else with the same key never verifies here.
_CONTEXT = b"tinywf-link-v1:"
#: The longest a link may live: a year.
MAX_EXPIRY = timedelta(days=366)
#: A token longer than this is refused before any work (a run id and a resume id fit easily).
MAX_TOKEN_CHARS = 2048
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@runtime_checkable
class SecretKeeper(Protocol):
    """A store that keeps named secrets (the file and memory stores do)."""

    def secret(self, name: str) -> bytes:
        """The secret ``name``, created on first use and readable by its owner only."""
        ...


def link_key(store: object) -> bytes:
    """The key that signs links, from ``store`` (created on first use); StorageError if it keeps none."""
    if not isinstance(store, SecretKeeper):
        raise StorageError(type(store).__name__, "this store keeps no secrets, so it cannot sign links")
    return store.secret(SECRET_NAME)


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w``, or a sum like ``1d12h``; BadInput otherwise (a bare
    number too), or when it is not longer than zero or longer than a link may live."""
    seconds = clock.parse_duration(text).total_seconds()
    if seconds <= 0:
        raise BadInput(f"invalid duration {text!r}: it must be longer than zero")
    if seconds > MAX_EXPIRY.total_seconds():
        raise BadInput(f"invalid duration {text!r}: a link lives at most {MAX_EXPIRY.days} days")
    return timedelta(seconds=seconds)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _micros(when: datetime) -> int:
    """An instant as whole microseconds since 1970 (a naive datetime is taken as UTC)."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return (aware - _EPOCH) // _MICROSECOND


@dataclass(frozen=True)
class Link:
    """What a valid token grants: answering ``resume_id`` of ``run_id`` until ``expires_at`` —
    of the run with that id created at ``created_at``, and no other."""

    run_id: str
    resume_id: str
    expires_at: datetime
    #: When the run the link was made for was created: a later run with the same id is another run.
    created_at: datetime

    def made_for(self, created_at: datetime) -> bool:
        """Whether the link was made for the run (with its id) created at ``created_at``."""
        return _micros(self.created_at) == _micros(created_at)


class LinkRefused(Exception):
    """A link that cannot be used, with the HTTP status and the words its page shows."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail


def removed(run_id: str) -> LinkRefused:
    """The refusal of a link whose run was removed (another run may have its id since)."""
    return LinkRefused(404, "This run no longer exists",
                       f"Run {run_id} was removed; there is nothing left to answer.")


def tampered() -> LinkRefused:
    """The refusal of a token that was not signed here, or was changed."""
    return LinkRefused(403, "This link is not valid",
                       "It was changed, cut short, or made for another server. Ask for a new link.")


class LinkSigner:
    """Signs and checks link tokens with one key.

    Example::

        signer = LinkSigner(link_key(runtime.store))
        token = signer.sign(Link("order-17", "approval@1", expires_at, head.created_at))
        link = signer.verify(token, now)   # LinkRefused when tampered or expired
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _signature(self, payload: str) -> str:
        return _b64(hmac.new(self._key, _CONTEXT + payload.encode("ascii"), hashlib.sha256).digest())

    def sign(self, link: Link) -> str:
        """The token for ``link``."""
        body = {"r": link.run_id, "c": _micros(link.created_at), "e": link.resume_id,
                "x": int(link.expires_at.timestamp())}
        payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii"))
        return f"{payload}.{self._signature(payload)}"

    def verify(self, token: str, now: datetime) -> Link:
        """The link ``token`` grants at ``now``; LinkRefused when it is tampered with or expired.

        Whether its event is still pending is for the caller to check, against the run.
        """
        if len(token) > MAX_TOKEN_CHARS or not token.isascii() or token.count(".") != 1:
            raise tampered()
        payload, signature = token.split(".")
        # constant time: how much of a forged signature matched must not show in the timing
        if not hmac.compare_digest(signature.encode("ascii"), self._signature(payload).encode("ascii")):
            raise tampered()
        try:
            body: Any = json.loads(_unb64(payload))
            if isinstance(body, dict) and "c" not in body:
                raise LinkRefused(403, "This link is out of date",
                                  "It was made by an older tinywf, before links named the run they answer. "
                                  "Ask for a new link.")
            link = Link(str(body["r"]), str(body["e"]), datetime.fromtimestamp(int(body["x"]), UTC),
                        _EPOCH + int(body["c"]) * _MICROSECOND)
        except (binascii.Error, ValueError, KeyError, TypeError, OverflowError):
            raise tampered() from None  # signed by us but unreadable: never happens unless the key leaked
        if now >= link.expires_at:
            raise LinkRefused(410, "This link has expired",
                              f"It stopped working at {link.expires_at.isoformat().replace('+00:00', 'Z')}. "
                              "Ask for a new link if the question is still open.")
        return link


def link_url(base_url: str, token: str) -> str:
    """The URL of a link's page on a server at ``base_url``."""
    return f"{base_url.rstrip('/')}/link/{token}"


def pending_event(doc: RunDocument, resume: str) -> PendingResume:
    """The pending event of a run document named by resume id or event key, as ``resolve`` finds it.

    Raises StatusConflict for a run that has ended, ResumeNotFound when nothing pending has
    that name, NotAnEvent for a timer's or retry's.
    """
    from tinywf_cli.errors import NotAnEvent, ResumeNotFound, StatusConflict

    if doc.status in ("finished", "cancelled"):
        raise StatusConflict(doc.run_id, doc.status, "link an event of")
    pending = next((p for p in doc.pending if p.resume_id == resume), None) \
        or next((p for p in doc.pending if p.kind == "event" and p.key == resume), None) \
        or next((p for p in doc.pending if p.key == resume), None)
    if pending is None:
        raise ResumeNotFound(doc.run_id, resume, [p.resume_id for p in doc.pending])
    if pending.kind != "event":
        raise NotAnEvent(f"'{resume}' is a {pending.kind}, not an event: only an event can be answered by a link")
    return pending


def issue_link(runtime: Runtime, run_id: str, resume: str, lifetime: timedelta) -> tuple[Link, str]:
    """A link to the pending event ``resume`` (resume id or key) of ``run_id``, and its token.

    The runtime's store keeps the key (made on first use); its clock says when the link expires.
    """
    from tinywf_cli.model import RunDocument
    from tinywf_cli.runtime.runtime import check_run_id

    doc = RunDocument.of(runtime.store.head(check_run_id(run_id)))
    pending = pending_event(doc, resume)
    link = Link(doc.run_id, pending.resume_id, runtime.clock.now() + lifetime, doc.created_at)
    return link, LinkSigner(link_key(runtime.store)).sign(link)


def check_base_url(base_url: str) -> str:
    """``base_url`` if it is an http(s) URL, without a trailing slash; BadInput otherwise."""
    from urllib.parse import urlsplit

    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise BadInput(f"--base-url must be an http:// or https:// URL like https://wf.example.com, not {base_url!r}")
    return base_url.strip().rstrip("/")


def make_link(store: Any, run_id: str, resume_id: str, *, expires: str | timedelta = "7d",
              base_url: str | None = None) -> str:
    """A signed URL answering event ``resume_id`` of ``run_id``, for flows that send links themselves.

    Call it from an action, before the step's ``wait_event``: the event need not be pending
    yet (the link's page checks that when it is opened), but the run must exist: the link
    answers that run only, never a later one given the same id. The resume id of the first
    wait on ``key`` in a visit is ``key@VISIT``; ``self.idempotency_key(key)`` is
    ``RUN:VISIT:KEY``, which gives the visit. ``store`` is a state directory, a
    ``postgresql://`` URL (``self.store_target`` is either) or a store; ``base_url`` defaults
    to ``$TINYWF_BASE_URL``, else ``http://127.0.0.1:8080``; the clock is ``$TINYWF_NOW``
    when set.

    Example::

        visit = self.idempotency_key("approval").split(":", 2)[1]
        url = yield self.action("email", send_link, self.run_id, f"approval@{visit}")
        ok = yield self.wait_event("approval", type=bool, question="Approve?")
    """
    import os
    from pathlib import Path

    from tinywf_cli.clock import clock_from_env
    from tinywf_cli.runtime.runtime import check_run_id
    from tinywf_cli.stores import open_store

    lifetime = parse_duration(expires) if isinstance(expires, str) else expires
    base = check_base_url(base_url or os.environ.get("TINYWF_BASE_URL") or "http://127.0.0.1:8080")
    opened = open_store(store) if isinstance(store, str | Path) else store
    try:
        created_at = opened.head(check_run_id(run_id)).created_at
        link = Link(run_id, resume_id, clock_from_env().now() + lifetime, created_at)
        return link_url(base, LinkSigner(link_key(opened)).sign(link))
    finally:
        if opened is not store:
            opened.close()
