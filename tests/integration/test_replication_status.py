"""Replication status against the lab's real primaries and replicas: healthy at rest, broken
while replication is paused, stopped or cut, unreachable on a closed port, topology errors.

These tests mutate shared lab servers: each restores the healthy state in ``finally`` and waits
until every node is healthy again before it ends (other tests back up from the replicas).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import Callable

import psycopg
import pytest

from siprec_backup.lab import LabState
from siprec_backup.replication import NodeHealth, ReplicationNode, Thresholds, check_nodes
from siprec_backup.sources.mysql import MySQLTarget
from siprec_backup.sources.postgres import PostgresTarget
from siprec_backup.sources.redis import RedisTarget

THRESHOLDS = Thresholds(max_lag_bytes=64 << 20, max_lag_seconds=60)
TIMEOUT = 3.0
LOAD_SQL = "INSERT INTO repl_check_load SELECT repeat('x', 100) FROM generate_series(1, 2000)"


def pg_node(lab: LabState, role: str, expected: str | None = None) -> ReplicationNode:
    ep = lab.postgres(role)
    target = PostgresTarget(host=ep.host, port=ep.port, user=ep.superuser, dbname="postgres")
    name = "replica1" if role == "replica" else "pg-primary"
    return ReplicationNode("pg", name, expected or role, target)  # type: ignore[arg-type]


def my_node(lab: LabState, role: str, expected: str | None = None) -> ReplicationNode:
    ep = lab.mariadb(role)
    target = MySQLTarget(host=ep.host, port=ep.port, user=ep.admin_user)
    return ReplicationNode("my", f"my-{role}", expected or role, target)  # type: ignore[arg-type]


def redis_node(lab: LabState, role: str, expected: str | None = None) -> ReplicationNode:
    ep = lab.redis(role)
    target = RedisTarget(host=ep.host, port=ep.port, password=ep.password)
    return ReplicationNode("rd", f"rd-{role}", expected or role, target)  # type: ignore[arg-type]


def all_nodes(lab: LabState) -> list[ReplicationNode]:
    return [f(lab, r) for f in (pg_node, my_node, redis_node) for r in ("primary", "replica")]


def check(nodes: list[ReplicationNode]) -> list[NodeHealth]:
    return check_nodes(nodes, THRESHOLDS, timeout=TIMEOUT)


def wait_for(
    nodes: list[ReplicationNode], ok: Callable[[list[NodeHealth]], bool], limit: float = 15.0
) -> list[NodeHealth]:
    deadline = time.monotonic() + limit
    while True:
        records = check(nodes)
        if ok(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def all_healthy(records: list[NodeHealth]) -> bool:
    return all(r.status == "healthy" for r in records)


def assert_healthy_again(nodes: list[ReplicationNode]) -> None:
    records = wait_for(nodes, all_healthy)
    assert all_healthy(records), [(r.node, r.status, r.reason) for r in records]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_all_healthy_at_rest_and_json(lab: LabState) -> None:
    nodes = all_nodes(lab)
    records = wait_for(nodes, all_healthy)
    assert [(r.node, r.status) for r in records] == [(n.name, "healthy") for n in nodes]
    for record, node in zip(records, nodes, strict=True):
        assert record.reachable and record.observed_role == node.expected_role
        data = json.loads(json.dumps(record.to_dict()))
        assert data["status"] == "healthy" and data["kind"] == node.kind
        if node.expected_role == "replica":
            assert record.lag_bytes is not None and record.lag_bytes < 1 << 20
    pg_primary, pg_replica = records[0], records[1]
    slots = {s["slot_name"]: s for s in pg_primary.facts["slots"]}
    assert slots["replica1"]["active"] is True
    assert pg_replica.facts["lag_source"] == "primary pg_stat_replication"
    assert pg_replica.facts["wal_receiver"]["status"] == "streaming"
    assert records[3].facts["using_gtid"] in ("Slave_Pos", "Current_Pos")
    assert records[5].facts["master_link_status"] == "up"
    redis_password = lab.redis("primary").password
    assert redis_password not in json.dumps([r.to_dict() for r in records])


def test_postgres_replay_paused_is_broken_and_lag_grows(lab: LabState) -> None:
    nodes = [pg_node(lab, "primary"), pg_node(lab, "replica")]
    primary = lab.postgres("primary").conninfo(superuser=True, dbname="postgres")
    replica = lab.postgres("replica").conninfo(superuser=True, dbname="postgres")
    with psycopg.connect(replica, autocommit=True) as rconn:
        try:
            rconn.execute("SELECT pg_wal_replay_pause()")
            records = wait_for(nodes, lambda rs: "paused" in rs[1].reason)
            assert records[1].status == "broken", records[1]
            assert "replay paused" in records[1].reason
            with psycopg.connect(primary, autocommit=True) as pconn:
                pconn.execute("CREATE TABLE IF NOT EXISTS repl_check_load (x text)")
                pconn.execute(LOAD_SQL)
                first = wait_for(nodes, lambda rs: (rs[1].lag_bytes or 0) > 0)[1]
                pconn.execute(LOAD_SQL)
                second = wait_for(
                    nodes, lambda rs: (rs[1].lag_bytes or 0) > (first.lag_bytes or 0)
                )[1]
                pconn.execute("DROP TABLE repl_check_load")
            assert first.lag_bytes is not None and first.lag_bytes > 0
            assert second.lag_bytes is not None and second.lag_bytes > first.lag_bytes
            assert second.status == "broken"
            # cross-check: the standby's own receive/replay gap also grew, and is <= the primary's
            gap = second.facts["receive_replay_gap_bytes"]
            assert 0 < gap <= second.lag_bytes
        finally:
            rconn.execute("SELECT pg_wal_replay_resume()")
    assert_healthy_again(nodes)


def test_mariadb_io_thread_stopped_is_broken(lab: LabState) -> None:
    nodes = [my_node(lab, "primary"), my_node(lab, "replica")]
    with lab.mariadb("replica").connect(admin=True) as conn:
        try:
            with conn.cursor() as cur:
                cur.execute("STOP SLAVE IO_THREAD")
            record = check(nodes)[1]
            assert record.status == "broken"
            assert "IO thread not running" in record.reason
            assert (
                "Slave_IO_Running: No" in record.reason or "Replica_IO_Running: No" in record.reason
            )
            assert record.lag_seconds is None  # Seconds_Behind is NULL: unknown, not 0
        finally:
            with conn.cursor() as cur:
                cur.execute("START SLAVE")
    assert_healthy_again(nodes)


def test_mariadb_heartbeat_lag_known_while_io_thread_stopped(lab: LabState) -> None:
    table = "repl_monitor.heartbeat"
    nodes = [
        dataclasses.replace(my_node(lab, role), heartbeat_table=table)
        for role in ("primary", "replica")
    ]
    try:
        records = wait_for(nodes, lambda rs: rs[1].facts.get("heartbeat_age_seconds") is not None)
        assert records[1].status == "healthy", records[1]
        assert 0 <= records[1].facts["heartbeat_age_seconds"] < 5
        with lab.mariadb("replica").connect(admin=True) as conn, conn.cursor() as cur:
            try:
                cur.execute("STOP SLAVE IO_THREAD")
                first = check(nodes)[1]
                time.sleep(0.3)
                second = check(nodes)[1]
            finally:
                cur.execute("START SLAVE")
        assert first.status == "broken" and "IO thread not running" in first.reason
        # Seconds_Behind_Master is NULL now, but the heartbeat still measures the lag
        assert first.facts["seconds_behind"] is None
        assert first.lag_seconds is not None and second.lag_seconds is not None
        assert second.lag_seconds > first.lag_seconds
        assert_healthy_again(nodes)
    finally:
        with lab.mariadb("primary").connect(admin=True) as conn, conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS repl_monitor")
        with lab.mariadb("replica").connect(admin=True) as conn, conn.cursor() as cur:
            deadline = time.monotonic() + 10
            while cur.execute("SHOW DATABASES LIKE 'repl_monitor'") and time.monotonic() < deadline:
                time.sleep(0.05)
    assert_healthy_again([my_node(lab, "primary"), my_node(lab, "replica")])


def test_redis_link_down_is_broken(lab: LabState) -> None:
    nodes = [redis_node(lab, "primary"), redis_node(lab, "replica")]
    primary = lab.redis("primary")
    with lab.redis("replica").client() as rc:
        try:
            rc.execute_command("REPLICAOF", "127.0.0.1", str(closed_port()))
            records = wait_for(nodes, lambda rs: rs[1].status == "broken")
            assert records[1].status == "broken", records[1]
            assert "master link down" in records[1].reason
        finally:
            rc.execute_command("REPLICAOF", primary.host, str(primary.port))
    assert_healthy_again(nodes)


def test_closed_port_is_unreachable_without_crashing_the_pass(lab: LabState) -> None:
    port = closed_port()
    dead = [
        ReplicationNode(
            "x",
            "pg",
            "primary",
            PostgresTarget("127.0.0.1", port, "u", "d", password="pw-secret-1"),
        ),
        ReplicationNode(
            "x", "my", "primary", MySQLTarget("127.0.0.1", port, password="pw-secret-1")
        ),
        ReplicationNode(
            "x", "rd", "primary", RedisTarget("127.0.0.1", port, password="pw-secret-1")
        ),
    ]
    records = check([*dead, redis_node(lab, "primary")])
    for record in records[:3]:
        assert record.status == "unreachable" and not record.reachable
        assert record.reason.startswith("connection refused"), record.reason
        assert "pw-secret-1" not in json.dumps(record.to_dict())
    assert records[3].status == "healthy"


def test_wrong_password_is_unreachable_auth(lab: LabState) -> None:
    ep = lab.redis("primary")
    node = ReplicationNode(
        "x", "rd", "primary", RedisTarget(ep.host, ep.port, password="wrong-pw-xyz")
    )
    record = check([node])[0]
    assert record.status == "unreachable"
    assert record.reason.startswith("authentication failed"), record.reason
    assert "wrong-pw-xyz" not in record.reason


def test_hung_node_does_not_slow_the_pass(lab: LabState) -> None:
    with socket.socket() as listener:  # accepts TCP connections but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        hung = ReplicationNode("x", "hung", "primary", MySQLTarget("127.0.0.1", port))
        t0 = time.monotonic()
        records = check_nodes([hung, redis_node(lab, "primary")], THRESHOLDS, timeout=1.0)
        elapsed = time.monotonic() - t0
    assert records[0].status == "unreachable" and "timeout" in records[0].reason
    assert records[1].status == "healthy"
    assert elapsed < 2.5


@pytest.mark.parametrize("make", [pg_node, my_node, redis_node])
def test_topology_errors(lab: LabState, make: Callable[..., ReplicationNode]) -> None:
    swapped = [make(lab, "primary", "replica"), make(lab, "replica", "primary")]
    records = check(swapped)
    assert records[0].status == "broken"
    assert records[0].reason == "topology: configured replica is a primary"
    assert records[1].status == "broken"
    assert records[1].reason == "topology: configured primary is a replica"
