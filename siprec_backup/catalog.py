"""The catalog: the backups a store holds, read from the store itself.

Listing ``<prefix>/`` yields ``<cluster>/<source>/<backup-id>/{data.sbk,manifest.json}``. A backup
with its manifest is complete; objects in a backup's directory without one are an interrupted
backup, listed as ``incomplete`` so that an operator sees it, and never offered for restore.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from siprec_backup.errors import NotFoundError
from siprec_backup.manifest import MANIFEST_NAME, Manifest, backup_prefix
from siprec_backup.storage import ObjectInfo, ObjectStore
from siprec_backup.verify.report import VERIFICATION_NAME, BackupVerification, read_verification


@dataclass(frozen=True)
class CatalogEntry:
    """One backup as the catalog shows it."""

    cluster: str
    source: str
    backup_id: str
    status: str  # "complete" | "incomplete"
    size: int
    finished_at: datetime | None
    manifest: Manifest | None
    #: The latest restore verification of this backup, if any (verification.json).
    verification: BackupVerification | None = None
    #: When the newest of the backup's objects was written (how long an incomplete one idles).
    modified: datetime | None = None

    @property
    def verified(self) -> bool:
        """The latest verification restored this backup and every check passed."""
        return self.verification is not None and self.verification.passed

    def row(self) -> dict[str, str]:
        """A flat row for tables (CLI, Prefect table artifact)."""
        when = self.finished_at.isoformat(timespec="seconds") if self.finished_at else "-"
        return {
            "cluster": self.cluster,
            "source": self.source,
            "backup_id": self.backup_id,
            "finished_at": when,
            "size_bytes": str(self.size),
            "status": self.status,
            "verified": _verified_cell(self.verification),
        }


def _verified_cell(verification: BackupVerification | None) -> str:
    if verification is None:
        return "no"
    when = verification.verified_at.strftime("%Y-%m-%d %H:%M")
    return when if verification.passed else f"FAILED {when}"


def list_backups(
    store: ObjectStore, prefix: str = "", *, cluster: str = "", source: str = ""
) -> list[CatalogEntry]:
    """Every backup under `prefix` (optionally one cluster / source), oldest first."""
    root = backup_prefix(prefix, cluster, source) if (cluster or source) else _dir(prefix)
    groups: dict[tuple[str, str, str], dict[str, ObjectInfo]] = {}
    for info in store.list(root):
        rest = info.key[len(_dir(prefix)) :].split("/", 3)
        # Every object under a backup's directory belongs to it (extra objects, leftovers).
        if len(rest) != 4 or not all(rest):
            continue
        groups.setdefault((rest[0], rest[1], rest[2]), {})[rest[3]] = info
    entries = [_entry(store, prefix, names, files) for names, files in groups.items()]
    return sorted(entries, key=lambda e: (e.cluster, e.source, e.backup_id))


def _dir(prefix: str) -> str:
    return prefix.strip("/") + "/" if prefix.strip("/") else ""


def _entry(
    store: ObjectStore, prefix: str, names: tuple[str, str, str], files: dict[str, ObjectInfo]
) -> CatalogEntry:
    cluster, source, backup_id = names
    modified = max(info.modified for info in files.values())
    if MANIFEST_NAME not in files:
        size = sum(info.size for info in files.values())
        return CatalogEntry(
            cluster, source, backup_id, "incomplete", size, None, None, modified=modified
        )
    manifest = read_manifest(store, prefix, cluster, source, backup_id)
    verification = None
    if VERIFICATION_NAME in files:
        key = files[VERIFICATION_NAME].key
        verification = read_verification(store.get_bytes(key), key)
    return CatalogEntry(
        cluster,
        source,
        backup_id,
        "complete",
        manifest.stored_bytes,
        manifest.finished_at,
        manifest,
        verification=verification,
        modified=modified,
    )


def read_manifest(
    store: ObjectStore, prefix: str, cluster: str, source: str, backup_id: str
) -> Manifest:
    key = backup_prefix(prefix, cluster, source, backup_id) + MANIFEST_NAME
    try:
        data = store.get_bytes(key)
    except NotFoundError:
        raise NotFoundError(
            f"no backup {backup_id!r} of {cluster}/{source} in {store.describe()} "
            "(no manifest: unknown id or an interrupted backup)"
        ) from None
    return Manifest.from_json(data, where=key)


def find_backup(
    store: ObjectStore, prefix: str, cluster: str, source: str, backup_id: str = "latest"
) -> Manifest:
    """The manifest of `backup_id`, or of the newest complete backup for ``"latest"``."""
    if backup_id and backup_id != "latest":
        return read_manifest(store, prefix, cluster, source, backup_id)
    complete = _complete(list_backups(store, prefix, cluster=cluster, source=source))
    if not complete:
        raise NotFoundError(f"no complete backup of {cluster}/{source} in {store.describe()}")
    return complete[-1]


def _complete(entries: Iterable[CatalogEntry]) -> list[Manifest]:
    return [e.manifest for e in entries if e.manifest is not None]
