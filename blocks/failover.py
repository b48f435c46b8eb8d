"""The failover cluster block: what a failover, a switchover or a blue-green cutover of one
replicated database moves besides the database itself (load balancer servers, DNS records, the
service over SSH), the lag gate, and who is told.

The nodes, their kind and their connection blocks come from the replication cluster block the
monitoring flow already uses (``replication``), so a cluster is described once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from blocks._docs import DOCS_URL
from blocks.loading import load_block
from blocks.replication import ReplicationCluster
from blocks.sources import load_restore_target
from siprec_backup.errors import ConfigurationError
from siprec_backup.failover.databases import Endpoint, Kind
from siprec_backup.failover.plan import FailoverNode, LbServer

#: The default lag gate per kind (Patroni's maximum_lag_on_failover is 1 MiB).
DEFAULT_MAX_LOSS = {"postgres": 1 << 20, "redis": 1 << 20, "mysql": 0}


class FailoverNodeSettings(BaseModel):
    """How one node of the replication cluster is reached by the failover's other levers."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The node's name in the replication cluster block.")
    address: str | None = Field(
        default=None,
        description="The address DNS records point to when this node is primary (default: the "
        "host of its connection block, which must then be an IP address).",
    )
    replication_host: str | None = Field(
        default=None,
        description="The host replicas replicate from (default: its connection block's host).",
    )
    replication_port: int | None = Field(
        default=None, ge=1, le=65535, description="The port replicas use (default: the block's)."
    )
    priority: int = Field(
        default=100,
        ge=0,
        description="Among equally advanced replicas the highest is promoted; 0: never promoted.",
    )
    lb_server: str | None = Field(
        default=None,
        description="'backend/server' of this node on the load balancer (HAProxy backend and "
        "server, nginx or NGINX Plus upstream and server address).",
    )
    ssh_host: str | None = Field(
        default=None, description="SSH host block of the machine this node runs on."
    )
    service: str | None = Field(
        default=None, description="The node's systemd unit, e.g. postgresql@15-main.service."
    )
    systemctl: str = Field(default="systemctl", description="The systemctl program to run.")
    sudo: bool = Field(default=False, description="Run systemctl through 'sudo -n'.")
    data_directory: str | None = Field(
        default=None,
        description="PostgreSQL: the node's data directory (a switchover restarts the old "
        "primary there as a standby).",
    )

    @field_validator("lb_server")
    @classmethod
    def _lb(cls, value: str | None) -> str | None:
        if value is not None and value.count("/") != 1:
            raise ValueError(f"lb_server {value!r} must be 'backend/server'")
        return value


