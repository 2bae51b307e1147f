"""Commands for people over HTTP: ``serve`` (the API, pages and links) and ``link`` (one signed URL)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tinywf_cli.cli.app import (
    Debug,
    Json,
    Lease,
    LockTimeout,
    ReadLockTimeout,
    RunId,
    StateDir,
    StoreTarget,
    app,
)
from tinywf_cli.cli.session import DEFAULT_LOCK_TIMEOUT, Session
from tinywf_cli.errors import BadInput


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", metavar="HOST",
                                      help="Address to listen on; anything but loopback reaches other machines.")]
        = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, metavar="PORT",
                                      help="Port to listen on (0: any free port, printed at start).")] = 8080,
    flows: Annotated[Path, typer.Option("--flows", metavar="DIR",
                                        help="Only flows under DIR can be started over HTTP.")] = Path("flows"),
    max_body: Annotated[int, typer.Option("--max-body", min=1, metavar="BYTES",
                                          help="Refuse request bodies larger than this (413).")] = 1024 * 1024,
    quiet: Annotated[bool, typer.Option("--quiet", help="No access log on stderr.")] = False,
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: LockTimeout = DEFAULT_LOCK_TIMEOUT,
    lease: Lease = None,
    debug: Debug = False,
) -> None:
    """Serve the store over HTTP: the JSON API, pages of runs, and signed links that answer one event.

    Every request needs Authorization: Bearer TOKEN, or the cookie a browser gets at
    /?token=TOKEN. TOKEN is $TINYWF_API_TOKEN, else generated and printed once at start.
    A link's page (tinywf link) needs no token. Needs the web extra: pip install 'tinywf[web]'.
    With --json, prints {"url", "token", "flows"} once the server listens.

    \b
    Example:
        TINYWF_API_TOKEN=s3cret tinywf serve --port 8080 --flows flows
    """
    try:
        from tinywf_cli.web.server import ServeOptions
        from tinywf_cli.web.server import serve as serve_forever
    except ImportError as exc:
        raise BadInput(f"`tinywf serve` needs the web extra ({exc.name or exc} is not installed): "
                       "pip install 'tinywf[web]'") from None
    session = Session(store, state_dir, as_json, lock_timeout, lease)
    serve_forever(session.runtime, ServeOptions(host=host, port=port, flows_dir=flows, max_body=max_body,
                                                as_json=as_json, quiet=quiet))


@app.command()
def link(
    run_id: RunId,
    resume: Annotated[str, typer.Argument(metavar="RESUME", help="A resume id, or the key of a pending event.",
                                          show_default=False)],
    expires: Annotated[str, typer.Option("--expires", metavar="AGE",
                                         help="How long the link works: 30m, 12h, 7d, 1d12h (at most 366d).")]
        = "7d",
    base_url: Annotated[str, typer.Option("--base-url", envvar="TINYWF_BASE_URL", show_envvar=True, metavar="URL",
                                          help="Where people reach `tinywf serve`.")] = "http://127.0.0.1:8080",
    store: StoreTarget = None,
    state_dir: StateDir = None,
    as_json: Json = False,
    lock_timeout: ReadLockTimeout = DEFAULT_LOCK_TIMEOUT,
    debug: Debug = False,
) -> None:
    """Print a signed URL that answers one pending event of RUN, without the server's token.

    The link shows the event's question and a form fit for its type (Approve/Reject for a
    bool); it works once, until it expires, and only for that event. The signing key is
    kept in the store, made on first use. With --json: {"url", "run_id", "resume_id",
    "expires_at"}.

    \b
    Example:
        tinywf link order-17 approval --expires 2d --base-url https://wf.example.com
    """
    from tinywf_cli.clock import format_instant
    from tinywf_cli.web.links import check_base_url, issue_link, link_url, parse_duration

    lifetime = parse_duration(expires)
    base = check_base_url(base_url)
    session = Session(store, state_dir, as_json)
    issued, token = issue_link(session.runtime, run_id, resume, lifetime)
    url = link_url(base, token)
    if as_json:
        sys.stdout.write(json.dumps({"url": url, "run_id": issued.run_id, "resume_id": issued.resume_id,
                                     "expires_at": format_instant(issued.expires_at)}, indent=2) + "\n")
        return
    print(url)
