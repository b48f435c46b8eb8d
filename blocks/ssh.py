"""The SSH host block: where remote commands, service actions and file transfers go."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks._docs import DOCS_URL
from siprec_backup.remote import SshConfig


class SshHost(Block):
    """One machine reachable over SSH with a key (a database host, an nginx host...).

    The private key (and its passphrase) are secrets. Host keys are checked against the
    ``known_hosts`` text held here: an unknown or changed host key is refused, never added.
    Get the line with ``ssh-keyscan -p PORT HOST`` and check its fingerprint out of band.

    Example:
        ```python
        from blocks.ssh import SshHost
        from siprec_backup.remote import SshClient
        host = SshHost.load("BLOCK_NAME")
        with SshClient(host.config()) as ssh:
            ssh.run("uptime", timeout=10)
        ```
    """

    _block_type_name = "SIPREC Backup SSH Host"
    _block_type_slug = "siprec-backup-ssh-host"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "SSH access to one host: address, user, private key and known host keys."

    host: str = Field(title="Host", description="Host name or address.", min_length=1)
    port: int = Field(default=22, title="Port", description="SSH port.", ge=1, le=65535)
    username: str = Field(title="User", description="The account to log in as.", min_length=1)
    private_key: SecretStr = Field(
        title="Private key", description="OpenSSH or PEM private key text (ed25519, ecdsa, rsa)."
    )
    passphrase: SecretStr | None = Field(
        default=None, title="Passphrase", description="The key's passphrase, if it has one."
    )
    known_hosts: str = Field(
        title="Known hosts",
        description="known_hosts lines for this host (e.g. from ssh-keyscan); others refused.",
        min_length=1,
    )
    connect_timeout_seconds: float = Field(
        default=10.0, title="Connect timeout (s)", description="TCP connect and handshake.", gt=0
    )

    def config(self) -> SshConfig:
        """The engine's connection settings."""
        return SshConfig(
            host=self.host,
            port=self.port,
            username=self.username,
            private_key=self.private_key.get_secret_value(),
            passphrase=self.passphrase.get_secret_value() if self.passphrase else None,
            known_hosts=self.known_hosts,
            connect_timeout=self.connect_timeout_seconds,
        )
