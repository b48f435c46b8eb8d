"""The failover flow on real three-node clusters of each kind, with a real HAProxy in front and
the lab's BIND primary and secondary: kill the primary, fail over, and check everything moved;
then the fault cases (LB gone after promotion, refused DNS key before it, a lagging candidate
approved and rejected, two failovers at once, a run killed half-way)."""

from __future__ import annotations

import contextvars
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_runs import resume_flow_run
from pydantic import SecretStr

from blocks.alerting import AlertWebhook
from blocks.dns import BindDnsZone
from blocks.failover import FailoverCluster
from blocks.load_balancers import HAProxyLoadBalancer
from blocks.replication import ReplicationCluster
from deployments.lab_blocks import LEVERS
from flows._journal import read_journal
from flows.failover import FailoverRequest, failover
from siprec_backup.alerting.channels import verify_signature
from siprec_backup.errors import (
    DnsUpdateRefusedError,
    FailoverLockedError,
    IncompleteFailoverError,
    LoadBalancerError,
    SafetyRefusalError,
)
from siprec_backup.failover import ops_for
from siprec_backup.lab import LabState
from siprec_backup.lab.probes import has, write
from siprec_backup.traffic import HAProxy
from tests.conftest import Receiver
from tests.e2e.failover_support import (
    KINDS,
    RunningCluster,
    audit_of,
    dns_answers,
    running_cluster,
    served_by,
    steps,
    wait_has,
)

HOOK_SECRET = "failover-hook-secret"


def request(run: RunningCluster, **kw: Any) -> FailoverRequest:
    return FailoverRequest(cluster=run.name, reason="test: primary lost", dry_run=False, **kw)


@pytest.fixture(params=KINDS)
def cluster(request: pytest.FixtureRequest, lab: LabState) -> Iterator[RunningCluster]:
    with running_cluster(lab, request.param) as run:
        yield run


def test_failover_after_the_primary_is_killed(cluster: RunningCluster, receiver: Receiver) -> None:
    kind, lab = cluster.kind, cluster.lab
    hook = f"{cluster.name}-hook"
    AlertWebhook(url=receiver.url("/hook"), secret=SecretStr(HOOK_SECRET)).save(
        hook, overwrite=True
    )
    block = FailoverCluster.load(cluster.name)
    block.notify = [hook]
    block.save(cluster.name, overwrite=True)
    write(kind, cluster.target("n1"), "before")
    for replica in ("n2", "n3"):
        wait_has(kind, cluster.target(replica), "before")
    assert served_by(cluster) == "n1"
    cluster.cluster.kill("n1")

    plan = failover(FailoverRequest(cluster=cluster.name, reason="dry", dry_run=True))
    assert plan["outcome"] == "dry-run"
    assert "does not answer: not fenced" in plan["markdown"]

    result = failover(request(cluster))
    assert result["outcome"] == "completed"
    new = result["promoted"]
    other = "n3" if new == "n2" else "n2"
    # The promoted node accepts writes and kept what the old primary had written...
    assert has(kind, cluster.target(new), "before")
    write(kind, cluster.target(new), "after")
    # ...the other replica follows it...
    wait_has(kind, cluster.target(other), "after")
    # ...HAProxy routes to it...
    cluster.haproxy.wait_serving(cluster.blocks.backend, new)
    assert served_by(cluster) == new
    # ...and BIND's primary and secondary both answer its address.
    address = cluster.cluster.node(new).host
    record = cluster.blocks.dns_record
    assert record is not None
    assert dns_answers(lab, record) == {"primary": {address}, "secondary": {address}}
    # The monitoring now expects the new roles.
    roles = {n.name: n.role for n in ReplicationCluster.load(cluster.blocks.replication).nodes}
    assert roles == {"n1": "replica", new: "primary", other: "replica"}
    # The audit trail is complete.
    audit = audit_of(cluster.name)
    assert audit["outcome"] == "completed" and audit["promoted"] == new
    assert steps(audit) == [
        ("lb-fence", "done"),
        ("dns-prepare", "done"),
        ("promote", "done"),
        ("lb-switch", "done"),
        ("repoint", "done"),
        ("dns-switch", "done"),
    ]
    assert audit["plan"]["loss"]["unit"] in ("bytes", "transactions")
    assert audit["plan"]["nodes"]["n1"] == {"error": audit["plan"]["nodes"]["n1"]["error"]}
    promote = next(s for s in audit["steps"] if s["key"] == "promote")
    assert promote["result"]["position"] and promote["seconds"] > 0
    assert all(s["started"] and s["seconds"] >= 0 for s in audit["steps"])
    password = cluster.target("n1").password
    assert not password or password not in json.dumps(audit)
    assert read_journal(cluster.name)["outcome"] == "completed"  # type: ignore[index]
    # The alert channel heard the start and the end, signed.
    alerts = []
    for post in receiver.requests:
        headers = post.headers
        assert verify_signature(
            HOOK_SECRET, headers["X-Siprec-Timestamp"], post.body, headers["X-Siprec-Signature"]
        )
        alerts.append(json.loads(post.body))
    assert [(a["severity"], a["event"]) for a in alerts] == [
        ("critical", "failover.running"),
        ("info", "failover.completed"),
    ], alerts
    assert f"promoting {new}" in alerts[0]["summary"] and new in alerts[1]["summary"]


