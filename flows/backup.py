"""Backup flows: one source (`backup-source`), and a whole platform as one set (`backup-platform`).

The platform flow runs one `backup-source` flow run per source, so each source fails and retries
on its own and the UI shows each one's history (filter the runs by the tag ``source:<name>``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from blocks.loading import load_block
from blocks.platform import Platform
from flows._logging import set_log_level
from siprec_backup.backup_set import BackupSet, SetMember, sort_sources
from siprec_backup.errors import BackupSetIncompleteError
from siprec_backup.manifest import Manifest, new_backup_id
from tasks.backup import stream_backup
from tasks.backup_set import catalog_rows, save_backup_set
from tasks.progress import artifact_key

#: How many counts (tables, Redis databases) a summary lists before "and N more".
SUMMARY_COUNTS = 50


def _facts(info: dict[str, Any]) -> str:
    return "\n".join(
        f"| {name.replace('_', ' ')} | `{value}` |"
        for name, value in info.items()
        if isinstance(value, str | int | float | bool) and value != ""
    )


def summary_markdown(manifest: Manifest) -> str:
    """A readable summary of one backup for the run's markdown artifact."""
    objects = "\n".join(
        f"| {role} | `{obj.key}` | {obj.plaintext_bytes:,} | {obj.ciphertext_bytes:,} | "
        f"{obj.compression} | `{obj.key_id}` |"
        for role, obj in [("data", manifest.object), *manifest.extra_objects.items()]
    )
    counts = list(manifest.tables.items())
    rows = "\n".join(f"| `{name}` | {count:,} |" for name, count in counts[:SUMMARY_COUNTS])
    if len(counts) > SUMMARY_COUNTS:
        rows += f"\n| ... and {len(counts) - SUMMARY_COUNTS} more | |"
    depends = ", ".join(f"`{b}`" for b in manifest.depends_on) or "none (self-contained)"
    return f"""# Backup `{manifest.backup_id}`

| Item | Value |
|---|---|
| Cluster / source | {manifest.cluster} / {manifest.source} ({manifest.source_kind}) |
| Started | {manifest.started_at:%Y-%m-%d %H:%M:%S} UTC |
| Duration | {manifest.duration_seconds:.1f} s |
| Stored size | {manifest.stored_bytes:,} bytes |
| Encryption | AES-256-GCM, {manifest.object.chunk_size // 1024} KiB chunks |
| Reads objects of | {depends} |
| Plaintext sha256 (data) | `{manifest.object.plaintext_sha256}` |

## Objects

| Role | Key | Plaintext bytes | Stored bytes | Compression | Master key |
|---|---|---|---|---|---|
{objects}

## Source facts

| Fact | Value |
|---|---|
{_facts(manifest.source_info)}

## Counts in the backup's snapshot (checked again by every restore)

| Name | Count |
|---|---|
{rows}
"""


@flow(name="backup-source", flow_run_name="backup-{cluster}-{source}")
def backup_source(
    kind: str,
    block: str,
    source: str,
    storage: str = "siprec-storage",
    key: str = "siprec-key",
    cluster: str = "default",
    log_level: str = "INFO",
) -> Manifest:
    """Back up one source, encrypted and compressed, into a store.

    Args:
        kind: postgres, mysql, redis or recordings.
        block: Name of the source's block (database, Redis server or recordings directory).
        source: Name of this source in the catalog.
        storage: Name of the storage block to write to.
        key: Name of the encryption key block.
        cluster: Platform or cluster name; the first level of the backup catalog.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    manifest = stream_backup(kind, block, storage, key, cluster, source)
    create_markdown_artifact(
        summary_markdown(manifest),
        key=artifact_key("backup", cluster, source),
        description=f"Backup {manifest.backup_id} of {cluster}/{source}",
    )
    get_run_logger().info("[%s %s] backup complete", manifest.backup_id, source)
    return manifest


def set_markdown(backup_set: BackupSet) -> str:
    rows = "\n".join(
        f"| {m.source} | {m.kind} | {'`' + m.backup_id + '`' if m.backup_id else '-'} | "
        f"{'ok' if m.backup_id else 'FAILED: ' + (m.error or 'unknown error')} |"
        for m in backup_set.members
    )
    seconds = (backup_set.finished_at - backup_set.started_at).total_seconds()
    return f"""# Backup set `{backup_set.set_id}` of {backup_set.cluster}: {backup_set.status}

Sources are backed up in order (databases, Redis, recordings), so the recordings include every
file the backed-up database rows reference. Took {seconds:.1f} s.

| Source | Kind | Backup | Result |
|---|---|---|---|
{rows}
"""


@flow(name="backup-platform", flow_run_name="backup-platform-{platform}")
def backup_platform(
    platform: str = "siprec-lab",
    storage: str | None = None,
    log_level: str = "INFO",
) -> BackupSet:
    """Back up every source of a platform as one backup set.

    Args:
        platform: Name of the platform block (its sources, storage and key blocks).
        storage: Write to this storage block instead of the platform's.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    logger = get_run_logger()
    config = load_block(Platform, platform)
    store_name = storage or config.storage
    set_id, started = new_backup_id(), datetime.now(UTC)
    kinds = {s.name: s for s in config.sources}
    members = []
    for name, kind in sort_sources([(s.name, s.kind) for s in config.sources]):
        with tags(f"source:{name}", f"kind:{kind}"):
            state = backup_source.with_options(flow_run_name=f"backup-{config.cluster}-{name}")(
                kind=kind,
                block=kinds[name].block,
                source=name,
                storage=store_name,
                key=config.key,
                cluster=config.cluster,
                log_level=log_level,
                return_state=True,
            )
        if state.is_completed():
            manifest: Manifest = state.result()
            members.append(SetMember(source=name, kind=kind, backup_id=manifest.backup_id))
        else:
            logger.error("source %s failed: %s", name, state.message)
            members.append(SetMember(source=name, kind=kind, error=state.message or state.name))
    backup_set = BackupSet.build(set_id, config.cluster, started, members)
    save_backup_set(store_name, backup_set)
    create_markdown_artifact(
        set_markdown(backup_set),
        key=artifact_key("backup-set", config.cluster),
        description=f"Backup set {set_id} of {config.cluster}",
    )
    create_table_artifact(
        catalog_rows(store_name, config.cluster),
        key=artifact_key("catalog", config.cluster),
        description=f"Every backup of {config.cluster} in {store_name}",
    )
    failed = [m.source for m in backup_set.members if not m.backup_id]
    if failed:
        raise BackupSetIncompleteError(
            f"backup set {set_id} of {config.cluster} is partial: {', '.join(failed)} failed"
        )
    logger.info("backup set %s of %s complete", set_id, config.cluster)
    return backup_set
