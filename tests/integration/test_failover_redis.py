"""Redis failover primitives (siprec_backup.failover.redis) on a real three-node lab cluster
(RedisLabCluster: n1 primary, n2 and n3 replicas on 127.0.12.x), its unit scripts through the
lab systemctl stand-in, and a cluster HAProxy routing TCP to the primary."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from siprec_backup.errors import FailoverError, SafetyRefusalError
from siprec_backup.failover.databases import Endpoint, NodeState
from siprec_backup.failover.redis import FENCE_MIN_REPLICAS, OPS
from siprec_backup.lab.cluster_haproxy import ClusterHAProxy
from siprec_backup.lab.cluster_redis import RedisLabCluster
from siprec_backup.lab.units import install_units, write_systemctl
from siprec_backup.sources.redis import RedisTarget
from siprec_backup.traffic import MAINT, HAProxy, ServerState

T = 10.0  # seconds every failover step may take


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisLabCluster]:
    c = RedisLabCluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def client(cluster: RedisLabCluster, node: str) -> redis.Redis:
    return cluster.target(node).client()


def endpoint(cluster: RedisLabCluster, node: str) -> Endpoint:
    n = cluster.node(node)
    return Endpoint(n.host, n.port)


def password(cluster: RedisLabCluster) -> str:
    pw = cluster.target("n1").password
    assert pw
    return pw


def write_keys(cluster: RedisLabCluster, node: str, prefix: str, count: int) -> None:
    with client(cluster, node) as c:
        pipe = c.pipeline(transaction=False)
        for i in range(count):
            pipe.set(f"{prefix}:{i}", f"value-{i}-" + "x" * 200)
        pipe.execute()


def missing_keys(cluster: RedisLabCluster, node: str, keys: list[str]) -> list[str]:
    with client(cluster, node) as c:
        values = cast(list[Any], c.mget(keys)) if keys else []
    return [k for k, v in zip(keys, values, strict=True) if v is None]


def test_cluster_starts_with_n1_primary_and_two_streaming_replicas(
    cluster: RedisLabCluster,
) -> None:
    assert [n.host for n in cluster.nodes] == ["127.0.12.1", "127.0.12.2", "127.0.12.3"]
    for n in cluster.nodes:
        assert n.unit == f"siprec-lab-redis-{n.name}-{n.port}.service"
    primary = OPS.inspect(cluster.target("n1"), timeout=T)
    assert primary.role == "primary" and primary.writable and primary.upstream is None
    for name in ("n2", "n3"):
        state = OPS.inspect(cluster.target(name), timeout=T)
        assert state.role == "replica" and state.streaming and not state.writable
        assert state.upstream == endpoint(cluster, "n1")
    with client(cluster, "n1") as c:  # replicas announce their own addresses
        info = cast(dict[str, Any], c.info("replication"))
    assert {info[f"slave{i}"]["ip"] for i in (0, 1)} == {"127.0.12.2", "127.0.12.3"}
    secret = password(cluster)
    assert secret not in repr(cluster) and secret not in repr(cluster.target("n1"))
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert secret not in ps.stdout


def test_unplanned_failover_promotes_the_most_advanced_replica(
    cluster: RedisLabCluster,
) -> None:
    write_keys(cluster, "n1", "early", 100)
    cluster.stall("n3")  # n3 misses the next writes: n2 must be chosen
    write_keys(cluster, "n1", "late", 100)
    n1 = OPS.inspect(cluster.target("n1"), timeout=T)
    OPS.wait_applied(cluster.target("n2"), timeout=T, until=n1.applied)
    cluster.kill("n1")
    with pytest.raises(FailoverError) as dead:
        OPS.inspect(cluster.target("n1"), timeout=2.0)
    assert dead.value.node == cluster.node("n1").address
    assert password(cluster) not in str(dead.value)

    states = {name: OPS.inspect(cluster.target(name), timeout=T) for name in ("n2", "n3")}
    best = max(states, key=lambda name: states[name].applied.parts["offset"])
    assert best == "n2"
    assert states["n3"].applied.behind(states["n2"].applied) > 0
    assert states["n2"].applied.behind(n1.applied) == 0  # nothing lost

    promoted = OPS.promote(cluster.target("n2"), timeout=T)
    assert promoted.role == "primary" and promoted.writable
    assert OPS.promote(cluster.target("n2"), timeout=T).role == "primary"  # idempotent
    with client(cluster, "n2") as c:
        assert c.set("after-failover", "yes")

    new_primary = endpoint(cluster, "n2")
    OPS.repoint(cluster.target("n3"), new_primary, timeout=T)
    OPS.repoint(cluster.target("n3"), new_primary, timeout=T)  # idempotent
    state = OPS.wait_streaming(cluster.target("n3"), new_primary, timeout=T)
    assert state.upstream == new_primary and state.streaming
    head = OPS.inspect(cluster.target("n2"), timeout=T).applied
    OPS.wait_applied(cluster.target("n3"), timeout=T, until=head)
    with client(cluster, "n3") as c:
        assert c.get("after-failover") == b"yes"
    keys = [f"early:{i}" for i in range(100)] + [f"late:{i}" for i in range(100)]
    assert missing_keys(cluster, "n3", keys) == []


def test_fence_refuses_writes_on_every_connection_and_unfence_restores_them(
    cluster: RedisLabCluster,
) -> None:
    n1 = cluster.target("n1")
    with client(cluster, "n1") as before:
        before.set("kept", "1")
        before.config_set("min-replicas-max-lag", 0)  # which turns min-replicas off: fence sets 10
        OPS.fence(n1, timeout=T)
        OPS.fence(n1, timeout=T)  # idempotent
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            before.set("refused", "1")
        with client(cluster, "n1") as after, pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            after.set("refused", "1")
        assert before.get("kept") == b"1"  # reads and data are untouched
        state = OPS.inspect(n1, timeout=T)
        assert state.role == "primary" and not state.writable
        assert state.facts["fenced"] and state.facts["min_replicas_to_write"] == FENCE_MIN_REPLICAS
        for name in ("n2", "n3"):  # replicas keep streaming from the fenced primary
            assert OPS.inspect(cluster.target(name), timeout=T).streaming

        OPS.unfence(n1, timeout=T)
        OPS.unfence(n1, timeout=T)  # idempotent
        assert before.set("accepted", "1")
        state = OPS.inspect(n1, timeout=T)
        assert state.writable and not state.facts["fenced"]

    OPS.fence(cluster.target("n2"), timeout=T)  # a replica is left as it is
    assert OPS.inspect(cluster.target("n2"), timeout=T).facts["min_replicas_to_write"] == 0
    with pytest.raises(SafetyRefusalError):  # repointing a writable primary is refused
        OPS.repoint(n1, endpoint(cluster, "n2"), timeout=T)


def test_wrong_password_is_a_failover_error_without_the_password(
    cluster: RedisLabCluster,
) -> None:
    n = cluster.node("n1")
    wrong = RedisTarget(host=n.host, port=n.port, password="not-the-password-123")
    with pytest.raises(FailoverError, match="authentication") as err:
        OPS.inspect(wrong, timeout=T)
    assert "not-the-password-123" not in str(err.value)
    assert password(cluster) not in str(err.value)


class Writer:
    """Writes ``sw:<i>`` to the current primary as fast as it can, keeping the accepted keys
    and when each was accepted; refused writes are retried (on the new primary once set)."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self.accepted: list[tuple[str, float]] = []
        self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        i = 0
        conn: redis.Redis | None = None
        current: RedisTarget | None = None
        try:
            while not self.stop.is_set():
                if current is not self.target:
                    if conn is not None:
                        conn.close()
                    current = self.target
                    conn = current.client()
                assert conn is not None
                key = f"sw:{i}"
                try:
                    conn.set(key, str(i))
                except redis.ResponseError as exc:
                    if not str(exc).startswith(("NOREPLICAS", "READONLY")):
                        raise
                    self.refused += 1
                    time.sleep(0.002)
                    continue
                self.accepted.append((key, time.monotonic()))
                i += 1
                time.sleep(0.002)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            if conn is not None:
                conn.close()

    def max_gap(self) -> float:
        times = [t for _, t in self.accepted]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def test_planned_switchover_loses_no_write(cluster: RedisLabCluster) -> None:
    writer = Writer(cluster.target("n1"))
    writer.thread.start()
    try:
        time.sleep(0.3)
        start = time.monotonic()
        n1, n2, n3 = (cluster.target(n) for n in ("n1", "n2", "n3"))
        OPS.fence(n1, timeout=T)
        fenced_at = OPS.inspect(n1, timeout=T).applied
        caught_up = OPS.wait_applied(n2, timeout=T, until=fenced_at)
        assert caught_up.applied.at_least(fenced_at)
        OPS.promote(n2, timeout=T)
        writer.target = n2
        promoted_after = time.monotonic() - start
        new_primary = endpoint(cluster, "n2")
        OPS.demote(n1, new_primary, timeout=T)
        OPS.demote(n1, new_primary, timeout=T)  # idempotent
        OPS.repoint(n3, new_primary, timeout=T)
        OPS.wait_streaming(n3, new_primary, timeout=T)
        switched_after = time.monotonic() - start
        time.sleep(0.3)
    finally:
        writer.stop.set()
        writer.thread.join(timeout=T)
    assert writer.error is None, writer.error
    assert writer.refused > 0  # the fence really held writes back

    old = OPS.inspect(cluster.target("n1"), timeout=T)
    assert old.role == "replica" and old.upstream == new_primary and old.streaming
    assert old.facts["min_replicas_to_write"] == 0
    with client(cluster, "n2") as c:
        assert c.set("after-switchover", "yes")
    head = OPS.inspect(n2, timeout=T).applied
    keys = [k for k, _ in writer.accepted] + ["after-switchover"]
    for name in ("n1", "n3"):
        OPS.wait_applied(cluster.target(name), timeout=T, until=head)
    for name in ("n1", "n2", "n3"):
        assert missing_keys(cluster, name, keys) == [], name
    print(
        f"\nredis switchover: {len(writer.accepted)} writes, {writer.refused} refused while "
        f"fenced, write gap {writer.max_gap() * 1000:.0f} ms, promoted after "
        f"{promoted_after * 1000:.0f} ms, all repointed after {switched_after * 1000:.0f} ms"
    )


