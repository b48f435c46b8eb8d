"""Fixtures for flow tests: seeded lab data and blocks saved on the lab's Prefect server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from deployments.lab_blocks import LabBlocks, save_lab_blocks
from siprec_backup.lab import LabState
from siprec_backup.lab.seed import create_schema, fill
from siprec_backup.sources.postgres import PostgresTarget
from siprec_backup.stream import MasterKey


@dataclass(frozen=True)
class Platform:
    """The lab as the flows see it: blocks, the key and a way to make scratch databases."""

    state: LabState
    blocks: LabBlocks
    key: MasterKey
    password: str

    def target(self, dbname: str) -> PostgresTarget:
        pg = self.state.postgres("primary")
        return PostgresTarget(
            host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=dbname
        )

    def scratch_database(self, name: str) -> str:
        """A fresh empty database owned by the app user."""
        pg = self.state.postgres("primary")
        with psycopg.connect(
            pg.conninfo(superuser=True, dbname="postgres"), autocommit=True
        ) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(pg.user)
                )
            )
        return name


@pytest.fixture(scope="session")
def platform(lab: LabState) -> Iterator[Platform]:
    pg = lab.postgres("primary")
    create_schema(pg.conninfo())
    fill(pg.conninfo(), 8)
    blocks = save_lab_blocks(lab)
    key = MasterKey.from_text("lab-master-1", Path(blocks.key_file).read_text())
    yield Platform(lab, blocks, key, pg.password)