# -- fault cases (on PostgreSQL, the slowest to undo; the rules are the same for each kind) -----


@pytest.fixture
def pg(lab: LabState) -> Iterator[RunningCluster]:
    with running_cluster(lab, "postgres") as run:
        yield run


def _fenced(run: RunningCluster) -> bool:
    return not ops_for(run.kind).inspect(run.target("n1"), timeout=5).writable


def _lb_state(run: RunningCluster, server: str) -> str:
    return HAProxy(runtime=run.haproxy.runtime).server(run.blocks.backend, server).state


def test_refused_dns_key_before_promotion_rolls_everything_back(
    pg: RunningCluster, lab: LabState
) -> None:
    good = BindDnsZone.load(LEVERS["dns"])
    bad = good.model_copy(update={"key_secret": SecretStr("c2VjcmV0LXRoYXQtaXMtd3Jvbmc=")})
    bad.save(f"{pg.name}-bad-dns", overwrite=True)
    block = FailoverCluster.load(pg.name)
    block.dns_zone = f"{pg.name}-bad-dns"
    block.save(pg.name, overwrite=True)
    write(pg.kind, pg.target("n1"), "kept")

    with pytest.raises(DnsUpdateRefusedError):
        failover(request(pg, candidate="n2"))

    audit = audit_of(pg.name)
    assert audit["outcome"] == "rolled-back"
    assert steps(audit) == [("fence", "done"), ("lb-fence", "done"), ("dns-prepare", "failed")]
    assert any("load balancer" in r for r in audit["rollbacks"])
    assert any("fence of n1" in r for r in audit["rollbacks"])
    # Everything is as before: n1 writable primary, in service, n2 still a replica.
    assert not _fenced(pg)
    write(pg.kind, pg.target("n1"), "still-primary")
    assert _lb_state(pg, "n1") != "MAINT"
    assert ops_for(pg.kind).inspect(pg.target("n2"), timeout=5).role == "replica"
    assert read_journal(pg.name)["outcome"] == "rolled-back"  # type: ignore[index]


class _FlakyRuntime:
    """A TCP relay to HAProxy's Runtime API that goes away (or hangs, ``hang=True``) the
    moment a command sets ``server`` ready: the load balancer lost right after promotion."""

    def __init__(self, upstream: str, server: str, *, hang: bool = False) -> None:
        self.upstream = upstream
        self.trigger = f"/{server} state ready".encode()
        self.hang = hang
        self.tripped = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.tripped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        with conn:
            command = conn.recv(65536)
            if self.trigger in command:
                self.tripped.set()
                self.sock.close()  # from now on: connection refused
                if self.hang:
                    time.sleep(120)
                # Reset, not a clean close (an empty answer is HAProxy's "done").
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            host, port = self.upstream.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as up:
                up.sendall(command)
                while chunk := up.recv(65536):
                    conn.sendall(chunk)

    def close(self) -> None:
        self.sock.close()


