"""Failover, switchover and cutover engine: the per-database operations, the plan and the
audit trail. No Prefect here: the flows in ``flows/`` run these steps as tasks."""

from __future__ import annotations

from importlib import import_module

from siprec_backup.failover.audit import FailoverAudit, StepRecord
from siprec_backup.failover.databases import (
    LOSS_UNITS,
    DatabaseOps,
    Endpoint,
    Kind,
    NodeState,
    Position,
)
from siprec_backup.failover.plan import (
    DataLoss,
    DnsRecord,
    FailoverNode,
    FailoverPlan,
    LbServer,
    NodeView,
    make_plan,
)

_MODULES = {"postgres": "postgres", "mysql": "mysql", "redis": "redis"}


def ops_for(kind: str) -> DatabaseOps:
    """The failover operations of ``kind`` (postgres, mysql or redis)."""
    if kind not in _MODULES:
        raise ValueError(f"no failover operations for {kind!r}")
    ops: DatabaseOps = import_module(f"siprec_backup.failover.{_MODULES[kind]}").OPS
    return ops


__all__ = [
    "LOSS_UNITS",
    "DataLoss",
    "DatabaseOps",
    "DnsRecord",
    "Endpoint",
    "FailoverAudit",
    "FailoverNode",
    "FailoverPlan",
    "Kind",
    "LbServer",
    "NodeState",
    "NodeView",
    "Position",
    "StepRecord",
    "make_plan",
    "ops_for",
]
