"""The failover plan's rules on node states: old primary, candidate choice, data loss, steps."""

from __future__ import annotations

import pytest

from siprec_backup.errors import SafetyRefusalError
from siprec_backup.failover import (
    DnsRecord,
    Endpoint,
    FailoverAudit,
    FailoverNode,
    FailoverPlan,
    LbServer,
    NodeState,
    NodeView,
    Position,
    make_plan,
)

PRIMARY = Endpoint("10.0.0.1", 5432)


def node(name: str, priority: int = 100) -> FailoverNode:
    n = int(name[1:])
    return FailoverNode(
        name=name,
        target=None,
        endpoint=Endpoint(f"10.0.0.{n}", 5432),
        address=f"10.0.0.{n}",
        priority=priority,
        lb_server=LbServer("pg", name),
    )


def lsn(n: int) -> Position:
    return Position("postgres", f"0/{n:X}", {"lsn": n})


def primary(name: str = "n1", at: int = 1000) -> NodeView:
    return NodeView(node(name), NodeState("primary", lsn(at), lsn(at), writable=True))


def replica(name: str, at: int, priority: int = 100, upstream: Endpoint = PRIMARY) -> NodeView:
    state = NodeState("replica", lsn(at), lsn(at), upstream=upstream, streaming=True)
    return NodeView(node(name, priority), state)


def dead(name: str) -> NodeView:
    return NodeView(node(name), None, "connection refused")


def plan(views: list[NodeView], **kw: object) -> FailoverPlan:
    args: dict[str, object] = {
        "cluster": "pg",
        "kind": "postgres",
        "mode": "failover",
        "views": views,
        "configured_primary": "n1",
        "requested": None,
        "max_loss": 100,
        "load_balancer": "haproxy",
    }
    args.update(kw)
    return make_plan(**args)  # type: ignore[arg-type]


def test_most_advanced_replica_is_chosen_and_loss_is_a_lower_bound_when_primary_is_dead() -> None:
    p = plan([dead("n1"), replica("n2", 900), replica("n3", 950)])
    assert p.candidate.name == "n3"
    assert p.old_primary is not None and p.old_primary.name == "n1"
    assert not p.old_primary_reachable
    assert [n.name for n in p.repoint] == ["n2"]
    assert p.loss.amount == 0 and not p.loss.exact
    keys = [s.key for s in p.steps]
    assert keys == ["unfenced", "lb-fence", "promote", "lb-switch", "repoint", "record"]
    assert "not fenced" in p.steps[0].action


def test_priority_breaks_a_tie_and_zero_priority_is_never_promoted() -> None:
    p = plan([dead("n1"), replica("n2", 950, priority=50), replica("n3", 950, priority=200)])
    assert p.candidate.name == "n3"
    assert "priority" in p.candidate_reason
    p = plan([dead("n1"), replica("n2", 900), replica("n3", 950, priority=0)])
    assert p.candidate.name == "n2"
    # n2 misses 50 bytes that n3 has: measured against the most advanced reachable node.
    assert p.loss.amount == 50 and "n3" in p.loss.reference
    assert p.loss_exceeds_gate is False


def test_loss_against_a_live_primary_is_exact_and_gated() -> None:
    p = plan([primary(at=5000), replica("n2", 900), replica("n3", 800)], max_loss=1000)
    assert p.candidate.name == "n2"
    assert p.loss.amount == 4100 and p.loss.exact
    assert p.loss_exceeds_gate
    assert "approval" in p.to_markdown()


def test_requested_candidate_must_be_eligible() -> None:
    views = [dead("n1"), replica("n2", 900), dead("n3")]
    with pytest.raises(SafetyRefusalError, match="n3 cannot be promoted: unreachable"):
        plan(views, requested="n3")
    with pytest.raises(SafetyRefusalError, match="not a node"):
        plan(views, requested="n9")
    other = replica("n3", 990, upstream=Endpoint("10.0.0.2", 5432))
    with pytest.raises(SafetyRefusalError, match=r"replicates from 10\.0\.0\.2:5432"):
        plan([primary(), replica("n2", 900), other], requested="n3")
    assert plan(views, requested="n2").candidate_reason == "requested by the operator"


def test_split_brain_and_no_candidate_are_refused() -> None:
    with pytest.raises(SafetyRefusalError, match="split brain"):
        plan([primary("n1"), primary("n2"), replica("n3", 10)])
    with pytest.raises(SafetyRefusalError, match="no replica can be promoted"):
        plan([dead("n1"), dead("n2"), dead("n3")])


def test_switchover_needs_a_live_primary_and_plans_catch_up_and_demote() -> None:
    with pytest.raises(SafetyRefusalError, match="switchover needs a running primary"):
        plan([dead("n1"), replica("n2", 900)], mode="switchover")
    records = [DnsRecord("db", "A", 60, ("10.0.0.1",))]
    p = plan(
        [primary(), replica("n2", 990), replica("n3", 980)],
        mode="switchover",
        dns=records,
        load_balancer="haproxy",
    )
    keys = [s.key for s in p.steps]
    assert keys == [
        "dns-prepare",
        "fence",
        "lb-fence",
        "prepare-rejoin",
        "catch-up",
        "promote",
        "lb-switch",
        "repoint",
        "dns-switch",
        "demote",
        "record",
    ]
    assert not p.loss_exceeds_gate
    assert "db A 10.0.0.1 -> 10.0.0.2" in p.steps[-3].action
    assert [(s.key, s.target) for s in p.steps][1:3] == [("fence", "n1"), ("lb-fence", "pg/n1")]


def test_audit_journal_and_report() -> None:
    audit = FailoverAudit("pg", "failover", "tester", "primary lost")
    step = audit.begin("promote", "n2", timeout=30)
    step.finish("done", {"position": "0/3A0"})
    audit.promoted = "n2"
    failed = audit.begin("lb-switch", "pg/n2")
    failed.finish("failed", error="HAProxy unreachable")
    audit.end("stopped-after-promotion", error="HAProxy unreachable", next_step="set pg/n2 ready")
    journal = audit.journal()
    assert journal["outcome"] == "stopped-after-promotion"
    assert journal["last_step"] == "promote" and journal["promoted"] == "n2"
    report = audit.to_markdown()
    assert "STOPPED after promotion" in report and "set pg/n2 ready" in report
    assert "| 2 | lb-switch | pg/n2 | failed |" in report
