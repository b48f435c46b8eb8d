"""The demo: the main job end to end on the lab, through the Prefect server.

lab up -> blocks saved -> deployments registered with the documented command -> the nightly
backup deployment run once by the lab's worker (so it shows in the UI's run history) -> the
restore deployment into a scratch database -> row counts compared and printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from psycopg import sql

from deployments.lab_blocks import save_lab_blocks
from siprec_backup.catalog import find_backup
from siprec_backup.errors import SiprecBackupError
from siprec_backup.lab import Lab, LabState
from siprec_backup.sources.postgres import restored_row_counts
from siprec_backup.storage import LocalStore

REPO = Path(__file__).resolve().parent.parent
PREFECT_FILE = "deployments/prefect.yaml"
SCRATCH_DB = "siprec_restore_check"
RUN_TIMEOUT = 1800


def _cli() -> str:
    """This environment's siprec-backup command, as the operator should type it."""
    return str(Path(sys.executable).with_name("siprec-backup"))


def deploy_command() -> list[str]:
    """The documented registration command (README), run from the repository root."""
    prefect = Path(sys.executable).with_name("prefect")
    return [str(prefect), "--no-prompt", "deploy", "--all", "--prefect-file", PREFECT_FILE]


def register_deployments(state: LabState) -> None:
    log = state.root / "deploy.log"
    with open(log, "wb") as out:
        done = subprocess.run(
            deploy_command(),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            env={**os.environ, "PREFECT_API_URL": state.prefect_api_url},
        )
    if done.returncode != 0:
        raise SiprecBackupError(f"registering the deployments failed; see {log}")


def _run(name: str, parameters: dict[str, object] | None = None) -> FlowRun:
    run = run_deployment(name, parameters=parameters or {}, timeout=RUN_TIMEOUT)
    assert isinstance(run, FlowRun)
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        message = run.state.message if run.state else ""
        raise SiprecBackupError(f"deployment {name} run {run.name} ended {state}: {message}")
    return run


def _fresh_scratch_database(state: LabState) -> None:
    pg = state.postgres("primary")
    with psycopg.connect(pg.conninfo(superuser=True, dbname="postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(SCRATCH_DB))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(SCRATCH_DB), sql.Identifier(pg.user)
            )
        )


def run_demo(lab_dir: Path | None, *, scale_mb: int) -> None:
    print(f"1/5 starting the lab (seed data about {scale_mb} MB)...")
    state = Lab(lab_dir).up(scale_mb=scale_mb)
    with temporary_settings(updates={PREFECT_API_URL: state.prefect_api_url}):
        print("2/5 saving blocks (database, storage, encryption key)...")
        blocks = save_lab_blocks(state)
        print(f"3/5 registering deployments: {' '.join(deploy_command()[1:])}")
        register_deployments(state)
        print("4/5 running the nightly backup deployment through the lab's worker...")
        backup_run = _run("backup-postgres/nightly")
        store_root = blocks.store_dir
        manifest = find_backup(LocalStore(store_root), blocks.prefix, "default", blocks.database)
        print(
            f"    backup {manifest.backup_id}: {manifest.object.plaintext_bytes:,} bytes dumped, "
            f"{manifest.object.ciphertext_bytes:,} stored (flow run {backup_run.name})"
        )
        print(f"5/5 restoring it into the scratch database {SCRATCH_DB!r}...")
        _fresh_scratch_database(state)
        restore_run = _run(
            "restore-postgres/on-demand",
            {
                "target": blocks.database,
                "target_dbname": SCRATCH_DB,
                "backup_id": manifest.backup_id,
            },
        )
    pg = state.postgres("primary")
    restored = restored_row_counts(pg.target(SCRATCH_DB))
    width = max(len(t) for t in manifest.tables)
    print(f"\n{'table'.ljust(width)}  {'backup':>12}  {'restored':>12}")
    for table, rows in manifest.tables.items():
        mark = "ok" if restored.get(table) == rows else "MISMATCH"
        print(f"{table.ljust(width)}  {rows:>12,}  {restored.get(table, 0):>12,}  {mark}")
    if any(restored.get(table) != rows for table, rows in manifest.tables.items()):
        raise SiprecBackupError(f"restored rows differ from backup {manifest.backup_id}")
    print(f"\nrestore flow run {restore_run.name}: every table matches the backup's manifest.")
    print(f"Prefect UI: {state.prefect_ui_url}  (runs, logs and artifacts of both flows)")
    print(
        f"Break-glass decrypt, no Prefect needed: {_cli()} decrypt "
        f"{store_root / manifest.object.key} --key-file {blocks.key_file} | pg_restore -l"
    )
    print(f"Stop the lab: {_cli()} lab down{'' if lab_dir is None else f' --dir {lab_dir}'}")
