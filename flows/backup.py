"""The nightly PostgreSQL backup flow."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows._logging import set_log_level
from siprec_backup.manifest import Manifest
from tasks.backup import stream_postgres_backup


def summary_markdown(manifest: Manifest) -> str:
    """A readable summary of one backup for the run's markdown artifact."""
    obj = manifest.object
    ratio = obj.plaintext_bytes / obj.ciphertext_bytes if obj.ciphertext_bytes else 0.0
    info = manifest.source_info
    rows = "\n".join(f"| `{table}` | {count:,} |" for table, count in manifest.tables.items())
    return f"""# Backup `{manifest.backup_id}`

| Item | Value |
|---|---|
| Cluster / source | {manifest.cluster} / {manifest.source} ({manifest.source_kind}) |
| Started | {manifest.started_at:%Y-%m-%d %H:%M:%S} UTC |
| Duration | {manifest.duration_seconds:.1f} s |
| Dump size | {obj.plaintext_bytes:,} bytes |
| Stored size | {obj.ciphertext_bytes:,} bytes (zstd, {ratio:.1f}x) |
| Object | `{obj.key}` |
| Encryption | AES-256-GCM, {obj.chunk_size // 1024} KiB chunks, master key `{obj.key_id}` |
| Server | PostgreSQL {info.get("server_version", "?")}, WAL position {info.get("wal_lsn", "?")} \
(timeline {info.get("timeline", "?")}) |
| Plaintext sha256 | `{obj.plaintext_sha256}` |

## Rows per table (in the dump's snapshot)

| Table | Rows |
|---|---|
{rows}
"""


@flow(name="backup-postgres", flow_run_name="backup-{cluster}-{database}")
def backup_postgres(
    database: str = "siprec-postgres",
    storage: str = "siprec-storage",
    key: str = "siprec-key",
    cluster: str = "default",
    source: str | None = None,
    log_level: str = "INFO",
) -> Manifest:
    """Back up one PostgreSQL database, encrypted and compressed, into a store.

    Args:
        database: Name of the PostgreSQL database block to back up.
        storage: Name of the storage block to write to.
        key: Name of the encryption key block.
        cluster: Platform or cluster name; the first level of the backup catalog.
        source: Name of this source in the catalog (default: the database block name).
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    source_name = source or database
    manifest = stream_postgres_backup(database, storage, key, cluster, source_name)
    create_markdown_artifact(
        summary_markdown(manifest),
        key=f"backup-{cluster}-{source_name}".lower().replace("_", "-"),
        description=f"Backup {manifest.backup_id} of {cluster}/{source_name}",
    )
    get_run_logger().info("[%s %s] backup complete", manifest.backup_id, source_name)
    return manifest
