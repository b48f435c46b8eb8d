"""Break-glass restore: `siprec-backup restore` brings back every source kind from a cloud
store, with no Prefect server and no blocks, credentials and key from the environment or files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from siprec_backup.backup import run_backup
from siprec_backup.lab import mariadb_row_counts, redis_key_counts, row_counts, seed_platform
from siprec_backup.lab.object_stores import LAB_BUCKET, MOTO_ACCESS_KEY, MOTO_SECRET_KEY
from siprec_backup.recordings import run_recordings_backup
from siprec_backup.sources.mysql import MySQLSource
from siprec_backup.sources.postgres import PostgresSource
from siprec_backup.sources.redis import RedisSource
from siprec_backup.stream import MasterKey
from tests.conftest import SEED_MB, SeededLab

CLI = str(Path(sys.executable).with_name("siprec-backup"))
PREFIX = "breakglass"
CLUSTER = "bg"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIPREC_"))}
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env={**clean, **env}, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def backups(seeded_lab: SeededLab) -> tuple[SeededLab, Path, Path, dict[str, str]]:
    """Every lab source backed up into the lab's S3 emulator; returns the lab, the recordings
    tree, the key file and the environment the CLI needs (store credentials, key)."""
    state = seeded_lab.state
    recordings = Path(tempfile.mkdtemp(prefix="bg-recordings-"))
    seed_platform(state, SEED_MB, recordings, max_files=60)
    key = MasterKey.generate("bg-key")
    store = state.object_store("s3")
    common = {"cluster": CLUSTER, "prefix": PREFIX}
    run_backup(PostgresSource(state.postgres().target()), store, key, source_name="pg", **common)
    run_backup(MySQLSource(state.mariadb().target()), store, key, source_name="maria", **common)
    run_backup(RedisSource(state.redis().target()), store, key, source_name="redis", **common)
    run_recordings_backup(recordings, store, key, source_name="recs", **common)
    key_file = recordings.parent / f"{recordings.name}.key"
    key_file.write_text(key.material.hex())
    env = {
        "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return seeded_lab, recordings, key_file, env


def _restore(
    backups: tuple[SeededLab, Path, Path, dict[str, str]],
    source: str,
    to: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    lab, _, key_file, store_env = backups
    store = f"s3://{LAB_BUCKET}/{PREFIX}?endpoint={lab.state.s3_endpoint}"
    return _cli(
        "restore",
        "--store",
        store,
        "--cluster",
        CLUSTER,
        "--source",
        source,
        "--key-file",
        str(key_file),
        "--to",
        to,
        env={**store_env, **(env or {})},
    )


def test_postgres(backups: tuple[SeededLab, Path, Path, dict[str, str]]) -> None:
    lab = backups[0]
    pg = lab.state.postgres()
    scratch = lab.scratch("bg_restore").dbname
    url = f"postgresql://{pg.user}@{pg.host}:{pg.port}/{scratch}"
    done = _restore(backups, "pg", url, {"PGPASSWORD": pg.password})
    assert done.returncode == 0, done.stderr
    assert "restored postgres backup" in done.stdout
    assert row_counts(pg.conninfo(dbname=scratch)) == row_counts(pg.conninfo())
    assert pg.password not in done.stdout + done.stderr


def test_mariadb(backups: tuple[SeededLab, Path, Path, dict[str, str]]) -> None:
    maria = backups[0].state.mariadb()
    with maria.connect(admin=True) as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS siprec_bg_restore")
    url = f"mysql://{maria.user}@{maria.host}:{maria.port}/siprec_bg_restore"
    done = _restore(backups, "maria", url, {"MYSQL_PWD": maria.password})
    assert done.returncode == 0, done.stderr
    restored = mariadb_row_counts(maria, "siprec_bg_restore")
    assert list(restored.values()) == list(mariadb_row_counts(maria).values())


def test_redis(backups: tuple[SeededLab, Path, Path, dict[str, str]]) -> None:
    state = backups[0].state
    scratch = state.redis("scratch")
    scratch.client().flushall()
    done = _restore(
        backups,
        "redis",
        f"redis://{scratch.host}:{scratch.port}",
        {"REDISCLI_AUTH": scratch.password},
    )
    assert done.returncode == 0, done.stderr
    assert redis_key_counts(scratch.target()) == redis_key_counts(state.redis().target())


def test_recordings(backups: tuple[SeededLab, Path, Path, dict[str, str]], tmp_path: Path) -> None:
    recordings = backups[1]
    done = _restore(backups, "recs", str(tmp_path / "restored"))
    assert done.returncode == 0, done.stderr

    def tree(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*")
            if p.is_file()
        }

    assert tree(tmp_path / "restored") == tree(recordings)


@pytest.mark.parametrize(
    ("source", "to", "fragment"),
    [
        ("pg", "postgresql://u:secret-pw@127.0.0.1:1/db", "put the password in $PGPASSWORD"),
        ("pg", "redis://127.0.0.1:1", "restores into a postgresql:// or postgres:// URL"),
        ("recs", "postgresql://u@127.0.0.1:1/db", "restores into a directory"),
        ("nope", "/tmp/x", "no complete backup of bg/nope"),
    ],
)
def test_bad_targets_are_one_line_errors(
    backups: tuple[SeededLab, Path, Path, dict[str, str]], source: str, to: str, fragment: str
) -> None:
    done = _restore(backups, source, to)
    assert done.returncode == 1
    assert done.stderr.startswith("siprec-backup: error: ") and done.stderr.count("\n") == 1
    assert fragment in done.stderr
    assert "secret-pw" not in done.stderr


def test_a_wrong_key_names_the_key_id_it_needs(
    backups: tuple[SeededLab, Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    lab, _, _, env = backups
    wrong = tmp_path / "wrong.key"
    wrong.write_text(MasterKey.generate("other").material.hex())
    store = f"s3://{LAB_BUCKET}/{PREFIX}?endpoint={lab.state.s3_endpoint}"
    done = _cli(
        "restore",
        "--store",
        store,
        "--cluster",
        CLUSTER,
        "--source",
        "recs",
        "--key-file",
        str(wrong),
        "--to",
        str(tmp_path / "out"),
        env=env,
    )
    assert done.returncode == 1
    assert "bg-key" in done.stderr, done.stderr
