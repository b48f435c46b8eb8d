"""MariaDB failover primitives (siprec_backup.failover.mysql) on a real three-node MariaDB 10.11
GTID cluster (siprec_backup.lab.cluster_mariadb): unplanned failover, fencing, a planned
switchover under a continuous writer, the lab unit scripts, and a stalled replica.

Each test starts its own cluster (about 1.5 s) and stops it in ``finally``.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from siprec_backup.errors import FailoverError, SafetyRefusalError
from siprec_backup.failover.databases import Endpoint, NodeState
from siprec_backup.failover.mysql import OPS, parse_gtids, position
from siprec_backup.lab.cluster_mariadb import MariaDBLabCluster
from siprec_backup.lab.units import install_units, write_systemctl
from siprec_backup.sources.mysql import MySQLTarget

T = 15.0  # timeout of every failover step


@pytest.fixture
def cluster() -> Iterator[MariaDBLabCluster]:
    root = Path(tempfile.mkdtemp(prefix="siprec-mariadb-cluster-"))
    c = MariaDBLabCluster(root)
    try:
        t0 = time.monotonic()
        c.start()
        print(f"cluster started in {time.monotonic() - t0:.2f} s")
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def endpoint(c: MariaDBLabCluster, name: str) -> Endpoint:
    n = c.node(name)
    return Endpoint(n.host, n.port)


def connect(target: MySQLTarget) -> pymysql.connections.Connection[Any]:
    return target.connect("siprec")


def insert(target: MySQLTarget, note: str) -> None:
    with connect(target) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO failover_probe (note) VALUES (%s)", (note,))


def notes(target: MySQLTarget) -> list[str]:
    with connect(target) as conn, conn.cursor() as cur:
        cur.execute("SELECT note FROM failover_probe ORDER BY id")
        return [str(r[0]) for r in cur.fetchall()]


def wait_note(target: MySQLTarget, note: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while note not in notes(target):
        assert time.monotonic() < deadline, f"{note!r} not replicated to {target.port}"
        time.sleep(0.05)


def test_gtid_positions_parse() -> None:
    assert parse_gtids("0-1-42,1-2-7") == {"0": 42, "1": 7}
    assert parse_gtids("0-1-42,0-2-40") == {"0": 42}
    uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
    assert parse_gtids(f"{uuid}:1-42:50-60") == {uuid: 60}
    assert position("0-1-10").behind(position("0-2-14,1-3-2")) == 6
    assert position("").parts == {}


def test_unplanned_failover(cluster: MariaDBLabCluster) -> None:
    """Kill n1, promote the most advanced replica, repoint the other: nothing received is lost."""
    n1 = cluster.target("n1")
    for i in range(3):
        insert(n1, f"early-{i}")
    primary_pos = OPS.inspect(n1, timeout=T).applied
    for name in ("n2", "n3"):
        OPS.wait_applied(cluster.target(name), timeout=T, until=primary_pos)
    cluster.stall("n3")  # n3 misses the next rows: n2 must be chosen
    for i in range(3):
        insert(n1, f"late-{i}")
    written = OPS.inspect(n1, timeout=T).applied
    OPS.wait_applied(cluster.target("n2"), timeout=T, until=written)
    cluster.kill("n1")
    assert not cluster.is_running("n1")

    states = {name: OPS.inspect(cluster.target(name), timeout=T) for name in ("n2", "n3")}
    assert all(s.role == "replica" and not s.streaming for s in states.values())
    assert states["n3"].applied.behind(written) == 3
    best = max(states, key=lambda name: sum(states[name].received.parts.values()))
    assert best == "n2"

    t0 = time.monotonic()
    promoted = OPS.promote(cluster.target("n2"), timeout=T)
    print(f"promote took {time.monotonic() - t0:.3f} s")
    assert promoted.role == "primary" and promoted.writable
    assert promoted.applied.at_least(written)
    assert OPS.promote(cluster.target("n2"), timeout=T).writable  # idempotent
    insert(cluster.app_target("n2"), "after-failover")

    new_primary = endpoint(cluster, "n2")
    OPS.repoint(cluster.target("n3"), new_primary, timeout=T)
    state = OPS.wait_streaming(cluster.target("n3"), new_primary, timeout=T)
    assert state.upstream == new_primary and state.streaming
    OPS.repoint(cluster.target("n3"), new_primary, timeout=T)  # idempotent
    wait_note(cluster.target("n3"), "after-failover")
    expected = [*(f"early-{i}" for i in range(3)), *(f"late-{i}" for i in range(3))]
    assert notes(cluster.target("n3")) == [*expected, "after-failover"]
    assert state.facts["using_gtid"] == "Slave_Pos"


def test_diverged_old_primary_is_refused(cluster: MariaDBLabCluster) -> None:
    """An old primary holding a transaction no replica received cannot rejoin: after the
    failover, demoting it makes wait_streaming fail with the GTID error (gtid_strict_mode)."""
    insert(cluster.target("n1"), "shared")
    pos = OPS.inspect(cluster.target("n1"), timeout=T).applied
    for name in ("n2", "n3"):
        OPS.wait_applied(cluster.target(name), timeout=T, until=pos)
        cluster.stall(name)
    insert(cluster.target("n1"), "only-on-n1")
    cluster.kill("n1")
    OPS.promote(cluster.target("n2"), timeout=T)
    insert(cluster.target("n2"), "after-failover")
    cluster.start_node("n1")  # the crashed primary comes back: read-only, not a replica
    back = OPS.inspect(cluster.target("n1"), timeout=T)
    assert back.role == "primary" and not back.writable
    promoted = OPS.inspect(cluster.target("n2"), timeout=T).applied
    # Same domain and seq_no, other server_id: {domain: seq} positions cannot tell them apart
    assert back.applied.parts == promoted.parts == {"0": 2}
    assert (back.applied.text, promoted.text) == (
        "0-1-2",
        "0-2-2",
    )
    user, password = cluster.replication_auth()
    new_primary = endpoint(cluster, "n2")
    OPS.demote(cluster.target("n1"), new_primary, timeout=T, user=user, password=password)
    with pytest.raises(FailoverError) as err:
        OPS.wait_streaming(cluster.target("n1"), new_primary, timeout=T)
    print(f"diverged demote refused: {err.value}")
    assert "1236" in str(err.value) and password not in str(err.value)


def test_fence_and_unfence(cluster: MariaDBLabCluster) -> None:
    """A fenced primary refuses the application's writes, new session or old; unfence undoes."""
    app = cluster.app_target("n1")
    admin = cluster.target("n1")
    insert(app, "before")
    opened = connect(app)  # a session opened before the fence, mid-transaction
    with opened.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO failover_probe (note) VALUES ('open-transaction')")

    slow: list[str] = []

    def slow_write() -> None:  # a write still running holds SET GLOBAL read_only up
        try:
            with connect(app) as conn, conn.cursor() as cur:
                cur.execute("INSERT INTO failover_probe (note) SELECT SLEEP(8)")
            slow.append("committed")
        except pymysql.Error as exc:
            slow.append(f"failed {exc.args[0]}")

    writer = threading.Thread(target=slow_write)
    writer.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    OPS.fence(admin, timeout=T)
    took = time.monotonic() - t0
    writer.join(timeout=10)
    assert slow == ["failed 2013"] and took < 4, (slow, took)  # killed, not waited for
    OPS.fence(admin, timeout=T)  # idempotent
    state = OPS.inspect(admin, timeout=T)
    assert state.role == "primary" and not state.writable and state.facts["read_only"]

    with pytest.raises(pymysql.Error), opened.cursor() as cur:  # killed by the fence
        cur.execute("COMMIT")
    opened.close()
    with pytest.raises(pymysql.err.OperationalError) as refused:
        insert(app, "while-fenced")
    assert refused.value.args[0] == 1290  # ER_OPTION_PREVENTS_STATEMENT: --read-only
    # MariaDB 10.11: ALL PRIVILEGES includes READ ONLY ADMIN, which bypasses read_only.
    insert(admin, "admin-while-fenced")

    replica = cluster.target("n2")
    OPS.fence(replica, timeout=T)  # a replica is left as it is
    OPS.unfence(replica, timeout=T)
    assert OPS.inspect(replica, timeout=T).streaming

    OPS.unfence(admin, timeout=T)
    assert OPS.inspect(admin, timeout=T).writable
    insert(app, "after")
    assert notes(app) == ["before", "admin-while-fenced", "after"]


