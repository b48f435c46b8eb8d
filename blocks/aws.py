"""AWS blocks for the failover levers: credentials, ELBv2 target groups, a Route53 hosted zone.

As in prefect-aws, the credentials block is composed into the resource blocks, so one set of keys
(or a profile, or a role) serves both levers and is changed in one place.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator

from blocks._docs import DOCS_URL
from siprec_backup.cloud import aws
from siprec_backup.dns.route53 import Route53Dns
from siprec_backup.traffic.aws_elb import AwsTargetGroup


def _http_url(value: str | None) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


class AwsCredentials(Block):
    """How the AWS levers authenticate: access keys, a named profile, or the worker's default
    chain (environment, instance role); ``role_arn`` then assumes a role through STS.

    Example:
        ```python
        from blocks.aws import AwsCredentials
        credentials = AwsCredentials.load("BLOCK_NAME").credentials()
        ```
    """

    _block_type_name = "SIPREC Backup AWS Credentials"
    _block_type_slug = "siprec-backup-aws-credentials"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "AWS keys, profile or role for the ELB and Route53 levers."

    region: str = Field(
        default="us-east-1", title="Region", description="e.g. us-west-2.", min_length=1
    )
    access_key_id: str | None = Field(
        default=None, title="Access key ID", description="Empty: profile or default chain."
    )
    secret_access_key: SecretStr | None = Field(
        default=None, title="Secret access key", description="The access key's secret."
    )
    session_token: SecretStr | None = Field(
        default=None, title="Session token", description="For temporary keys only."
    )
    profile: str | None = Field(
        default=None, title="Profile", description="A profile of the worker's AWS config files."
    )
    role_arn: str | None = Field(
        default=None,
        title="Role ARN",
        description="A role to assume through STS on top of the credentials above.",
    )
    external_id: SecretStr | None = Field(
        default=None, title="External ID", description="The role's external id, if it needs one."
    )
    endpoint_url: str | None = Field(
        default=None,
        title="Endpoint URL",
        description="A VPC endpoint or an emulator (moto) for every service; empty: AWS's own.",
    )
    timeout_seconds: float = Field(
        default=10.0, title="Timeout (s)", description="Connect and read timeout.", gt=0
    )

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return _http_url(value)

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> AwsCredentials:
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if self.access_key_id and self.profile:
            raise ValueError("give access keys or a profile, not both")
        return self

    def credentials(self) -> aws.AwsCredentials:
        """The engine's credentials (secrets unwrapped only here)."""
        return aws.AwsCredentials(
            region=self.region,
            access_key_id=self.access_key_id or "",
            secret_access_key=_secret(self.secret_access_key),
            session_token=_secret(self.session_token),
            profile=self.profile or "",
            role_arn=self.role_arn or "",
            external_id=_secret(self.external_id),
            endpoint_url=self.endpoint_url or "",
            timeout=self.timeout_seconds,
        )


class AwsElbTargetGroups(Block):
    """ELBv2 target groups (ALB, NLB) as a load balancer: backends are target groups, servers
    are target ids (``i-0abc``, ``10.0.1.5``, ``10.0.1.5:5433``).

    READY registers a target; DRAIN and MAINT deregister it (ELB drains through its
    deregistration delay).

    Example:
        ```python
        from blocks.aws import AwsElbTargetGroups
        lb = AwsElbTargetGroups.load("BLOCK_NAME").load_balancer()
        lb.set_state("db-primary", "10.0.1.5", ServerState.MAINT)
        ```
    """

    _block_type_name = "SIPREC Backup AWS ELB Target Groups"
    _block_type_slug = "siprec-backup-aws-elb"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "AWS ELBv2 target groups driven by register/deregister."

    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials,
        title="AWS credentials",
        description="The credentials block (default: the worker's default chain).",
    )
    target_groups: list[str] = Field(
        default_factory=list,
        title="Target groups",
        description="Names or ARNs; empty: every target group of the load balancer or region.",
    )
    load_balancer_arn: str | None = Field(
        default=None,
        title="Load balancer ARN",
        description="Limit an empty target group list to this load balancer's groups.",
    )

    def load_balancer(self) -> AwsTargetGroup:
        """The engine lever."""
        return AwsTargetGroup(
            self.target_groups,
            credentials=self.credentials.credentials(),
            load_balancer_arn=self.load_balancer_arn or "",
        )


class Route53Zone(Block):
    """A Route53 hosted zone: changes sent as one change batch, waited on until INSYNC, then
    checked through the API and on ``nameservers`` when given.

    Example:
        ```python
        from blocks.aws import Route53Zone
        from siprec_backup.dns import Change
        dns = Route53Zone.load("BLOCK_NAME").dns()
        dns.wait_propagated(dns.apply([Change.replace("db", "A", 60, "10.0.0.2")]))
        ```
    """

    _block_type_name = "SIPREC Backup Route53 Zone"
    _block_type_slug = "siprec-backup-route53-zone"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An Amazon Route53 hosted zone changed through the Route53 API."

    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials,
        title="AWS credentials",
        description="The credentials block (default: the worker's default chain).",
    )
    zone: str = Field(title="Zone", description="The zone's name, e.g. example.com.", min_length=1)
    hosted_zone_id: str | None = Field(
        default=None,
        title="Hosted zone ID",
        description="Z0123...; empty: found by name (set it when two zones share the name).",
    )
    private: bool | None = Field(
        default=None,
        title="Private zone",
        description="When found by name: only a private (true) or public (false) zone.",
    )
    nameservers: list[str] = Field(
        default_factory=list,
        title="Nameservers",
        description="host:port to verify on directly after INSYNC (empty: through the API).",
    )
    timeout_seconds: float = Field(
        default=5.0, title="Timeout (s)", description="Per nameserver query.", gt=0
    )

    def dns(self) -> Route53Dns:
        """The engine lever."""
        return Route53Dns(
            self.zone,
            hosted_zone_id=self.hosted_zone_id or "",
            credentials=self.credentials.credentials(),
            nameservers=tuple(self.nameservers),
            timeout=self.timeout_seconds,
            private=self.private,
        )


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value else ""
