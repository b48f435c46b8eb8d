"""Restore flows: one source's backup (`restore-source`), or a whole backup set
(`restore-platform`), each proved against its manifest (sizes, sha256, every count)."""

from __future__ import annotations

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact

from blocks.loading import load_block
from blocks.platform import Platform
from flows._logging import set_log_level
from siprec_backup.backup_set import BackupSet, sort_sources
from siprec_backup.errors import ConfigurationError, RestoreError
from siprec_backup.restore import RestoreResult
from tasks.backup_set import load_backup_set
from tasks.progress import artifact_key
from tasks.restore import find_backup_manifest, stream_restore


def restore_markdown(result: RestoreResult, backup_counts: dict[str, int]) -> str:
    rows = "\n".join(
        f"| `{name}` | {count:,} | {result.tables.get(name, 0):,} |"
        for name, count in backup_counts.items()
    )
    return f"""# Restore of `{result.backup_id}`

Target: {result.target}. Restored {result.plaintext_bytes:,} bytes in {result.seconds:.1f} s
({result.bytes_per_second / 1e6:.1f} MB/s). Sizes, sha256 and every count match the backup's
manifest.

| Name | In backup | Restored |
|---|---|---|
{rows}
"""


@flow(name="restore-source", flow_run_name="restore-{cluster}-{source}-{backup_id}")
def restore_source(
    target: str,
    source: str,
    cluster: str = "default",
    backup_id: str = "latest",
    storage: str = "siprec-storage",
    key: str = "siprec-key",
    target_database: str | None = None,
    overwrite: bool = False,
    log_level: str = "INFO",
) -> RestoreResult:
    """Restore one source's backup (the latest by default) and prove it against its manifest.

    Args:
        target: Name of the block to restore into, of the backup's kind: a PostgreSQL or MySQL
            database, a Redis server, or a recordings directory.
        source: Source name the backup was made under.
        cluster: Cluster name the backup was made under.
        backup_id: A backup id, or "latest" for the newest complete backup.
        storage: Name of the storage block holding the backup.
        key: Name of the encryption key block.
        target_database: Restore into this database instead of the target block's (PostgreSQL;
            MySQL backups of a single database). Created if missing.
        overwrite: Allow restoring over a target that already holds data.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    manifest = find_backup_manifest(storage, cluster, source, backup_id)
    result = stream_restore(manifest, storage, key, target, target_database, overwrite)
    create_markdown_artifact(
        restore_markdown(result, manifest.tables),
        key=artifact_key("restore", cluster, source),
        description=f"Restore of {manifest.backup_id} into {result.target}",
    )
    return result


@flow(name="restore-platform", flow_run_name="restore-platform-{platform}-{set_id}")
def restore_platform(
    platform: str,
    targets: dict[str, str],
    set_id: str = "latest",
    storage: str | None = None,
    target_databases: dict[str, str] | None = None,
    overwrite: bool = False,
    log_level: str = "INFO",
) -> BackupSet:
    """Restore every source of a backup set (the latest complete one by default), in order.

    Args:
        platform: Name of the platform block.
        targets: Target block name per source name, e.g. {"siprec-db": "restore-db"}; every
            source of the set needs one.
        set_id: A backup set id, or "latest" for the newest complete set.
        storage: Read from this storage block instead of the platform's.
        target_databases: Restore a source into another database name, per source name.
        overwrite: Allow restoring over targets that already hold data.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    config = load_block(Platform, platform)
    store_name = storage or config.storage
    backup_set = load_backup_set(store_name, config.cluster, set_id)
    missing = [m.source for m in backup_set.members if m.source not in targets]
    if missing:
        raise ConfigurationError(f"no restore target given for {', '.join(missing)}")
    failed = []
    for name, kind in sort_sources([(m.source, m.kind) for m in backup_set.members]):
        member = backup_set.member(name)
        if member.backup_id is None:
            failed.append(f"{name} (no backup in this set)")
            continue
        with tags(f"source:{name}", f"kind:{kind}"):
            state = restore_source.with_options(
                flow_run_name=f"restore-{config.cluster}-{name}-{member.backup_id}"
            )(
                target=targets[name],
                source=name,
                cluster=config.cluster,
                backup_id=member.backup_id,
                storage=store_name,
                key=config.key,
                target_database=(target_databases or {}).get(name),
                overwrite=overwrite,
                log_level=log_level,
                return_state=True,
            )
        if not state.is_completed():
            failed.append(f"{name} ({state.message})")
    if failed:
        raise RestoreError(
            f"restore of backup set {backup_set.set_id} failed for {'; '.join(failed)}"
        )
    get_run_logger().info("backup set %s restored and proved", backup_set.set_id)
    return backup_set
