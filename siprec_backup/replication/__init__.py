"""Replication status of PostgreSQL, MySQL/MariaDB and Redis clusters as one normalised
health record per node (:class:`NodeHealth`), checked concurrently by :func:`check_nodes`."""

from siprec_backup.replication.check import ReplicationNode, check_node, check_nodes
from siprec_backup.replication.health import (
    NodeHealth,
    Observation,
    Thresholds,
    classify,
    unreachable,
    verdict,
)

__all__ = [
    "NodeHealth",
    "Observation",
    "ReplicationNode",
    "Thresholds",
    "check_node",
    "check_nodes",
    "classify",
    "unreachable",
    "verdict",
]