def test_secrets_never_shown(cluster: MariaDBLabCluster) -> None:
    target = cluster.target("n1")
    wrong = dataclasses.replace(target, password="not-the-password-4711")
    with pytest.raises(FailoverError) as err:
        OPS.inspect(wrong, timeout=T)
    text = str(err.value)
    assert "not-the-password-4711" not in text and err.value.node == str(endpoint(cluster, "n1"))
    assert "\n" not in text
    secrets = [target.password, cluster.replication_auth()[1], cluster.app_auth()[1]]
    shown = repr(cluster) + repr(target) + repr(cluster.app_target("n2"))
    assert not any(s and s in shown for s in secrets)
    with pytest.raises(SafetyRefusalError):
        OPS.repoint(target, endpoint(cluster, "n2"), timeout=T)  # n1 is no replica


class Writer:
    """Inserts numbered rows into the current primary as the application user, reconnecting
    after each failure; records which writes were acknowledged and when."""

    def __init__(self, target: MySQLTarget) -> None:
        self.target = target
        self.acked: list[tuple[str, float, int]] = []
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        conn: pymysql.connections.Connection[Any] | None = None
        n = 0
        while not self.stop.is_set():
            target = self.target
            note = f"w-{n}"
            try:
                if conn is None or conn.port != target.port or conn.host != target.host:
                    if conn is not None:
                        conn.close()
                    conn = dataclasses.replace(target, connect_timeout=2).connect("siprec")
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO failover_probe (note) VALUES (%s)", (note,))
                self.acked.append((note, time.monotonic(), target.port))
                n += 1
            except Exception:
                self.failures += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
            time.sleep(0.005)
        if conn is not None:
            conn.close()