class FailoverCluster(Block):
    """A cluster the failover, switchover and blue-green flows may act on.

    Example:
        ```python
        from blocks.failover import FailoverCluster
        cluster = FailoverCluster.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "SIPREC Backup Failover Cluster"
    _block_type_slug = "siprec-backup-failover-cluster"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "The load balancer, DNS, SSH and lag gate of one cluster's failover."

    replication: str = Field(
        title="Replication cluster block",
        description="The replication cluster block naming the nodes and their connections.",
    )
    nodes: list[FailoverNodeSettings] = Field(
        default_factory=list,
        title="Nodes",
        description="Per-node failover settings (nodes not listed get the defaults).",
    )
    load_balancer: str | None = Field(
        default=None,
        title="Load balancer block",
        description="HAProxy, nginx or NGINX Plus block whose servers follow the primary.",
    )
    dns_zone: str | None = Field(
        default=None, title="DNS zone block", description="BIND zone block of the records."
    )
    dns_records: list[str] = Field(
        default_factory=list,
        title="DNS records",
        description="A (or AAAA) records pointed at the primary's address, e.g. 'db-primary'.",
    )
    dns_ttl: int = Field(
        default=60, ge=1, title="Record TTL (s)", description="The records' TTL after a switch."
    )
    prepare_ttl: int = Field(
        default=5,
        ge=1,
        title="TTL during the switch (s)",
        description="The TTL the records get before promotion (restored with the switch).",
    )
    max_data_loss: int | None = Field(
        default=None,
        ge=0,
        title="Lag gate",
        description="Most data a failover may lose without an operator's approval: bytes for "
        "postgres and redis, transactions for mysql (default 1 MiB / 0 transactions).",
    )
    stop_service_on_fence: bool = Field(
        default=False,
        title="Stop the old primary's service",
        description="After fencing, also stop the old primary's service over SSH.",
    )
    replication_user: str | None = Field(
        default=None,
        title="Replication user",
        description="MySQL/MariaDB switchover: the account the old primary replicates with.",
    )
    replication_password: SecretStr | None = Field(
        default=None, title="Replication password", description="That account's password."
    )
    notify: list[str] = Field(
        default_factory=list,
        title="Notify",
        description="Alert channel blocks (webhook, Slack, PagerDuty, email) told at start, at "
        "each state change and at the end.",
    )
    step_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, title="Step timeout (s)", description="Per database step."
    )
    dns_verify_seconds: float = Field(
        default=120.0,
        gt=0,
        le=1800,
        title="DNS verification deadline (s)",
        description="How long the DNS switch waits for the change to be served (BIND: every "
        "nameserver; a cloud: the provider's INSYNC/done, then its API and any nameservers).",
    )
    approval_timeout_minutes: float = Field(
        default=30.0,
        gt=0,
        title="Approval timeout (min)",
        description="How long a failover beyond the lag gate waits for an operator.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FailoverCluster:
        names = [n.name for n in self.nodes]
        if len(names) != len(set(names)):
            raise ValueError("nodes: names must be unique")
        if self.dns_records and not self.dns_zone:
            raise ValueError("dns_records need a dns_zone block")
        return self


@dataclass(frozen=True)
class LoadedCluster:
    """A failover cluster block with its replication block and engine nodes (targets hold
    passwords: never log them)."""

    block: str
    config: FailoverCluster
    replication: ReplicationCluster
    nodes: list[FailoverNode]

    @property
    def kind(self) -> Kind:
        return self.replication.kind

    @property
    def name(self) -> str:
        return self.replication.cluster

    @property
    def configured_primary(self) -> str | None:
        return next((n.name for n in self.replication.nodes if n.role == "primary"), None)

    @property
    def max_loss(self) -> int:
        value = self.config.max_data_loss
        return DEFAULT_MAX_LOSS[self.kind] if value is None else value

    def node(self, name: str) -> FailoverNode:
        return next(n for n in self.nodes if n.name == name)

    def settings(self, name: str) -> FailoverNodeSettings:
        return next(
            (n for n in self.config.nodes if n.name == name), FailoverNodeSettings(name=name)
        )


def _endpoint(target: Any) -> Endpoint:
    return Endpoint(str(target.host), int(target.port))


def _address(settings: FailoverNodeSettings, target: Any, needed: bool) -> str:
    address = settings.address or str(target.host)
    if needed:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigurationError(
                f"node {settings.name}: DNS records need an IP address; set its 'address' "
                f"(the connection host {address!r} is not one)"
            ) from None
    return address


def load_failover_cluster(name: str) -> LoadedCluster:
    """Block ``name`` with its replication cluster and every node's connection target."""
    config = load_block(FailoverCluster, name)
    replication = load_block(ReplicationCluster, config.replication)
    known = {n.name for n in replication.nodes}
    unknown = sorted({n.name for n in config.nodes} - known)
    if unknown:
        raise ConfigurationError(
            f"failover cluster {name!r}: nodes {', '.join(unknown)} are not in replication "
            f"cluster {config.replication!r}"
        )
    if replication.kind not in DEFAULT_MAX_LOSS:
        raise ConfigurationError(f"failover of {replication.kind} clusters is not supported")
    nodes = []
    settings = {n.name: n for n in config.nodes}
    for node in replication.nodes:
        s = settings.get(node.name, FailoverNodeSettings(name=node.name))
        target = load_restore_target(replication.kind, node.block)
        endpoint = _endpoint(target)
        backend, _, server = (s.lb_server or "").partition("/")
        nodes.append(
            FailoverNode(
                name=node.name,
                target=target,
                endpoint=Endpoint(
                    s.replication_host or endpoint.host, s.replication_port or endpoint.port
                ),
                address=_address(s, target, bool(config.dns_records)),
                priority=s.priority,
                lb_server=LbServer(backend, server) if s.lb_server else None,
                ssh_host=s.ssh_host,
                service=s.service,
                systemctl=s.systemctl,
                sudo=s.sudo,
                data_directory=s.data_directory,
            )
        )
    return LoadedCluster(name, config, replication, nodes)
