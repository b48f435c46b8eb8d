"""A throwaway HAProxy 2.6 routing TCP to lab clusters, so a failover test can check that the
load balancer sends new connections to the new primary.

Each backend added with :meth:`ClusterHAProxy.add_backend` gets its own TCP frontend on a free
127.0.0.1 port and one server per cluster node (server name = node name): the primary enabled,
the others ``disabled`` (MAINT), all with a TCP connect check every 500 ms so a dead server
shows DOWN. The Runtime API (level admin) listens on 127.0.0.1 for
:class:`siprec_backup.traffic.HAProxy`. Runs like the lab's HAProxy (:mod:`.haproxy`):
``haproxy -db -f cfg``, output to a log file.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from siprec_backup.errors import LabError, LoadBalancerError
from siprec_backup.lab import _process
from siprec_backup.lab.clusters import ClusterNode
from siprec_backup.traffic import HAProxy
from siprec_backup.traffic.haproxy import check_name

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0

_GLOBAL = """\
global
    stats socket ipv4@{loopback}:{runtime_port} level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 90s
    timeout server 90s
"""

_BACKEND = """\
frontend fe_{name}
    bind {loopback}:{port}
    default_backend {name}
backend {name}
    option tcp-check
{servers}
"""


@dataclass(frozen=True)
class _Backend:
    name: str
    port: int
    nodes: tuple[ClusterNode, ...]
    primary: str


class ClusterHAProxy:
    """One HAProxy under ``<root>/cluster-haproxy``: add backends, then :meth:`start`."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "cluster-haproxy"
        self._backends: dict[str, _Backend] = {}
        self._runtime_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._ticks: int | None = None

    def __repr__(self) -> str:
        return f"ClusterHAProxy({self.dir}, backends={sorted(self._backends)})"

    def add_backend(self, name: str, nodes: list[ClusterNode], primary: str = "n1") -> None:
        """A TCP frontend on a free port routing to backend ``name``: ``primary`` enabled, the
        other nodes disabled (MAINT). Only before :meth:`start`."""
        if self._proc is not None:
            raise LabError(f"{self!r}: add backends before start()")
        check_name("backend", name)
        if name in self._backends:
            raise LabError(f"{self!r}: backend {name!r} already added")
        if primary not in {n.name for n in nodes}:
            raise LabError(f"backend {name!r}: no node {primary!r} among the nodes")
        (port,) = _process.free_ports(1)
        self._backends[name] = _Backend(name, port, tuple(nodes), primary)

    @property
    def runtime(self) -> str:
        """The Runtime API address, ``127.0.0.1:<port>``."""
        if not self._runtime_port:
            raise LabError(f"{self!r} is not started")
        return f"{LOOPBACK}:{self._runtime_port}"

    def frontend(self, name: str) -> tuple[str, int]:
        """The (host, port) of backend ``name``'s frontend."""
        backend = self._backends.get(name)
        if backend is None:
            raise LabError(f"{self!r}: no backend {name!r}")
        return LOOPBACK, backend.port

    def start(self) -> None:
        """Write the config, run haproxy and wait until every backend's primary is UP."""
        if self._proc is not None:
            raise LabError(f"{self!r} is already started")
        if not self._backends:
            raise LabError(f"{self!r}: add at least one backend before start()")
        binary = shutil.which("haproxy")
        if binary is None:
            raise LabError("haproxy not found: install it (Debian: apt-get install haproxy)")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        (self._runtime_port,) = _process.free_ports(1)
        for port in (self._runtime_port, *(b.port for b in self._backends.values())):
            if not _process.port_is_free(port):
                raise LabError(f"cluster haproxy: port {port} on {LOOPBACK} is already in use")
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(self._config())
        log = self.dir / "haproxy.log"
        self._proc = _process.spawn([binary, "-db", "-f", cfg], log=log, cwd=self.dir)
        self._ticks = _process.start_ticks(self._proc.pid)
        try:
            _process.wait_ready(
                "cluster haproxy",
                self._primaries_up,
                proc=self._proc,
                log=log,
                timeout=START_TIMEOUT,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop haproxy (SIGKILL if it hangs) and remove its files."""
        if self._proc is not None:
            _process.stop_process(self._proc.pid, self._ticks, sig=signal.SIGTERM, timeout=5.0)
            self._proc.wait(timeout=5.0)
            self._proc = None
        self._runtime_port = 0
        shutil.rmtree(self.dir, ignore_errors=True)

    def wait_serving(self, backend: str, server: str, *, timeout: float = 10.0) -> None:
        """Wait until ``backend/server`` is UP (or UP transitional, which takes traffic)."""
        lever = HAProxy(runtime=self.runtime, timeout=1.0)
        deadline = time.monotonic() + timeout
        while True:
            status = lever.server(backend, server).status
            if status.startswith("UP"):
                return
            if time.monotonic() > deadline:
                raise LabError(f"{backend}/{server} is {status!r} after {timeout:g} s")
            time.sleep(0.05)

    def _config(self) -> str:
        parts = [_GLOBAL.format(loopback=LOOPBACK, runtime_port=self._runtime_port)]
        for b in self._backends.values():
            servers = "\n".join(
                f"    server {check_name('server', n.name)} {n.host}:{n.port} check inter 500ms"
                + ("" if n.name == b.primary else " disabled")
                for n in b.nodes
            )
            parts.append(
                _BACKEND.format(name=b.name, loopback=LOOPBACK, port=b.port, servers=servers)
            )
        return "".join(parts)

    def _primaries_up(self) -> bool:
        try:
            found = HAProxy(runtime=self.runtime, timeout=1.0).servers()
        except LoadBalancerError:
            return False
        up = {(s.backend, s.server) for s in found if s.status.startswith("UP")}
        return all((b.name, b.primary) in up for b in self._backends.values())
