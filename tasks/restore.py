"""Restore tasks: find a backup in the catalog, stream it into a target and prove it."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.encryption_key import EncryptionKey
from blocks.loading import load_block
from blocks.postgres import PostgresDatabase
from blocks.storage import load_store
from siprec_backup.catalog import find_backup
from siprec_backup.manifest import Manifest
from siprec_backup.restore import RestoreResult, run_restore
from tasks.policies import RETRY_DELAYS, retry_transient_storage_errors


@task(
    name="find-backup",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_transient_storage_errors,
    cache_policy=NO_CACHE,
)
def find_backup_manifest(storage: str, cluster: str, source: str, backup_id: str) -> Manifest:
    """The manifest of `backup_id` ("latest" for the newest complete backup)."""
    store, prefix = load_store(storage)
    return find_backup(store, prefix, cluster, source, backup_id)


@task(name="stream-postgres-restore", cache_policy=NO_CACHE)
def stream_postgres_restore(
    manifest: Manifest,
    storage: str,
    key: str,
    target: str,
    target_dbname: str | None,
    overwrite: bool,
) -> RestoreResult:
    """Decrypt and pg_restore one backup, then check sizes, hashes and row counts."""
    logger = get_run_logger()
    database = load_block(PostgresDatabase, target).target(target_dbname)
    logger.info(
        "[%s %s] restoring into %s", manifest.backup_id, manifest.source, database.describe()
    )
    result = run_restore(
        load_store(storage)[0],
        manifest,
        load_block(EncryptionKey, key).keyring(),
        database,
        overwrite=overwrite,
    )
    logger.info(
        "[%s %s] restored %d bytes in %.1f s; %d tables match the manifest",
        manifest.backup_id,
        manifest.source,
        result.plaintext_bytes,
        result.seconds,
        len(result.tables),
    )
    return result
