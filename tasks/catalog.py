"""Catalog tasks: list a store's backups and delete the ones a retention plan gives up.

Listing and deleting are idempotent (a deleted key stays deleted, deleting a missing key is not an
error), so both retry transient storage failures with the shared policy.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.storage import load_store
from siprec_backup.catalog import CatalogEntry, list_backups
from siprec_backup.retention import RetentionPlan, apply_retention
from tasks.policies import RETRY_DELAYS, retry_transient_storage_errors


@task(
    name="list-catalog",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient_storage_errors,
    cache_policy=NO_CACHE,
)
def list_catalog(storage: str, cluster: str = "", source: str = "") -> list[CatalogEntry]:
    """Every backup in storage block `storage` (optionally one cluster / source)."""
    store, prefix = load_store(storage)
    return list_backups(store, prefix, cluster=cluster, source=source)


@task(
    name="delete-backups",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient_storage_errors,
    cache_policy=NO_CACHE,
)
def delete_backups(storage: str, plan: RetentionPlan) -> list[str]:
    """Delete the backups `plan` marks DELETE, manifest first; returns the deleted ids."""
    store, prefix = load_store(storage)
    return apply_retention(store, prefix, plan)
