"""Backup tasks: one task streams one source into one store (a stream cannot be split)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.encryption_key import EncryptionKey
from blocks.loading import load_block
from blocks.postgres import PostgresDatabase
from blocks.storage import load_store
from siprec_backup.backup import run_backup
from siprec_backup.manifest import Manifest, new_backup_id
from tasks.policies import RETRY_DELAYS, retry_transient_storage_errors
from tasks.progress import ProgressArtifact


@task(
    name="stream-postgres-backup",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient_storage_errors,
    cache_policy=NO_CACHE,
)
def stream_postgres_backup(
    database: str, storage: str, key: str, cluster: str, source: str
) -> Manifest:
    """pg_dump -> zstd -> AES-256-GCM -> store, then the manifest. Takes block names only."""
    database_block = load_block(PostgresDatabase, database)
    store, prefix = load_store(storage)
    master_key = load_block(EncryptionKey, key).master_key()
    backup_id = new_backup_id()
    logger = get_run_logger()
    pg_source = database_block.source()
    progress = ProgressArtifact(
        key=f"backup-progress-{cluster}-{source}".lower().replace("_", "-"),
        total=pg_source.estimate_bytes(),
        description=f"Backup {backup_id} of {source}: bytes dumped / database size",
    )
    logger.info("[%s %s] dumping %s", backup_id, source, pg_source.describe())
    manifest = run_backup(
        pg_source,
        store,
        master_key,
        cluster=cluster,
        source_name=source,
        prefix=prefix,
        backup_id=backup_id,
        progress=progress,
    )
    progress.done()
    logger.info(
        "[%s %s] complete: %d bytes dumped, %d stored, %d tables, WAL %s",
        backup_id,
        source,
        manifest.object.plaintext_bytes,
        manifest.object.ciphertext_bytes,
        len(manifest.tables),
        manifest.source_info.get("wal_lsn"),
    )
    return manifest
