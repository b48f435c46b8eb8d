"""Fixtures for flow tests: the seeded lab platform plus blocks saved on the lab's Prefect
server."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from deployments.lab_blocks import KEY_ID, LabBlocks, save_lab_blocks
from siprec_backup.lab import LabState, PlatformData, seed_platform
from siprec_backup.stream import MasterKey
from tests.conftest import SEED_MB, SeededLab, drain_prefect

#: Recording files of the e2e platform (small: the flows, not the volume, are under test).
E2E_RECORDINGS = 150


@dataclass(frozen=True)
class Platform:
    """The lab as the flows see it: saved blocks, the known secrets, scratch databases."""

    seeded: SeededLab
    blocks: LabBlocks
    key: MasterKey
    data: PlatformData

    @property
    def state(self) -> LabState:
        return self.seeded.state

    @property
    def passwords(self) -> list[str]:
        """Every server password of the lab platform (none may ever be printed)."""
        return [
            self.state.postgres().password,
            self.state.mariadb().password,
            self.state.redis().password,
        ]

    def scratch_database(self, name: str) -> str:
        return self.seeded.scratch(name).dbname


@pytest.fixture(scope="session")
def platform(seeded_lab: SeededLab) -> Platform:
    blocks = save_lab_blocks(seeded_lab.state)
    data = seed_platform(seeded_lab.state, SEED_MB, blocks.recordings_dir, max_files=E2E_RECORDINGS)
    key = MasterKey.from_text(KEY_ID, Path(blocks.key_file).read_text())
    return Platform(seeded_lab, blocks, key, data)


async def _read_events(name: str, resource_id: str) -> list[Any]:
    async with get_client() as client:
        page = await client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=[name]),
                resource=EventResourceFilter(id=[resource_id]),
            ),
            limit=10,  # the server refuses the client's default of 100
        )
    return list(page.events)


def wait_for_events(name: str, resource_id: str, timeout: float = 30) -> list[Any]:
    """The server persists events in batches: poll until ours arrive."""
    drain_prefect()
    deadline = time.monotonic() + timeout
    while True:
        found = anyio.run(_read_events, name, resource_id)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


async def _latest_artifact(key: str) -> Any:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, f"no artifact {key}"
    return found[0]


def artifact(key: str) -> Any:
    """The newest artifact with ``key`` on the lab's Prefect server (after sending what is
    queued)."""
    drain_prefect()
    return anyio.run(_latest_artifact, key)
