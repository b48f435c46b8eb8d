"""Throwaway three-node replication clusters for the failover tests and the failover demo.

Each kind (``cluster_postgres.py``, ``cluster_mariadb.py``, ``cluster_redis.py``) implements
:class:`LabCluster`: node ``n1`` starts as the primary, ``n2`` and ``n3`` as its replicas, each
node on its own loopback address (so that a DNS record really changes address in a failover)
and a free port. A failover test kills and promotes nodes, so every test starts a fresh cluster;
``start`` builds it from a stopped template copied once per process, so it takes seconds.

Nodes are also "services" the lab's systemctl stand-in controls (see :mod:`.units`), so the
failover's optional "stop the old primary's service over SSH" runs for real.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Protocol

from siprec_backup.errors import LabError
from siprec_backup.lab import _process

#: The loopback network of each kind's nodes: node ``nK`` listens on ``<prefix>.K``.
ADDRESS_PREFIX = {"postgres": "127.0.10", "mysql": "127.0.11", "redis": "127.0.12"}
NODE_NAMES = ("n1", "n2", "n3")


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now (not one of the lab's reserved ports)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _process.RESERVED_PORTS:
            return port
    raise LabError(f"no free port on {host}")


@dataclass(frozen=True)
class ClusterNode:
    """One server of a lab cluster. ``unit`` is its service name for the lab systemctl."""

    name: str
    host: str
    port: int
    unit: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class LabCluster(Protocol):
    """A running three-node cluster of one kind (n1 primary, n2 and n3 replicas of n1)."""

    kind: str
    nodes: list[ClusterNode]

    def start(self) -> None:
        """Start a fresh cluster: every replica streaming from n1, no data but the schema."""
        ...

    def stop(self) -> None:
        """Stop every node (SIGKILL if a clean stop hangs) and remove the cluster's files."""
        ...

    def kill(self, node: str) -> None:
        """Crash ``node``: SIGKILL its server process, as a power cut would."""
        ...

    def stall(self, node: str) -> None:
        """Stop replica ``node`` from receiving (its link cut), so that it falls behind."""
        ...

    def target(self, node: str) -> Any:
        """An admin connection target of ``node`` (PostgresTarget / MySQLTarget / RedisTarget)."""
        ...

    def unit_script(self, node: str) -> str:
        """A /bin/sh script taking ``start|stop|restart|is-active|status`` for ``node``."""
        ...

    def node(self, name: str) -> ClusterNode: ...
