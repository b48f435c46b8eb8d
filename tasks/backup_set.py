"""Tasks around backup sets and the catalog: store listing and writing, with storage retries."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.storage import load_store
from siprec_backup.backup_set import BackupSet, find_backup_set, write_backup_set
from siprec_backup.catalog import list_backups
from tasks.policies import RETRY_DELAYS, retry_transient_storage_errors


@task(
    name="save-backup-set",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_transient_storage_errors,
    cache_policy=NO_CACHE,
)
def save_backup_set(storage: str, backup_set: BackupSet) -> str:
    """Write the set document (after every source's backup) and return its key."""
    store, prefix = load_store(storage)
    return write_backup_set(store, prefix, backup_set)


@task(
    name="catalog-rows",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_transient_storage_errors,
    cache_policy=NO_CACHE,
)
def catalog_rows(storage: str, cluster: str = "") -> list[dict[str, str]]:
    """Every backup of `cluster` (all clusters if empty) as table rows, newest first."""
    store, prefix = load_store(storage)
    entries = list_backups(store, prefix, cluster=cluster)
    return [e.row() for e in sorted(entries, key=lambda e: e.backup_id, reverse=True)]


@task(
    name="find-backup-set",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_transient_storage_errors,
    cache_policy=NO_CACHE,
)
def load_backup_set(storage: str, cluster: str, set_id: str = "latest") -> BackupSet:
    """Backup set `set_id` of `cluster`, or the newest complete one for "latest"."""
    store, prefix = load_store(storage)
    return find_backup_set(store, prefix, cluster, set_id)
