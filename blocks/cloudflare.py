"""Cloudflare blocks for the DNS lever: an API token, and a zone that nests it.

As with the AWS blocks, the credentials block is composed into the zone block, so one token
serves every zone it may edit and is changed in one place.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._docs import DOCS_URL
from siprec_backup.cloud import cloudflare
from siprec_backup.dns.cloudflare import CloudflareDns


class CloudflareCredentials(Block):
    """A Cloudflare API token with Zone:DNS:Edit and Zone:Zone:Read on the zones to change.

    Example:
        ```python
        from blocks.cloudflare import CloudflareCredentials
        credentials = CloudflareCredentials.load("BLOCK_NAME").credentials()
        ```
    """

    _block_type_name = "SIPREC Backup Cloudflare Credentials"
    _block_type_slug = "siprec-backup-cloudflare-credentials"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "A Cloudflare API token for the DNS lever."

    api_token: SecretStr = Field(
        title="API token",
        description="Sent as Authorization: Bearer; needs Zone:DNS:Edit and Zone:Zone:Read.",
    )
    api_url: str = Field(
        default=cloudflare.API_URL,
        title="API URL",
        description="Cloudflare's API v4; change it only to point at a test server.",
    )
    timeout_seconds: float = Field(
        default=10.0, title="Timeout (s)", description="Connect and read timeout.", gt=0
    )

    @field_validator("api_token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("api_token must not be empty")
        return value

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("api_url must start with http:// or https://")
        return value

    def credentials(self) -> cloudflare.CloudflareCredentials:
        """The engine's credentials (the token unwrapped only here)."""
        return cloudflare.CloudflareCredentials(
            api_token=self.api_token.get_secret_value(),
            api_url=self.api_url,
            timeout=self.timeout_seconds,
        )


class CloudflareDnsZone(Block):
    """A Cloudflare zone: each change sent as one batch (one transaction), checked through the
    API and, with ``nameservers``, on those nameservers (proxied records through the API only).

    Example:
        ```python
        from blocks.cloudflare import CloudflareDnsZone
        from siprec_backup.dns import Change
        dns = CloudflareDnsZone.load("BLOCK_NAME").dns()
        dns.wait_propagated(dns.apply([Change.replace("db", "A", 60, "10.0.0.2")]))
        ```
    """

    _block_type_name = "SIPREC Backup Cloudflare DNS Zone"
    _block_type_slug = "siprec-backup-cloudflare-dns-zone"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "A Cloudflare DNS zone changed through the Cloudflare API."

    credentials: CloudflareCredentials = Field(
        title="Cloudflare credentials", description="The credentials block (the API token)."
    )
    zone: str = Field(title="Zone", description="The zone's name, e.g. example.com.", min_length=1)
    zone_id: str | None = Field(
        default=None,
        title="Zone ID",
        description="The zone's 32-hex id; empty: found by name (needs Zone:Zone:Read).",
    )
    proxied: bool | None = Field(
        default=None,
        title="Proxied",
        description="Proxy status of new A/AAAA/CNAME records; empty: that of the records"
        " they replace (DNS only for a new name).",
    )
    nameservers: list[str] = Field(
        default_factory=list,
        title="Nameservers",
        description="host:port to verify unproxied records on directly (empty: the API only).",
    )
    min_ttl: int = Field(
        default=60,
        title="Minimum TTL (s)",
        description="Lower TTLs are sent as this: 60, or 30 on Enterprise zones.",
        ge=30,
        le=86400,
    )
    timeout_seconds: float = Field(
        default=5.0, title="Timeout (s)", description="Per nameserver query.", gt=0
    )

    @field_validator("zone_id")
    @classmethod
    def _zone_id(cls, value: str | None) -> str | None:
        if value and (len(value) != 32 or any(c not in "0123456789abcdef" for c in value)):
            raise ValueError("zone_id must be the zone's 32 lowercase hex digits")
        return value

    def dns(self) -> CloudflareDns:
        """The engine lever."""
        return CloudflareDns(
            self.zone,
            zone_id=self.zone_id or "",
            credentials=self.credentials.credentials(),
            proxied=self.proxied,
            nameservers=tuple(self.nameservers),
            timeout=self.timeout_seconds,
            min_ttl=self.min_ttl,
        )
