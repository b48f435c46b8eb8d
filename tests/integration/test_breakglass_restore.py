"""Break-glass restore: `siprec-backup restore` brings back every source kind from a cloud
store, with no Prefect server and no blocks, credentials and key from the environment or files."""

from __future__ import annotations

import hashlib
import secrets
import socket
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from siprec_backup.backup import run_backup
from siprec_backup.backup_set import BackupSet, SetMember, write_backup_set
from siprec_backup.catalog import find_backup
from siprec_backup.lab import mariadb_row_counts, redis_key_counts, row_counts, seed_platform
from siprec_backup.lab.object_stores import LAB_BUCKET, MOTO_ACCESS_KEY, MOTO_SECRET_KEY
from siprec_backup.recordings import run_recordings_backup, run_recordings_restore
from siprec_backup.sources.base import Source
from siprec_backup.sources.mysql import MySQLSource
from siprec_backup.sources.postgres import PostgresSource
from siprec_backup.sources.rdb import scan_file
from siprec_backup.sources.redis import RedisSource
from siprec_backup.stream import MasterKey
from tests.conftest import SEED_MB, SeededLab, run_cli

PREFIX = "breakglass"
CLUSTER = "bg"
#: The backup sets the fixture writes: every source, and one whose PostgreSQL backup failed.
FULL_SET = "bg-set-full"
PARTIAL_SET = "bg-set-partial"


