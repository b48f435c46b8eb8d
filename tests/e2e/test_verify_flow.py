"""The verify-restore flow and the restore drill against the lab platform and its Prefect server:
a verified set with its report, its table and its event; a failed check that fails the run."""

from __future__ import annotations

from uuid import UUID

import anyio
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)

from deployments.lab_blocks import SOURCES
from flows.backup import backup_platform
from flows.verify import restore_drill, verify_restore
from siprec_backup.backup_set import BackupSet, find_backup_set
from siprec_backup.catalog import list_backups
from siprec_backup.errors import VerificationFailedError
from siprec_backup.storage import LocalStore
from siprec_backup.verify.config import SqlCheck
from siprec_backup.verify.report import VerificationReport
from tests.conftest import drain_prefect
from tests.e2e.conftest import Platform, wait_for_events


async def _run_details(flow_run_id: UUID) -> tuple[dict[str, str], dict[str, str]]:
    """Artifact key -> type, and task run name -> state, of one flow run."""
    drain_prefect()
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        tasks = await client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]))
        )
    return (
        {a.key or "": a.type or "" for a in artifacts},
        {t.name: t.state.name if t.state else "?" for t in tasks},
    )


async def _children(parent: UUID) -> list[str]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])
            )
        )
    return sorted(r.state.name if r.state else "?" for r in runs)


def _backup(platform: Platform) -> BackupSet:
    state = backup_platform(platform=platform.blocks.platform, return_state=True)
    assert state.is_completed(), state.message
    backup_set = state.result()
    assert isinstance(backup_set, BackupSet)
    return backup_set


def test_verify_restore_proves_the_platform_set(platform: Platform) -> None:
    blocks = platform.blocks
    backup_set = _backup(platform)
    state = verify_restore(
        platform=blocks.platform,
        set_id=backup_set.set_id,
        checks=[
            SqlCheck(
                name="recordings rows",
                source="siprec-db",
                sql="SELECT count(*) FROM siprec.recordings",
                expected=str(platform.data.recordings.audio_files),
            )
        ],
        return_state=True,
    )
    assert state.is_completed(), state.message
    report = state.result()
    assert isinstance(report, VerificationReport) and report.passed
    assert {c.name for c in report.platform_checks} >= {
        "recordings rows",
        "every recording siprec-db references is restored",
        "every participant belongs to a session",
    }

    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    artifacts, tasks = anyio.run(_run_details, flow_run_id)
    assert artifacts["verification-siprec-lab"] == "markdown"
    assert artifacts["verification-siprec-lab-checks"] == "table"
    for source in SOURCES:
        assert tasks[f"verify-{source}"] == "Completed"
    [event] = wait_for_events(
        "siprec.verification.passed", f"siprec.backup-set.{blocks.cluster}.{backup_set.set_id}"
    )
    assert event.payload["failed"] == [] and event.payload["checks"] == len(report.checks)

    entries = list_backups(LocalStore(blocks.store_dir), blocks.prefix, cluster=blocks.cluster)
    verified = {e.source for e in entries if e.verified}
    assert verified == set(SOURCES)
    for password in platform.passwords:
        assert password not in report.model_dump_json()


def test_a_failed_check_fails_the_run_and_is_named(platform: Platform) -> None:
    blocks = platform.blocks
    store = LocalStore(blocks.store_dir)
    latest = find_backup_set(store, blocks.prefix, blocks.cluster)
    state = verify_restore(
        platform=blocks.platform,
        checks=[SqlCheck(name="impossible", source="siprec-db", sql="SELECT 41", expected="42")],
        return_state=True,
    )
    assert state.is_failed()
    assert "platform: impossible (expected 42, got 41)" in str(state.message)
    with pytest.raises(VerificationFailedError):
        state.result()
    marks = {
        e.source: e.row()["verified"]
        for e in list_backups(store, blocks.prefix, cluster=blocks.cluster)
        if e.backup_id == latest.member(e.source).backup_id
    }
    assert set(marks) == set(SOURCES)
    assert all(mark.startswith("FAILED") for mark in marks.values())
    assert wait_for_events(
        "siprec.verification.failed", f"siprec.backup-set.{blocks.cluster}.{latest.set_id}"
    )


def test_the_drill_verifies_the_newest_set_and_a_sample_of_older_ones(platform: Platform) -> None:
    _backup(platform)
    _backup(platform)
    state = restore_drill(platform=platform.blocks.platform, sample_older=1, return_state=True)
    assert state.is_completed(), state.message
    reports = state.result()
    assert len(reports) == 2 and all(r.passed for r in reports)
    assert reports[0].set_id > reports[1].set_id  # the newest first, then an older one
    assert state.state_details.flow_run_id is not None
    assert anyio.run(_children, state.state_details.flow_run_id) == ["Completed", "Completed"]
