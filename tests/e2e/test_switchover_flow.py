"""The switchover flow on real three-node clusters of each kind, with an application writing
through HAProxy the whole time: nothing it was told is written is lost, the old primary follows
the new one, HAProxy and both BIND servers point at the new primary, the TTL is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from flows.switchover import SwitchoverRequest, switchover
from siprec_backup.errors import SafetyRefusalError
from siprec_backup.failover import ops_for
from siprec_backup.lab import LabState
from siprec_backup.lab.probes import markers, write
from tests.e2e.failover_support import (
    KINDS,
    RunningCluster,
    app_writer,
    audit_of,
    dns_answers,
    dns_ttls,
    running_cluster,
    served_by,
    steps,
    wait_has,
)


@pytest.fixture(params=KINDS)
def cluster(request: pytest.FixtureRequest, lab: LabState) -> Iterator[RunningCluster]:
    with running_cluster(lab, request.param, ssh=request.param == "postgres") as run:
        yield run


def test_planned_switchover_loses_nothing(cluster: RunningCluster) -> None:
    kind, lab = cluster.kind, cluster.lab
    with app_writer(cluster) as writer:
        time.sleep(1.0)
        result = switchover(
            SwitchoverRequest(
                cluster=cluster.name, reason="test: maintenance", candidate="n2", dry_run=False
            )
        )
        cluster.haproxy.wait_serving(cluster.blocks.backend, "n2")
        time.sleep(1.0)
    assert result["outcome"] == "completed" and result["promoted"] == "n2"
    acked = {marker for marker, _ in writer.acked}
    print(f"\n{kind}: {len(acked)} writes acknowledged, longest gap {writer.longest_gap():.3f} s")
    assert len(acked) > 20
    # Every write the application was told succeeded is on the new primary (RPO 0)...
    missing = acked - markers(kind, cluster.target("n2"), "w-")
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:3]}"
    # ...the old primary is now its replica, and so is the third node.
    n2 = cluster.cluster.node("n2")
    for node in ("n1", "n3"):
        state = ops_for(kind).inspect(cluster.target(node), timeout=5)
        assert state.role == "replica", (node, state)
        assert state.upstream is not None and state.upstream.port == n2.port, (node, state)
    write(kind, cluster.target("n2"), "after-switchover")
    for node in ("n1", "n3"):
        wait_has(kind, cluster.target(node), "after-switchover")
    assert served_by(cluster) == "n2"
    record = cluster.blocks.dns_record
    assert record is not None
    assert dns_answers(lab, record) == {"primary": {n2.host}, "secondary": {n2.host}}
    assert dns_ttls(lab, record) == {"primary": {60}, "secondary": {60}}
    audit = audit_of(cluster.name, "switchover")
    assert audit["outcome"] == "completed"
    keys = [key for key, status in steps(audit) if status == "done"]
    assert keys[:3] == ["dns-prepare", "fence", "lb-fence"], keys
    assert keys.index("catch-up") < keys.index("promote") < keys.index("lb-switch")
    assert keys[-1] == "demote", keys
    catch_up = next(s for s in audit["steps"] if s["key"] == "catch-up")
    assert catch_up["inputs"]["until"]


def test_switchover_needs_a_running_primary(lab: LabState) -> None:
    with running_cluster(lab, "redis") as run:
        run.cluster.kill("n1")
        with pytest.raises(SafetyRefusalError, match="use failover"):
            switchover(SwitchoverRequest(cluster=run.name, reason="test", dry_run=False))
