"""The lab starts real servers that are sane: alive, replicating, password-protected, seeded."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from prefect.settings import get_current_settings
from psycopg import sql
from typer.testing import CliRunner

from siprec_backup.errors import LabError
from siprec_backup.lab import WORK_POOL, Lab, LabState, fill, row_counts
from siprec_backup.lab.cli import lab_app
from siprec_backup.lab.lab import SERVICES as REGISTRY
from siprec_backup.lab.seed import TABLES, schema_bytes
from tests.conftest import lab_services

pytestmark = pytest.mark.lab

ALL_SERVICES = {
    "postgres-primary",
    "postgres-replica",
    "mariadb-primary",
    "mariadb-replica",
    "redis-primary",
    "redis-replica",
    "redis-scratch",
    "http-backends",
    "haproxy",
    "nginx",
    "bind-primary",
    "bind-secondary",
    "sshd",
    "s3",
    "gcs",
    "azurite",
    "prefect-server",
    "prefect-worker",
}
#: The session lab runs every server unless $SIPREC_LAB_SERVICES narrows it while developing.
SERVICES = {s.name for s in lab_services().services}


def new_lab_dir(prefix: str) -> Path:
    """A fresh directory the postgres account can reach (pytest's tmp_path is 0700)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def wait_replica_caught_up(state: LabState, timeout: float = 30.0) -> None:
    """Wait until the replica has replayed everything the primary wrote so far."""
    primary = state.postgres().conninfo(superuser=True)
    deadline = time.monotonic() + timeout
    with psycopg.connect(primary, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication"
                " WHERE application_name = 'replica1'"
            ).fetchone()
            if row is not None and row[0] is not None and row[0] <= 0:
                return
            assert time.monotonic() < deadline, f"replica still behind by {row} bytes"
            time.sleep(0.05)


def test_the_registry_holds_every_server() -> None:
    assert {s.name for s in REGISTRY} == ALL_SERVICES


def test_every_service_is_alive(lab: LabState) -> None:
    assert set(lab.services) == SERVICES
    assert lab.alive() == dict.fromkeys(SERVICES, True)
    for rec in lab.services.values():
        assert rec.log.is_file()
        if rec.name != "prefect-worker":
            assert rec.host == "127.0.0.1"
            assert rec.port not in (None, 5432, 3306, 6379)


def test_up_again_is_a_no_op(lab: LabState) -> None:
    again = Lab(lab.root).up()
    assert {n: r.pid for n, r in again.services.items()} == {
        n: r.pid for n, r in lab.services.items()
    }


def test_replica_streams_as_replica1(lab: LabState) -> None:
    with psycopg.connect(lab.postgres().conninfo(superuser=True)) as conn:
        rows = conn.execute("SELECT application_name, state FROM pg_stat_replication").fetchall()
    assert ("replica1", "streaming") in rows
    with psycopg.connect(lab.postgres("replica").conninfo()) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row == (True,)


def test_app_role_needs_its_password(lab: LabState) -> None:
    pg = lab.postgres()
    with psycopg.connect(pg.conninfo()) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("siprec",)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(pg.dsn(), connect_timeout=5, password="wrong").close()
    mode = stat.S_IMODE(os.stat(lab.state_file).st_mode)
    assert mode == 0o600
    assert pg.password not in repr(pg)


def test_seed_fill_reaches_every_table(lab: LabState) -> None:
    conninfo = lab.postgres().conninfo()
    before_mb = schema_bytes(conninfo) // (1024 * 1024)
    stats = fill(conninfo, before_mb + 20)
    assert stats.bytes >= (before_mb + 19) * 1024 * 1024
    assert stats.bytes <= (before_mb + 24) * 1024 * 1024
    assert set(stats.rows) == set(TABLES)
    assert all(n > 0 for n in stats.rows.values()), stats.rows

    with psycopg.connect(conninfo) as conn:
        exact = {
            t: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("siprec", t))
            ).fetchone()
            for t in TABLES
        }
    assert row_counts(conninfo) == {t: row[0] for t, row in exact.items() if row}

    wait_replica_caught_up(lab)
    assert row_counts(lab.postgres("replica").conninfo()) == row_counts(conninfo)


def test_prefect_server_and_worker(lab: LabState) -> None:
    assert lab.prefect_api_url == os.environ["PREFECT_API_URL"]
    # Prefect was imported (at collection) before the lab started: it must use the lab anyway.
    assert get_current_settings().api.url == lab.prefect_api_url
    assert httpx.get(f"{lab.prefect_api_url}/health", timeout=5).json() is True
    pool = httpx.get(f"{lab.prefect_api_url}/work_pools/{WORK_POOL}", timeout=5)
    assert pool.status_code == 200
    assert pool.json()["type"] == "process"
    workers = httpx.post(
        f"{lab.prefect_api_url}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=5
    ).json()
    assert any(w["status"] == "ONLINE" for w in workers)


def test_status_command(lab: LabState) -> None:
    runner = CliRunner()
    result = runner.invoke(lab_app, ["status", "--dir", str(lab.root)])
    assert result.exit_code == 0, result.output
    assert lab.prefect_api_url in result.output
    for password in (lab.postgres().password, lab.mariadb().password, lab.redis().password):
        assert password not in result.output

    result = runner.invoke(lab_app, ["status", "--dir", str(lab.root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["services"]) == SERVICES
    assert all(s["alive"] for s in data["services"].values())
    assert "secrets" not in data
    for password in (lab.postgres().password, lab.mariadb().password, lab.redis().password):
        assert password not in result.output


def test_restart_dead_servers_and_keep_data() -> None:
    """A databases-only lab: a dead server is restarted alone; down --keep then up restarts
    everything on the same data, ports and password; down removes the directory."""
    root = new_lab_dir("siprec-lab-test-restart-")
    the_lab = Lab(root, services=[s for s in REGISTRY if s.group in ("postgres", "prefect")])
    try:
        state = the_lab.up(prefect=False, scale_mb=2)
        assert set(state.services) == {"postgres-primary", "postgres-replica"}
        with pytest.raises(LabError, match="not part of the lab"):
            _ = state.prefect_api_url
        counts = row_counts(state.postgres().conninfo())
        assert counts["recording_sessions"] > 0

        replica = state.services["postgres-replica"]
        the_lab.service("postgres-replica").stop(replica)
        assert not replica.alive()
        again = the_lab.up(prefect=False)
        assert again.services["postgres-primary"].pid == state.services["postgres-primary"].pid
        assert again.services["postgres-replica"].pid != replica.pid
        assert again.services["postgres-replica"].port == replica.port

        the_lab.down(keep=True)
        assert not any(again.alive().values())
        assert the_lab.state().services.keys() == again.services.keys()
        restarted = the_lab.up(prefect=False)
        assert restarted.postgres().port == again.postgres().port
        assert row_counts(restarted.postgres().conninfo()) == counts
        wait_replica_caught_up(restarted)
    finally:
        the_lab.down()
    assert not root.exists()
    with pytest.raises(LabError, match="not running"):
        the_lab.state()


def test_refuses_a_directory_that_is_not_a_lab() -> None:
    root = new_lab_dir("siprec-lab-test-foreign-")
    (root / "precious.txt").write_text("not a lab")
    try:
        with pytest.raises(LabError, match="not a lab directory"):
            Lab(root).up(prefect=False)
        with pytest.raises(LabError, match="not a lab directory"):
            Lab(root).down()
        assert (root / "precious.txt").exists()
    finally:
        (root / "precious.txt").unlink()
        root.rmdir()
