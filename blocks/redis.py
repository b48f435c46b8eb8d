"""The Redis server block."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks._docs import DOCS_URL
from siprec_backup.sources.redis import RedisSource, RedisTarget


class RedisServer(Block):
    """A Redis server (primary or replica) to back up, or to restore into.

    The backup reads an RDB snapshot over the replication protocol (like a replica does), so it
    needs no access to the server's files. The password is a secret: it is sent over the
    connection only and never appears in logs or artifacts.

    Example:
        ```python
        from blocks.redis import RedisServer
        source = RedisServer.load("BLOCK_NAME").source()
        ```
    """

    _block_type_name = "SIPREC Backup Redis Server"
    _block_type_slug = "siprec-backup-redis-server"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "Connection to one Redis server (host, port, optional ACL user and password)."

    host: str = Field(title="Host", description="Server host name or address.", min_length=1)
    port: int = Field(default=6379, title="Port", description="Server TCP port.", ge=1, le=65535)
    username: str | None = Field(
        default=None, title="User", description="ACL user (Redis 6+); empty for 'default'."
    )
    password: SecretStr | None = Field(
        default=None, title="Password", description="requirepass or the ACL user's password."
    )
    tls: bool = Field(
        default=False, title="TLS", description="Connect with TLS (system CAs, hostname checked)."
    )
    redis_server_bin: str | None = Field(
        default=None,
        title="redis-server path",
        description="redis-server used by restores to load the RDB (default: from PATH).",
    )

    def target(self) -> RedisTarget:
        """The engine's connection description."""
        return RedisTarget(
            host=self.host,
            port=self.port,
            username=self.username or None,
            password=self.password.get_secret_value() if self.password else None,
            tls=self.tls,
            redis_server_bin=self.redis_server_bin or None,
        )

    def source(self) -> RedisSource:
        """This server as a backup source."""
        return RedisSource(self.target())

    def restore_target(self) -> RedisTarget:
        """This server as a restore target."""
        return self.target()
