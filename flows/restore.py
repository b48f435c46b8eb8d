"""Restore a PostgreSQL backup into a target database and prove it against the manifest."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows._logging import set_log_level
from siprec_backup.restore import RestoreResult
from tasks.restore import find_backup_manifest, stream_postgres_restore


def restore_markdown(result: RestoreResult, backup_tables: dict[str, int]) -> str:
    rows = "\n".join(
        f"| `{table}` | {rows:,} | {result.tables.get(table, 0):,} |"
        for table, rows in backup_tables.items()
    )
    return f"""# Restore of `{result.backup_id}`

Target: {result.target}. Restored {result.plaintext_bytes:,} bytes in {result.seconds:.1f} s
({result.bytes_per_second / 1e6:.1f} MB/s). Sizes, sha256 and every table's row count match the
backup's manifest.

| Table | Rows in backup | Rows restored |
|---|---|---|
{rows}
"""


@flow(name="restore-postgres", flow_run_name="restore-{cluster}-{source}-{backup_id}")
def restore_postgres(
    target: str = "siprec-postgres",
    target_dbname: str | None = None,
    storage: str = "siprec-storage",
    key: str = "siprec-key",
    cluster: str = "default",
    source: str = "siprec-postgres",
    backup_id: str = "latest",
    overwrite: bool = False,
    log_level: str = "INFO",
) -> RestoreResult:
    """Restore a backup (the latest by default) into a PostgreSQL database.

    Args:
        target: Name of the PostgreSQL database block to restore into.
        target_dbname: Restore into this database instead of the block's (created if missing).
        storage: Name of the storage block holding the backup.
        key: Name of the encryption key block.
        cluster: Cluster name the backup was made under.
        source: Source name the backup was made under.
        backup_id: A backup id, or "latest" for the newest complete backup.
        overwrite: Allow restoring over a database that already holds tables.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    manifest = find_backup_manifest(storage, cluster, source, backup_id)
    result = stream_postgres_restore(manifest, storage, key, target, target_dbname, overwrite)
    create_markdown_artifact(
        restore_markdown(result, manifest.tables),
        key=f"restore-{cluster}-{source}".lower().replace("_", "-"),
        description=f"Restore of {manifest.backup_id} into {result.target}",
    )
    return result
