"""The blue-green cutover block: the two sets of servers (load balancer servers and the addresses
DNS records hold for each colour), the health checks of each set, the watch window after the
cutover, and who is told. The ``blue-green`` flow moves traffic from one colour to the other."""

from __future__ import annotations

import ipaddress
from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, ValidationInfo, field_validator, model_validator

from blocks._docs import DOCS_URL
from blocks.loading import load_block
from siprec_backup.failover.health import HealthCheck
from siprec_backup.failover.plan import LbServer

Colour = Literal["blue", "green"]


def _check_servers(field: str, values: list[str]) -> list[str]:
    for value in values:
        backend, _, server = value.partition("/")
        if value.count("/") != 1 or not backend or not server:
            raise ValueError(f"{field}: {value!r} must be 'backend/server'")
    if len(set(values)) != len(values):
        raise ValueError(f"{field}: a server is listed twice")
    return values


def _check_addresses(field: str, values: list[str]) -> list[str]:
    families = set()
    for value in values:
        try:
            families.add(ipaddress.ip_address(value).version)
        except ValueError:
            raise ValueError(f"{field}: {value!r} is not an IP address") from None
    if len(families) > 1:
        raise ValueError(f"{field}: mixes IPv4 and IPv6 addresses (one record type per record)")
    return values


def _check_urls(field: str, values: list[str]) -> list[str]:
    for value in values:
        try:
            HealthCheck(value)
        except Exception as exc:  # the engine's message, which never shows a password
            raise ValueError(f"{field}: {exc}") from None
    return values