def test_planned_switchover(cluster: MariaDBLabCluster) -> None:
    """Fence n1, wait for n2, promote it, demote n1 under it, repoint n3: no acknowledged
    write is lost and every node converges; the write gap is printed."""
    writer = Writer(cluster.app_target("n1"))
    writer.thread.start()
    try:
        time.sleep(0.5)
        laps: list[str] = []
        t_fence = last = time.monotonic()

        def lap(step: str) -> None:
            nonlocal last
            now = time.monotonic()
            laps.append(f"{step} {1000 * (now - last):.0f}")
            last = now

        OPS.fence(cluster.target("n1"), timeout=T)
        lap("fence")
        old = OPS.inspect(cluster.target("n1"), timeout=T)
        lap("inspect")
        OPS.wait_applied(cluster.target("n2"), timeout=T, until=old.applied)
        lap("wait_applied")
        promoted = OPS.promote(cluster.target("n2"), timeout=T)
        lap("promote")
        assert promoted.applied.at_least(old.applied) and promoted.writable
        writer.target = cluster.app_target("n2")
        t_promoted = time.monotonic()
        new_primary = endpoint(cluster, "n2")
        user, password = cluster.replication_auth()
        OPS.demote(cluster.target("n1"), new_primary, timeout=T, user=user, password=password)
        OPS.demote(cluster.target("n1"), new_primary, timeout=T, user=user, password=password)
        OPS.repoint(cluster.target("n3"), new_primary, timeout=T)
        for name in ("n1", "n3"):
            state = OPS.wait_streaming(cluster.target(name), new_primary, timeout=T)
            assert state.role == "replica" and not state.writable and state.facts["read_only"]
        time.sleep(0.5)
    finally:
        writer.stop.set()
        writer.thread.join(timeout=10)
    n1_port, n2_port = cluster.node("n1").port, cluster.node("n2").port
    on_n1 = [t for _, t, port in writer.acked if port == n1_port]
    on_n2 = [t for _, t, port in writer.acked if port == n2_port]
    assert on_n1 and on_n2, "the writer wrote to both primaries"
    gap = min(on_n2) - max(on_n1)
    print(
        f"write gap {gap * 1000:.0f} ms (fence to promoted {1000 * (t_promoted - t_fence):.0f} ms)"
        f", {len(writer.acked)} writes acknowledged, {writer.failures} refused; steps (ms): "
        + ", ".join(laps)
    )
    final = OPS.inspect(cluster.target("n2"), timeout=T).applied
    acked = [note for note, _, _ in writer.acked]
    for name in ("n1", "n2", "n3"):
        OPS.wait_applied(cluster.target(name), timeout=T, until=final)
        rows = notes(cluster.target(name))
        assert set(acked) <= set(rows), f"{name} lost acknowledged writes"
        assert len(rows) == len(set(rows))
    assert notes(cluster.target("n1")) == notes(cluster.target("n2")) == notes(cluster.target("n3"))


