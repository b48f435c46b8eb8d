"""The failover plan: who is fenced, who is promoted, who is repointed, which load balancer
servers and DNS records change, and how much data the promotion loses. Pure: it works on what
:meth:`DatabaseOps.inspect` returned for every node and never touches a server, so the dry run
and the real run print the same plan, and the rules are unit-tested.

Rules:
- The old primary is the one node observed as primary. Two observed primaries (split brain) or
  none when the configured primary answers as a replica is a topology the plan refuses.
- Candidates are reachable replicas with a priority above 0. The automatic choice is the most
  advanced (received position: promotion applies everything received first), then the highest
  priority, then the name. A requested candidate must be eligible.
- The data loss is what the reference has that the candidate has not received: the reference is
  the old primary when it answers (exact), otherwise the most advanced reachable node (a lower
  bound: what the dead primary wrote after that is unknown).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from siprec_backup.errors import SafetyRefusalError
from siprec_backup.failover.databases import LOSS_UNITS, Endpoint, Kind, NodeState

Mode = Literal["failover", "switchover"]


@dataclass(frozen=True)
class LbServer:
    """A server of a load balancer backend (HAProxy backend/server, nginx/NGINX Plus upstream)."""

    backend: str
    server: str

    def __str__(self) -> str:
        return f"{self.backend}/{self.server}"


@dataclass(frozen=True)
class FailoverNode:
    """One database server as a failover sees it. ``target`` holds the password: never log it."""

    name: str
    target: Any = field(repr=False)
    endpoint: Endpoint
    address: str
    priority: int = 100
    lb_server: LbServer | None = None
    ssh_host: str | None = None
    service: str | None = None
    systemctl: str = "systemctl"
    sudo: bool = False
    data_directory: str | None = None


@dataclass(frozen=True)
class NodeView:
    """What a node said when the plan was made (``state``) or why it did not answer."""

    node: FailoverNode
    state: NodeState | None
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.state is not None

    def summary(self) -> str:
        if self.state is None:
            return f"unreachable ({self.error})"
        s = self.state
        where = f" of {s.upstream}" if s.upstream else ""
        link = ", streaming" if s.streaming else ""
        writable = ", writable" if s.writable else ""
        return f"{s.role}{where}{link}{writable}, received {s.received.text}"


@dataclass(frozen=True)
class DataLoss:
    """What promoting the candidate loses, in ``unit``. ``exact`` when measured against the
    answering old primary; otherwise a lower bound against the most advanced reachable node."""

    amount: int
    unit: str
    reference: str
    exact: bool

    def describe(self) -> str:
        bound = "" if self.exact else " at least (the old primary does not answer)"
        return f"{self.amount} {self.unit}{bound}, against {self.reference}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "amount": self.amount,
            "unit": self.unit,
            "reference": self.reference,
            "exact": self.exact,
        }


@dataclass(frozen=True)
class DnsRecord:
    """A record the failover points at the primary's address, and what it holds now."""

    name: str
    rtype: str
    ttl: int
    current: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlannedStep:
    """One line of the runbook: a step key and target (as in the audit trail) and what it will
    do."""

    key: str
    target: str
    action: str


