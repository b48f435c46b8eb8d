"""Fixtures for flow tests: the seeded lab plus blocks saved on the lab's Prefect server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from deployments.lab_blocks import KEY_ID, LabBlocks, save_lab_blocks
from siprec_backup.lab import LabState
from siprec_backup.stream import MasterKey
from tests.conftest import SeededLab


@dataclass(frozen=True)
class Platform:
    """The lab as the flows see it: saved blocks, the known secrets, scratch databases."""

    seeded: SeededLab
    blocks: LabBlocks
    key: MasterKey
    password: str

    @property
    def state(self) -> LabState:
        return self.seeded.state

    def scratch_database(self, name: str) -> str:
        return self.seeded.scratch(name).dbname


@pytest.fixture(scope="session")
def platform(seeded_lab: SeededLab) -> Platform:
    blocks = save_lab_blocks(seeded_lab.state)
    key = MasterKey.from_text(KEY_ID, Path(blocks.key_file).read_text())
    return Platform(seeded_lab, blocks, key, seeded_lab.state.postgres().password)
