"""The quick start's main job: deployments registered by the documented command, the nightly
platform backup run by the lab's worker into every store, the set's restore checked, and the
same set verified by the verify-restore deployment, and the lab platform's replication status
table published by the monitor-replication deployment."""

from __future__ import annotations

import json

import anyio
import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.schedules import CronSchedule

from deployments.demo import FAILOVER_CLUSTER, run_demo
from deployments.lab_blocks import PLATFORM, REPLICATION
from flows.failover import artifact_key as failover_key
from flows.monitor_replication import artifact_key
from tests.e2e.conftest import Platform


async def _deployment_runs(name: str) -> tuple[CronSchedule | None, list[FlowRun]]:
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(name)
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )
    schedule = deployment.schedules[0].schedule if deployment.schedules else None
    return (schedule if isinstance(schedule, CronSchedule) else None), runs


def test_demo_end_to_end(platform: Platform, capsys: pytest.CaptureFixture[str]) -> None:
    run_demo(platform.state.root, scale_mb=8)
    out = capsys.readouterr().out
    assert "every count matches the backups' manifests" in out
    assert "MISMATCH" not in out
    assert platform.state.prefect_ui_url in out

    for source in ("siprec-db", "siprec-mariadb", "siprec-redis", "siprec-recordings"):
        assert out.count(f"{source} ") >= 2, f"{source} missing from the comparison"
    schedule, runs = anyio.run(_deployment_runs, "backup-platform/nightly")
    assert schedule is not None
    assert (schedule.cron, schedule.timezone) == ("30 2 * * *", "UTC")
    assert sum(run.state is not None and run.state.is_completed() for run in runs) >= 4

    _, restores = anyio.run(_deployment_runs, "restore-platform/on-demand")
    assert any(run.state is not None and run.state.is_completed() for run in restores)

    _, verifications = anyio.run(_deployment_runs, "verify-restore/on-demand")
    assert any(run.state is not None and run.state.is_completed() for run in verifications)
    assert " verified: " in out and "FAIL" not in out
    schedule, _ = anyio.run(_deployment_runs, "restore-drill/weekly")
    assert schedule is not None and (schedule.cron, schedule.timezone) == ("0 4 * * 0", "UTC")

    # The replication status of the lab platform: printed, and an artifact in the UI.
    schedule, monitors = anyio.run(_deployment_runs, "monitor-replication/every-minute")
    assert schedule is not None and schedule.cron == "* * * * *"
    assert any(run.state is not None and run.state.is_completed() for run in monitors)
    table = Artifact.get(artifact_key(PLATFORM))
    assert table is not None and isinstance(table.data, str)
    rows = json.loads(table.data)
    assert {(r["cluster"], r["role"]) for r in rows} == {
        (cluster, role) for cluster in REPLICATION for role in ("primary", "replica")
    }
    for row in rows:
        assert f"{row['cluster']:<20} {row['node']:<10} {row['role']:<10} " in out

    # The failover drill: run through the deployment (as the UI's Custom run), report printed
    # and kept as an artifact.
    _, failovers = anyio.run(_deployment_runs, "failover/on-demand")
    assert any(run.state is not None and run.state.is_completed() for run in failovers)
    assert f"# Failover of `{FAILOVER_CLUSTER}`: completed" in out
    report = Artifact.get(failover_key("failover", FAILOVER_CLUSTER))
    assert report is not None and "| promote |" in str(report.data)