def _use_runtime(run: RunningCluster, address: str, timeout: float = 2) -> None:
    HAProxyLoadBalancer(runtime_api=address, timeout_seconds=timeout).save(
        f"{run.name}-haproxy", overwrite=True
    )


def test_load_balancer_lost_after_promotion_stops_with_the_manual_next_step(
    pg: RunningCluster,
) -> None:
    flaky = _FlakyRuntime(pg.haproxy.runtime, "n2")
    _use_runtime(pg, flaky.address)
    pg.cluster.kill("n1")
    try:
        with pytest.raises(LoadBalancerError):
            failover(request(pg, candidate="n2"))
    finally:
        flaky.close()
    assert flaky.tripped.is_set()
    audit = audit_of(pg.name)
    assert audit["outcome"] == "stopped-after-promotion"
    assert ("promote", "done") in steps(audit) and ("lb-switch", "failed") in steps(audit)
    assert ("dns-switch", "done") not in steps(audit)
    # Nothing after the promotion was undone; the report says what is left to do.
    assert any("kept" in r for r in audit["rollbacks"])
    assert "n2 is the primary now" in audit["next_step"]
    assert "pg" not in audit["next_step"] or "-> ready" in audit["next_step"]
    write(pg.kind, pg.target("n2"), "n2-writable")
    journal = read_journal(pg.name)
    assert journal is not None and journal["outcome"] == "stopped-after-promotion"
    # The next run refuses until the operator acknowledges the half-done one.
    _use_runtime(pg, pg.haproxy.runtime)
    with pytest.raises(IncompleteFailoverError, match="stopped after promotion"):
        failover(request(pg))


def _stall_and_write(run: RunningCluster) -> str:
    """Both replicas stop receiving; the live primary then writes 4 MiB (hex of random bytes:
    little to compress) they never get. Returns the last marker written."""
    for replica in ("n2", "n3"):
        run.cluster.stall(replica)
    marker = ""
    for i in range(64):
        marker = f"lost-{i}-{secrets.token_hex(32768)}"
        write(run.kind, run.target("n1"), marker)
    return marker


def _paused_failover(run: RunningCluster) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def go() -> None:
        try:
            outcome["result"] = failover(request(run, candidate="n2"))
        except Exception as exc:
            outcome["error"] = exc

    # The thread sees the session's Prefect settings (a context variable) only if given them.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(go,))
    thread.start()
    return thread, outcome