def test_stalled_replica_falls_behind_by_a_byte_gap(cluster: RedisLabCluster) -> None:
    cluster.stall("n2")
    cluster.stall("n2")  # idempotent
    write_keys(cluster, "n1", "missed", 200)
    primary = OPS.inspect(cluster.target("n1"), timeout=T)
    OPS.wait_applied(cluster.target("n3"), timeout=T, until=primary.applied)
    stalled = OPS.inspect(cluster.target("n2"), timeout=T)
    assert stalled.role == "replica" and not stalled.streaming
    assert stalled.upstream is not None and stalled.upstream != endpoint(cluster, "n1")
    gap = stalled.applied.behind(primary.applied)
    assert gap == primary.applied.parts["offset"] - stalled.applied.parts["offset"]
    assert gap > 200 * 200  # at least the values written
    with pytest.raises(FailoverError, match="still waiting"):
        OPS.wait_applied(cluster.target("n2"), timeout=0.3, until=primary.applied)

    cluster.unstall("n2")
    OPS.wait_streaming(cluster.target("n2"), endpoint(cluster, "n1"), timeout=T)
    caught_up = OPS.wait_applied(cluster.target("n2"), timeout=T, until=primary.applied)
    assert caught_up.applied.behind(primary.applied) == 0


def systemctl(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,  # the unit's start daemonizes redis-server with /dev/null output
        text=True,
        timeout=60,
        check=False,
    )


