"""The PostgreSQL database block."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks._docs import DOCS_URL
from siprec_backup.sources.postgres import PostgresSource, PostgresTarget


class PostgresDatabase(Block):
    """A PostgreSQL database to back up or restore into.

    The password is a secret: it reaches pg_dump and pg_restore through their environment, never
    their command line, and never appears in logs or artifacts.

    Example:
        ```python
        from blocks.postgres import PostgresDatabase
        source = PostgresDatabase.load("BLOCK_NAME").source()
        ```
    """

    _block_type_name = "SIPREC Backup PostgreSQL Database"
    _block_type_slug = "siprec-backup-postgres-database"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "Connection to one PostgreSQL database (host, port, user, password, dbname)."

    host: str = Field(title="Host", description="Server host name or address.", min_length=1)
    port: int = Field(default=5432, title="Port", description="Server TCP port.", ge=1, le=65535)
    user: str = Field(title="User", description="Role to connect as.", min_length=1)
    password: SecretStr | None = Field(
        default=None, title="Password", description="Password of the role (secret)."
    )
    dbname: str = Field(title="Database", description="Database name.", min_length=1)
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default="prefer",
        title="SSL mode",
        description="libpq sslmode; 'prefer' uses TLS when the server offers it.",
    )
    bin_dir: str | None = Field(
        default=None,
        title="Client tools directory",
        description="Directory holding pg_dump/pg_restore (default: newest installed version).",
    )

    def target(self, dbname: str | None = None) -> PostgresTarget:
        """The engine's connection description, optionally for another database."""
        return PostgresTarget(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=dbname or self.dbname,
            password=self.password.get_secret_value() if self.password else None,
            sslmode=self.sslmode,
            bin_dir=Path(self.bin_dir) if self.bin_dir else None,
        )

    def source(self) -> PostgresSource:
        return PostgresSource(self.target())
