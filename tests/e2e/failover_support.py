"""What the failover flow tests share: a fresh three-node lab cluster of each kind behind its own
HAProxy, blocks describing it, and kind-neutral probes (write a marker, look for it, ask which
node answers through HAProxy, ask each BIND server for the record)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import psycopg
import pymysql
import redis

from deployments.lab_blocks import LEVERS, save_lever_blocks
from deployments.lab_failover import FailoverBlocks, save_failover_blocks
from siprec_backup.lab import LabState
from siprec_backup.lab.cluster_haproxy import ClusterHAProxy
from siprec_backup.lab.cluster_mariadb import MariaDBLabCluster
from siprec_backup.lab.cluster_postgres import PostgresLabCluster
from siprec_backup.lab.cluster_redis import RedisLabCluster
from siprec_backup.lab.clusters import LabCluster
from siprec_backup.lab.units import install_units, write_systemctl
from tests.e2e.conftest import artifact

KINDS = ("postgres", "mysql", "redis")
CLUSTERS: dict[str, type[Any]] = {
    "postgres": PostgresLabCluster,
    "mysql": MariaDBLabCluster,
    "redis": RedisLabCluster,
}


@dataclass
class RunningCluster:
    """A started lab cluster, its HAProxy and its blocks."""

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


@contextlib.contextmanager
def running_cluster(
    lab: LabState, kind: str, *, ssh: bool = False, **settings: Any
) -> Iterator[RunningCluster]:
    """A fresh cluster of ``kind`` with HAProxy, DNS record and blocks; stopped afterwards.
    ``ssh``: the nodes' services are reachable over the lab's sshd (a systemctl stand-in that
    really starts and stops them), as a switchover of PostgreSQL needs."""
    save_lever_blocks(lab)
    root = Path(tempfile.mkdtemp(prefix=f"siprec-failover-{kind}-"))
    root.chmod(0o711)  # the postgres and mysql accounts traverse it to their data
    cluster: LabCluster = CLUSTERS[kind](root / "cluster")
    haproxy = ClusterHAProxy(root / "haproxy")
    name = f"fo-{kind}-{uuid.uuid4().hex[:6]}"
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


def audit_of(name: str, mode: str = "failover") -> dict[str, Any]:
    """The audit trail run ``mode`` of cluster ``name`` published (its artifact's JSON block)."""
    markdown = artifact(f"{mode}-{name}").data
    return dict(json.loads(markdown.split("```json\n", 1)[1].split("\n```", 1)[0]))


def steps(audit: dict[str, Any]) -> list[tuple[str, str]]:
    """(step key, status) of every step of an audit trail."""
    return [(s["key"], s["status"]) for s in audit["steps"]]


# -- kind-neutral probes ------------------------------------------------------------------------


def _sql(kind: str, target: Any, statement: str, *params: str) -> list[tuple[Any, ...]]:
    """Run one statement (autocommit) on a PostgreSQL or MySQL/MariaDB node; its rows."""
    if kind == "postgres":
        with psycopg.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            dbname=target.dbname,
            connect_timeout=5,
            autocommit=True,
        ) as conn:
            cursor = conn.execute(statement, params)
            return list(cursor.fetchall()) if cursor.description else []
    conn = pymysql.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        database="siprec",
        connect_timeout=5,
        autocommit=True,
    )
    with conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return list(cur.fetchall())


def _redis(target: Any) -> redis.Redis:
    return redis.Redis(
        host=target.host, port=target.port, password=target.password, socket_timeout=5
    )


def write(kind: str, target: Any, marker: str) -> None:
    """Write ``marker`` on the node (raises if the node refuses writes)."""
    if kind == "redis":
        with _redis(target) as client:
            client.set(f"probe:{marker}", marker)
    else:
        _sql(kind, target, "INSERT INTO failover_probe (note) VALUES (%s)", marker)


def markers(kind: str, target: Any, prefix: str) -> set[str]:
    """Every marker starting with ``prefix`` the node holds (one query)."""
    if kind == "redis":
        with _redis(target) as client:
            return {k.decode()[len("probe:") :] for k in client.scan_iter(f"probe:{prefix}*")}
    rows = _sql(kind, target, "SELECT note FROM failover_probe WHERE note LIKE %s", prefix + "%")
    return {str(row[0]) for row in rows}


def has(kind: str, target: Any, marker: str) -> bool:
    """Whether the node holds ``marker``."""
    if kind == "redis":
        with _redis(target) as client:
            return client.get(f"probe:{marker}") is not None
    rows = _sql(kind, target, "SELECT count(*) FROM failover_probe WHERE note = %s", marker)
    return bool(rows[0][0])


def wait_has(kind: str, target: Any, marker: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not has(kind, target, marker):
        assert time.monotonic() < deadline, f"{marker} never reached {target.host}:{target.port}"
        time.sleep(0.1)


def served_by(run: RunningCluster) -> str:
    """The node answering through HAProxy's frontend (by its address and port)."""
    host, port = run.haproxy.frontend(run.blocks.backend)
    through = dataclasses.replace(run.target("n1"), host=host, port=port)
    if run.kind == "redis":
        with _redis(through) as client:
            port_seen = int(client.info("server")["tcp_port"])
            found = (client.config_get("bind")["bind"].split()[0], port_seen)
    else:
        query = {
            "postgres": "SELECT host(inet_server_addr()), inet_server_port()",
            "mysql": "SELECT @@bind_address, @@port",
        }[run.kind]
        row = _sql(run.kind, through, query)[0]
        found = (str(row[0]), int(row[1]))
    for node in run.cluster.nodes:
        if (node.host, node.port) == found:
            return node.name
    raise AssertionError(f"HAProxy reached {found}, which is no node of {run.name}")


def dns_answers(lab: LabState, record: str) -> dict[str, set[str]]:
    """The A record's addresses on BIND's primary and secondary, asked directly."""
    answers = {}
    for role in ("primary", "secondary"):
        server = lab.bind(role)
        name = f"{record}.{server.zone.rstrip('.')}."
        reply = dns.query.udp(
            dns.message.make_query(name, "A"), server.host, port=server.port, timeout=3
        )
        answers[role] = {
            item.address  # type: ignore[attr-defined]
            for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.A
            for item in rrset
        }
    return answers


class Writer:
    """Writes numbered markers through HAProxy's frontend as fast as it can, as the platform's
    application would, and keeps which were acknowledged and when (for the write gap)."""

    def __init__(self, run: RunningCluster) -> None:
        host, port = run.haproxy.frontend(run.blocks.backend)
        self.kind = run.kind
        self.target = dataclasses.replace(run.app_target("n1"), host=host, port=port)
        self.acked: list[tuple[str, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _loop(self) -> None:
        i = 0
        while not self.stop.is_set():
            marker = f"w-{i}"
            try:
                write(self.kind, self.target, marker)
            except Exception:
                time.sleep(0.01)
                continue
            self.acked.append((marker, time.monotonic()))
            i += 1

    def longest_gap(self) -> float:
        """The longest time between two acknowledged writes (seconds)."""
        times = [t for _, t in self.acked]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def dns_ttls(lab: LabState, record: str) -> dict[str, set[int]]:
    """The A record's TTL on BIND's primary and secondary."""
    ttls = {}
    for role in ("primary", "secondary"):
        server = lab.bind(role)
        name = f"{record}.{server.zone.rstrip('.')}."
        reply = dns.query.udp(
            dns.message.make_query(name, "A"), server.host, port=server.port, timeout=3
        )
        ttls[role] = {rrset.ttl for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A}
    return ttls
