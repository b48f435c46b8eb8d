"""HAProxy 2.6 for the lab: a frontend balancing the "app-a" and "app-b" backends (with health
checks), a stats page with basic auth, and the Runtime API (level admin) on a TCP port and on a
unix socket.

The stats password is random, kept in the lab's secrets (:data:`PASSWORD_SECRET`) and reaches
HAProxy through its 0600 config file, never its command line, the facts or the log.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from siprec_backup.errors import LabError, LoadBalancerError
from siprec_backup.lab import _process
from siprec_backup.lab.http_backends import NAMES
from siprec_backup.lab.service import LabContext, Service, ServiceRecord
from siprec_backup.traffic import HAProxy

PASSWORD_SECRET = "haproxy_stats_password"  # noqa: S105 - the key, not the password
STATS_USER = "siprec"
BACKEND = "app"
LOOPBACK = "127.0.0.1"

_CONFIG = """\
global
    stats socket ipv4@{loopback}:{runtime_port} level admin
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 90s
    timeout server 90s
frontend fe
    bind {loopback}:{port}
    default_backend {backend}
backend {backend}
    balance roundrobin
    option httpchk GET /
{servers}
listen stats
    bind {loopback}:{stats_port}
    stats enable
    stats uri /stats
    stats auth {user}:{password}
"""


@dataclass(frozen=True)
class HAProxyEndpoint:
    """How to reach the lab's HAProxy. ``stats_password`` is never shown by repr()."""

    frontend_url: str
    stats_url: str
    stats_user: str
    stats_password: str = field(repr=False)
    runtime_tcp: str = ""
    runtime_socket: str = ""
    backend: str = BACKEND

    def load_balancer(self, via: str = "tcp") -> HAProxy:
        """The lever over the runtime API (``via`` "tcp" or "unix"), or the stats CSV ("stats")."""
        if via == "tcp":
            return HAProxy(runtime=self.runtime_tcp)
        if via == "unix":
            return HAProxy(runtime=self.runtime_socket)
        if via == "stats":
            return HAProxy(
                stats_url=self.stats_url,
                stats_user=self.stats_user,
                stats_password=self.stats_password,
            )
        raise LabError(f"unknown HAProxy access {via!r}: use 'tcp', 'unix' or 'stats'")

    @classmethod
    def from_record(cls, record: ServiceRecord, password: str) -> HAProxyEndpoint:
        """Build the endpoint from a lab.json record and the stats password."""
        return cls(
            frontend_url=record.fact("frontend_url"),
            stats_url=record.fact("stats_url"),
            stats_user=record.fact("stats_user"),
            stats_password=password,
            runtime_tcp=record.fact("runtime_tcp"),
            runtime_socket=record.fact("runtime_socket"),
            backend=record.fact("backend"),
        )


class HAProxyService(Service):
    """``haproxy -db -f <lab>/haproxy/haproxy.cfg``; ready once both servers are UP."""

    name = "haproxy"
    group = "haproxy"
    after = ("http-backends",)
    stop_timeout = 10.0

    def _dir(self, root: Path) -> Path:
        return root / "haproxy"

    def reset(self, root: Path) -> None:
        """Remove what an interrupted first start left."""
        shutil.rmtree(self._dir(root), ignore_errors=True)

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Write the config (0600), spawn HAProxy and wait for both servers to be UP."""
        binary = shutil.which("haproxy")
        if binary is None:
            raise LabError("haproxy not found: install it (Debian: apt-get install haproxy)")
        password = ctx.secrets.get(PASSWORD_SECRET)
        if not password:
            raise LabError(f"{self.name}: the lab has no HAProxy stats password secret")
        port = ctx.port(self.name)
        runtime_port, stats_port = _process.free_ports(2)
        for p in (port, runtime_port, stats_port):
            if not _process.port_is_free(p):
                raise LabError(f"{self.name}: port {p} on 127.0.0.1 is already in use")
        backends = ctx.record("http-backends")
        d = self._dir(ctx.root)
        d.mkdir(parents=True, exist_ok=True)
        sock = d / "runtime.sock"
        servers = "\n".join(
            f"    server {name} {backends.fact(name)} check inter 500ms" for name in NAMES
        )
        text = _CONFIG.format(
            loopback=LOOPBACK,
            runtime_port=runtime_port,
            socket=sock,
            port=port,
            backend=BACKEND,
            servers=servers,
            stats_port=stats_port,
            user=STATS_USER,
            password=password,
        )
        cfg = d / "haproxy.cfg"
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        proc = _process.spawn([binary, "-db", "-f", cfg], log=ctx.log(self.name), cwd=d)
        runtime = f"{LOOPBACK}:{runtime_port}"
        ticks = self.launch(ctx, proc, lambda: self._all_up(runtime), timeout=20.0)
        return ServiceRecord(
            name=self.name,
            pid=proc.pid,
            host=LOOPBACK,
            port=port,
            log=ctx.log(self.name),
            started_ticks=ticks,
            facts={
                "frontend_url": f"http://{LOOPBACK}:{port}",
                "stats_url": f"http://{LOOPBACK}:{stats_port}/stats",
                "stats_user": STATS_USER,
                "stats_password": f"lab.json secrets.{PASSWORD_SECRET}",
                "runtime_tcp": runtime,
                "runtime_socket": str(sock),
                "backend": BACKEND,
                "config": str(cfg),
            },
        )

    @staticmethod
    def _all_up(runtime: str) -> bool:
        try:
            servers = HAProxy(runtime=runtime, timeout=1.0).servers()
        except LoadBalancerError:
            return False
        return len(servers) == len(NAMES) and all(s.status == "UP" for s in servers)

    def is_ready(self, record: ServiceRecord) -> bool:
        """The runtime API answers ``show stat``."""
        try:
            HAProxy(runtime=record.fact("runtime_tcp"), timeout=1.0).servers()
        except LoadBalancerError:
            return False
        return True
