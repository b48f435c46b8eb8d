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

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from flows.failover import FailoverRequest, run_runbook


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
    return run_runbook(as_failover, "switchover")
