"""The ``switchover`` flow: a planned change of primary with no data loss, before maintenance.

The same runbook, lock, journal, audit trail and notifications as :mod:`flows.failover`, with
these differences: the old primary must be running; writes stop on it (fenced) and the run
waits until the candidate has applied everything it wrote before promoting; afterwards the old
primary becomes a replica of the new one (PostgreSQL: stopped cleanly first, so the standby has
its last WAL, and restarted as a standby over SSH; MySQL/MariaDB: replicates with the cluster
block's replication account; Redis: REPLICAOF); the DNS TTLs are lowered ahead and put back
with the switch. There is no lag gate: nothing is lost.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.transactions import transaction
from pydantic import BaseModel, ConfigDict, Field

from blocks.failover import LoadedCluster
from flows.failover import DNS_DEADLINE_SECONDS, FailoverRequest, run_runbook, run_step
from siprec_backup.errors import SafetyRefusalError
from siprec_backup.failover import FailoverAudit, FailoverPlan
from siprec_backup.traffic import ServerState
from tasks.failover import (
    AUDIT,
    PROMOTED,
    SharedAudit,
    catch_up,
    demote,
    dns_prepare,
    dns_switch,
    fence_primary,
    final_position,
    lb_set,
    prepare_rejoin,
    promote,
    repoint,
    stop_service,
)


class SwitchoverRequest(BaseModel):
    """What the operator asks for (the form of the Prefect UI's "Custom run")."""

    model_config = ConfigDict(extra="forbid")

    cluster: str = Field(description="The failover cluster block to act on.", min_length=1)
    reason: str = Field(description="Why (kept in the audit trail).", min_length=3)
    candidate: str | None = Field(
        default=None, description="Node to promote; empty: the most advanced healthy replica."
    )
    dry_run: bool = Field(default=True, description="Only print the plan; change nothing.")
    acknowledge_incomplete: bool = Field(
        default=False,
        description="Proceed although an earlier run of this cluster stopped half-way.",
    )


def _check_rejoin(loaded: LoadedCluster, plan: FailoverPlan) -> None:
    """What turning the old primary into a replica needs, checked before anything changes."""
    old = plan.old_primary
    assert old is not None
    if loaded.kind == "postgres" and not (old.ssh_host and old.service and old.data_directory):
        raise SafetyRefusalError(
            f"a PostgreSQL switchover restarts {old.name} as a standby over SSH: set its "
            "ssh_host, service and data_directory in the failover cluster block"
        )
    if loaded.kind == "mysql" and not (
        loaded.config.replication_user and loaded.config.replication_password
    ):
        raise SafetyRefusalError(
            "a MySQL switchover makes the old primary a replica: set replication_user and "
            "replication_password in the failover cluster block"
        )


def execute_switchover(loaded: LoadedCluster, plan: FailoverPlan, audit: FailoverAudit) -> None:
    """Every step of a switchover in one transaction."""
    config = loaded.config
    timeout = config.step_timeout_seconds
    kind = loaded.kind
    old, new = plan.old_primary, plan.candidate
    assert old is not None
    _check_rejoin(loaded, plan)
    names = ", ".join(r.name for r in plan.dns)
    with transaction() as txn:
        txn.set(AUDIT, SharedAudit(audit))
        run_step(audit, "fence", old.name, lambda: fence_primary(kind, old, timeout))
        if config.load_balancer and old.lb_server:
            lb, server = config.load_balancer, old.lb_server
            run_step(audit, "lb-fence", str(server), lambda: lb_set(lb, server, ServerState.MAINT))
        if kind == "postgres":
            run_step(audit, "prepare-rejoin", old.name, lambda: prepare_rejoin(old, new, timeout))
        until = final_position(kind, old, timeout)
        if kind == "postgres":  # a clean stop sends the last WAL to the standbys
            run_step(audit, "stop-service", old.name, lambda: stop_service(old))
        if plan.dns and config.dns_zone:
            zone, records = config.dns_zone, list(plan.dns)
            run_step(
                audit, "dns-prepare", names, lambda: dns_prepare(zone, records, config.prepare_ttl)
            )
        run_step(
            audit,
            "catch-up",
            new.name,
            lambda: catch_up(kind, new, until, timeout),
            until=until.text,
        )
        txn.set(PROMOTED, new.name)
        result = run_step(audit, "promote", new.name, lambda: promote(kind, new, timeout))
        audit.promoted = new.name
        get_run_logger().info("promoted %s at %s", new.name, result.get("position"))
        for node in plan.repoint:
            run_step(
                audit, "repoint", node.name, lambda n=node: repoint(kind, n, new.endpoint, timeout)
            )
        run_step(audit, "demote", old.name, lambda: demote(kind, old, new, loaded.block, timeout))
        if config.load_balancer and new.lb_server:
            lb, server = config.load_balancer, new.lb_server
            run_step(audit, "lb-switch", str(server), lambda: lb_set(lb, server, ServerState.READY))
        if plan.dns and config.dns_zone:
            zone, records = config.dns_zone, list(plan.dns)
            run_step(
                audit,
                "dns-switch",
                names,
                lambda: dns_switch(zone, records, new.address, DNS_DEADLINE_SECONDS),
            )


@flow(name="switchover")
def switchover(request: SwitchoverRequest) -> dict[str, Any]:
    """Planned change of primary with no data loss; the old primary becomes a replica."""
    as_failover = FailoverRequest(
        cluster=request.cluster,
        reason=request.reason,
        candidate=request.candidate,
        dry_run=request.dry_run,
        acknowledge_incomplete=request.acknowledge_incomplete,
    )
    return run_runbook(as_failover, "switchover", execute_switchover)
