"""Secrets (database password, master key) never appear in logs, artifacts or parameters.

The flows run with known secret values; then every log line and artifact the Prefect server
holds for those runs, the runs' parameters and everything the test process printed are searched.
"""

from __future__ import annotations

import base64
from typing import Any
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
from pydantic import SecretStr

from blocks.postgres import PostgresDatabase
from flows.backup import backup_postgres
from flows.restore import restore_postgres
from tests.conftest import drain_prefect
from tests.e2e.conftest import Platform

WRONG_PASSWORD = "Wr0ng-but-secret-pw-7c1e9a"


async def _everything_recorded(flow_run_ids: list[UUID]) -> str:
    """All log messages, artifact bodies and parameters of the given flow runs, as one text."""
    parts: list[str] = []
    drain_prefect()
    async with get_client() as client:
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)), limit=200
        )
        parts += [log.message for log in logs]
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids))
        )
        parts += [f"{a.data} {a.description}" for a in artifacts]
        for run_id in flow_run_ids:
            run = await client.read_flow_run(run_id)
            parts.append(repr(run.parameters))
            parts.append(repr(run.state))
    assert logs, "the runs logged nothing: the search would prove nothing"
    assert artifacts, "the runs made no artifacts: the search would prove nothing"
    return "\n".join(parts)


def _secret_forms(platform: Platform) -> list[str]:
    material = platform.key.material
    return [
        platform.password,
        WRONG_PASSWORD,
        material.hex(),
        material.hex().upper(),
        base64.b64encode(material).decode(),
    ]


def test_no_secret_in_logs_artifacts_parameters_or_output(
    platform: Platform, capfd: pytest.CaptureFixture[str]
) -> None:
    blocks = platform.blocks
    pg = platform.state.postgres("primary")
    PostgresDatabase(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=SecretStr(WRONG_PASSWORD),
        dbname=pg.dbname,
    ).save("leak-wrong-password", overwrite=True)

    runs: list[Any] = [
        backup_postgres(
            database=blocks.database,
            storage=blocks.storage,
            key=blocks.key,
            cluster="leak",
            return_state=True,
        ),
        backup_postgres(
            database="leak-wrong-password",
            storage=blocks.storage,
            key=blocks.key,
            cluster="leak",
            return_state=True,
        ),
    ]
    scratch = platform.scratch_database("leak_restore")
    runs.append(
        restore_postgres(
            target=blocks.database,
            target_dbname=scratch,
            storage=blocks.storage,
            key=blocks.key,
            cluster="leak",
            source=blocks.database,
            return_state=True,
        )
    )
    assert [r.type.value for r in runs] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert "password authentication failed" in str(runs[1].message) or "cannot connect" in str(
        runs[1].message
    )

    recorded = anyio.run(_everything_recorded, [r.state_details.flow_run_id for r in runs])
    printed = capfd.readouterr()
    for secret in _secret_forms(platform):
        assert secret not in recorded
        assert secret not in printed.out + printed.err
