"""Lab clusters ready for the failover, switchover and blue-green flows: a fresh three-node
cluster (see :mod:`siprec_backup.lab.clusters`) behind its own HAProxy, and the blocks describing
it (a connection block per node, the replication cluster block, the load balancer block, a DNS
record in the lab's zone and the failover cluster block tying them together). Used by the failover
tests, the demo and the failover benchmark.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydantic import SecretStr

from blocks import MySQLDatabase, PostgresDatabase, RedisServer, ReplicationCluster
from blocks.failover import FailoverCluster, FailoverNodeSettings
from blocks.load_balancers import HAProxyLoadBalancer
from blocks.replication import ClusterKind, NodeRole, ReplicationNodeConfig
from deployments.lab_blocks import LEVERS, save_lever_blocks
from siprec_backup.dns import Change, DnsZone
from siprec_backup.lab import LabState
from siprec_backup.lab.cluster_haproxy import ClusterHAProxy
from siprec_backup.lab.cluster_mariadb import MariaDBLabCluster
from siprec_backup.lab.cluster_postgres import PostgresLabCluster
from siprec_backup.lab.cluster_redis import RedisLabCluster
from siprec_backup.lab.clusters import LabCluster
from siprec_backup.lab.units import install_units, write_systemctl

KINDS = ("postgres", "mysql", "redis")
CLUSTERS: dict[str, type[PostgresLabCluster | MariaDBLabCluster | RedisLabCluster]] = {
    "postgres": PostgresLabCluster,
    "mysql": MariaDBLabCluster,
    "redis": RedisLabCluster,
}


@dataclass(frozen=True)
class FailoverBlocks:
    """Names of the saved blocks and the record the failover moves."""

    failover: str
    replication: str
    load_balancer: str | None
    backend: str
    dns_record: str | None


def _connection_block(kind: str, target: Any) -> Any:
    password = SecretStr(target.password) if target.password else None
    if kind == "postgres":
        return PostgresDatabase(
            host=target.host,
            port=target.port,
            user=target.user,
            password=password,
            dbname=target.dbname,
            sslmode="disable",
        )
    if kind == "mysql":
        databases = [target.database] if target.database else []
        return MySQLDatabase(
            host=target.host,
            port=target.port,
            user=target.user,
            password=password,
            databases=databases,
        )
    return RedisServer(host=target.host, port=target.port, password=password)


def save_failover_blocks(
    cluster: LabCluster,
    name: str,
    *,
    haproxy_runtime: str | None = None,
    load_balancer: str | None = None,
    lb_servers: dict[str, str] | None = None,
    dns_block: str | None = None,
    dns: DnsZone | None = None,
    ssh_block: str | None = None,
    systemctl: str | None = None,
    notify: list[str] | None = None,
    **settings: Any,
) -> FailoverBlocks:
    """Save every block of ``cluster`` under names starting with ``name``; the DNS record
    ``<name>-db`` is created in ``dns``'s zone pointing at n1. The load balancer is the cluster's
    HAProxy (``haproxy_runtime``: a block is saved, each node a server of backend ``name``) or an
    existing block ``load_balancer`` whose ``backend/server`` of each node ``lb_servers`` gives.
    ``settings`` go to the FailoverCluster block (e.g. ``max_data_loss``)."""
    nodes = []
    for node in cluster.nodes:
        block = f"{name}-{node.name}"
        _connection_block(cluster.kind, cluster.target(node.name)).save(block, overwrite=True)
        role: NodeRole = "primary" if node.name == "n1" else "replica"
        nodes.append(ReplicationNodeConfig(name=node.name, role=role, block=block))
    replication = f"{name}-replication"
    ReplicationCluster(
        cluster=name,
        kind=cast(ClusterKind, cluster.kind),
        nodes=nodes,
        timeout_seconds=3,
    ).save(replication, overwrite=True)

    if haproxy_runtime:
        load_balancer = f"{name}-haproxy"
        HAProxyLoadBalancer(runtime_api=haproxy_runtime, timeout_seconds=2).save(
            load_balancer, overwrite=True
        )
        lb_servers = {node.name: f"{name}/{node.name}" for node in cluster.nodes}
    record = None
    if dns is not None and dns_block:
        record = f"{name}-db"
        dns.apply([Change.replace(record, "A", 60, cluster.node("n1").host)])
    if hasattr(cluster, "replication_auth"):  # MariaDB: the old primary's account in a switchover
        user, password = cluster.replication_auth()
        settings.setdefault("replication_user", user)
        settings.setdefault("replication_password", SecretStr(password))
    data_dirs = getattr(cluster, "data_directory", None)  # PostgreSQL: restarted as a standby
    FailoverCluster(
        replication=replication,
        nodes=[
            FailoverNodeSettings(
                name=node.name,
                address=node.host,
                lb_server=(lb_servers or {}).get(node.name) if load_balancer else None,
                ssh_host=ssh_block,
                service=node.unit if ssh_block else None,
                systemctl=systemctl or "systemctl",
                data_directory=str(data_dirs(node.name)) if data_dirs else None,
            )
            for node in cluster.nodes
        ],
        load_balancer=load_balancer,
        dns_zone=dns_block if record else None,
        dns_records=[record] if record else [],
        dns_ttl=60,
        notify=notify or [],
        step_timeout_seconds=20,
        **settings,
    ).save(name, overwrite=True)
    return FailoverBlocks(name, replication, load_balancer, name, record)


@dataclass
class RunningCluster:
    """A started lab cluster, its HAProxy and its saved blocks."""

    kind: str
    cluster: LabCluster
    haproxy: ClusterHAProxy
    blocks: FailoverBlocks
    lab: LabState

    @property
    def name(self) -> str:
        return self.blocks.failover

    def target(self, node: str) -> Any:
        return self.cluster.target(node)

    def app_target(self, node: str) -> Any:
        """What an application connects as (MariaDB's admin may write on a fenced node)."""
        app = getattr(self.cluster, "app_target", None)
        return app(node) if app else self.target(node)

    def frontend(self) -> Any:
        """The application's connection through HAProxy's frontend."""
        host, port = self.haproxy.frontend(self.blocks.backend)
        return dataclasses.replace(self.app_target("n1"), host=host, port=port)


@contextlib.contextmanager
def running_cluster(
    lab: LabState, kind: str, root: Path, name: str, *, ssh: bool = False, **settings: Any
) -> Iterator[RunningCluster]:
    """A fresh cluster of ``kind`` under ``root`` with its HAProxy, DNS record and blocks named
    after ``name``; stopped afterwards. ``ssh``: the nodes' services are reachable over the lab's
    sshd (a systemctl stand-in that really starts and stops them), as a PostgreSQL switchover
    needs. ``settings`` go to the failover cluster block."""
    save_lever_blocks(lab)
    cluster: LabCluster = CLUSTERS[kind](root / "cluster")
    haproxy = ClusterHAProxy(root / "haproxy")
    try:
        cluster.start()
        haproxy.add_backend(name, cluster.nodes)
        haproxy.start()
        if ssh:
            systemctl = write_systemctl(root / "systemd")
            install_units(root / "systemd", cluster)
            settings.update(ssh_block=LEVERS["ssh"], systemctl=str(systemctl))
        blocks = save_failover_blocks(
            cluster,
            name,
            haproxy_runtime=haproxy.runtime,
            dns_block=LEVERS["dns"],
            dns=lab.bind("primary").client(),
            **settings,
        )
        yield RunningCluster(kind, cluster, haproxy, blocks, lab)
    finally:
        haproxy.stop()
        cluster.stop()
