"""The retention and freshness flows against the lab's Prefect server and a real local store."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from blocks.local_storage import LocalStorage
from flows.freshness import check_backup_freshness
from flows.retention import apply_retention_policy
from siprec_backup.catalog import list_backups
from siprec_backup.errors import StaleBackupsError
from siprec_backup.lab import LabState
from siprec_backup.storage import LocalStore
from siprec_backup.stream import MasterKey
from tests.conftest import drain_prefect
from tests.e2e.conftest import wait_for_events
from tests.integration.test_key_rotation import PREFIX, make_backup

NOW = datetime.now(UTC)


def _storage_block(lab: LabState, tmp_path: Path) -> tuple[str, LocalStore]:
    """A storage block of its own for one test, saved on the lab's Prefect server."""
    name = f"retention-{uuid.uuid4().hex[:8]}"
    LocalStorage(path=str(tmp_path), prefix=PREFIX).save(name, overwrite=True)
    return name, LocalStore(tmp_path)


def _backup(store: LocalStore, key: MasterKey, source: str, days: float) -> str:
    moment = NOW - timedelta(days=days)
    return make_backup(
        store,
        key,
        b"payload " * 50,
        cluster="e2e",
        source=source,
        backup_id=f"{moment:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        finished_at=moment,
    ).backup_id


async def _table_artifacts(flow_run_id: UUID) -> list[Any]:
    drain_prefect()
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return [a.data for a in artifacts if a.type == "table"]


def _rows(data: Any) -> list[dict[str, str]]:
    table = json.loads(data) if isinstance(data, str) else data
    assert isinstance(table, list)
    return table


def test_retention_flow_dry_run_then_for_real(lab: LabState, tmp_path: Path) -> None:
    storage, store = _storage_block(lab, tmp_path)
    key = MasterKey.generate("e2e-retention")
    ids = [_backup(store, key, "pg", days) for days in (9, 5, 2, 0.1)]

    dry = apply_retention_policy(
        storage=storage,
        keep_last=2,
        keep_daily=0,
        keep_weekly=0,
        keep_monthly=0,
        return_state=True,
    )
    assert dry.is_completed(), dry.message
    plan = dry.result()
    assert [d.backup_id for d in plan.to_delete] == ids[:2]
    assert [e.backup_id for e in list_backups(store, PREFIX)] == ids  # dry run: nothing deleted
    assert dry.state_details.flow_run_id is not None
    [table] = anyio.run(_table_artifacts, dry.state_details.flow_run_id)
    rows = _rows(table)
    assert [(r["backup_id"], r["action"]) for r in rows] == [
        (ids[0], "DELETE"),
        (ids[1], "DELETE"),
        (ids[2], "KEEP"),
        (ids[3], "KEEP"),
    ]
    assert rows[3]["reasons"] == "newest complete; last 1"

    real = apply_retention_policy(
        storage=storage,
        keep_last=2,
        keep_daily=0,
        keep_weekly=0,
        keep_monthly=0,
        dry_run=False,
        return_state=True,
    )
    assert real.is_completed(), real.message
    assert [e.backup_id for e in list_backups(store, PREFIX)] == ids[2:]

    refused = apply_retention_policy(
        storage=storage, keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0,
        return_state=True,
    )  # fmt: skip
    assert refused.is_failed()
    assert "the policy keeps nothing" in str(refused.message)


def test_freshness_flow_fails_on_stale_and_missing_sources(lab: LabState, tmp_path: Path) -> None:
    storage, store = _storage_block(lab, tmp_path)
    key = MasterKey.generate("e2e-freshness")
    cluster = "e2e"
    stale_source = f"stale-{uuid.uuid4().hex[:6]}"
    fresh_id = _backup(store, key, "fresh", 0.05)
    stale_id = _backup(store, key, stale_source, 3)
    missing = f"{cluster}/never-{uuid.uuid4().hex[:6]}"

    state = check_backup_freshness(
        storage=storage,
        max_age_hours=26,
        expected_sources=[f"{cluster}/fresh", missing],
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(StaleBackupsError, match=r"2 of 3 sources have no backup within 26 h"):
        state.result()
    assert f"{cluster}/{stale_source} (stale)" in str(state.message)
    assert f"{missing} (missing)" in str(state.message)

    assert state.state_details.flow_run_id is not None
    [table] = anyio.run(_table_artifacts, state.state_details.flow_run_id)
    statuses = {r["source"]: (r["status"], r["newest_backup"]) for r in _rows(table)}
    assert statuses == {
        "fresh": ("OK", fresh_id),
        stale_source: ("STALE", stale_id),
        missing.split("/")[1]: ("MISSING", "-"),
    }

    [event] = wait_for_events("siprec.backup.stale", f"siprec.source.{cluster}.{stale_source}")
    assert event.payload["severity"] == "warning"
    assert event.payload["fields"]["newest_backup_id"] == stale_id
    [gone] = wait_for_events("siprec.backup.missing", f"siprec.source.{missing.replace('/', '.')}")
    assert gone.payload["severity"] == "critical"

    # Once the stale source is gone, the run completes and says so with a "fresh" event.
    (tmp_path / PREFIX / cluster / stale_source).rename(tmp_path / "moved-away")
    ok = check_backup_freshness(storage=storage, max_age_hours=26, return_state=True)
    assert ok.is_completed(), ok.message
    assert [r.status for r in ok.result()] == ["ok"]
    assert wait_for_events("siprec.backup.fresh", f"siprec.source.{cluster}.fresh")
