"""The backup and restore flows against the lab platform and its Prefect server."""

from __future__ import annotations

import hashlib
from pathlib import Path
from uuid import UUID

import anyio
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from pydantic import SecretStr

from blocks import Platform as PlatformBlock
from blocks import RedisServer
from blocks.platform import PlatformSource
from deployments.lab_blocks import RESTORE_DATABASES, SOURCES
from flows.backup import backup_platform, backup_source
from flows.restore import restore_platform, restore_source
from siprec_backup.backup_set import find_backup_set
from siprec_backup.catalog import list_backups
from siprec_backup.errors import BackupSetIncompleteError, NotFoundError, TargetNotEmptyError
from siprec_backup.lab import mariadb_row_counts, redis_key_counts
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


async def _child_runs(parent: UUID) -> dict[str, tuple[str, list[str]]]:
    """The flow runs a platform run started: name -> (state, tags)."""
    async with get_client() as client:
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])
            )
        )
    return {r.name: (r.state.name if r.state else "?", list(r.tags)) for r in children}


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_backup_then_restore_one_source(platform: Platform) -> None:
    blocks = platform.blocks
    state = backup_source(
        kind="postgres",
        block=blocks.database,
        source="pg",
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
    assert any(f"[{manifest.backup_id} pg]" in message for message in messages), messages

    scratch = platform.scratch_database("e2e_restore")
    common = {"storage": blocks.storage, "key": blocks.key, "cluster": "e2e", "source": "pg"}
    result = restore_source(target=blocks.database, target_database=scratch, **common)
    assert result.backup_id == manifest.backup_id
    assert result.tables == manifest.tables

    # A second restore into the now non-empty database is refused unless overwrite is allowed.
    refused = restore_source(
        target=blocks.database, target_database=scratch, return_state=True, **common
    )
    assert refused.is_failed()
    with pytest.raises(TargetNotEmptyError, match="is not empty"):
        refused.result()
    again = restore_source(
        target=blocks.database, target_database=scratch, overwrite=True, **common
    )
    assert again.tables == manifest.tables


def test_platform_backup_to_every_store_then_restore_the_set(platform: Platform) -> None:
    """The whole platform (PostgreSQL, MariaDB, Redis, recordings) backs up as one set into each
    store, and a set restores into the scratch targets with every count proved."""
    blocks = platform.blocks
    for store_kind, storage in blocks.stores.items():
        state = backup_platform(platform=blocks.platform, storage=storage, return_state=True)
        assert state.is_completed(), f"{store_kind}: {state.message}"
        backup_set = state.result()
        assert backup_set.status == "complete"
        assert [m.source for m in backup_set.members] == list(SOURCES)

        assert state.state_details.flow_run_id is not None
        children = anyio.run(_child_runs, state.state_details.flow_run_id)
        for name in SOURCES:
            run_state, tags = children[f"backup-{blocks.cluster}-{name}"]
            assert run_state == "Completed"
            assert f"source:{name}" in tags
        kinds, _ = anyio.run(_artifacts_and_logs, state.state_details.flow_run_id)
        assert {"markdown", "table"} <= kinds

    store = platform.state.object_store("s3")
    latest = find_backup_set(store, blocks.prefix, blocks.cluster)
    platform.scratch_database(RESTORE_DATABASES["siprec-db"])
    platform.state.redis("scratch").client().flushall()
    restored = restore_platform(
        platform=blocks.platform,
        storage=blocks.stores["s3"],
        targets=blocks.restore_targets,
        target_databases=RESTORE_DATABASES,
        overwrite=True,
    )
    assert restored.set_id == latest.set_id

    pg = platform.state.postgres()
    assert row_counts(pg.conninfo(dbname=RESTORE_DATABASES["siprec-db"])) == row_counts(
        pg.conninfo()
    )
    maria = platform.state.mariadb()
    restored_maria = mariadb_row_counts(maria, RESTORE_DATABASES["siprec-mariadb"])
    assert list(restored_maria.values()) == list(mariadb_row_counts(maria).values())
    scratch = platform.state.redis("scratch").target()
    assert redis_key_counts(scratch) == redis_key_counts(platform.state.redis().target())
    assert _tree(blocks.recordings_restore_dir) == _tree(blocks.recordings_dir)


def test_a_failing_source_makes_a_partial_set_and_the_others_complete(platform: Platform) -> None:
    blocks = platform.blocks
    RedisServer(host="127.0.0.1", port=1, password=SecretStr("x")).save(
        "e2e-redis-down", overwrite=True
    )
    PlatformBlock(
        cluster="e2e-partial",
        storage=blocks.storage,
        key=blocks.key,
        sources=[
            PlatformSource(name="db", kind="postgres", block=blocks.database),
            PlatformSource(name="cache", kind="redis", block="e2e-redis-down"),
        ],
    ).save("e2e-partial", overwrite=True)
    state = backup_platform(platform="e2e-partial", return_state=True)
    assert state.is_failed()
    with pytest.raises(BackupSetIncompleteError, match="is partial: cache failed"):
        state.result()
    store = LocalStore(blocks.store_dir)
    entries = list_backups(store, blocks.prefix, cluster="e2e-partial")
    assert [(e.source, e.status) for e in entries] == [("db", "complete")]
    with pytest.raises(NotFoundError, match="no complete backup set"):
        find_backup_set(store, blocks.prefix, "e2e-partial")
