"""Run the web application under uvicorn: bind, say where once, serve until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from tinywf_cli.errors import BadInput, Conflict
from tinywf_cli.runtime.runtime import Runtime
from tinywf_cli.web.app import create_app
from tinywf_cli.web.gate import Settings

#: Where ``tinywf serve`` takes its token from, when it is set.
TOKEN_ENV = "TINYWF_API_TOKEN"


@dataclass(frozen=True)
class ServeOptions:
    """``tinywf serve``'s options."""

    host: str
    port: int
    flows_dir: Path
    max_body: int
    as_json: bool
    quiet: bool


class Server(uvicorn.Server):
    """uvicorn's server, which after a graceful stop on SIGINT/SIGTERM exits 0 (like `tinywf worker`)
    instead of raising the signal again."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal handling, less the signal raised again at the end."""
        with super().capture_signals():
            yield
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port); Conflict when it is taken."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without
        # it, Nagle holds each response's body back for the client's delayed ACK (40 ms a request)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        raise Conflict(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(runtime: Runtime, options: ServeOptions) -> None:
    """Serve the runtime's store until stopped; prints the address (with a generated token) once."""
    if not options.flows_dir.is_dir():
        raise BadInput(f"--flows {options.flows_dir}: not a directory (only flows under it can be started)")
    given = os.environ.get(TOKEN_ENV, "")
    token = given or secrets.token_urlsafe(32)
    store_dir = getattr(runtime.store, "root", None)
    settings = Settings(token=token, flows_dir=options.flows_dir, max_body=options.max_body,
                        where=str(store_dir) if store_dir is not None else None,
                        access_log=None if options.quiet else sys.stderr)
    app = create_app(runtime, settings)
    sock = listen(options.host, options.port)
    host, port = sock.getsockname()[:2]
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    if options.as_json:
        print(json.dumps({"url": base, "token": None if given else token, "flows": str(options.flows_dir)}),
              flush=True)
    else:
        where = f"{base}/" if given else f"{base}/?token={token}"
        print(f"tinywf serve: {where}", flush=True)
        print(f"  token: {'from $' + TOKEN_ENV if given else 'generated, shown once above'}; "
              f"flows under {options.flows_dir}; Ctrl-C stops", flush=True)
    if not is_loopback(options.host):
        print(f"warning: listening on {options.host}, beyond this machine; the token travels in clear over "
              "HTTP: put a TLS proxy in front", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False,
                            lifespan="off", timeout_graceful_shutdown=5)
    Server(config).run(sockets=[sock])