@dataclass(frozen=True)
class FailoverPlan:
    """The runbook of one failover or switchover, as printed by the dry run."""

    cluster: str
    kind: Kind
    mode: Mode
    old_primary: FailoverNode | None
    old_primary_reachable: bool
    candidate: FailoverNode
    candidate_reason: str
    repoint: tuple[FailoverNode, ...]
    loss: DataLoss
    max_loss: int
    views: Mapping[str, NodeView]
    dns: tuple[DnsRecord, ...] = ()
    steps: tuple[PlannedStep, ...] = ()
    #: The candidate was promoted by an earlier run that stopped half-way: finish its work.
    resumed: bool = False

    @property
    def loss_exceeds_gate(self) -> bool:
        """A failover beyond the gate needs approval; a switchover waits for catch-up instead."""
        return self.mode == "failover" and self.loss.amount > self.max_loss

    def to_markdown(self) -> str:
        """The plan as the dry-run artifact shows it."""
        old = self.old_primary.name if self.old_primary else "none"
        lines = [
            f"# {self.mode.title()} plan for cluster `{self.cluster}` ({self.kind})",
            "",
            f"- Old primary: **{old}**" + ("" if self.old_primary_reachable else " (unreachable)"),
            f"- Candidate: **{self.candidate.name}** ({self.candidate_reason})",
            f"- Data loss: {self.loss.describe()}; gate {self.max_loss} {self.loss.unit}"
            + (
                " — **beyond the gate: operator approval needed**" if self.loss_exceeds_gate else ""
            ),
            "",
            "| node | priority | state |",
            "|---|---|---|",
        ]
        for name, view in self.views.items():
            lines.append(f"| {name} | {view.node.priority} | {view.summary()} |")
        lines += ["", "## Steps", ""]
        lines += [f"{i}. `{s.key}`: {s.action}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "kind": self.kind,
            "mode": self.mode,
            "old_primary": self.old_primary.name if self.old_primary else None,
            "old_primary_reachable": self.old_primary_reachable,
            "candidate": self.candidate.name,
            "candidate_reason": self.candidate_reason,
            "repoint": [n.name for n in self.repoint],
            "loss": self.loss.to_dict(),
            "max_loss": self.max_loss,
            "nodes": {
                name: (v.state.to_dict() if v.state else {"error": v.error})
                for name, v in self.views.items()
            },
            "steps": [{"key": s.key, "action": s.action} for s in self.steps],
        }


def find_old_primary(views: Sequence[NodeView], configured: str | None) -> NodeView | None:
    """The node observed as primary; else the configured primary if it does not answer; None
    when no primary can be named. Refuses two observed primaries (split brain)."""
    primaries = [v for v in views if v.state is not None and v.state.role == "primary"]
    if len(primaries) > 1:
        names = ", ".join(v.node.name for v in primaries)
        raise SafetyRefusalError(
            f"several nodes answer as primary ({names}): split brain; fence all but one by "
            "hand, then run the failover again"
        )
    if primaries:
        return primaries[0]
    for view in views:
        if view.node.name == configured and not view.reachable:
            return view
    return None


def _eligible(view: NodeView, old: NodeView | None) -> str | None:
    """Why ``view`` cannot be promoted, or None if it can."""
    if view.state is None:
        return f"unreachable ({view.error})"
    if view.state.role != "replica":
        return "not a replica"
    if view.node.priority <= 0:
        return "priority 0 (never promoted)"
    if old is not None and view.state.upstream is not None:
        expected = old.node.endpoint
        if view.state.upstream != expected:
            return f"replicates from {view.state.upstream}, not from the primary {expected}"
    return None


def choose_candidate(
    views: Sequence[NodeView], old: NodeView | None, requested: str | None
) -> tuple[NodeView, str]:
    """The node to promote and why it was chosen (SafetyRefusalError if none is eligible)."""
    by_name = {v.node.name: v for v in views}
    if requested:
        if requested not in by_name:
            raise SafetyRefusalError(
                f"candidate {requested!r} is not a node of the cluster "
                f"({', '.join(sorted(by_name))})"
            )
        why_not = _eligible(by_name[requested], old)
        if why_not:
            raise SafetyRefusalError(f"candidate {requested} cannot be promoted: {why_not}")
        return by_name[requested], "requested by the operator"
    eligible = [v for v in views if v is not old and _eligible(v, old) is None]
    if not eligible:
        reasons = "; ".join(f"{v.node.name}: {_eligible(v, old)}" for v in views if v is not old)
        raise SafetyRefusalError(f"no replica can be promoted ({reasons or 'no replicas'})")

    eligible.sort(key=lambda v: v.node.name)
    best = max(eligible, key=lambda v: (_total(v), v.node.priority))
    others = [v for v in eligible if v is not best]
    if not others:
        return best, "the only eligible replica"
    tie = any(_total(o) == _total(best) for o in others)
    reason = "most advanced replica" + (", then highest priority" if tie else "")
    assert best.state is not None
    return best, f"{reason}: received {best.state.received.text}"