class BlueGreenCutover(Block):
    """Two sets of servers, blue and green, and how traffic moves between them: load balancer
    servers set ready / drain / maint, DNS records re-pointed, health checks before the cutover
    and during a watch window after it (failing: everything is rolled back).

    Example:
        ```python
        from blocks.blue_green import BlueGreenCutover
        cutover = BlueGreenCutover.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "SIPREC Backup Blue-Green Cutover"
    _block_type_slug = "siprec-backup-blue-green"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "Blue and green server sets, their health checks and the cutover's watch."

    name: str = Field(
        title="Name",
        description="What the sets serve, e.g. 'recorder-api' (names the lock and the reports).",
        min_length=1,
    )
    load_balancer: str | None = Field(
        default=None,
        title="Load balancer block",
        description="HAProxy, nginx or NGINX Plus block whose servers are switched.",
    )
    blue_servers: list[str] = Field(
        default_factory=list,
        title="Blue servers",
        description="'backend/server' of each blue server on the load balancer.",
    )
    green_servers: list[str] = Field(
        default_factory=list,
        title="Green servers",
        description="'backend/server' of each green server on the load balancer.",
    )
    drain_seconds: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        title="Drain wait (s)",
        description="How long the old colour's servers may keep their sessions (drain) before "
        "they are put in maintenance; 0: at once.",
    )
    dns_zone: str | None = Field(
        default=None, title="DNS zone block", description="BIND zone block of the records."
    )
    dns_records: list[str] = Field(
        default_factory=list,
        title="DNS records",
        description="A (or AAAA) records pointed at the live colour, e.g. 'api'.",
    )
    blue_addresses: list[str] = Field(
        default_factory=list,
        title="Blue addresses",
        description="The IP addresses the records hold when blue is live.",
    )
    green_addresses: list[str] = Field(
        default_factory=list,
        title="Green addresses",
        description="The IP addresses the records hold when green is live.",
    )
    dns_ttl: int = Field(
        default=60, ge=1, title="Record TTL (s)", description="The records' TTL after a cutover."
    )
    prepare_ttl: int = Field(
        default=5,
        ge=1,
        title="TTL during the cutover (s)",
        description="The records' TTL from just before the switch until the watch has passed, "
        "so that a rollback reaches clients quickly.",
    )
    blue_checks: list[str] = Field(
        default_factory=list,
        title="Blue health checks",
        description="URLs checking the blue set: http(s)://... (GET) or tcp://host:port.",
    )
    green_checks: list[str] = Field(
        default_factory=list,
        title="Green health checks",
        description="URLs checking the green set: http(s)://... (GET) or tcp://host:port.",
    )
    expect_status: int = Field(
        default=200, ge=100, le=599, title="Healthy HTTP status", description="For HTTP checks."
    )
    expect_body: str | None = Field(
        default=None,
        title="Healthy body text",
        description="Text an HTTP check's body must contain (empty: any body).",
    )
    check_timeout_seconds: float = Field(
        default=5.0, gt=0, le=120, title="Check timeout (s)", description="Per health check."
    )
    verify_tls: bool = Field(
        default=True, title="Verify TLS", description="Check https:// certificates."
    )
    watch_seconds: float = Field(
        default=60.0,
        ge=0,
        le=86400,
        title="Watch window (s)",
        description="How long the new colour is watched after the cutover; failing, the "
        "cutover is rolled back.",
    )
    check_interval_seconds: float = Field(
        default=2.0, gt=0, le=3600, title="Check interval (s)", description="Between rounds."
    )
    failures_to_roll_back: int = Field(
        default=2,
        ge=1,
        le=100,
        title="Failed rounds to roll back",
        description="Consecutive failed check rounds during the watch that roll back.",
    )
    notify: list[str] = Field(
        default_factory=list,
        title="Notify",
        description="Alert channel blocks (webhook, Slack, PagerDuty, email) told at start, at "
        "each outcome and at the end.",
    )
    step_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        title="Step timeout (s)",
        description="Most a step waits: servers up on the load balancer, DNS on every nameserver.",
    )

    @field_validator("blue_servers", "green_servers")
    @classmethod
    def _servers(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _check_servers(str(info.field_name), value)

    @field_validator("blue_addresses", "green_addresses")
    @classmethod
    def _addresses(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _check_addresses(str(info.field_name), value)

    @field_validator("blue_checks", "green_checks")
    @classmethod
    def _checks(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _check_urls(str(info.field_name), value)

    @model_validator(mode="after")
    def _consistent(self) -> BlueGreenCutover:
        uses_lb = bool(self.load_balancer)
        if uses_lb and not (self.blue_servers and self.green_servers):
            raise ValueError("load_balancer: name both blue_servers and green_servers")
        if not uses_lb and (self.blue_servers or self.green_servers):
            raise ValueError("blue_servers / green_servers need a load_balancer block")
        shared = set(self.blue_servers) & set(self.green_servers)
        if shared:
            raise ValueError(f"servers in both colours: {', '.join(sorted(shared))}")
        if self.dns_records:
            if not self.dns_zone:
                raise ValueError("dns_records need a dns_zone block")
            if not (self.blue_addresses and self.green_addresses):
                raise ValueError("dns_records need both blue_addresses and green_addresses")
            if self.rtype("blue") != self.rtype("green"):
                raise ValueError("blue_addresses and green_addresses must be the same IP version")
            if set(self.blue_addresses) == set(self.green_addresses):
                raise ValueError("blue_addresses and green_addresses are the same")
        elif self.blue_addresses or self.green_addresses:
            raise ValueError("blue_addresses / green_addresses need dns_records")
        if not uses_lb and not self.dns_records:
            raise ValueError("set a load_balancer (with its servers) or dns_records, or both")
        if not (self.blue_checks and self.green_checks):
            raise ValueError("give health checks for both colours (blue_checks, green_checks)")
        return self

    # -- what the flow uses --------------------------------------------------------------------

    def servers(self, colour: Colour) -> list[LbServer]:
        """The load balancer servers of ``colour``."""
        values = self.blue_servers if colour == "blue" else self.green_servers
        return [LbServer(*value.split("/", 1)) for value in values]

    def addresses(self, colour: Colour) -> list[str]:
        """The addresses the records hold when ``colour`` is live."""
        return list(self.blue_addresses if colour == "blue" else self.green_addresses)

    def rtype(self, colour: Colour = "blue") -> str:
        """A or AAAA, by the addresses."""
        addresses = self.addresses(colour)
        return "AAAA" if addresses and ":" in addresses[0] else "A"

    def checks(self, colour: Colour) -> list[HealthCheck]:
        """The health checks of ``colour``."""
        urls = self.blue_checks if colour == "blue" else self.green_checks
        return [
            HealthCheck(
                url,
                status=self.expect_status,
                expect=self.expect_body or None,
                timeout=self.check_timeout_seconds,
                verify_tls=self.verify_tls,
            )
            for url in urls
        ]


def load_cutover(name: str) -> BlueGreenCutover:
    """Block ``name`` (ConfigurationError naming it when absent)."""
    return load_block(BlueGreenCutover, name)
