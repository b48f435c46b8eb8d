"""Secrets (server passwords, storage credentials, the master key, the levers' stats password,
TSIG secret and SSH key) never appear in logs, artifacts, parameters or states.

The flows run with known secret values (one of them with a wrong password, so that an error path
is searched too); then every log line, artifact, flow run parameter and state the Prefect server
holds, and everything the test process printed, are searched.
"""

from __future__ import annotations

import base64
from typing import Any

import anyio
import pytest
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from blocks.postgres import PostgresDatabase
from deployments.lab_blocks import RESTORE_DATABASES
from flows.backup import backup_platform, backup_source
from flows.restore import restore_platform
from tests.conftest import drain_prefect
from tests.e2e.conftest import Platform

WRONG_PASSWORD = "Wr0ng-but-secret-pw-7c1e9a"


PAGE = 200


async def _everything_recorded() -> str:
    """Every log message, artifact, flow run parameter and state on the server, as one text."""
    parts: list[str] = []
    drain_prefect()
    async with get_client() as client:
        logs = await _all(client.read_logs)
        artifacts = await _all(client.read_artifacts)
        runs = await _all(client.read_flow_runs)
    parts += [log.message for log in logs]
    parts += [f"{a.data} {a.description}" for a in artifacts]
    parts += [f"{run.parameters!r} {run.state!r}" for run in runs]
    assert logs, "the runs logged nothing: the search would prove nothing"
    assert artifacts, "the runs made no artifacts: the search would prove nothing"
    return "\n".join(parts)


async def _all(read: Any) -> list[Any]:
    """Every record a paginated read method of the Prefect client returns."""
    records: list[Any] = []
    while True:
        page = await read(limit=PAGE, offset=len(records))
        records += page
        if len(page) < PAGE:
            return records


def _secret_forms(platform: Platform) -> list[str]:
    material = platform.key.material
    azure_key = platform.state.azure_connection_string.split("AccountKey=")[1].split(";")[0]
    state = platform.state
    private_key = state.ssh().client_key.read_text().splitlines()[1]  # a line of key material
    return [
        *platform.passwords,
        state.haproxy().stats_password,
        state.bind("primary").key_secret,
        private_key,
        WRONG_PASSWORD,
        azure_key,
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

    platform.scratch_database(RESTORE_DATABASES["siprec-db"])
    platform.state.redis("scratch").client().flushall()
    runs: list[Any] = [
        backup_platform(
            platform=blocks.platform, storage=blocks.stores["azure"], return_state=True
        ),
        backup_source(
            kind="postgres",
            block="leak-wrong-password",
            source="leak",
            storage=blocks.storage,
            key=blocks.key,
            cluster="leak",
            return_state=True,
        ),
        restore_platform(
            platform=blocks.platform,
            storage=blocks.stores["azure"],
            targets=blocks.restore_targets,
            target_databases=RESTORE_DATABASES,
            overwrite=True,
            return_state=True,
        ),
    ]
    assert [r.type.value for r in runs] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert "password authentication failed" in str(runs[1].message) or "cannot connect" in str(
        runs[1].message
    )

    recorded = anyio.run(_everything_recorded)
    printed = capfd.readouterr()
    for secret in _secret_forms(platform):
        assert secret not in recorded
        assert secret not in printed.out + printed.err