def systemctl(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(path), *args], capture_output=True, text=True, timeout=90, check=False
    )


def test_unit_scripts(cluster: MariaDBLabCluster) -> None:
    """The lab systemctl stops, starts and reports a node through its unit script."""
    directory = Path(tempfile.mkdtemp(prefix="siprec-mariadb-units-"))
    try:
        ctl = write_systemctl(directory)
        install_units(directory, cluster)
        unit = cluster.node("n3").unit
        assert unit.startswith("siprec-lab-mariadb-n3-") and unit.endswith(".service")
        res = systemctl(ctl, "is-active", unit)
        assert (res.returncode, res.stdout.strip()) == (0, "active")
        t0 = time.monotonic()
        assert systemctl(ctl, "--no-pager", "stop", unit).returncode == 0
        print(f"unit stop took {time.monotonic() - t0:.2f} s")
        assert not cluster.is_running("n3")
        res = systemctl(ctl, "is-active", unit)
        assert (res.returncode, res.stdout.strip()) == (3, "inactive")
        assert systemctl(ctl, "status", unit).returncode == 3
        assert systemctl(ctl, "stop", unit).returncode == 0  # stopping twice is fine
        assert systemctl(ctl, "is-active", "no-such.service").returncode == 5

        insert(cluster.target("n1"), "while-n3-down")
        res = systemctl(ctl, "start", unit)
        assert res.returncode == 0, res.stderr
        assert cluster.is_running("n3")
        state: NodeState = OPS.wait_streaming(
            cluster.target("n3"), endpoint(cluster, "n1"), timeout=T
        )
        assert state.facts["read_only"]  # a restarted node comes back read-only
        wait_note(cluster.target("n3"), "while-n3-down")
        assert systemctl(ctl, "restart", unit).returncode == 0
        res = systemctl(ctl, "status", unit)
        assert res.returncode == 0 and "active (running)" in res.stdout
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_stalled_replica_falls_behind(cluster: MariaDBLabCluster) -> None:
    """A stalled replica stops receiving; Position.behind counts the missing transactions."""
    insert(cluster.target("n1"), "before-stall")
    OPS.wait_applied(
        cluster.target("n2"), timeout=T, until=OPS.inspect(cluster.target("n1"), timeout=T).applied
    )
    cluster.stall("n2")
    for i in range(5):
        insert(cluster.target("n1"), f"missed-{i}")
    primary = OPS.inspect(cluster.target("n1"), timeout=T)
    stalled = OPS.inspect(cluster.target("n2"), timeout=T)
    assert not stalled.streaming and stalled.facts["sql_running"]
    assert stalled.applied.behind(primary.applied) == 5
    assert stalled.received.behind(primary.received) == 5
    healthy = OPS.wait_applied(cluster.target("n3"), timeout=T, until=primary.applied)
    assert healthy.applied.behind(primary.applied) == 0
    with pytest.raises(FailoverError, match="not reached within"):
        OPS.wait_applied(cluster.target("n2"), timeout=1.0, until=primary.applied)
