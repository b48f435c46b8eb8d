"""The platform block: every source of one SIPREC platform, where its backups go, and the key."""

from __future__ import annotations

import re
from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from blocks._docs import DOCS_URL
from siprec_backup.verify.config import VerificationConfig

SourceKind = Literal["postgres", "mysql", "redis", "recordings"]
#: Catalog names become object key components: keep them path- and URL-safe.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-63 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    return value


class PlatformSource(BaseModel):
    """One source of a platform: its catalog name, its kind and the block that describes it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name in the catalog, e.g. 'siprec-db'.")
    kind: SourceKind = Field(description="postgres, mysql, redis or recordings.")
    block: str = Field(
        description="Name of the block of that kind: a PostgreSQL/MySQL database, a Redis "
        "server or a recordings directory block."
    )
    scratch: str | None = Field(
        default=None,
        description="Restore verification: a block of the same kind naming a scratch server "
        "to restore into (a fresh database is created there and dropped afterwards). Empty: "
        "the flow starts a throwaway server from the local binaries.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "source name")


class Platform(Block):
    """A SIPREC platform: its database, Redis and recordings, backed up together as one set.

    The platform backup flow backs up every source in turn (databases, then Redis, then the
    recording files, so the set is a consistent point) and ties them together in one backup set.

    Example:
        ```python
        from blocks.platform import Platform
        platform = Platform.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "SIPREC Backup Platform"
    _block_type_slug = "siprec-backup-platform"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "The sources of one SIPREC platform, its storage block and its key block."

    cluster: str = Field(
        title="Cluster", description="Platform name: the first level of the backup catalog."
    )
    storage: str = Field(title="Storage block", description="Name of the storage block.")
    key: str = Field(title="Encryption key block", description="Name of the key block.")
    sources: list[PlatformSource] = Field(
        title="Sources", description="Every source of the platform.", min_length=1
    )
    verification: VerificationConfig = Field(
        default_factory=VerificationConfig,
        title="Restore verification",
        description="What the verify-restore flow checks besides the manifest: SQL checks with "
        "expected values, and which database's rows reference the recording files.",
    )
    replication: list[str] = Field(
        default_factory=list,
        title="Replication clusters",
        description="Names of the replication cluster blocks the monitor-replication flow "
        "checks for this platform.",
    )

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        return _check_name(value, "cluster")

    @model_validator(mode="after")
    def _unique_names(self) -> Platform:
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique: {', '.join(duplicates)}")
        databases = {s.name for s in self.sources if s.kind in ("postgres", "mysql")}
        checks = self.verification.checks
        refs = self.verification.references
        named = {c.source for c in checks} | ({refs.source} if refs else set())
        unknown = sorted(named - databases)
        if unknown:
            raise ValueError(
                f"verification names {', '.join(unknown)}, not a database source of the platform"
            )
        return self
