"""The backup and restore flows against the lab's PostgreSQL and Prefect server."""

from __future__ import annotations

from uuid import UUID

import anyio
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from flows.backup import backup_postgres
from flows.restore import restore_postgres
from siprec_backup.catalog import list_backups
from siprec_backup.errors import TargetNotEmptyError
from siprec_backup.lab.seed import row_counts
from siprec_backup.storage import LocalStore
from tests.conftest import drain_prefect
from tests.e2e.conftest import Platform


async def _artifacts_and_logs(flow_run_id: UUID) -> tuple[set[str], list[str]]:
    """The artifact types and the log messages the server holds for one flow run."""
    drain_prefect()
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.type or "" for a in artifacts}, [log.message for log in logs]


def test_backup_then_restore_matches_row_counts(platform: Platform) -> None:
    blocks = platform.blocks
    state = backup_postgres(
        database=blocks.database,
        storage=blocks.storage,
        key=blocks.key,
        cluster="e2e",
        return_state=True,
    )
    assert state.is_completed(), state.message
    manifest = state.result()
    expected = row_counts(platform.state.postgres("primary").conninfo())
    assert manifest.tables == {f"siprec.{table}": rows for table, rows in expected.items()}
    assert all(rows > 0 for rows in manifest.tables.values())
    assert manifest.source_info["wal_lsn"]
    assert manifest.object.ciphertext_bytes < manifest.object.plaintext_bytes

    entries = list_backups(LocalStore(blocks.store_dir), blocks.prefix, cluster="e2e")
    assert [(e.backup_id, e.status) for e in entries] == [(manifest.backup_id, "complete")]

    assert state.state_details.flow_run_id is not None
    kinds, messages = anyio.run(_artifacts_and_logs, state.state_details.flow_run_id)
    assert {"markdown", "progress"} <= kinds
    tagged = f"[{manifest.backup_id} {blocks.database}]"
    assert any(tagged in message for message in messages), messages

    scratch = platform.scratch_database("e2e_restore")
    result = restore_postgres(
        target=blocks.database,
        target_dbname=scratch,
        storage=blocks.storage,
        key=blocks.key,
        cluster="e2e",
        source=blocks.database,
    )
    assert result.backup_id == manifest.backup_id
    assert result.tables == manifest.tables

    # A second restore into the now non-empty database is refused unless overwrite is allowed.
    refused = restore_postgres(
        target=blocks.database,
        target_dbname=scratch,
        storage=blocks.storage,
        key=blocks.key,
        cluster="e2e",
        source=blocks.database,
        return_state=True,
    )
    assert refused.is_failed()
    with pytest.raises(TargetNotEmptyError, match="is not empty"):
        refused.result()
    again = restore_postgres(
        target=blocks.database,
        target_dbname=scratch,
        storage=blocks.storage,
        key=blocks.key,
        cluster="e2e",
        source=blocks.database,
        overwrite=True,
    )
    assert again.tables == manifest.tables