def _total(view: NodeView) -> int:
    """How far a node has got, as one number (the sum of its position's parts)."""
    return sum(view.state.received.parts.values()) if view.state else -1


def measure_loss(
    kind: Kind, candidate: NodeView, views: Sequence[NodeView], old: NodeView | None
) -> DataLoss:
    """What promoting ``candidate`` loses (see the module docstring)."""
    assert candidate.state is not None
    unit = LOSS_UNITS[kind]
    mine = candidate.state.received
    if old is not None and old.state is not None:
        return DataLoss(mine.behind(old.state.received), unit, f"primary {old.node.name}", True)
    best: tuple[int, str] = (0, candidate.node.name)
    for view in views:
        if view.state is not None and view is not candidate:
            gap = mine.behind(view.state.received)
            if gap > best[0]:
                best = (gap, view.node.name)
    reference = "itself" if best[1] == candidate.node.name else f"replica {best[1]}"
    return DataLoss(best[0], unit, f"the most advanced reachable node ({reference})", False)


def runbook(
    mode: Mode,
    kind: Kind,
    old: NodeView | None,
    candidate: FailoverNode,
    repoint: Sequence[FailoverNode],
    dns: Sequence[DnsRecord],
    *,
    load_balancer: str | None,
    stop_service: bool,
    prepare_ttl: int,
    resumed: bool = False,
) -> tuple[PlannedStep, ...]:
    """The steps in the order the flow runs them, each with its exact action.

    Traffic moves to the new primary right after its promotion; repointing the other replicas,
    DNS and (switchover) the old primary's rejoin follow. A switchover lowers the TTLs before it
    stops writes, so the write gap holds only fence, catch-up, promotion and the LB switch; a
    failover lowers them after fencing, as the first signed DNS update: a refused key is then
    found while everything can still be rolled back."""
    steps: list[PlannedStep] = []
    names = ", ".join(r.name for r in dns)
    prepare = PlannedStep("dns-prepare", names, f"lower the TTL of {names} to {prepare_ttl} s")
    if dns and mode == "switchover":
        steps.append(prepare)
    old_node = old.node if old else None
    if old_node is not None:
        name = old_node.name
        if old is not None and old.reachable:
            steps.append(PlannedStep("fence", name, f"set {name} read-only"))
        else:
            steps.append(PlannedStep("unfenced", name, f"{name} does not answer: not fenced"))
        if load_balancer and old_node.lb_server:
            server = str(old_node.lb_server)
            steps.append(PlannedStep("lb-fence", server, f"{load_balancer}: {server} -> maint"))
        if mode == "switchover" and kind == "postgres":
            steps.append(
                PlannedStep("prepare-rejoin", name, f"{name} will follow {candidate.endpoint}")
            )
        if (stop_service or (mode == "switchover" and kind == "postgres")) and (
            old_node.service and old_node.ssh_host
        ):
            steps.append(
                PlannedStep("stop-service", name, f"stop {old_node.service} on {name} over SSH")
            )
    if dns and mode == "failover":
        steps.append(prepare)
    new = candidate.name
    if mode == "switchover":
        steps.append(
            PlannedStep("catch-up", new, f"wait until {new} has applied all of the primary")
        )
    if resumed:
        steps.append(PlannedStep("promoted", new, f"{new} was promoted by the previous run"))
    else:
        steps.append(PlannedStep("promote", new, f"promote {new} ({candidate.endpoint})"))
    if load_balancer and candidate.lb_server:
        server = str(candidate.lb_server)
        steps.append(PlannedStep("lb-switch", server, f"{load_balancer}: {server} -> ready"))
    for node in repoint:
        steps.append(PlannedStep("repoint", node.name, f"{node.name} follows {candidate.endpoint}"))
    if dns:
        changes = "; ".join(
            f"{r.name} {r.rtype} {', '.join(r.current) or 'nothing'} -> {candidate.address} "
            f"(TTL {r.ttl} s)"
            for r in dns
        )
        steps.append(
            PlannedStep(
                "dns-switch", names, f"{changes}, verified on every authoritative nameserver"
            )
        )
    if mode == "switchover" and old_node is not None:
        steps.append(
            PlannedStep(
                "demote",
                old_node.name,
                f"{old_node.name} becomes a replica of {candidate.endpoint}",
            )
        )
    steps.append(
        PlannedStep("record", new, "record the new roles in the cluster block; audit trail")
    )
    return tuple(steps)


