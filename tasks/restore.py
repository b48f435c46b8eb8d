"""Restore tasks: find a backup in the catalog, stream it into a target and prove it."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.encryption_key import EncryptionKey
from blocks.loading import load_block
from blocks.sources import load_recordings, load_restore_target
from blocks.storage import load_store
from siprec_backup.catalog import find_backup
from siprec_backup.manifest import Manifest
from siprec_backup.recordings import run_recordings_restore
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


@task(name="stream-restore", task_run_name="stream-restore-{target}", cache_policy=NO_CACHE)
def stream_restore(
    manifest: Manifest,
    storage: str,
    key: str,
    target: str,
    target_database: str | None,
    overwrite: bool,
) -> RestoreResult:
    """Decrypt one backup into the target block `target`, then check sizes, hashes and counts."""
    logger = get_run_logger()
    store, prefix = load_store(storage)
    keys = load_block(EncryptionKey, key).keyring()
    if manifest.source_kind == "recordings":
        directory = load_recordings(target)
        logger.info(
            "[%s %s] restoring into %s", manifest.backup_id, manifest.source, directory.path
        )
        result = run_recordings_restore(
            store, prefix, manifest, keys, directory.root(), overwrite=overwrite
        )
    else:
        restore_target = load_restore_target(manifest.source_kind, target, target_database)
        logger.info(
            "[%s %s] restoring into %s",
            manifest.backup_id,
            manifest.source,
            restore_target.describe(),
        )
        result = run_restore(store, manifest, keys, restore_target, overwrite=overwrite)
    logger.info(
        "[%s %s] restored %d bytes in %.1f s; every count matches the manifest (%d)",
        manifest.backup_id,
        manifest.source,
        result.plaintext_bytes,
        result.seconds,
        len(result.tables),
    )
    return result
