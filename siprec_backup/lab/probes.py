"""Kind-neutral probes of a lab cluster, shared by the failover tests, the demo and the failover
benchmark: write a marker as the application would, find markers on a node, ask BIND's servers
for a record, and a writer that keeps writing through the load balancer during a switchover.

Markers live in the ``failover_probe`` table (PostgreSQL, MariaDB) or under ``probe:<marker>``
keys (Redis), as the lab clusters create them.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import psycopg
import pymysql
import redis

from siprec_backup.lab.lab import LabState

INSERT = "INSERT INTO failover_probe (note) VALUES (%s)"
#: The (address, port) a server reports it answered on, per SQL kind.
WHO_ANSWERS = {
    "postgres": "SELECT host(inet_server_addr()), inet_server_port()",
    "mysql": "SELECT @@bind_address, @@port",
}


def _postgres(target: Any, timeout: int) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        dbname=target.dbname,
        connect_timeout=timeout,
        autocommit=True,
        options="-c statement_timeout=5000",
    )


def _mysql(target: Any, timeout: int) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password or "",
        database="siprec",
        connect_timeout=timeout,
        read_timeout=5,
        write_timeout=5,
        autocommit=True,
    )


def _redis(target: Any, timeout: int) -> redis.Redis:
    return redis.Redis(
        host=target.host,
        port=target.port,
        password=target.password,
        socket_connect_timeout=timeout,
        socket_timeout=5,
    )


def query(kind: str, target: Any, statement: str, *params: str, timeout: int = 5) -> list[Any]:
    """The rows of one autocommitted statement on a PostgreSQL or MySQL/MariaDB node."""
    if kind == "postgres":
        with _postgres(target, timeout) as pg:
            cursor = pg.execute(statement, params)
            return list(cursor.fetchall()) if cursor.description else []
    with _mysql(target, timeout) as my, my.cursor() as cur:
        cur.execute(statement, params)
        return list(cur.fetchall())


def answering(kind: str, target: Any, timeout: int = 5) -> tuple[str, int]:
    """The (address, port) of the server ``target`` reaches (through a load balancer: the node
    behind it)."""
    if kind == "redis":
        with _redis(target, timeout) as client:
            bind: Any = client.config_get("bind")
            info: Any = client.info("server")
            return str(bind["bind"]).split()[0], int(info["tcp_port"])
    row = query(kind, target, WHO_ANSWERS[kind], timeout=timeout)[0]
    return str(row[0]), int(row[1])


def write(
    kind: str, target: Any, marker: str, *, commit: bool = True, timeout: int = 2
) -> tuple[str, int]:
    """Write ``marker`` on the server ``target`` reaches (raises if it refuses writes); the
    (address, port) that took it. ``commit=False`` (SQL kinds) rolls the insert back, so the
    replicas do not fall behind."""
    if kind == "redis":
        with _redis(target, timeout) as client:
            client.set(f"probe:{marker}", marker)
        return answering(kind, target, timeout)
    if kind == "postgres":
        with _postgres(target, timeout) as pg:
            with pg.transaction(force_rollback=not commit):
                pg.execute(INSERT, (marker,))
            row = pg.execute(WHO_ANSWERS[kind]).fetchone()
    else:
        with _mysql(target, timeout) as my, my.cursor() as cur:
            my.begin()
            cur.execute(INSERT, (marker,))
            if commit:
                my.commit()
            else:
                my.rollback()
            cur.execute(WHO_ANSWERS[kind])
            row = cur.fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def markers(kind: str, target: Any, prefix: str) -> set[str]:
    """Every marker starting with ``prefix`` the node holds (one query)."""
    if kind == "redis":
        with _redis(target, 5) as client:
            keys: Any = client.scan_iter(f"probe:{prefix}*")
            return {k.decode()[len("probe:") :] for k in keys}
    rows = query(kind, target, "SELECT note FROM failover_probe WHERE note LIKE %s", prefix + "%")
    return {str(row[0]) for row in rows}


def has(kind: str, target: Any, marker: str) -> bool:
    """Whether the node holds ``marker``."""
    if kind == "redis":
        with _redis(target, 5) as client:
            return client.get(f"probe:{marker}") is not None
    rows = query(kind, target, "SELECT count(*) FROM failover_probe WHERE note = %s", marker)
    return bool(rows[0][0])


def bind_answers(
    state: LabState, record: str, timeout: float = 3
) -> dict[str, tuple[set[str], set[int]]]:
    """The A record's addresses and TTLs on the lab's BIND primary and secondary, each asked
    directly: ``{"primary": ({"127.0.10.2"}, {60}), "secondary": ...}``."""
    found = {}
    for role in ("primary", "secondary"):
        server = state.bind(role)
        name = f"{record}.{server.zone.rstrip('.')}."
        reply = dns.query.udp(
            dns.message.make_query(name, "A"), server.host, port=server.port, timeout=timeout
        )
        rrsets = [rrset for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A]
        addresses = {item.address for rrset in rrsets for item in rrset}
        found[role] = (addresses, {rrset.ttl for rrset in rrsets})
    return found


class Writer:
    """Writes numbered markers ``w-<n>`` to ``target`` (a load balancer's frontend) as fast as it
    can, as the platform's application would, and keeps which were acknowledged and when."""

    def __init__(self, kind: str, target: Any) -> None:
        self.kind = kind
        self.target = target
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
            except Exception:  # refused or unreachable during the switch: try again
                time.sleep(0.01)
                continue
            self.acked.append((marker, time.monotonic()))
            i += 1

    def longest_gap(self) -> float:
        """The longest time between two acknowledged writes (seconds)."""
        times = [t for _, t in self.acked]
        return round(max((b - a for a, b in itertools.pairwise(times)), default=0.0), 3)
