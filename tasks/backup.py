"""Backup tasks: one task streams one source into one store (a stream cannot be split)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.encryption_key import EncryptionKey
from blocks.loading import load_block
from blocks.sources import load_recordings, load_source
from blocks.storage import load_store
from siprec_backup.backup import run_backup
from siprec_backup.manifest import Manifest, new_backup_id
from siprec_backup.recordings import run_recordings_backup
from tasks.policies import RETRY_DELAYS, retry_transient_storage_errors
from tasks.progress import ProgressArtifact, artifact_key


def _progress(cluster: str, source: str, backup_id: str, total: int | None) -> ProgressArtifact:
    """The run's progress bar: bytes read against the source's size estimate, if it has one."""
    return ProgressArtifact(
        key=artifact_key("backup-progress", cluster, source),
        total=total,
        description=f"Backup {backup_id} of {source}: bytes read / estimated size",
    )


@task(
    name="stream-backup",
    task_run_name="stream-backup-{source}",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient_storage_errors,
    cache_policy=NO_CACHE,
)
def stream_backup(
    kind: str, block: str, storage: str, key: str, cluster: str, source: str
) -> Manifest:
    """Dump -> zstd -> AES-256-GCM -> store, then the manifest. Takes block names only."""
    store, prefix = load_store(storage)
    master_key = load_block(EncryptionKey, key).master_key()
    backup_id = new_backup_id()
    logger = get_run_logger()
    if kind == "recordings":
        directory = load_recordings(block)
        logger.info("[%s %s] backing up recordings under %s", backup_id, source, directory.path)
        progress = _progress(cluster, source, backup_id, total=None)
        manifest = run_recordings_backup(
            directory.root(),
            store,
            master_key,
            cluster=cluster,
            source_name=source,
            prefix=prefix,
            backup_id=backup_id,
            progress=progress,
            **directory.engine_options(),
        )
    else:
        engine_source = load_source(kind, block)
        logger.info("[%s %s] dumping %s", backup_id, source, engine_source.describe())
        progress = _progress(cluster, source, backup_id, total=engine_source.estimate_bytes())
        manifest = run_backup(
            engine_source,
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
        "[%s %s] complete: %d bytes read, %d stored, counts %s",
        backup_id,
        source,
        manifest.object.plaintext_bytes
        + sum(o.plaintext_bytes for o in manifest.extra_objects.values()),
        manifest.stored_bytes,
        _count_summary(manifest.tables),
    )
    return manifest


def _count_summary(tables: dict[str, int], limit: int = 6) -> str:
    shown = ", ".join(f"{name}={count:,}" for name, count in list(tables.items())[:limit])
    more = len(tables) - limit
    return shown + (f" and {more} more" if more > 0 else "")