def make_plan(
    *,
    cluster: str,
    kind: Kind,
    mode: Mode,
    views: Sequence[NodeView],
    configured_primary: str | None,
    requested: str | None,
    max_loss: int,
    dns: Sequence[DnsRecord] = (),
    load_balancer: str | None = None,
    stop_service: bool = False,
    prepare_ttl: int = 5,
    resume: tuple[str, str | None] | None = None,
) -> FailoverPlan:
    """The plan for ``views`` (one per node, in configuration order). ``resume`` is
    ``(promoted, old_primary)`` of an earlier run that promoted a node and stopped: the plan
    then finishes that run's work instead of promoting again."""
    if resume is not None:
        return _resume_plan(
            cluster=cluster,
            kind=kind,
            mode=mode,
            views=views,
            promoted=resume[0],
            old_primary=resume[1],
            dns=dns,
            load_balancer=load_balancer,
            prepare_ttl=prepare_ttl,
        )
    old = find_old_primary(views, configured_primary)
    if mode == "switchover" and (old is None or not old.reachable):
        raise SafetyRefusalError(
            "a switchover needs a running primary; the primary does not answer: use failover"
        )
    candidate, reason = choose_candidate(views, old, requested)
    loss = measure_loss(kind, candidate, views, old)
    repoint = tuple(v.node for v in views if v is not candidate and v is not old and v.reachable)
    steps = runbook(
        mode,
        kind,
        old,
        candidate.node,
        repoint,
        dns,
        load_balancer=load_balancer,
        stop_service=stop_service,
        prepare_ttl=prepare_ttl,
    )
    return FailoverPlan(
        cluster=cluster,
        kind=kind,
        mode=mode,
        old_primary=old.node if old else None,
        old_primary_reachable=bool(old and old.reachable),
        candidate=candidate.node,
        candidate_reason=reason,
        repoint=repoint,
        loss=loss,
        max_loss=max_loss,
        views={v.node.name: v for v in views},
        dns=tuple(dns),
        steps=steps,
    )


def _resume_plan(
    *,
    cluster: str,
    kind: Kind,
    mode: Mode,
    views: Sequence[NodeView],
    promoted: str,
    old_primary: str | None,
    dns: Sequence[DnsRecord],
    load_balancer: str | None,
    prepare_ttl: int,
) -> FailoverPlan:
    """Finish an earlier run that promoted ``promoted``: fence the old primary if it answers,
    repoint the replicas that do not follow the new primary yet, switch LB and DNS."""
    by_name = {v.node.name: v for v in views}
    new = by_name.get(promoted)
    if new is None or new.state is None or new.state.role != "primary":
        state = new.summary() if new else "not a node of the cluster"
        raise SafetyRefusalError(
            f"the previous run promoted {promoted}, which is now {state}: repair by hand"
        )
    old = by_name.get(old_primary or "")
    repoint = tuple(
        v.node
        for v in views
        if v is not new
        and v is not old
        and v.state is not None
        and v.state.role == "replica"
        and v.state.upstream != new.node.endpoint
    )
    steps = runbook(
        mode,
        kind,
        old,
        new.node,
        repoint,
        dns,
        load_balancer=load_balancer,
        stop_service=False,
        prepare_ttl=prepare_ttl,
        resumed=True,
    )
    return FailoverPlan(
        cluster=cluster,
        kind=kind,
        mode=mode,
        old_primary=old.node if old else None,
        old_primary_reachable=bool(old and old.reachable),
        candidate=new.node,
        candidate_reason="promoted by the previous run, which stopped half-way",
        repoint=repoint,
        loss=DataLoss(0, LOSS_UNITS[kind], "nothing more: already promoted", True),
        max_loss=0,
        views={v.node.name: v for v in views},
        dns=tuple(dns),
        steps=tuple(s for s in steps if s.key not in ("catch-up", "demote")),
        resumed=True,
    )
