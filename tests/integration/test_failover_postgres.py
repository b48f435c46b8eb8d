"""PostgreSQL failover primitives against a real three-node cluster (n1 primary, n2 and n3
streaming standbys): unplanned failover, fencing, a planned switchover in which the old primary
rejoins as a standby without pg_rewind, the unit script behind the lab systemctl, a stalled
standby. Every test starts its own cluster (copied from a per-process template) and stops it.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from siprec_backup.errors import FailoverError
from siprec_backup.failover.databases import Endpoint, Position
from siprec_backup.failover.postgres import OPS, format_lsn, lsn_position, parse_lsn
from siprec_backup.lab.cluster_postgres import PostgresLabCluster
from siprec_backup.lab.units import install_units, write_systemctl
from siprec_backup.sources.postgres import PostgresTarget

T = 20.0  # timeout of every step


@pytest.fixture
def cluster() -> Iterator[PostgresLabCluster]:
    parent = Path(tempfile.mkdtemp(prefix="siprec-failover-pg-"))  # 0700, as mkdtemp makes it
    root = parent / "cluster"
    c = PostgresLabCluster(root)
    started = time.monotonic()
    try:
        c.start()
        print(f"cluster started in {time.monotonic() - started:.2f} s")
        yield c
    finally:
        c.stop()
        parent.rmdir()
    assert not root.exists()


def endpoint(c: PostgresLabCluster, name: str) -> Endpoint:
    n = c.node(name)
    return Endpoint(n.host, n.port)


def connect(target: PostgresTarget) -> psycopg.Connection:
    return psycopg.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        dbname=target.dbname,
        connect_timeout=2,
        autocommit=True,
    )


def insert(target: PostgresTarget, note: str) -> int:
    with connect(target) as conn:
        row = conn.execute(
            "INSERT INTO failover_probe(note) VALUES (%s) RETURNING id", (note,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def ids(target: PostgresTarget) -> set[int]:
    with connect(target) as conn:
        return {int(r[0]) for r in conn.execute("SELECT id FROM failover_probe").fetchall()}


def wait_rows(target: PostgresTarget, wanted: set[int], timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not wanted <= ids(target):
        assert time.monotonic() < deadline, f"rows {sorted(wanted - ids(target))} never arrived"
        time.sleep(0.05)


def run_sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# --- positions (no server) -----------------------------------------------------------------


def test_lsn_positions_compare_by_bytes() -> None:
    a = lsn_position("0/3000148")
    b = lsn_position("1/0")
    assert parse_lsn("0/3000148") == 0x3000148
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert a.parts == {"lsn": 0x3000148}
    assert a.behind(b) == (1 << 32) - 0x3000148
    assert b.behind(a) == 0
    assert b.at_least(a) and not a.at_least(b) and a.at_least(a)
    with pytest.raises(ValueError):
        a.behind(Position("redis", "10", {"offset": 10}))
    with pytest.raises(ValueError):
        parse_lsn("nonsense")


# --- the cluster ---------------------------------------------------------------------------


def test_cluster_starts_with_two_streaming_standbys(cluster: PostgresLabCluster) -> None:
    primary = OPS.inspect(cluster.target("n1"), timeout=T)
    assert primary.role == "primary" and primary.writable
    assert primary.facts["timeline"] == 1
    assert {r["application_name"] for r in primary.facts["replicas"]} == {"n2", "n3"}
    for name in ("n2", "n3"):
        state = OPS.inspect(cluster.target(name), timeout=T)
        assert state.role == "replica" and state.streaming and not state.writable
        assert state.upstream == endpoint(cluster, "n1")
        assert state.facts["slot_name"] == name
    for index, node in enumerate(cluster.nodes, start=1):
        assert node.host == f"127.0.10.{index}"
        assert node.unit == f"siprec-lab-pg-{node.name}-{node.port}.service"
    password = cluster.replication_password
    assert password and password not in repr(cluster)
    assert password not in repr(OPS.inspect(cluster.target("n2"), timeout=T))


# --- unplanned failover --------------------------------------------------------------------


def test_unplanned_failover_promotes_most_advanced_standby(cluster: PostgresLabCluster) -> None:
    written = {insert(cluster.target("n1"), f"before crash {i}") for i in range(20)}
    for name in ("n2", "n3"):
        wait_rows(cluster.target(name), written)
    cluster.kill("n1")
    assert not cluster.is_running("n1")
    with pytest.raises(FailoverError) as err:
        OPS.inspect(cluster.target("n1"), timeout=2)
    assert err.value.node == str(endpoint(cluster, "n1"))

    states = {name: OPS.inspect(cluster.target(name), timeout=T) for name in ("n2", "n3")}
    chosen = max(states, key=lambda n: states[n].received.parts["lsn"])
    other = "n3" if chosen == "n2" else "n2"
    started = time.monotonic()
    OPS.wait_applied(cluster.target(chosen), timeout=T)
    promoted = OPS.promote(cluster.target(chosen), timeout=T)
    print(f"promoted {chosen} in {time.monotonic() - started:.2f} s")
    assert promoted.role == "primary" and promoted.writable
    assert promoted.facts["timeline"] == 2
    assert written <= ids(cluster.target(chosen))
    new_row = insert(cluster.target(chosen), "after failover")

    OPS.repoint(cluster.target(other), endpoint(cluster, chosen), timeout=T)
    state = OPS.wait_streaming(cluster.target(other), endpoint(cluster, chosen), timeout=T)
    assert state.role == "replica" and state.upstream == endpoint(cluster, chosen)
    wait_rows(cluster.target(other), written | {new_row})
    # Idempotent: promoting the primary again or repointing again changes nothing.
    assert OPS.promote(cluster.target(chosen), timeout=T).writable
    OPS.repoint(cluster.target(other), endpoint(cluster, chosen), timeout=T)
    OPS.wait_streaming(cluster.target(other), endpoint(cluster, chosen), timeout=T)
    with pytest.raises(FailoverError, match="is a primary"):
        OPS.repoint(cluster.target(chosen), endpoint(cluster, other), timeout=T)


# --- fence ---------------------------------------------------------------------------------


def test_fence_refuses_writes_until_unfenced(cluster: PostgresLabCluster) -> None:
    n1 = cluster.target("n1")
    early = connect(n1)  # a session opened before the fence
    try:
        early.execute("INSERT INTO failover_probe(note) VALUES ('before fence')")
        OPS.fence(n1, timeout=T)
        OPS.fence(n1, timeout=T)  # idempotent
        with pytest.raises(psycopg.Error):
            early.execute("INSERT INTO failover_probe(note) VALUES ('old session')")
    finally:
        early.close()
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        insert(n1, "new session while fenced")
    state = OPS.inspect(n1, timeout=T)
    assert state.role == "primary" and not state.writable and state.facts["fenced"]
    # Standbys are untouched by a fence and still stream.
    OPS.fence(cluster.target("n2"), timeout=T)
    assert OPS.inspect(cluster.target("n2"), timeout=T).streaming

    OPS.unfence(n1, timeout=T)
    OPS.unfence(n1, timeout=T)
    assert OPS.inspect(n1, timeout=T).writable
    row = insert(n1, "after unfence")
    wait_rows(cluster.target("n3"), {row})


# --- planned switchover --------------------------------------------------------------------


class Writer(threading.Thread):
    """Inserts a row every 10 ms into ``self.target`` (switched by the test), recording every
    success with its time and node; failures (fenced, stopped) are retried."""

    def __init__(self, target: PostgresTarget) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.done = threading.Event()
        self.ok: list[tuple[int, float, str]] = []
        self.errors = 0

    def run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self.done.is_set():
            target = self.target
            try:
                if conn is None or conn.info.port != target.port or conn.closed:
                    if conn is not None:
                        conn.close()
                    conn = connect(target)
                row = conn.execute(
                    "INSERT INTO failover_probe(note) VALUES ('writer') RETURNING id"
                ).fetchone()
                assert row is not None
                self.ok.append((int(row[0]), time.monotonic(), target.host))
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.01)
        if conn is not None:
            conn.close()


def test_planned_switchover_old_primary_rejoins_without_rewind(
    cluster: PostgresLabCluster,
) -> None:
    n1, n2, n3 = (cluster.target(n) for n in ("n1", "n2", "n3"))
    ep2 = endpoint(cluster, "n2")
    tools = cluster.root / "tools"
    systemctl = write_systemctl(tools)
    install_units(tools, cluster)
    unit1 = cluster.node("n1").unit
    before = {insert(n1, f"before switchover {i}") for i in range(20)}
    writer = Writer(n1)
    writer.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        OPS.fence(n1, timeout=T)
        conninfo = OPS.conninfo_for(n2, ep2, "n1")
        assert "host=127.0.10.2" in conninfo and "application_name=n1" in conninfo
        OPS.prepare_rejoin(n1, conninfo, "n1")
        final = OPS.final_position(n1)
        stopped = run_sh(f"{systemctl} stop {unit1}")
        assert stopped.returncode == 0, stopped.stderr
        assert not cluster.is_running("n1")
        applied = OPS.wait_applied(n2, until=final, timeout=T)
        OPS.wait_disconnected(n2, timeout=T)
        assert applied.applied.at_least(final)
        promoted = OPS.promote(n2, timeout=T)
        writer.target = n2
        promote_done = time.monotonic()
        OPS.ensure_slot(n2, "n1", timeout=T)
        for command in OPS.rejoin_commands(
            str(cluster.data_directory("n1")), unit1, str(systemctl)
        ):
            assert cluster.replication_password not in command
            done = run_sh(command)
            assert done.returncode == 0, f"{command}: {done.stderr}"
        OPS.repoint(n3, ep2, timeout=T)
        OPS.wait_streaming(n3, ep2, timeout=T)
        rejoined = OPS.wait_streaming(n1, ep2, timeout=T)
        total = time.monotonic() - started
        deadline = time.monotonic() + T
        while not any(host == n2.host for _, _, host in writer.ok):
            assert time.monotonic() < deadline, "the writer never wrote to the new primary"
            time.sleep(0.01)
    finally:
        writer.done.set()
        writer.join(10)

    assert promoted.role == "primary" and promoted.facts["timeline"] == 2
    assert rejoined.role == "replica" and rejoined.facts["timeline"] == 2
    old_rows = [(i, t) for i, t, host in writer.ok if host == n1.host]
    new_rows = [(i, t) for i, t, host in writer.ok if host == n2.host]
    gap = new_rows[0][1] - old_rows[-1][1]
    print(
        f"switchover: fence to both standbys streaming {total:.2f} s; write gap {gap:.2f} s"
        f" ({len(old_rows)} writes before, {writer.errors} refused); promote done after"
        f" {promote_done - started:.2f} s"
    )
    on_new = ids(n2)
    assert before | {i for i, _ in old_rows} <= on_new, "rows written before the fence were lost"
    after = insert(n2, "after switchover")
    everything = on_new | {i for i, _ in new_rows} | {after}
    wait_rows(n1, everything)
    wait_rows(n3, everything)
    # The old primary is a standby now; its fence stays in auto.conf until it is promoted.
    state = OPS.inspect(n1, timeout=T)
    assert state.role == "replica" and state.upstream == ep2 and state.facts["slot_name"] == "n1"
    # It still holds its former standbys' slots; they are dropped (a standby allows it).
    assert OPS.drop_slots(n1, ["n2", "n3", "absent"], timeout=T) == ["n2", "n3"]
    assert OPS.drop_slots(n1, ["n2", "n3"], timeout=T) == []
    assert OPS.drop_slots(n2, ["n1", "n3"], timeout=T) == []  # active: kept
    log = (cluster.root / "n1" / "postgres.log").read_text()
    assert "pg_rewind" not in log and "FATAL" not in log.split("database system is shut down")[-1]


def test_rejoin_commands_quote_and_hold_no_secret() -> None:
    commands = OPS.rejoin_commands("/var/lib/postgresql/15/main", "postgresql@15-main.service")
    assert commands == [
        "systemctl stop postgresql@15-main.service",
        "touch /var/lib/postgresql/15/main/standby.signal"
        " && chown --reference=/var/lib/postgresql/15/main"
        " /var/lib/postgresql/15/main/standby.signal"
        " && chmod 600 /var/lib/postgresql/15/main/standby.signal",
        "systemctl start postgresql@15-main.service",
    ]
    odd = OPS.rejoin_commands("/srv/pg data", "pg;x", systemctl="/opt/bin/systemctl")
    assert odd[0] == "/opt/bin/systemctl stop 'pg;x'"
    assert "'/srv/pg data/standby.signal'" in odd[1]


# --- unit script ---------------------------------------------------------------------------


def test_unit_script_through_lab_systemctl(cluster: PostgresLabCluster) -> None:
    tools = cluster.root / "tools"
    systemctl = write_systemctl(tools)
    install_units(tools, cluster)
    unit = cluster.node("n3").unit

    active = run_sh(f"{systemctl} is-active {unit}")
    assert (active.returncode, active.stdout.strip()) == (0, "active")
    stopped = run_sh(f"{systemctl} --no-pager stop -- {unit}")
    assert stopped.returncode == 0, stopped.stderr
    assert not cluster.is_running("n3")
    inactive = run_sh(f"{systemctl} is-active {unit}")
    assert (inactive.returncode, inactive.stdout.strip()) == (3, "inactive")
    assert run_sh(f"{systemctl} status {unit}").returncode == 3
    assert run_sh(f"{systemctl} stop {unit}").returncode == 0  # stopping a stopped unit is fine

    started = run_sh(f"{systemctl} start {unit}")
    assert started.returncode == 0, started.stderr
    assert run_sh(f"{systemctl} start {unit}").returncode == 0
    assert run_sh(f"{systemctl} restart {unit}").returncode == 0
    assert run_sh(f"{systemctl} is-active {unit}").returncode == 0
    assert run_sh(f"{systemctl} status {unit}").returncode == 0
    assert run_sh(f"{systemctl} is-active no-such.service").returncode == 5
    OPS.wait_streaming(cluster.target("n3"), endpoint(cluster, "n1"), timeout=T)
    script = cluster.unit_script("n3")
    assert "runuser -u postgres" in script and cluster.replication_password not in script


# --- stall ---------------------------------------------------------------------------------


def test_stalled_standby_falls_behind(cluster: PostgresLabCluster) -> None:
    with connect(cluster.target("n2")) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    cluster.stall("n3")
    stalled = OPS.inspect(cluster.target("n3"), timeout=T)
    assert stalled.role == "replica" and not stalled.streaming
    with connect(cluster.target("n1")) as conn:
        conn.execute(
            "INSERT INTO failover_probe(note) SELECT repeat('x', 200) FROM generate_series(1, 500)"
        )
    primary = OPS.inspect(cluster.target("n1"), timeout=T)
    paused = OPS.inspect(cluster.target("n2"), timeout=T)
    assert paused.facts["replay_paused"] and paused.streaming
    n2 = OPS.wait_applied(cluster.target("n2"), until=primary.received, timeout=T)  # resumes
    assert not n2.facts["replay_paused"]
    n3 = OPS.wait_applied(cluster.target("n3"), timeout=T)  # applied all it has, still behind
    lag = n3.received.behind(n2.received)
    assert lag > 100_000, lag
    assert n2.received.behind(n3.received) == 0
    assert not n3.received.at_least(primary.received)
    with pytest.raises(FailoverError, match="wanted") as err:
        OPS.wait_applied(cluster.target("n3"), until=primary.received, timeout=0.5)
    assert err.value.node == str(endpoint(cluster, "n3"))
    # Repointing it at n1 again restores streaming (the repoint keeps the slot).
    OPS.repoint(cluster.target("n3"), endpoint(cluster, "n1"), timeout=T)
    OPS.wait_streaming(cluster.target("n3"), endpoint(cluster, "n1"), timeout=T)
    OPS.wait_applied(cluster.target("n3"), until=primary.received, timeout=T)


# --- errors never show the replication password ----------------------------------------------


def test_errors_hold_no_secret(cluster: PostgresLabCluster) -> None:
    password = cluster.replication_password
    conninfo = OPS.conninfo_for(cluster.target("n3"), endpoint(cluster, "n2"), "n3")
    assert password in conninfo
    with pytest.raises(FailoverError) as err:
        OPS.prepare_rejoin(cluster.target("n3"), conninfo, "bad slot name!")
    assert password not in str(err.value)
    assert err.value.node == str(endpoint(cluster, "n3"))
    assert password not in (cluster.root / "n3" / "postgres.log").read_text()
    with pytest.raises(FailoverError, match="is a standby"):
        OPS.final_position(cluster.target("n3"))
    cluster.kill("n3")
    with pytest.raises(FailoverError) as err:
        OPS.repoint(cluster.target("n3"), endpoint(cluster, "n2"), timeout=2)
    assert password not in str(err.value) and "\n" not in str(err.value)
