"""The replication cluster block: the servers of one replicated database, their expected roles,
the health thresholds and the alerting settings; and the loader the monitoring flow (and the
metrics command) use to turn platforms into engine :class:`ReplicationNode` lists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from blocks._docs import DOCS_URL
from blocks.loading import load_block
from blocks.platform import Platform, _check_name
from blocks.sources import load_restore_target
from siprec_backup.errors import ConfigurationError
from siprec_backup.replication import ReplicationNode, Thresholds

ClusterKind = Literal["postgres", "mysql", "redis"]
NodeRole = Literal["primary", "replica"]


class ReplicationNodeConfig(BaseModel):
    """One server of a cluster: its name in alerts, its expected role and its connection block."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Node name in alerts, metrics and the status table.")
    role: NodeRole = Field(description="The role the node must have: primary or replica.")
    block: str = Field(
        description="Name of the connection block of the cluster's kind: a PostgreSQL "
        "database, a MySQL database or a Redis server block pointing at this server."
    )
    application_name: str | None = Field(
        default=None,
        description="PostgreSQL replicas: the name the primary lists it under in "
        "pg_stat_replication (default: the node name).",
    )
    heartbeat_table: str | None = Field(
        default=None,
        description="MySQL/MariaDB: 'database.table' of a heartbeat row written on the primary "
        "each pass and read on the replicas (lag known even when Seconds_Behind is NULL). Set "
        "it on the primary and its replicas.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "node name")


class ReplicationCluster(Block):
    """A replicated PostgreSQL, MySQL/MariaDB or Redis cluster to monitor.

    The monitor-replication flow checks every node of every cluster named in a platform's
    ``replication`` list, classifies it healthy / lagging / broken / unreachable with these
    thresholds, and alerts on transitions (with reminders and flapping detection).

    Example:
        ```python
        from blocks.replication import ReplicationCluster
        cluster = ReplicationCluster.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "SIPREC Backup Replication Cluster"
    _block_type_slug = "siprec-backup-replication-cluster"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "The nodes of one replicated database, their roles, thresholds and alerting."

    cluster: str = Field(
        title="Cluster", description="Cluster name in alerts, metrics and the status table."
    )
    kind: ClusterKind = Field(title="Kind", description="postgres, mysql or redis.")
    nodes: list[ReplicationNodeConfig] = Field(
        title="Nodes", description="Every server of the cluster.", min_length=1
    )
    max_lag_bytes: int | None = Field(
        default=16 << 20,
        ge=0,
        title="Lagging beyond (bytes)",
        description="A replica further behind than this is lagging (empty: no byte limit).",
    )
    max_lag_seconds: float | None = Field(
        default=30.0,
        ge=0,
        title="Lagging beyond (seconds)",
        description="A replica further behind than this is lagging (empty: no time limit).",
    )
    broken_lag_bytes: int | None = Field(
        default=None,
        ge=0,
        title="Broken beyond (bytes)",
        description="A replica further behind than this is broken (empty: never by bytes).",
    )
    broken_lag_seconds: float | None = Field(
        default=None,
        ge=0,
        title="Broken beyond (seconds)",
        description="A replica further behind than this is broken (empty: never by time).",
    )
    min_replicas: int = Field(
        default=0,
        ge=0,
        title="Minimum attached replicas",
        description="A primary with fewer replicas attached and streaming is broken.",
    )
    max_retained_bytes: int | None = Field(
        default=1 << 30,
        ge=0,
        title="Retained WAL limit (bytes)",
        description="PostgreSQL primary: lagging when inactive slots retain more than this.",
    )
    reminder_minutes: float = Field(
        default=60.0,
        gt=0,
        title="Reminder interval (minutes)",
        description="How often a node that stays lagging, broken or unreachable is re-announced.",
    )
    flap_history: int = Field(
        default=20,
        ge=2,
        title="Flapping window (checks)",
        description="How many recent checks per node the flapping detection looks at.",
    )
    flap_threshold: int = Field(
        default=4,
        ge=1,
        title="Flapping threshold (changes)",
        description="More status changes than this within the window: the node is announced "
        "once as flapping instead of at every change.",
    )
    timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        title="Check timeout (seconds)",
        description="Connection and statement timeout per node; a slower node is unreachable.",
    )

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        return _check_name(value, "cluster")

    @model_validator(mode="after")
    def _consistent(self) -> ReplicationCluster:
        names = [n.name for n in self.nodes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"nodes: names must be unique: {', '.join(duplicates)}")
        if sum(n.role == "primary" for n in self.nodes) > 1:
            raise ValueError("nodes: at most one node may have the role primary")
        for node in self.nodes:
            if node.application_name and self.kind != "postgres":
                raise ValueError(f"nodes: {node.name}: application_name is for postgres only")
            if node.heartbeat_table and self.kind != "mysql":
                raise ValueError(f"nodes: {node.name}: heartbeat_table is for mysql only")
        for low, high in (
            ("max_lag_bytes", "broken_lag_bytes"),
            ("max_lag_seconds", "broken_lag_seconds"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and hi < lo:
                raise ValueError(f"{high} ({hi}) is below {low} ({lo})")
        if self.flap_threshold >= self.flap_history:
            raise ValueError(
                f"flap_threshold ({self.flap_threshold}) must be below flap_history "
                f"({self.flap_history})"
            )
        return self

    def thresholds(self) -> Thresholds:
        """The engine's thresholds of this cluster."""
        return Thresholds(
            max_lag_bytes=self.max_lag_bytes,
            max_lag_seconds=self.max_lag_seconds,
            broken_lag_bytes=self.broken_lag_bytes,
            broken_lag_seconds=self.broken_lag_seconds,
            min_replicas=self.min_replicas,
            max_retained_bytes=self.max_retained_bytes,
        )

    def tracker_settings(self) -> dict[str, Any]:
        """The AlertTracker keywords of this cluster (reminders, flapping)."""
        return {
            "reminder_interval": timedelta(minutes=self.reminder_minutes),
            "history_size": self.flap_history,
            "flap_threshold": self.flap_threshold,
        }

    def replication_nodes(self) -> list[ReplicationNode]:
        """The engine nodes, each built from its connection block (loaded from the server)."""
        return [
            ReplicationNode(
                cluster=self.cluster,
                name=node.name,
                expected_role=node.role,
                target=load_restore_target(self.kind, node.block),  # type: ignore[arg-type]
                application_name=node.application_name,
                heartbeat_table=node.heartbeat_table,
            )
            for node in self.nodes
        ]


@dataclass(frozen=True)
class MonitoredCluster:
    """A loaded cluster block and its engine nodes (targets hold passwords: never log them)."""

    block: str
    config: ReplicationCluster
    nodes: list[ReplicationNode]


@dataclass(frozen=True)
class MonitoredPlatform:
    """A platform block and its loaded replication clusters."""

    name: str
    platform: Platform
    clusters: list[MonitoredCluster]


def platform_names() -> list[str]:
    """Names of every Platform block on the Prefect server, sorted."""
    with get_client(sync_client=True) as client:
        try:
            documents = client.read_block_documents_by_type(
                Platform.get_block_type_slug(), include_secrets=False
            )
        except ObjectNotFound:
            return []
    return sorted(d.name for d in documents if d.name and not d.is_anonymous)


def load_cluster(name: str) -> MonitoredCluster:
    """Cluster block `name` with its nodes (ConfigurationError naming a missing block)."""
    config = load_block(ReplicationCluster, name)
    return MonitoredCluster(name, config, config.replication_nodes())


def load_monitored(platforms: list[str] | None = None) -> list[MonitoredPlatform]:
    """Every platform named (all Platform blocks if None) with its replication clusters. A
    cluster block named by several platforms is loaded once; two blocks with the same cluster
    name are refused (their alerts and metrics would mix)."""
    names = platform_names() if platforms is None else platforms
    loaded: dict[str, MonitoredCluster] = {}
    owners: dict[str, str] = {}
    result = []
    for name in names:
        platform = load_block(Platform, name)
        clusters = []
        for block in dict.fromkeys(platform.replication):
            if block not in loaded:
                cluster = load_cluster(block)
                other = owners.setdefault(cluster.config.cluster, block)
                if other != block:
                    raise ConfigurationError(
                        f"replication cluster blocks {other!r} and {block!r} both use the "
                        f"cluster name {cluster.config.cluster!r}"
                    )
                loaded[block] = cluster
            clusters.append(loaded[block])
        result.append(MonitoredPlatform(name, platform, clusters))
    return result