@pytest.fixture(scope="module")
def backups(seeded_lab: SeededLab) -> tuple[SeededLab, Path, Path, dict[str, str]]:
    """Every lab source backed up into the lab's S3 emulator; returns the lab, the recordings
    tree, the key file and the environment the CLI needs (store credentials, key)."""
    state = seeded_lab.state
    recordings = Path(tempfile.mkdtemp(prefix="bg-recordings-"))
    seed_platform(state, SEED_MB, recordings, max_files=60)
    key = MasterKey.generate("bg-key")
    store = state.object_store("s3")
    sources: dict[str, Source] = {
        "pg": PostgresSource(state.postgres().target()),
        "maria": MySQLSource(state.mariadb().target()),
        "redis": RedisSource(state.redis().target()),
    }
    manifests = [
        run_backup(source, store, key, source_name=name, cluster=CLUSTER, prefix=PREFIX)
        for name, source in sources.items()
    ]
    manifests.append(
        run_recordings_backup(
            recordings, store, key, source_name="recs", cluster=CLUSTER, prefix=PREFIX
        )
    )
    # Members out of order on purpose: a restore must follow the set order, not the document's.
    members = [
        SetMember(source=m.source, kind=m.source_kind, backup_id=m.backup_id)
        for m in reversed(manifests)
    ]
    started = datetime.now(UTC)
    write_backup_set(store, PREFIX, BackupSet.build(FULL_SET, CLUSTER, started, members))
    failed = SetMember(source="pg", kind="postgres", error="pg_dump exited with status 1")
    partial = BackupSet.build(PARTIAL_SET, CLUSTER, started, [failed, members[0]])
    write_backup_set(store, PREFIX, partial)
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
    return run_cli(
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


def test_redis_into_an_rdb_file(
    backups: tuple[SeededLab, Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    rdb = tmp_path / "x" / "dump.rdb"
    rdb.parent.mkdir()
    done = _restore(backups, "redis", str(rdb))
    assert done.returncode == 0, done.stderr
    assert f"into Redis RDB file {rdb}" in done.stdout
    assert scan_file(str(rdb)).keys == redis_key_counts(backups[0].state.redis().target())
    assert list(rdb.parent.iterdir()) == [rdb]


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
    done = run_cli(
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


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _restore_set(
    backups: tuple[SeededLab, Path, Path, dict[str, str]],
    set_id: str,
    targets: dict[str, str],
    *extra: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`siprec-backup restore --set` with Prefect stopped: PREFECT_API_URL names a closed port
    and no other PREFECT_ variable is set (_cli drops them)."""
    lab, _, key_file, store_env = backups
    store = f"s3://{LAB_BUCKET}/{PREFIX}?endpoint={lab.state.s3_endpoint}"
    args = ["restore", "--store", store, "--cluster", CLUSTER, "--set", set_id, *extra]
    for name, target in targets.items():
        args += ["--to", f"{name}={target}"]
    prefect_down = {"PREFECT_API_URL": f"http://127.0.0.1:{_closed_port()}/api"}
    return run_cli(
        *args, "--key-file", str(key_file), env={**store_env, **prefect_down, **(env or {})}
    )


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root`."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_whole_set_with_prefect_stopped(
    backups: tuple[SeededLab, Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    lab, recordings, key_file, _ = backups
    state = lab.state
    pg, maria, scratch_redis = state.postgres(), state.mariadb(), state.redis("scratch")
    pg_db = lab.scratch("bg_set_restore").dbname
    with maria.connect(admin=True) as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS siprec_bg_set_restore")
    scratch_redis.client().flushall()
    aws_secret = f"bg-aws-secret-{secrets.token_hex(8)}"  # moto accepts any credentials
    passwords = {
        "PGPASSWORD": pg.password,
        "MYSQL_PWD": maria.password,
        "REDISCLI_AUTH": scratch_redis.password,
        "AWS_SECRET_ACCESS_KEY": aws_secret,
    }
    done = _restore_set(
        backups,
        "latest",
        {
            "pg": f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg_db}",
            "maria": f"mysql://{maria.user}@{maria.host}:{maria.port}/siprec_bg_set_restore",
            "redis": f"redis://{scratch_redis.host}:{scratch_redis.port}",
            "recs": str(tmp_path / "restored"),
        },
        "--no-progress",
        env=passwords,
    )
    assert done.returncode == 0, done.stderr

    assert row_counts(pg.conninfo(dbname=pg_db)) == row_counts(pg.conninfo())
    restored = mariadb_row_counts(maria, "siprec_bg_set_restore")
    assert list(restored.values()) == list(mariadb_row_counts(maria).values())
    assert redis_key_counts(scratch_redis.target()) == redis_key_counts(state.redis().target())
    assert _tree(tmp_path / "restored") == _tree(recordings)

    # Off a terminal: one line when each source starts and one when it ends, in set order.
    lines = done.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"{verb} {name}"
        for name in ("pg", "maria", "redis", "recs")
        for verb in ("restoring", "restored")
    ], done.stderr
    # The summary: one row per source whose counts in the backup and restored are equal.
    table = done.stdout.splitlines()
    header = table[0].split()
    assert header[:6] == ["SOURCE", "KIND", "BACKUP_ID", "COUNTS", "IN_BACKUP", "RESTORED"]
    rows = {cells[0]: cells for cells in (line.split() for line in table[1:5])}
    assert set(rows) == {"pg", "maria", "redis", "recs"}
    assert all(cells[4] == cells[5] and cells[4] != "0" for cells in rows.values()), done.stdout
    assert table[-1] == (
        "restored backup set bg-set-full of bg: 4 of 4 sources, every count matches its manifest"
    )

    output = done.stdout + done.stderr
    for secret in (*passwords.values(), key_file.read_text().strip()):
        assert secret not in output


def test_set_missing_target_restores_nothing(
    backups: tuple[SeededLab, Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    lab = backups[0]
    pg = lab.state.postgres()
    pg_db = lab.scratch("bg_set_untouched").dbname
    done = _restore_set(
        backups,
        FULL_SET,
        {
            "pg": f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg_db}",
            "maria": "mysql://u@127.0.0.1:1/x",
            "redis": "redis://127.0.0.1:1",
        },
        env={"PGPASSWORD": pg.password},
    )
    assert done.returncode == 1
    assert done.stderr.startswith("siprec-backup: error: ") and done.stderr.count("\n") == 1
    assert "no --to for recs" in done.stderr
    assert row_counts(pg.conninfo(dbname=pg_db)) == {}


@pytest.mark.parametrize(
    ("set_id", "targets", "fragment"),
    [
        ("no-such-set", {"pg": "/tmp/x"}, "no backup set 'no-such-set' of bg"),
        (PARTIAL_SET, {"recs": "/tmp/x"}, "is partial (no backup of pg); pass --allow-partial"),
        (FULL_SET, {"pg:x": "/tmp/x"}, "--to takes NAME=TARGET"),
        (FULL_SET, {"nope": "/tmp/x"}, "has no source nope"),
    ],
)
def test_set_errors_are_one_line(
    backups: tuple[SeededLab, Path, Path, dict[str, str]],
    set_id: str,
    targets: dict[str, str],
    fragment: str,
) -> None:
    done = _restore_set(backups, set_id, targets)
    assert done.returncode == 1
    assert done.stderr.startswith("siprec-backup: error: ") and done.stderr.count("\n") == 1
    assert fragment in done.stderr, done.stderr


def test_partial_set_with_allow_partial_skips_the_failed_source(
    backups: tuple[SeededLab, Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    done = _restore_set(
        backups, PARTIAL_SET, {"recs": str(tmp_path / "restored")}, "--allow-partial"
    )
    assert done.returncode == 0, done.stderr
    assert "warning: skipping pg: it failed in backup set bg-set-partial" in done.stderr
    assert _tree(tmp_path / "restored") == _tree(backups[1])
    assert "restored backup set bg-set-partial of bg: 1 of 2 sources" in done.stdout


def test_progress_reports_every_ciphertext_byte_read(
    backups: tuple[SeededLab, Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    lab, recordings, key_file, _ = backups
    store = lab.state.object_store("s3")
    manifest = find_backup(store, PREFIX, CLUSTER, "recs")
    key = MasterKey.from_text("bg-key", key_file.read_text())
    reads: list[int] = []
    run_recordings_restore(store, PREFIX, manifest, key, tmp_path / "out", progress=reads.append)
    packs = [obj for role, obj in manifest.extra_objects.items() if role != "index"]
    assert sum(reads) == sum(obj.ciphertext_bytes for obj in (manifest.object, *packs))
    assert len(reads) < sum(reads) // 4096  # one call per read, not per small piece
    assert _tree(tmp_path / "out") == _tree(recordings)
