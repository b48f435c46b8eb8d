"""Load balancer blocks (HAProxy, nginx, NGINX Plus; the clouds' in their provider modules) and
the loader that finds one by name.

Each block builds the engine's :class:`~siprec_backup.traffic.LoadBalancer`, so flows, tasks and
the CLI drive every kind through one interface: list servers, set ready / drain / maint, wait
until drained.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks._docs import DOCS_URL
from blocks.aws import AwsElbTargetGroups
from blocks.azure import AzureLoadBalancer
from blocks.gcp import GcpBackendServices
from blocks.loading import load_block, load_one_of
from blocks.ssh import SshHost
from siprec_backup.remote import CommandRunner, LocalRunner, SshClient, SshRunner
from siprec_backup.traffic import HAProxy, LoadBalancer, Nginx, NginxPlus


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


class HAProxyLoadBalancer(Block):
    """HAProxy: states changed through the Runtime API, read from it or from the stats page.

    The Runtime API (``stats socket ... level admin``) is needed to drain or disable a server;
    with only the stats page (``endpoint``) the block is read-only. The stats password is a
    secret.

    Example:
        ```python
        from blocks.load_balancers import HAProxyLoadBalancer
        lb = HAProxyLoadBalancer.load("BLOCK_NAME").load_balancer()
        lb.set_state("app", "db1", ServerState.DRAIN)
        ```
    """

    _block_type_name = "SIPREC Backup HAProxy"
    _block_type_slug = "siprec-backup-haproxy"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An HAProxy load balancer: Runtime API address and/or stats page."

    runtime_api: str | None = Field(
        default=None,
        title="Runtime API",
        description="host:port of a 'stats socket ipv4@...' or the path of a unix socket "
        "(level admin). Needed to change server states.",
    )
    endpoint: str | None = Field(
        default=None,
        title="Stats page URL",
        description="e.g. http://haproxy:8404/stats: read-only monitoring through its CSV.",
    )
    username: str | None = Field(
        default=None, title="Stats user", description="The stats page's basic auth user."
    )
    password: SecretStr | None = Field(
        default=None, title="Stats password", description="The stats page's basic auth password."
    )
    timeout_seconds: float = Field(
        default=5.0, title="Timeout (s)", description="Connect and read timeout.", gt=0
    )

    def load_balancer(self) -> HAProxy:
        """The engine lever."""
        return HAProxy(
            runtime=self.runtime_api or None,
            stats_url=self.endpoint or None,
            stats_user=self.username or None,
            stats_password=_secret(self.password),
            timeout=self.timeout_seconds,
        )


class NginxLoadBalancer(Block):
    """nginx (open source): upstreams re-pointed by rewriting the files they include.

    Each managed ``upstream`` block has ``include <file>;`` as its only content. A change
    rewrites that file, runs ``nginx -t`` (restoring the file if it fails) and reloads; on this
    machine, or on the nginx host over SSH when ``ssh_host`` names an SSH host block.

    Example:
        ```python
        from blocks.load_balancers import NginxLoadBalancer
        lb = NginxLoadBalancer.load("BLOCK_NAME").load_balancer()
        lb.repoint("app", ["10.0.0.2:8080"])
        ```
    """

    _block_type_name = "SIPREC Backup nginx"
    _block_type_slug = "siprec-backup-nginx"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An nginx load balancer driven by upstream include files and reloads."

    includes: dict[str, str] = Field(
        title="Upstream include files",
        description="Upstream name -> path of the file its upstream block includes.",
        min_length=1,
    )
    pid_file: str = Field(title="PID file", description="The master's pid file ('pid' directive).")
    nginx: str = Field(default="nginx", title="nginx binary", description="Path on the host.")
    nginx_args: list[str] = Field(
        default_factory=list,
        title="nginx arguments",
        description="Arguments naming this instance for 'nginx -t' and reload (-p, -c, -e).",
    )
    ssh_host: str | None = Field(
        default=None,
        title="SSH host block",
        description="Name of the SSH host block of the nginx machine (empty: this machine).",
    )
    probe_url: str | None = Field(
        default=None,
        title="Probe URL",
        description="Optional URL polled after a reload until it answers from the new upstream.",
    )
    timeout_seconds: float = Field(
        default=10.0, title="Timeout (s)", description="Per command and per reload.", gt=0
    )

    def load_balancer(self, runner: CommandRunner | None = None) -> Nginx:
        """The engine lever; ``runner`` overrides where commands run (an open SSH runner)."""
        if runner is None:
            runner = self.runner()
        return Nginx(
            runner=runner,
            includes=dict(self.includes),
            pid_file=self.pid_file,
            nginx=self.nginx,
            nginx_args=tuple(self.nginx_args),
            probe_url=self.probe_url or None,
            timeout=self.timeout_seconds,
        )

    def runner(self) -> CommandRunner:
        """This machine, or a connected SSH runner on ``ssh_host`` (closed with the process)."""
        if not self.ssh_host:
            return LocalRunner()
        client = SshClient(load_block(SshHost, self.ssh_host).config())
        client.connect()
        return SshRunner(client)


class NginxPlusLoadBalancer(Block):
    """NGINX Plus, through its REST API (``api write=on``): servers drained or marked down.

    Example:
        ```python
        from blocks.load_balancers import NginxPlusLoadBalancer
        lb = NginxPlusLoadBalancer.load("BLOCK_NAME").load_balancer()
        ```
    """

    _block_type_name = "SIPREC Backup NGINX Plus"
    _block_type_slug = "siprec-backup-nginx-plus"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An NGINX Plus load balancer driven through its REST API."

    endpoint: str = Field(
        title="API URL", description="The API location, e.g. https://lb:8080/api.", min_length=1
    )
    api_version: int = Field(
        default=9, title="API version", description="9 for NGINX Plus R30 and later.", ge=1
    )
    username: str | None = Field(default=None, title="User", description="Basic auth user.")
    password: SecretStr | None = Field(
        default=None, title="Password", description="Basic auth password."
    )
    verify_tls: bool = Field(
        default=True, title="Verify TLS", description="Check the API's certificate."
    )
    timeout_seconds: float = Field(
        default=5.0, title="Timeout (s)", description="Per request.", gt=0
    )

    def load_balancer(self) -> NginxPlus:
        """The engine lever."""
        return NginxPlus(
            url=self.endpoint,
            version=self.api_version,
            username=self.username or None,
            password=_secret(self.password),
            timeout=self.timeout_seconds,
            verify=self.verify_tls,
        )


LoadBalancerBlock = (
    HAProxyLoadBalancer
    | NginxLoadBalancer
    | NginxPlusLoadBalancer
    | AwsElbTargetGroups
    | GcpBackendServices
    | AzureLoadBalancer
)

#: The block type of each ``type:`` a configuration file may give a load balancer.
LOAD_BALANCER_TYPES: dict[str, type[LoadBalancerBlock]] = {
    "haproxy": HAProxyLoadBalancer,
    "nginx": NginxLoadBalancer,
    "nginx_plus": NginxPlusLoadBalancer,
    "aws_elb": AwsElbTargetGroups,
    "gcp_lb": GcpBackendServices,
    "azure_lb": AzureLoadBalancer,
}


def load_load_balancer_block(name: str) -> LoadBalancerBlock:
    """The load balancer block called ``name``, whatever its type (names are per type)."""
    return load_one_of(tuple(LOAD_BALANCER_TYPES.values()), name, "load balancer")


def load_load_balancer(name: str) -> LoadBalancer:
    """The engine lever of load balancer block ``name``."""
    return load_load_balancer_block(name).load_balancer()
