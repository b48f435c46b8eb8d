"""The manifest: the JSON document that makes a backup exist.

It is written last, after the data object is committed; a data object without a manifest is an
interrupted backup and is never restored. It records everything a restore needs to prove itself:
sizes and sha256 of the plaintext and the ciphertext, the key that wraps the data key, the source's
position (WAL LSN, ...) and per-table row counts taken in the dump's own snapshot.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from siprec_backup.errors import ConfigurationError, IntegrityError

MANIFEST_FORMAT = "siprec-backup-manifest/1"
DATA_NAME = "data.sbk"
MANIFEST_NAME = "manifest.json"


def new_backup_id(now: datetime | None = None) -> str:
    """A backup id that sorts by time: ``20261126T045512Z-3f9a1c``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def backup_prefix(prefix: str, cluster: str, source: str, backup_id: str = "") -> str:
    """``<prefix>/<cluster>/<source>/<backup-id>/``; empty parts are left out."""
    parts = [p.strip("/") for p in (prefix, cluster, source, backup_id) if p and p.strip("/")]
    return "/".join(parts) + "/"


class StoredObject(BaseModel):
    """One encrypted object of a backup and what it must decrypt to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="Object key in the store.")
    plaintext_bytes: int
    plaintext_sha256: str
    ciphertext_bytes: int
    ciphertext_sha256: str
    compression: str
    chunk_size: int
    key_id: str = Field(description="Id of the master key that wraps this object's data key.")


class Manifest(BaseModel):
    """What one backup holds; the catalog is the set of manifests in a store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = MANIFEST_FORMAT
    backup_id: str
    cluster: str
    source: str = Field(description="Name of the backed-up source, e.g. the database block name.")
    source_kind: str = Field(description="postgres, mysql, redis, recordings.")
    started_at: datetime
    finished_at: datetime
    object: StoredObject = Field(description="The backup's main data object.")
    extra_objects: dict[str, StoredObject] = Field(
        default_factory=dict,
        description="Further objects of this backup by role (recordings: 'audio', 'index').",
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Earlier backup ids of the same source whose objects a restore of this one "
        "also reads (an incremental recordings backup's bases); retention keeps them.",
    )
    source_info: dict[str, Any] = Field(default_factory=dict)
    tables: dict[str, int] = Field(
        default_factory=dict,
        description="What the restore must count again, taken in the dump's snapshot: rows per "
        "table for databases, keys per logical database for Redis ('db0'), files for recordings.",
    )
    tool_version: str

    @property
    def objects(self) -> list[StoredObject]:
        """Every object this backup wrote itself (not those of the backups it depends on)."""
        return [self.object, *self.extra_objects.values()]

    @property
    def stored_bytes(self) -> int:
        return sum(obj.ciphertext_bytes for obj in self.objects)

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> Manifest:
        try:
            manifest = cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "document"
            raise IntegrityError(f"manifest {where} is invalid ({field}: {first['msg']})") from exc
        if manifest.format != MANIFEST_FORMAT:
            raise ConfigurationError(
                f"manifest {where} has format {manifest.format!r}; this version reads "
                f"{MANIFEST_FORMAT!r}"
            )
        return manifest
