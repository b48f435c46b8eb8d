"""The demo: the main job end to end on the lab, through the Prefect server.

lab up -> platform seeded (PostgreSQL, MariaDB, Redis, recordings) -> blocks saved ->
deployments registered with the documented command -> the nightly platform backup deployment
run by the lab's worker into the local store and into each emulated cloud store (S3, GCS,
Azure) -> the backup set restored from S3 by the restore deployment into scratch targets ->
every count compared and printed -> the same set proved by the verify-restore deployment
(throwaway servers, every check, the recovery time), its report in the Prefect UI -> one pass of
the monitor-replication deployment: the replication status table of the lab platform -> a
failover drill: a three-node PostgreSQL cluster behind HAProxy with a DNS record, its primary
killed, the failover deployment run through the API as the UI's "Custom run" does, its report
printed (and kept in the UI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prefect.artifacts import Artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.lab_blocks import (
    PLATFORM,
    RESTORE_DATABASES,
    LabBlocks,
    save_lab_blocks,
)
from deployments.lab_failover import running_cluster
from flows.failover import artifact_key as failover_key
from flows.monitor_replication import artifact_key
from siprec_backup.backup_set import BackupSet, find_backup_set
from siprec_backup.catalog import read_manifest
from siprec_backup.errors import SiprecBackupError
from siprec_backup.lab import Lab, LabState, seed_platform
from siprec_backup.manifest import Manifest
from siprec_backup.verify.report import read_report

REPO = Path(__file__).resolve().parent.parent
PREFECT_FILE = "deployments/prefect.yaml"
RUN_TIMEOUT = 1800
#: The failover cluster block of the drill (the failover deployments' default).
FAILOVER_CLUSTER = "siprec-lab-failover-pg"


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


def _fresh_scratch_targets(state: LabState) -> None:
    """An empty PostgreSQL scratch database owned by the app role (which may not create
    databases itself), and an empty scratch Redis."""
    state.postgres("primary").fresh_database(RESTORE_DATABASES["siprec-db"])
    state.redis("scratch").client().flushall()


def _restored_counts(state: LabState, blocks: LabBlocks, manifest: Manifest) -> dict[str, int]:
    """Count again, in the scratch targets, what the manifest counted at backup time."""
    kind = manifest.source_kind
    if kind == "postgres":
        database = RESTORE_DATABASES[manifest.source]
        return state.postgres().target(database).restored_counts(manifest.tables)
    if kind == "mysql":
        database = RESTORE_DATABASES[manifest.source]
        return state.mariadb().target(database).restored_counts(manifest.tables)
    if kind == "redis":
        return state.redis("scratch").target().restored_counts(manifest.tables)
    files = [p for p in blocks.recordings_restore_dir.rglob("*") if p.is_file()]
    return {"files": len(files), "metadata_xml": sum(p.suffix == ".xml" for p in files)}


def _compare(state: LabState, blocks: LabBlocks, backup_set: BackupSet) -> bool:
    """Print every count of every source, in the backup and restored; True if all match."""
    store = state.object_store("s3")
    all_match = True
    print(f"\n{'source':<18} {'name':<34} {'backup':>10} {'restored':>10}")
    for member in backup_set.members:
        assert member.backup_id is not None
        manifest = read_manifest(
            store, blocks.prefix, blocks.cluster, member.source, member.backup_id
        )
        restored = _restored_counts(state, blocks, manifest)
        for name, count in manifest.tables.items():
            ok = restored.get(name) == count
            all_match &= ok
            got = restored.get(name, 0)
            mark = "ok" if ok else "MISMATCH"
            print(f"{member.source:<18} {name:<34} {count:>10,} {got:>10,}  {mark}")
    return all_match


def _print_replication_status() -> None:
    """One monitor-replication pass through its deployment, and its status table."""
    run = _run("monitor-replication/every-minute", {"platforms": [PLATFORM]})
    data = getattr(Artifact.get(artifact_key(PLATFORM)), "data", None)
    rows = json.loads(data) if isinstance(data, str) else []
    print(f"    flow run {run.name}: replication status of {PLATFORM}")
    print(f"\n{'cluster':<20} {'node':<10} {'role':<10} {'status':<9} {'lag B':>8} {'lag s':>6}")
    for row in rows:
        print(
            f"{row['cluster']:<20} {row['node']:<10} {row['role']:<10} {row['status']:<9} "
            f"{row['lag_bytes']!s:>8} {row['lag_seconds']!s:>6}"
        )


def failover_drill(state: LabState) -> FlowRun:
    """Kill the primary of a fresh three-node PostgreSQL cluster and fail over through the
    ``failover/on-demand`` deployment; the cluster is stopped afterwards (the report stays)."""
    with running_cluster(state, "postgres", state.root / "failover-drill", FAILOVER_CLUSTER) as run:
        print(f"    {FAILOVER_CLUSTER}: primary n1 killed; running failover/on-demand...")
        run.cluster.kill("n1")
        request = {"cluster": FAILOVER_CLUSTER, "reason": "demo: primary killed", "dry_run": False}
        flow_run = _run("failover/on-demand", {"request": request})
        data = getattr(Artifact.get(failover_key("failover", FAILOVER_CLUSTER)), "data", "")
        print(str(data).split("\n```json\n", 1)[0])
        return flow_run


def run_demo(lab_dir: Path | None, *, scale_mb: int) -> None:
    print("1/7 starting the lab (PostgreSQL, MariaDB, Redis, S3/GCS/Azure emulators, Prefect)...")
    state = Lab(lab_dir).up()
    with temporary_settings(updates={PREFECT_API_URL: state.prefect_api_url}):
        print("2/7 saving blocks (sources, stores, key, platform)...")
        blocks = save_lab_blocks(state)
        print(f"3/7 seeding the platform (about {scale_mb} MB in PostgreSQL, recordings tree)...")
        data = seed_platform(state, scale_mb, blocks.recordings_dir)
        print(f"    {data.recordings.audio_files} recordings, {data.recordings.bytes:,} bytes")
        print(f"4/7 registering deployments: {' '.join(deploy_command()[1:])}")
        register_deployments(state)
        print("5/7 running the nightly platform backup deployment into every store...")
        for store_kind, storage in blocks.stores.items():
            run = _run("backup-platform/nightly", {"storage": storage})
            print(f"    {store_kind:<6} ({storage}): flow run {run.name} completed")
        backup_set = find_backup_set(state.object_store("s3"), blocks.prefix, blocks.cluster)
        print(f"6/7 restoring backup set {backup_set.set_id} from S3 into scratch targets...")
        _fresh_scratch_targets(state)
        restore_run = _run(
            "restore-platform/on-demand",
            {
                "storage": blocks.stores["s3"],
                "set_id": backup_set.set_id,
                "targets": blocks.restore_targets,
                "target_databases": RESTORE_DATABASES,
                "overwrite": True,
            },
        )
        if not _compare(state, blocks, backup_set):
            raise SiprecBackupError(f"restored counts differ from backup set {backup_set.set_id}")
        print(f"\nrestore flow run {restore_run.name}: every count matches the backups' manifests.")
        print(f"7/7 verifying backup set {backup_set.set_id} in throwaway servers...")
        verify_run = _run(
            "verify-restore/on-demand",
            {"storage": blocks.stores["s3"], "set_id": backup_set.set_id},
        )
        report = read_report(
            state.object_store("s3"), blocks.prefix, blocks.cluster, backup_set.set_id
        )
        print(f"    flow run {verify_run.name}: {report.summary()}")
        print(f"\n{'part':<18} {'restore s':>9} {'MB/s':>7}  result")
        for row in report.timing_rows():
            print(f"{row['part']:<18} {row['restore_s']:>9} {row['mb_per_s']:>7}  {row['result']}")
        print("\nchecking replication once (monitor-replication/every-minute deployment)...")
        _print_replication_status()
        print("\nfailover drill (failover/on-demand deployment, as the UI's Custom run)...")
        failover_drill(state)
    print(
        f"Prefect UI: {state.prefect_ui_url}  (runs, logs, the verification report and "
        "replication status artifacts, the failover report)"
    )
    print(
        f"Break-glass restore of the whole set, no Prefect needed: {_cli()} restore "
        f"--store {blocks.store_dir / blocks.prefix} --cluster {blocks.cluster} --set latest "
        f"--key-file {blocks.key_file} --to siprec-db=postgresql://USER@HOST:PORT/DB "
        "--to siprec-mariadb=mysql://... --to siprec-redis=redis://... "
        "--to siprec-recordings=/DIR   (passwords in $PGPASSWORD, $MYSQL_PWD, $REDISCLI_AUTH)"
    )
    print(f"Stop the lab: {_cli()} lab down{'' if lab_dir is None else f' --dir {lab_dir}'}")
