"""A private, throwaway PostgreSQL cluster behind a bridge, and "hosts" as network namespaces.

Tests that restart PostgreSQL or cut a host off the network must never touch the shared
server (other test runs use it). ``PrivateCluster`` makes its own: ``initdb`` in a
temporary folder (as the ``postgres`` user: initdb refuses root), its own port, listening
on 127.0.0.1 and on the address of a bridge. ``Hosts`` adds network namespaces, each
with a veth pair on that bridge and its own address: a process started in one of them
(``Hosts.command``) reaches the database as a separate machine would, and
``Hosts.cut``/``Hosts.restore`` take its link down and up (a silent cut: no FIN, no RST).

Everything needs root and ``ip``; ``why_not()`` says why it cannot run here. Names and
addresses carry this process's id, so that test runs on one machine never collide.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=120)


def pg_bin() -> Path | None:
    """The folder of the installed PostgreSQL server's programs (the newest), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def why_not() -> str | None:
    """Why no private cluster with network namespaces can be made here, or None when it can."""
    if importlib.util.find_spec("psycopg") is None:
        return 'psycopg is not installed (pip install -e ".[test]")'
    if os.geteuid() != 0:
        return "needs root (network namespaces, and initdb as the postgres user)"
    if pg_bin() is None:
        return "no PostgreSQL server programs (initdb) under /usr/lib/postgresql"
    if shutil.which("ip") is None or shutil.which("runuser") is None:
        return "needs the ip and runuser commands"
    probe = f"twprobe{os.getpid() % 100000}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"the sandbox refuses network namespaces: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Hosts:
    """A bridge with an address, and namespaces on it (``add``), each a "host" of its own."""

    def __init__(self) -> None:
        n = os.getpid() % 10000
        self.tag = str(n)
        self.bridge = f"twb{n}"
        self.subnet = f"10.{200 + n % 50}.{(n // 50) % 250}"
        self.address = f"{self.subnet}.1"
        self.names: list[str] = []
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.address}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    def add(self) -> str:
        """A new host: its namespace's name (its address is ``address_of(name)``)."""
        i = len(self.names) + 1
        ns, outside, inside = f"tww{self.tag}_{i}", f"twh{self.tag}_{i}", f"twn{self.tag}_{i}"
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", outside, "master", self.bridge)
        _run("ip", "link", "set", outside, "up")
        _run("ip", "link", "set", inside, "netns", ns)
        _run("ip", "-n", ns, "addr", "add", f"{self.subnet}.{10 + i}/24", "dev", inside)
        _run("ip", "-n", ns, "link", "set", inside, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        self.names.append(ns)
        return ns

    def address_of(self, ns: str) -> str:
        """The host's address."""
        return f"{self.subnet}.{10 + self.names.index(ns) + 1}"

    def command(self, ns: str, argv: list[str]) -> list[str]:
        """``argv`` run inside the host (``ip netns exec`` execs it: the process keeps its pid)."""
        return ["ip", "netns", "exec", ns, *argv]

    def _outside(self, ns: str) -> str:
        return ns.replace("tww", "twh", 1)

    def cut(self, ns: str) -> None:
        """Take the host's link down: its packets go nowhere, nobody is told."""
        _run("ip", "link", "set", self._outside(ns), "down")

    def restore(self, ns: str) -> None:
        """Bring the host's link back up."""
        _run("ip", "link", "set", self._outside(ns), "up")

    def remove(self) -> None:
        """Remove every namespace (their veth pairs go with them) and the bridge."""
        for ns in self.names:
            _run("ip", "netns", "del", ns, check=False)
        _run("ip", "link", "del", self.bridge, check=False)


class PrivateCluster:
    """A PostgreSQL cluster of this test run only: ``url(schema)`` connects to it."""

    def __init__(self, listen: str | None = None) -> None:
        bindir = pg_bin()
        assert bindir is not None
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="tinywf-cluster-"))
        self.data = self.root / "data"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "root", "-N")
        addresses = "127.0.0.1" + (f",{listen}" if listen else "")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '{addresses}'\n"
                       f"unix_socket_directories = '{self.root}'\nmax_connections = 200\n")
        if listen:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {listen.rsplit('.', 1)[0]}.0/24 trust\n")
        self.start()

    def _as_postgres(self, *argv: str) -> None:
        _run("runuser", "-u", "postgres", "--", *argv)

    def _ctl(self, *args: str) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", *args)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._ctl("start")

    def restart(self) -> float:
        """Restart it the hard way (``-m immediate``: a crash and recovery); how long it took."""
        started = time.monotonic()
        self._ctl("restart", "-m", "immediate")
        return time.monotonic() - started

    def url(self, schema: str, host: str = "127.0.0.1") -> str:
        """A store URL on this cluster."""
        return f"postgresql://root@{host}:{self.port}/postgres?schema={schema}"

    def remove(self) -> None:
        """Stop the server and delete its files."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)
