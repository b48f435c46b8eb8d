"""The monitor-replication flow on the real lab, its Prefect server and a local webhook receiver:
one alert per transition (HMAC-signed), none while nothing changes, a recovery notice, the status
table artifact, the metric values, topology errors, backup freshness alerts, config errors.

These tests break the lab's replication reversibly (replay paused, IO thread stopped, Redis
pointed at a dead port) and restore it in ``finally``, waiting until every node is healthy.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.artifacts import Artifact
from prefect.blocks.notifications import SlackWebhook
from pydantic import SecretStr

from blocks import AlertWebhook, LocalStorage, Platform, ReplicationCluster
from blocks.replication import ReplicationNodeConfig, load_cluster
from deployments.lab_blocks import PLATFORM, REPLICATION, save_lab_blocks
from flows.monitor_replication import MonitorReport, monitor_replication
from siprec_backup.alerting import verify_signature
from siprec_backup.errors import ConfigurationError
from siprec_backup.lab import LabState
from siprec_backup.replication import NodeHealth, check_nodes
from tests.conftest import Receiver
from tests.e2e.conftest import wait_for_events

SECRET = "whsec-monitor-e2e-do-not-leak"
HOOK = "monitor-e2e-hook"
WAIT = 20.0


@pytest.fixture(scope="module")
def lab_platform(lab: LabState) -> LabState:
    """The lab's blocks (platform, clusters, replicas) saved on the lab's Prefect server."""
    save_lab_blocks(lab)
    return lab


@pytest.fixture
def hook(receiver: Receiver) -> Iterator[Receiver]:
    AlertWebhook(url=receiver.url("/hook"), secret=SecretStr(SECRET)).save(HOOK, overwrite=True)
    yield receiver


def run(state_variable: str, **parameters: Any) -> MonitorReport:
    """One pass over the lab platform, alerts to the webhook, no freshness unless asked."""
    defaults: dict[str, Any] = {
        "platforms": [PLATFORM],
        "channels": [HOOK],
        "freshness_max_age_hours": None,
    }
    return monitor_replication(**{**defaults, **parameters, "state_variable": state_variable})


def new_state() -> str:
    return f"monitor-e2e-{uuid.uuid4().hex[:12]}"


def cluster_health(cluster: str) -> list[NodeHealth]:
    loaded = load_cluster(cluster)
    return check_nodes(loaded.nodes, loaded.config.thresholds(), timeout=3)


def wait_until(cluster: str, ok: Callable[[list[NodeHealth]], bool]) -> list[NodeHealth]:
    deadline = time.monotonic() + WAIT
    while True:
        records = cluster_health(cluster)
        if ok(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def all_healthy(records: list[NodeHealth]) -> bool:
    return all(r.healthy for r in records)


def wait_healthy(cluster: str) -> None:
    records = wait_until(cluster, all_healthy)
    assert all_healthy(records), [(r.node, r.status, r.reason) for r in records]


def received(hook: Receiver) -> list[dict[str, Any]]:
    """Every alert the webhook got, each signature checked; the receiver is emptied."""
    alerts = []
    for request in hook.requests:
        stamp, signature = (
            request.headers["X-Siprec-Timestamp"],
            request.headers["X-Siprec-Signature"],
        )
        assert verify_signature(SECRET, stamp, request.body, signature)
        alerts.append(json.loads(request.body))
    hook.requests.clear()
    return alerts


def metric(report: MonitorReport, name: str, **labels: str) -> float | None:
    family = report.metrics().get(name)
    values = tuple(labels[n] for n in family.labelnames)
    return family.samples.get(values)


def test_healthy_pass_sends_nothing_and_publishes_the_table(
    lab_platform: LabState, hook: Receiver
) -> None:
    for cluster in REPLICATION:
        wait_healthy(cluster)
    report = run(new_state())
    assert [(r.cluster, r.node, r.status) for r in report.nodes] == [
        ("siprec-lab-pg", "primary", "healthy"),
        ("siprec-lab-pg", "replica1", "healthy"),
        ("siprec-lab-mariadb", "primary", "healthy"),
        ("siprec-lab-mariadb", "replica", "healthy"),
        ("siprec-lab-redis", "primary", "healthy"),
        ("siprec-lab-redis", "replica", "healthy"),
    ]
    assert report.alerts == [] and hook.requests == []
    artifact = Artifact.get("replication-status-siprec-lab")
    assert artifact is not None and isinstance(artifact.data, str)
    rows = json.loads(artifact.data)
    assert [(row["node"], row["role"], row["status"]) for row in rows] == [
        ("primary", "primary", "HEALTHY"),
        ("replica1", "replica", "HEALTHY"),
        ("primary", "primary", "HEALTHY"),
        ("replica", "replica", "HEALTHY"),
        ("primary", "primary", "HEALTHY"),
        ("replica", "replica", "HEALTHY"),
    ]
    assert set(rows[1]) == {
        "cluster", "node", "role", "status", "lag_bytes", "lag_seconds", "reason"
    }  # fmt: skip
    for password in (
        lab_platform.postgres().password,
        lab_platform.mariadb().password,
        lab_platform.redis().password,
    ):
        assert password not in artifact.data
    text = report.metrics().render()
    for cluster, node, kind in (
        ("siprec-lab-pg", "replica1", "postgres"),
        ("siprec-lab-mariadb", "replica", "mysql"),
        ("siprec-lab-redis", "replica", "redis"),
    ):
        labels = f'cluster="{cluster}",node="{node}",kind="{kind}"'
        assert f'siprec_replication_node_status{{{labels},status="healthy"}} 1' in text
        assert f'siprec_replication_node_status{{{labels},status="broken"}} 0' in text
    lag = metric(report, "siprec_replication_lag_bytes", cluster="siprec-lab-pg",
                 node="replica1", kind="postgres")  # fmt: skip
    assert lag is not None and 0 <= lag < 1 << 20


def test_postgres_replay_paused_alerts_once_then_recovers(
    lab_platform: LabState, hook: Receiver
) -> None:
    state = new_state()
    wait_healthy("siprec-lab-pg")
    assert run(state).alerts == []
    primary = lab_platform.postgres("primary").conninfo(superuser=True, dbname="postgres")
    replica = lab_platform.postgres("replica").conninfo(superuser=True, dbname="postgres")
    with psycopg.connect(replica, autocommit=True) as rconn:
        try:
            rconn.execute("SELECT pg_wal_replay_pause()")
            with psycopg.connect(primary, autocommit=True) as pconn:
                pconn.execute("CREATE TABLE IF NOT EXISTS monitor_e2e_load (x text)")
                pconn.execute(
                    "INSERT INTO monitor_e2e_load SELECT repeat('x', 100) "
                    "FROM generate_series(1, 2000)"
                )
                pconn.execute("DROP TABLE monitor_e2e_load")
            wait_until("siprec-lab-pg", lambda rs: (rs[1].lag_bytes or 0) > 0)
            broken = run(state)
            [alert] = received(hook)
            assert alert["event"] == "siprec.node.broken"
            assert alert["resource"] == "siprec.node.siprec-lab-pg.replica1"
            assert alert["fields"]["kind"] == "transition"
            assert alert["fields"]["previous"] == "healthy"
            assert "replay paused" in alert["fields"]["reason"]
            labels = {"cluster": "siprec-lab-pg", "node": "replica1", "kind": "postgres"}
            assert metric(broken, "siprec_replication_node_status", **labels, status="broken") == 1
            assert metric(broken, "siprec_replication_node_status", **labels, status="healthy") == 0
            assert (metric(broken, "siprec_replication_lag_bytes", **labels) or 0) > 0
            assert run(state).alerts == [] and received(hook) == []  # no change, no alert
        finally:
            rconn.execute("SELECT pg_wal_replay_resume()")
    wait_healthy("siprec-lab-pg")
    run(state)
    [recovery] = received(hook)
    assert recovery["fields"]["kind"] == "recovery" and recovery["resolved"] is True
    assert recovery["event"] == "siprec.node.healthy"
    events = wait_for_events("siprec.replication.broken", "siprec.node.siprec-lab-pg.replica1")
    assert events, "no siprec.replication.broken event"


def test_mariadb_io_thread_stopped_alerts_once_then_recovers(
    lab_platform: LabState, hook: Receiver
) -> None:
    state = new_state()
    wait_healthy("siprec-lab-mariadb")
    assert run(state).alerts == []
    with lab_platform.mariadb("replica").connect(admin=True) as conn, conn.cursor() as cur:
        try:
            cur.execute("STOP SLAVE IO_THREAD")
            report = run(state)
            [alert] = received(hook)
            assert alert["resource"] == "siprec.node.siprec-lab-mariadb.replica"
            assert alert["event"] == "siprec.node.broken"
            assert "IO thread not running" in alert["fields"]["reason"]
            labels = {"cluster": "siprec-lab-mariadb", "node": "replica", "kind": "mysql"}
            assert metric(report, "siprec_replication_node_status", **labels, status="broken") == 1
            assert metric(report, "siprec_replication_lag_seconds", **labels) is None  # unknown
            assert run(state).alerts == [] and received(hook) == []
        finally:
            cur.execute("START SLAVE")
    wait_healthy("siprec-lab-mariadb")
    run(state)
    [recovery] = received(hook)
    assert recovery["resource"] == "siprec.node.siprec-lab-mariadb.replica"
    assert recovery["fields"]["kind"] == "recovery"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redis_link_cut_alerts_once_then_recovers(lab_platform: LabState, hook: Receiver) -> None:
    state = new_state()
    wait_healthy("siprec-lab-redis")
    assert run(state).alerts == []
    primary = lab_platform.redis("primary")
    with lab_platform.redis("replica").client() as replica:
        try:
            replica.execute_command("REPLICAOF", "127.0.0.1", str(_closed_port()))
            wait_until("siprec-lab-redis", lambda rs: rs[1].status == "broken")
            run(state)
            [alert] = received(hook)
            assert alert["resource"] == "siprec.node.siprec-lab-redis.replica"
            assert alert["event"] == "siprec.node.broken"
            assert "master link down" in alert["fields"]["reason"]
        finally:
            replica.execute_command("REPLICAOF", primary.host, str(primary.port))
    wait_healthy("siprec-lab-redis")
    run(state)
    [recovery] = received(hook)
    assert recovery["fields"]["kind"] == "recovery"


def test_swapped_roles_are_a_topology_problem(lab_platform: LabState, hook: Receiver) -> None:
    ReplicationCluster(
        cluster="monitor-e2e-swapped",
        kind="postgres",
        nodes=[
            ReplicationNodeConfig(name="a", role="primary", block="siprec-postgres-replica"),
            ReplicationNodeConfig(name="b", role="replica", block="siprec-postgres"),
        ],
    ).save("monitor-e2e-swapped", overwrite=True)
    lab = Platform.load(PLATFORM)
    Platform(
        cluster=lab.cluster,
        storage=lab.storage,
        key=lab.key,
        sources=lab.sources,
        replication=["monitor-e2e-swapped"],
    ).save("monitor-e2e-swapped", overwrite=True)
    report = run(new_state(), platforms=["monitor-e2e-swapped"])
    assert [(r.node, r.status, r.reason) for r in report.nodes] == [
        ("a", "broken", "topology: configured primary is a replica"),
        ("b", "broken", "topology: configured replica is a primary"),
    ]
    alerts = received(hook)
    assert sorted(a["resource"] for a in alerts) == [
        "siprec.node.monitor-e2e-swapped.a",
        "siprec.node.monitor-e2e-swapped.b",
    ]
    artifact = Artifact.get("replication-status-monitor-e2e-swapped")
    assert artifact is not None and isinstance(artifact.data, str)
    rows = json.loads(artifact.data)
    assert [(r["role"], r["status"]) for r in rows] == [
        ("primary (is replica)", "BROKEN"),
        ("replica (is primary)", "BROKEN"),
    ]


def test_missing_backups_alert_once_through_webhook_and_slack(
    lab_platform: LabState, hook: Receiver, tmp_path: Path
) -> None:
    LocalStorage(path=str(tmp_path), prefix="empty").save("monitor-e2e-empty", overwrite=True)
    SlackWebhook(url=SecretStr(hook.url("/services/T0/B0/slackdonotleak"))).save(
        "monitor-e2e-slack", overwrite=True
    )
    state = new_state()
    parameters: dict[str, Any] = {
        "platforms": [PLATFORM],
        "channels": [HOOK, "slack-webhook/monitor-e2e-slack"],
        "freshness_max_age_hours": 26,
        "freshness_storage": "monitor-e2e-empty",
    }
    for cluster in REPLICATION:
        wait_healthy(cluster)
    report = run(state, **parameters)
    assert {r.source: r.status for r in report.freshness} == {
        "siprec-db": "missing",
        "siprec-mariadb": "missing",
        "siprec-redis": "missing",
        "siprec-recordings": "missing",
    }
    slack = [json.loads(r.body) for r in hook.requests if r.path.startswith("/services/")]
    hook.requests[:] = [r for r in hook.requests if r.path == "/hook"]
    alerts = received(hook)
    assert sorted(a["resource"] for a in alerts) == [
        f"siprec.source.siprec-lab.{s}"
        for s in ("siprec-db", "siprec-mariadb", "siprec-recordings", "siprec-redis")
    ]
    assert {a["event"] for a in alerts} == {"siprec.backup.missing"}
    assert len(slack) == 4 and all("no complete backup" in m["text"] for m in slack)
    assert run(state, **parameters).alerts == [] and hook.requests == []


def test_configuration_errors_fail_the_run(lab_platform: LabState) -> None:
    with pytest.raises(ConfigurationError, match="no-such-platform"):
        run(new_state(), platforms=["no-such-platform"], channels=[])
    with pytest.raises(ConfigurationError, match="no-such-channel"):
        run(new_state(), channels=["no-such-channel"])


def test_serve_mode_detects_a_broken_link_within_seconds(
    lab_platform: LabState, hook: Receiver
) -> None:
    """`python -m flows.monitor_replication --serve --interval 2`: a long-running process that
    checks every 2 s; a Redis link cut reaches the webhook once, the repair once more (the time
    to detection is printed: under load a pass takes longer than the interval)."""
    wait_healthy("siprec-lab-redis")
    repo = Path(__file__).resolve().parents[2]
    served = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.monitor_replication",
            "--serve",
            "--interval",
            "2",
            "--platform",
            PLATFORM,
            "--channel",
            HOOK,
            "--state-variable",
            new_state(),
        ],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    primary = lab_platform.redis("primary")
    try:
        time.sleep(8)  # the process registers its deployment and runs its first passes
        assert served.poll() is None, served.stderr.read() if served.stderr else ""
        assert hook.requests == []  # healthy: nothing to say
        with lab_platform.redis("replica").client() as replica:
            try:
                replica.execute_command("REPLICAOF", "127.0.0.1", str(_closed_port()))
                cut = time.monotonic()
                _wait_for_requests(hook, 1, 60)
                print(f"\nserve mode: link cut announced after {time.monotonic() - cut:.1f} s")
                [alert] = received(hook)
                assert alert["event"] == "siprec.node.broken"
            finally:
                replica.execute_command("REPLICAOF", primary.host, str(primary.port))
        _wait_for_requests(hook, 1, 60)
        [recovery] = received(hook)
        assert recovery["fields"]["kind"] == "recovery"
        time.sleep(5)
        assert hook.requests == []  # no repeats while nothing changes
    finally:
        served.terminate()
        served.wait(timeout=30)
    wait_healthy("siprec-lab-redis")


def _wait_for_requests(hook: Receiver, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(hook.requests) < count:
        assert time.monotonic() < deadline, f"{len(hook.requests)} of {count} alerts arrived"
        time.sleep(0.1)
