"""Backup sets: one platform backup (database, Redis, recordings) tied together by one document.

Each source is backed up on its own (its own manifest, its own retries), in an order that makes
the set a consistent point: the databases first, then Redis, then the recording files. A recorder
writes a recording's file before it commits the row that references it, so every file the dumped
rows reference already exists when the recordings are read afterwards; files added in between are
harmless extras. The set document, written last, names the backup of each source and whether all
of them completed.

Set documents live beside the sources' backups, under ``<prefix>/<cluster>/_sets/<set-id>.json``;
the per-source catalog ignores them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from siprec_backup import __version__
from siprec_backup.errors import IntegrityError, NotFoundError
from siprec_backup.manifest import backup_prefix
from siprec_backup.storage import ObjectStore

SET_FORMAT = "siprec-backup-set/1"
SETS_DIR = "_sets"
#: The order in which a platform's sources are backed up (and restored): see the module doc.
KIND_ORDER = ("postgres", "mysql", "redis", "recordings")


class SetMember(BaseModel):
    """One source's part of a set: its backup id, or the error that stopped it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    kind: str
    backup_id: str | None = None
    error: str | None = None
    finished_at: datetime | None = None


class BackupSet(BaseModel):
    """A platform backup: which backup of each source belongs to the same point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = SET_FORMAT
    set_id: str
    cluster: str
    started_at: datetime
    finished_at: datetime
    members: list[SetMember]
    tool_version: str = __version__
    status: Literal["complete", "partial"] = Field(
        description="complete: every source has a backup; partial: at least one failed."
    )

    @classmethod
    def build(
        cls, set_id: str, cluster: str, started_at: datetime, members: list[SetMember]
    ) -> BackupSet:
        """A set document with its status derived from the members."""
        complete = bool(members) and all(m.backup_id for m in members)
        return cls(
            set_id=set_id,
            cluster=cluster,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            members=members,
            status="complete" if complete else "partial",
        )

    def member(self, source: str) -> SetMember:
        for member in self.members:
            if member.source == source:
                return member
        raise NotFoundError(f"backup set {self.set_id} has no source {source!r}")


def sort_sources(sources: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(name, kind) pairs in backup order: databases, Redis, recordings; stable otherwise."""
    rank = {kind: i for i, kind in enumerate(KIND_ORDER)}
    return sorted(sources, key=lambda pair: rank.get(pair[1], len(rank)))


def _sets_dir(prefix: str, cluster: str) -> str:
    return backup_prefix(prefix, cluster, SETS_DIR)


def write_backup_set(store: ObjectStore, prefix: str, backup_set: BackupSet) -> str:
    """Store the set document; returns its key."""
    key = f"{_sets_dir(prefix, backup_set.cluster)}{backup_set.set_id}.json"
    store.put_bytes(key, backup_set.model_dump_json(indent=2).encode())
    return key


def list_backup_sets(store: ObjectStore, prefix: str, cluster: str) -> list[BackupSet]:
    """Every set of `cluster`, oldest first."""
    sets = []
    for info in store.list(_sets_dir(prefix, cluster)):
        if info.key.endswith(".json"):
            sets.append(_read(store, info.key))
    return sorted(sets, key=lambda s: s.set_id)


def find_backup_set(
    store: ObjectStore, prefix: str, cluster: str, set_id: str = "latest"
) -> BackupSet:
    """Set `set_id`, or the newest complete set for ``"latest"``."""
    if set_id and set_id != "latest":
        key = f"{_sets_dir(prefix, cluster)}{set_id}.json"
        if not store.exists(key):
            raise NotFoundError(f"no backup set {set_id!r} of {cluster} in {store.describe()}")
        return _read(store, key)
    complete = [s for s in list_backup_sets(store, prefix, cluster) if s.status == "complete"]
    if not complete:
        raise NotFoundError(f"no complete backup set of {cluster} in {store.describe()}")
    return complete[-1]


def _read(store: ObjectStore, key: str) -> BackupSet:
    try:
        return BackupSet.model_validate_json(store.get_bytes(key))
    except ValidationError as exc:
        raise IntegrityError(f"backup set {key} is invalid: {exc.errors()[0]['msg']}") from None
