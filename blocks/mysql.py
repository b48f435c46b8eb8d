"""The MySQL / MariaDB database block."""

from __future__ import annotations

from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._docs import DOCS_URL
from siprec_backup.sources.mysql import MySQLSource, MySQLTarget


class MySQLDatabase(Block):
    """MySQL or MariaDB databases to back up, or to restore into.

    The password is a secret: it reaches mariadb-dump and the mariadb client through a temporary
    0600 option file, never their command line, and never appears in logs or artifacts. The user
    needs SELECT, SHOW VIEW, TRIGGER, EVENT on the databases and RELOAD, BINLOG MONITOR (MySQL:
    REPLICATION CLIENT) on ``*.*`` for a backup (the read lock that makes row counts exact).

    Example:
        ```python
        from blocks.mysql import MySQLDatabase
        source = MySQLDatabase.load("BLOCK_NAME").source()
        target = MySQLDatabase.load("BLOCK_NAME").restore_target("siprec_restored")
        ```
    """

    _block_type_name = "SIPREC Backup MySQL Database"
    _block_type_slug = "siprec-backup-mysql-database"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "Connection to MySQL / MariaDB databases (host, port, user, password, names)."

    host: str = Field(title="Host", description="Server host name or address.", min_length=1)
    port: int = Field(default=3306, title="Port", description="Server TCP port.", ge=1, le=65535)
    user: str = Field(title="User", description="User to connect as.", min_length=1)
    password: SecretStr | None = Field(
        default=None, title="Password", description="Password of the user (secret)."
    )
    databases: list[str] = Field(
        default_factory=list,
        title="Databases",
        description="Databases to back up; empty means every non-system database.",
    )
    bin_dir: str | None = Field(
        default=None,
        title="Client tools directory",
        description="Directory holding mariadb-dump/mariadb (or mysqldump/mysql); default PATH.",
    )

    @field_validator("databases")
    @classmethod
    def _valid_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or len(name) > 64 or any(c in name for c in "\x00/\\."):
                raise ValueError(f"invalid database name {name!r}")
        if len(set(value)) != len(value):
            raise ValueError("a database is listed twice")
        return value

    def target(self, database: str | None = None) -> MySQLTarget:
        """The engine's connection description; ``database`` is where a one-database backup is
        restored (default: the only configured database)."""
        return MySQLTarget(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password.get_secret_value() if self.password else None,
            databases=tuple(self.databases),
            database=database,
            bin_dir=Path(self.bin_dir) if self.bin_dir else None,
        )

    def source(self) -> MySQLSource:
        """The databases as a backup source."""
        return MySQLSource(self.target())

    def restore_target(self, database: str | None = None) -> MySQLTarget:
        """Where to restore: a one-database backup goes into ``database`` (default its
        configured name); a backup of several databases keeps their names."""
        return self.target(database)
