"""Google Cloud blocks for the failover levers: credentials, backend services, a Cloud DNS zone.

As in the AWS blocks, the credentials block is composed into the resource blocks, so one service
account key (or the worker's Application Default Credentials) serves both levers.
"""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator

from blocks._docs import DOCS_URL
from siprec_backup.cloud import gcp
from siprec_backup.dns.cloud_dns import CloudDns
from siprec_backup.traffic.gcp_backend import GcpBackendServices as GcpBackendServicesLever


def _http_url(value: str | None) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


class GcpCredentials(Block):
    """How the GCP levers authenticate: a service account JSON key, or (empty) the worker's
    Application Default Credentials.

    Example:
        ```python
        from blocks.gcp import GcpCredentials
        credentials = GcpCredentials.load("BLOCK_NAME").credentials()
        ```
    """

    _block_type_name = "SIPREC Backup GCP Credentials"
    _block_type_slug = "siprec-backup-gcp-credentials"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = (
        "A Google service account key (or ADC) for the backend service and Cloud DNS levers."
    )

    service_account_info: SecretStr | None = Field(
        default=None,
        title="Service account key (JSON)",
        description="The key file's JSON text; empty: Application Default Credentials.",
    )
    project: str | None = Field(
        default=None, title="Project", description="Project ID; empty: the key's project_id."
    )
    compute_url: str | None = Field(
        default=None,
        title="Compute endpoint",
        description="Override of https://compute.googleapis.com/compute/v1 (tests, emulators).",
    )
    dns_url: str | None = Field(
        default=None,
        title="Cloud DNS endpoint",
        description="Override of https://dns.googleapis.com/dns/v1 (tests, emulators).",
    )
    timeout_seconds: float = Field(
        default=10.0, title="Timeout (s)", description="Connect and read timeout.", gt=0
    )

    @field_validator("service_account_info")
    @classmethod
    def _json_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            try:
                gcp.GcpCredentials(service_account_info=value.get_secret_value()).key()
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("compute_url", "dns_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return _http_url(value)

    def credentials(self) -> gcp.GcpCredentials:
        """The engine's credentials (the key unwrapped only here)."""
        key = self.service_account_info.get_secret_value() if self.service_account_info else ""
        return gcp.GcpCredentials(
            service_account_info=key,
            project=self.project or "",
            compute_url=self.compute_url or gcp.COMPUTE_URL,
            dns_url=self.dns_url or gcp.DNS_URL,
            timeout=self.timeout_seconds,
        )

    def project_id(self) -> str:
        """The configured project, else the key's ``project_id`` (empty for ADC)."""
        if self.project:
            return self.project
        info = self.credentials().key()
        return str(info.get("project_id", ""))


class GcpBackendServices(Block):
    """Google Cloud backend services as a load balancer: backends are backend services, servers
    are their instance groups or NEGs (short names, e.g. ``ig-sip-a``).

    ``capacity`` drain sets a backend's capacityScaler to 0 (DRAIN/MAINT) or 1 (READY);
    ``removal`` drain detaches the backend and attaches it again on READY.

    Example:
        ```python
        from blocks.gcp import GcpBackendServices
        lb = GcpBackendServices.load("BLOCK_NAME").load_balancer()
        lb.set_state("sip-edge", "ig-sip-a", ServerState.MAINT)
        ```
    """

    _block_type_name = "SIPREC Backup GCP Backend Services"
    _block_type_slug = "siprec-backup-gcp-backend-services"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "Google Cloud backend services driven by capacityScaler or backend removal."

    credentials: GcpCredentials = Field(
        default_factory=GcpCredentials,
        title="GCP credentials",
        description="The credentials block (default: Application Default Credentials).",
    )
    region: str | None = Field(
        default=None,
        title="Region",
        description="For regional backend services (e.g. europe-west1); empty: global ones.",
    )
    backend_services: list[str] = Field(
        title="Backend services",
        description="Names of the backend services the lever may change.",
        min_length=1,
    )
    drain_mode: Literal["capacity", "removal"] = Field(
        default="capacity",
        title="Drain mode",
        description="capacity: capacityScaler 0/1; removal: detach / re-attach the backend.",
    )
    groups: dict[str, str] = Field(
        default_factory=dict,
        title="Groups",
        description=(
            "Removal mode (required there): server name -> group URL or path"
            " (zones/Z/instanceGroups/NAME), to attach a backend that is not attached."
        ),
    )
    balancing_mode: Literal["UTILIZATION", "RATE", "CONNECTION"] = Field(
        default="UTILIZATION",
        title="Balancing mode",
        description="Removal mode: the balancingMode of a backend re-attached from groups.",
    )
    operation_timeout_seconds: float = Field(
        default=300.0,
        title="Operation timeout (s)",
        description="How long to wait for a backend service update's operation to be DONE.",
        gt=0,
    )

    @model_validator(mode="after")
    def _removal_needs_groups(self) -> GcpBackendServices:
        # Each flow step and each rollback builds a fresh lever, so what one step detached is
        # attached again from here, never from the lever's memory.
        if self.drain_mode == "removal" and not self.groups:
            raise ValueError("drain_mode removal needs groups (server name -> group URL or path)")
        return self

    def load_balancer(self) -> GcpBackendServicesLever:
        """The engine lever."""
        return GcpBackendServicesLever(
            self.backend_services,
            credentials=self.credentials.credentials(),
            region=self.region or "",
            drain_mode=self.drain_mode,
            groups=self.groups,
            balancing_mode=self.balancing_mode,
            operation_timeout=self.operation_timeout_seconds,
        )


class CloudDnsZone(Block):
    """A Cloud DNS managed zone: changes sent as one atomic change, waited on until done, then
    checked through the API and on ``nameservers`` when given.

    Example:
        ```python
        from blocks.gcp import CloudDnsZone
        from siprec_backup.dns import Change
        dns = CloudDnsZone.load("BLOCK_NAME").dns()
        dns.wait_propagated(dns.apply([Change.replace("db", "A", 60, "10.0.0.2")]))
        ```
    """

    _block_type_name = "SIPREC Backup Cloud DNS Zone"
    _block_type_slug = "siprec-backup-gcp-cloud-dns-zone"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "A Google Cloud DNS managed zone changed through the Cloud DNS API."

    credentials: GcpCredentials = Field(
        default_factory=GcpCredentials,
        title="GCP credentials",
        description="The credentials block (default: Application Default Credentials).",
    )
    zone: str = Field(
        title="Zone", description="The zone's DNS name, e.g. example.com.", min_length=1
    )
    managed_zone: str | None = Field(
        default=None,
        title="Managed zone",
        description="The managed zone's name; empty: found by the zone's DNS name.",
    )
    nameservers: list[str] = Field(
        default_factory=list,
        title="Nameservers",
        description="host:port to verify on directly once done (empty: through the API).",
    )
    timeout_seconds: float = Field(
        default=5.0, title="Timeout (s)", description="Per nameserver query.", gt=0
    )

    def dns(self) -> CloudDns:
        """The engine lever."""
        return CloudDns(
            self.zone,
            managed_zone=self.managed_zone or "",
            credentials=self.credentials.credentials(),
            nameservers=tuple(self.nameservers),
            timeout=self.timeout_seconds,
        )


__all__ = ["CloudDnsZone", "GcpBackendServices", "GcpCredentials"]