def test_unit_script_stops_and_starts_a_node(cluster: RedisLabCluster, tmp_path: Path) -> None:
    script = write_systemctl(tmp_path / "sys")
    install_units(tmp_path / "sys", cluster)
    unit = cluster.node("n3").unit
    text = (tmp_path / "sys" / "units" / unit).read_text()
    assert password(cluster) not in text

    active = systemctl(script, "is-active", unit)
    assert (active.returncode, active.stdout.strip()) == (0, "active")
    stopped = systemctl(script, "--no-pager", "stop", "--", unit)
    assert stopped.returncode == 0, stopped.stderr
    assert password(cluster) not in stopped.stdout + stopped.stderr
    inactive = systemctl(script, "is-active", unit)
    assert (inactive.returncode, inactive.stdout.strip()) == (3, "inactive")
    assert systemctl(script, "status", unit).returncode == 3
    assert systemctl(script, "stop", unit).returncode == 0  # stopping a stopped unit is fine
    with pytest.raises(FailoverError, match="cannot reach"):
        OPS.inspect(cluster.target("n3"), timeout=2.0)

    started = systemctl(script, "start", unit)
    assert started.returncode == 0, started.stderr
    state: NodeState = OPS.wait_streaming(cluster.target("n3"), endpoint(cluster, "n1"), timeout=T)
    assert state.role == "replica"
    restarted = systemctl(script, "restart", unit)
    assert restarted.returncode == 0, restarted.stderr
    assert systemctl(script, "status", unit).returncode == 0
    assert systemctl(script, "is-active", "no-such.service").returncode == 5


def test_cluster_haproxy_routes_new_connections_to_the_ready_server(
    cluster: RedisLabCluster, tmp_path: Path
) -> None:
    proxy = ClusterHAProxy(tmp_path)
    proxy.add_backend("redis", cluster.nodes)
    try:
        proxy.start()
        host, port = proxy.frontend("redis")
        secret = password(cluster)

        def reached() -> str:
            with redis.Redis(host=host, port=port, password=secret, socket_timeout=2) as c:
                return str(cast(dict[str, Any], c.client_info())["laddr"]).rsplit(":", 1)[0]

        assert reached() == cluster.node("n1").host
        lever = HAProxy(runtime=proxy.runtime)
        assert lever.server("redis", "n2").state == MAINT
        lever.set_state("redis", "n1", ServerState.MAINT)
        lever.set_state("redis", "n2", ServerState.READY)
        deadline = time.monotonic() + T
        while (where := reached()) != cluster.node("n2").host:
            assert time.monotonic() < deadline, f"still routed to {where}"
            time.sleep(0.05)

        cluster.kill("n3")  # a dead server shows DOWN
        lever.set_state("redis", "n3", ServerState.READY)
        deadline = time.monotonic() + T
        while not (status := lever.server("redis", "n3").status).startswith("DOWN"):
            assert time.monotonic() < deadline, f"n3 is {status}"
            time.sleep(0.1)
    finally:
        proxy.stop()
