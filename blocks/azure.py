"""Azure blocks for the failover levers: a service principal, a Load Balancer, a DNS zone.

As in the AWS blocks, the credentials block is composed into the resource blocks, so one service
principal serves both levers and is changed in one place. (Blob storage is
:mod:`blocks.azure_storage`.)
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._docs import DOCS_URL
from siprec_backup.cloud import azure
from siprec_backup.dns.azure_dns import AzureDns
from siprec_backup.traffic.azure_lb import AzureLoadBalancer as AzureLoadBalancerLever


class AzureCredentials(Block):
    """A Microsoft Entra ID service principal (tenant, client id, client secret) and the
    subscription the load balancer and DNS zone are in; tokens come from the client-credentials
    grant.

    Example:
        ```python
        from blocks.azure import AzureCredentials
        credentials = AzureCredentials.load("BLOCK_NAME").credentials()
        ```
    """

    _block_type_name = "SIPREC Backup Azure Credentials"
    _block_type_slug = "siprec-backup-azure-credentials"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An Azure service principal for the Load Balancer and Azure DNS levers."

    tenant_id: str = Field(
        title="Tenant ID", description="The Microsoft Entra tenant (directory) id.", min_length=1
    )
    client_id: str = Field(
        title="Client ID", description="The service principal's application id.", min_length=1
    )
    client_secret: SecretStr = Field(
        title="Client secret", description="The application's client secret value."
    )
    subscription_id: str = Field(
        title="Subscription ID", description="The subscription holding the resources.", min_length=1
    )
    authority_url: str = Field(
        default="https://login.microsoftonline.com",
        title="Authority URL",
        description="The token endpoint's host (another cloud, or a test fake).",
    )
    management_url: str = Field(
        default="https://management.azure.com",
        title="Management URL",
        description="Azure Resource Manager's endpoint (another cloud, or a test fake).",
    )
    timeout_seconds: float = Field(
        default=10.0, title="Timeout (s)", description="Connect and read timeout.", gt=0
    )

    @field_validator("authority_url", "management_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("client_secret")
    @classmethod
    def _secret_given(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("the client secret is empty")
        return value

    def credentials(self) -> azure.AzureCredentials:
        """The engine's credentials (the secret unwrapped only here)."""
        return azure.AzureCredentials(
            tenant_id=self.tenant_id,
            client_id=self.client_id,
            client_secret=self.client_secret.get_secret_value(),
            subscription_id=self.subscription_id,
            authority_url=self.authority_url,
            management_url=self.management_url,
            timeout=self.timeout_seconds,
        )


class AzureLoadBalancer(Block):
    """An Azure Load Balancer: backends are its backend address pools, servers the names of
    their backend addresses (IP-based pools).

    READY sets the address's admin state to None (the health probe decides); DRAIN and MAINT
    set it Down: no new flows, established TCP connections stay until they end.

    Example:
        ```python
        from blocks.azure import AzureLoadBalancer
        lb = AzureLoadBalancer.load("BLOCK_NAME").load_balancer()
        lb.set_state("sip-edge", "sbc-a", ServerState.MAINT)
        ```
    """

    _block_type_name = "SIPREC Backup Azure Load Balancer"
    _block_type_slug = "siprec-backup-azure-load-balancer"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An Azure Load Balancer driven by backend address admin states."

    credentials: AzureCredentials = Field(
        title="Azure credentials", description="The service principal block."
    )
    resource_group: str = Field(
        title="Resource group", description="The load balancer's resource group.", min_length=1
    )
    # Not ``load_balancer``: that is the method every load balancer block has.
    load_balancer_name: str = Field(
        title="Load balancer", description="The load balancer's name.", min_length=1
    )
    operation_timeout_seconds: float = Field(
        default=300.0,
        title="Operation timeout (s)",
        description="How long to wait for a pool update to succeed.",
        gt=0,
    )

    def load_balancer(self) -> AzureLoadBalancerLever:
        """The engine lever."""
        return AzureLoadBalancerLever(
            self.resource_group,
            self.load_balancer_name,
            credentials=self.credentials.credentials(),
            operation_timeout=self.operation_timeout_seconds,
        )


class AzureDnsZone(Block):
    """An Azure DNS zone: each record set written with PUT/DELETE guarded by its etag (one
    request per record set: not atomic across record sets), checked through the API and on
    ``nameservers`` when given.

    Example:
        ```python
        from blocks.azure import AzureDnsZone
        from siprec_backup.dns import Change
        dns = AzureDnsZone.load("BLOCK_NAME").dns()
        dns.wait_propagated(dns.apply([Change.replace("db", "A", 60, "10.0.0.2")]))
        ```
    """

    _block_type_name = "SIPREC Backup Azure DNS Zone"
    _block_type_slug = "siprec-backup-azure-dns-zone"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An Azure DNS zone changed through Azure Resource Manager."

    credentials: AzureCredentials = Field(
        title="Azure credentials", description="The service principal block."
    )
    resource_group: str = Field(
        title="Resource group", description="The zone's resource group.", min_length=1
    )
    zone: str = Field(title="Zone", description="The zone's name, e.g. example.com.", min_length=1)
    nameservers: list[str] = Field(
        default_factory=list,
        title="Nameservers",
        description="host:port to verify on directly (empty: through the API only).",
    )
    timeout_seconds: float = Field(
        default=5.0, title="Timeout (s)", description="Per nameserver query.", gt=0
    )

    def dns(self) -> AzureDns:
        """The engine lever."""
        return AzureDns(
            self.zone,
            self.resource_group,
            credentials=self.credentials.credentials(),
            nameservers=tuple(self.nameservers),
            timeout=self.timeout_seconds,
        )