async def _paused_run_id() -> Any:
    """The newest paused flow run of the failover flow, if any."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["failover"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    return runs[0].id if runs else None


def _wait_paused() -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run_id = anyio.run(_paused_run_id)
        if run_id:
            return run_id
        time.sleep(0.5)
    raise AssertionError("the failover never paused for approval")


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "rejected"])
def test_lagging_candidate_waits_for_an_operator(pg: RunningCluster, approve: bool) -> None:
    lost = _stall_and_write(pg)
    thread, outcome = _paused_failover(pg)
    run_id = _wait_paused()
    assert _fenced(pg) is False  # nothing changed while waiting
    anyio.run(
        lambda: resume_flow_run(
            run_id, run_input={"approve": approve, "operator": "alice", "comment": "test"}
        )
    )
    thread.join(120)
    assert not thread.is_alive()
    audit = audit_of(pg.name)
    assert audit["approval"]["operator"] == "alice"
    assert audit["plan"]["loss"]["exact"] and audit["plan"]["loss"]["amount"] > 1 << 20
    if approve:
        assert outcome.get("result", {}).get("outcome") == "completed", outcome
        assert audit["promoted"] == "n2"
        write(pg.kind, pg.target("n2"), "after-approval")
        assert not has(pg.kind, pg.target("n2"), lost)
    else:
        assert isinstance(outcome.get("error"), SafetyRefusalError), outcome
        assert "alice rejected" in str(outcome["error"])
        assert audit["outcome"] == "refused" and audit["steps"] == []
        write(pg.kind, pg.target("n1"), "n1-still-primary")


def _wait_journal(run: RunningCluster, step: str) -> None:
    """Until the journal (written in the background) shows ``step`` done."""
    deadline = time.monotonic() + 15
    while (read_journal(run.name) or {}).get("last_step") != step:
        assert time.monotonic() < deadline, read_journal(run.name)
        time.sleep(0.1)


def test_a_second_failover_of_the_cluster_is_refused(pg: RunningCluster) -> None:
    flaky = _FlakyRuntime(pg.haproxy.runtime, "n2", hang=True)
    _use_runtime(pg, flaky.address, timeout=20)
    pg.cluster.kill("n1")
    first, outcome = _paused_failover(pg)
    try:
        assert flaky.tripped.wait(60), "the first failover never reached the load balancer"
        _wait_journal(pg, "promote")
        with pytest.raises(FailoverLockedError, match="already running") as refused:
            failover(request(pg))
        assert "last completed step: promote" in str(refused.value)
    finally:
        flaky.close()
        first.join(120)
    assert isinstance(outcome.get("error"), LoadBalancerError), outcome


def test_a_run_killed_half_way_is_reported_by_the_next_one(
    pg: RunningCluster, lab: LabState
) -> None:
    flaky = _FlakyRuntime(pg.haproxy.runtime, "n2", hang=True)
    _use_runtime(pg, flaky.address, timeout=60)
    pg.cluster.kill("n1")
    code = (
        "from flows.failover import FailoverRequest, failover\n"
        f"failover(FailoverRequest(cluster={pg.name!r}, reason='killed', dry_run=False, "
        "candidate='n2'))\n"
    )
    env = {**os.environ, "PREFECT_API_URL": lab.prefect_api_url}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert flaky.tripped.wait(90), "the run never reached the load balancer switch"
        _wait_journal(pg, "promote")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        flaky.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    journal = read_journal(pg.name)
    assert journal is not None
    assert journal["outcome"] == "running" and journal["last_step"] == "promote"
    _use_runtime(pg, pg.haproxy.runtime)
    # While the dead run's lock lease lasts, the next run is refused, naming where it stopped;
    # once it has expired, the next run reports the half-done failover from the journal.
    deadline = time.monotonic() + 150
    while True:
        try:
            failover(request(pg))
        except FailoverLockedError as exc:
            assert "last completed step: promote" in str(exc)
            assert time.monotonic() < deadline, "the dead run's lock never expired"
            time.sleep(5)
            continue
        except IncompleteFailoverError as exc:
            assert "never finished" in str(exc) and "promoted: n2" in str(exc)
            break
        raise AssertionError("the run after a killed one went ahead")
    # After reading the report the operator acknowledges and finishes with a new run.
    result = failover(request(pg, acknowledge_incomplete=True))
    assert result["outcome"] == "completed" and result["promoted"] == "n2"
    assert served_by(pg) == "n2"


def test_cli_dry_run_prints_the_plan_and_bad_input_is_one_line(lab: LabState) -> None:
    cli = [str(Path(sys.executable).with_name("siprec-backup"))]
    env = {**os.environ, "PREFECT_API_URL": lab.prefect_api_url}
    with running_cluster(lab, "redis") as run:
        run.cluster.kill("n1")
        done = subprocess.run(
            [*cli, "failover", run.name, "--reason", "drill", "--dry-run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"# Failover plan for cluster `{run.name}` (redis)" in done.stdout
        assert "n1 does not answer: not fenced" in done.stdout
        assert "promote n" in done.stdout and "-> ready" in done.stdout
        # Nothing changed: n2 and n3 are still replicas.
        for node in ("n2", "n3"):
            assert ops_for("redis").inspect(run.target(node), timeout=5).role == "replica"
        password = run.target("n1").password
        assert password not in done.stdout + done.stderr
    for args, message in (
        (["failover", "no-such-cluster", "--reason", "drill"], "no SIPREC Backup Failover Cluster"),
        (["failover", "x", "--reason", "drill", "--max-data-loss", "-1"], "--max-data-loss"),
    ):
        bad = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1, bad
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], bad.stderr
