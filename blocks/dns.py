"""DNS zone blocks and the loader that finds one by name, whatever its provider.

Each block builds the engine's :class:`~siprec_backup.dns.DnsZone`, so flows, tasks and the CLI
change records the same way on BIND, Route53, Cloud DNS, Azure DNS and Cloudflare.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks._docs import DOCS_URL
from blocks.aws import Route53Zone
from blocks.azure import AzureDnsZone
from blocks.cloudflare import CloudflareDnsZone
from blocks.gcp import CloudDnsZone
from blocks.loading import load_one_of
from siprec_backup.dns import TSIG_ALGORITHMS, BindDns, DnsZone
from siprec_backup.errors import ConfigurationError


class BindDnsZone(Block):
    """A zone on BIND (or any RFC 2136 server), changed by TSIG-signed dynamic updates.

    Updates go to ``primary``; propagation is verified on ``nameservers`` (or, when empty, on
    the zone's NS records), each asked directly without recursion. The TSIG secret is a secret.

    Example:
        ```python
        from blocks.dns import BindDnsZone
        from siprec_backup.dns import Change
        dns = BindDnsZone.load("BLOCK_NAME").dns()
        dns.wait_propagated(dns.apply([Change.replace("db", "A", 60, "10.0.0.2")]))
        ```
    """

    _block_type_name = "SIPREC Backup BIND Zone"
    _block_type_slug = "siprec-backup-bind-zone"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "A DNS zone updated with RFC 2136 + TSIG and verified on its nameservers."

    zone: str = Field(title="Zone", description="The zone, e.g. example.com.", min_length=1)
    nameservers: list[str] = Field(
        default_factory=list,
        title="Nameservers",
        description="host:port of every authoritative nameserver to verify on (empty: the "
        "zone's NS records, port 53).",
    )
    primary: str | None = Field(
        default=None,
        title="Primary",
        description="host:port receiving updates (default: the first nameserver).",
    )
    key_name: str = Field(title="TSIG key name", description="e.g. ddns-key.", min_length=1)
    key_algorithm: str = Field(
        default="hmac-sha256",
        title="TSIG algorithm",
        description=f"One of {', '.join(TSIG_ALGORITHMS)}.",
    )
    key_secret: SecretStr = Field(
        title="TSIG secret", description="The key's base64 secret (tsig-keygen's 'secret')."
    )
    timeout_seconds: float = Field(
        default=5.0, title="Timeout (s)", description="Per query and update.", gt=0
    )

    def dns(self) -> BindDns:
        """The engine lever."""
        primary = self.primary or (self.nameservers[0] if self.nameservers else "")
        if not primary:
            raise ConfigurationError(f"BIND zone {self.zone}: set primary or nameservers")
        return BindDns(
            zone=self.zone,
            primary=primary,
            key_name=self.key_name,
            key_algorithm=self.key_algorithm,
            key_secret=self.key_secret.get_secret_value(),
            timeout=self.timeout_seconds,
            nameservers=tuple(self.nameservers),
        )


DnsZoneBlock = BindDnsZone | Route53Zone | CloudflareDnsZone | CloudDnsZone | AzureDnsZone

#: The block type of each ``provider:`` a configuration file may give a DNS zone.
DNS_ZONE_TYPES: dict[str, type[DnsZoneBlock]] = {
    "bind": BindDnsZone,
    "route53": Route53Zone,
    "cloudflare": CloudflareDnsZone,
    "cloud_dns": CloudDnsZone,
    "azure_dns": AzureDnsZone,
}


def load_dns_zone_block(name: str) -> DnsZoneBlock:
    """The DNS zone block called ``name``, whatever its provider (names are per type)."""
    return load_one_of(tuple(DNS_ZONE_TYPES.values()), name, "DNS zone")


def load_dns_zone(name: str) -> DnsZone:
    """The engine lever of DNS zone block ``name``."""
    return load_dns_zone_block(name).dns()
