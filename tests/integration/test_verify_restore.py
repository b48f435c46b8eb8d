"""Restore verification on the real lab: a good backup set is verified check by check in
throwaway servers; every tampering and fault case gives a failed check naming it (or a clear
error), never a "verified" mark; the scratch servers are gone afterwards in every case."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from siprec_backup.backup import run_backup
from siprec_backup.backup_set import BackupSet, SetMember, write_backup_set
from siprec_backup.catalog import list_backups
from siprec_backup.lab import _process, seed_platform
from siprec_backup.manifest import MANIFEST_NAME, Manifest, backup_prefix, new_backup_id
from siprec_backup.recordings import run_recordings_backup
from siprec_backup.scratch import start_scratch
from siprec_backup.sources.mysql import MySQLSource
from siprec_backup.sources.postgres import PostgresSource
from siprec_backup.sources.redis import RedisSource
from siprec_backup.storage import LocalStore
from siprec_backup.stream import MasterKey, read_header
from siprec_backup.verify.config import RecordingReferences, SqlCheck, VerificationConfig
from siprec_backup.verify.report import VerificationReport, record_verification
from siprec_backup.verify.verifier import SetVerifier
from tests.conftest import SEED_MB, SeededLab, run_cli

CLUSTER = "vf"
#: Small chunks, so that a 1-2 MB dump has chunks in its middle to corrupt.
CHUNK = 64 << 10
#: The CLI must not need a Prefect server: point it at a port where nothing listens.
NO_PREFECT = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
CONFIG = VerificationConfig(
    checks=[
        SqlCheck(
            name="recordings have hashes",
            source="db",
            sql="SELECT count(*) FROM siprec.recordings WHERE sha256 IS NULL",
            expected="0",
        ),
        SqlCheck(
            name="sessions exist",
            source="maria",
            sql="SELECT count(*) > 0 FROM recording_sessions",
            expected="1",
        ),
    ],
    references=RecordingReferences(source="db"),
)


@dataclass(frozen=True)
class Backups:
    """One backup of each lab source in a local store, and the key."""

    store_dir: Path
    recordings: Path
    key: MasterKey
    manifests: dict[str, Manifest]

    def copy(self, tmp_path: Path) -> LocalStore:
        """A private copy of the store for one test to damage."""
        target = tmp_path / "store"
        shutil.copytree(self.store_dir, target)
        return LocalStore(target)

    def member(self, source: str) -> SetMember:
        manifest = self.manifests[source]
        return SetMember(source=source, kind=manifest.source_kind, backup_id=manifest.backup_id)


@pytest.fixture(scope="module")
def backups(seeded_lab: SeededLab, tmp_path_factory: pytest.TempPathFactory) -> Backups:
    state = seeded_lab.state
    recordings = tmp_path_factory.mktemp("vf-recordings")
    seed_platform(state, SEED_MB, recordings, max_files=40)
    store_dir = tmp_path_factory.mktemp("vf-store")
    store = LocalStore(store_dir)
    key = MasterKey.generate("vf-key")
    common = {"cluster": CLUSTER, "chunk_size": CHUNK}
    manifests = {
        "db": run_backup(
            PostgresSource(state.postgres().target()), store, key, source_name="db", **common
        ),
        "maria": run_backup(
            MySQLSource(state.mariadb().target()), store, key, source_name="maria", **common
        ),
        "redis": run_backup(
            RedisSource(state.redis().target()), store, key, source_name="redis", **common
        ),
        "recs": run_recordings_backup(recordings, store, key, source_name="recs", **common),
    }
    return Backups(store_dir, recordings, key, manifests)


def _set(store: LocalStore, members: list[SetMember]) -> BackupSet:
    backup_set = BackupSet.build(new_backup_id(), CLUSTER, datetime.now(UTC), members)
    write_backup_set(store, "", backup_set)
    return backup_set


def _verify(
    store: LocalStore,
    backup_set: BackupSet,
    key: MasterKey,
    config: VerificationConfig | None = None,
) -> VerificationReport:
    """Verify, record the result, and check that nothing of the scratch servers is left.

    The work directory is the default one under /tmp: pytest's tmp_path is private to root,
    and the scratch servers run as the postgres and mysql accounts when the tests run as root.
    """
    with SetVerifier(store, "", backup_set, key, config=config) as verifier:
        report = verifier.run()
        work_dir = verifier.work_dir
        servers = [i.pid for i in verifier._instances.values() if getattr(i, "pid", None)]
    assert not work_dir.exists()
    for pid in servers:
        assert not _process.is_alive(pid, None), "a scratch server outlived the verification"
    record_verification(store, "", report)
    return report


def _failed(report: VerificationReport) -> dict[str, str]:
    return {f"{c.part}: {c.name}": c.actual for c in report.failed}


def _marks(store: LocalStore) -> dict[str, str]:
    return {e.source: e.row()["verified"] for e in list_backups(store)}


def test_a_good_set_is_verified_check_by_check(backups: Backups, tmp_path: Path) -> None:
    store = backups.copy(tmp_path)
    backup_set = _set(store, [backups.member(s) for s in ("recs", "redis", "db", "maria")])
    report = _verify(store, backup_set, backups.key, CONFIG)

    assert report.passed, report.summary()
    assert [p.source for p in report.parts] == ["db", "maria", "redis", "recs"]
    names = {f"{c.part}: {c.name}" for c in report.checks}
    for expected in (
        "db: stream authenticates end to end",
        "db: pg_restore succeeds",
        "db: stream matches the manifest (sizes, sha256)",
        "db: rows siprec.recordings",
        "maria: SQL load succeeds",
        "maria: rows siprec.recordings",
        "redis: RDB complete and valid",
        "redis: keys db0",
        "recs: every recording restores with its sha256",
        "recs: every metadata XML parses",
        "platform: every recording db references is restored",
        "platform: every restored recording is referenced by db",
        "platform: recordings have hashes",
        "platform: sessions exist",
    ):
        assert expected in names
    for part in report.parts:
        assert part.restore_seconds > 0 and part.plaintext_bytes > 0
    assert all(p.scratch_seconds > 0 for p in report.parts if p.kind != "recordings")
    assert set(_marks(store).values()) != {"no"}
    assert not any(mark.startswith(("no", "FAILED")) for mark in _marks(store).values())


def _corrupt_middle_chunk(store: LocalStore, manifest: Manifest) -> None:
    path = store.root / manifest.object.key
    size = path.stat().st_size
    assert size > 3 * CHUNK, "the dump is too small to have a middle chunk"
    with path.open("r+b") as handle:
        handle.seek(size // 2)
        byte = handle.read(1)
        handle.seek(size // 2)
        handle.write(bytes([byte[0] ^ 0x01]))


def _truncate_at_chunk_boundary(store: LocalStore, manifest: Manifest) -> None:
    path = store.root / manifest.object.key
    with path.open("rb") as handle:
        header = read_header(handle).size
    os.truncate(path, header + 2 * (CHUNK + 16))


def _alter_manifest_row_count(store: LocalStore, manifest: Manifest) -> None:
    tables = dict(manifest.tables)
    tables["siprec.recordings"] += 1
    altered = manifest.model_copy(update={"tables": tables})
    key = backup_prefix("", CLUSTER, manifest.source, manifest.backup_id) + MANIFEST_NAME
    store.put_bytes(key, altered.to_json())


TAMPERING: dict[str, tuple[Callable[[LocalStore, Manifest], None], str, str]] = {
    "corrupted chunk in the middle": (
        _corrupt_middle_chunk,
        "db: stream authenticates end to end",
        "does not verify",
    ),
    "truncated at a chunk boundary": (
        _truncate_at_chunk_boundary,
        "db: stream authenticates end to end",
        "cut at a chunk boundary",
    ),
    "manifest altered": (_alter_manifest_row_count, "db: rows siprec.recordings", ""),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_fails_the_check_it_breaks(backups: Backups, tmp_path: Path, case: str) -> None:
    store = backups.copy(tmp_path)
    damage, check, message = TAMPERING[case]
    damage(store, backups.manifests["db"])
    report = _verify(store, _set(store, [backups.member("db")]), backups.key)

    assert not report.passed
    failed = _failed(report)
    assert check in failed, failed
    assert message in failed[check].lower()
    if case == "manifest altered":
        (bad,) = report.failed
        rows = backups.manifests["db"].tables["siprec.recordings"]
        assert (bad.expected, bad.actual) == (str(rows + 1), str(rows))
    assert _marks(store)["db"].startswith("FAILED")


def test_a_wrong_key_fails_every_stream(backups: Backups, tmp_path: Path) -> None:
    store = backups.copy(tmp_path)
    backup_set = _set(store, [backups.member("db"), backups.member("redis")])
    report = _verify(store, backup_set, MasterKey.generate("vf-key"))
    failed = _failed(report)
    for source in ("db", "redis"):
        assert "key" in failed[f"{source}: stream authenticates end to end"].lower()
    assert {_marks(store)[s][:6] for s in ("db", "redis")} == {"FAILED"}


def test_a_recordings_pack_deleted_from_storage_is_named(backups: Backups, tmp_path: Path) -> None:
    store = backups.copy(tmp_path)
    manifest = backups.manifests["recs"]
    pack = manifest.object.key
    (store.root / pack).unlink()
    report = _verify(store, _set(store, [backups.member("recs")]), backups.key)
    failed = _failed(report)
    assert pack in failed["recs: every recording restores with its sha256"]
    assert _marks(store)["recs"].startswith("FAILED")


def test_orphans_in_either_direction_are_reported_by_id(
    backups: Backups, seeded_lab: SeededLab, tmp_path: Path
) -> None:
    """A recording file lost before the backup, and a stray file nobody references."""
    store = backups.copy(tmp_path)
    tree = tmp_path / "recordings"
    shutil.copytree(backups.recordings, tree)
    lost = sorted(p for p in tree.rglob("*.wav"))[0]
    lost_rel = lost.relative_to(tree).as_posix()
    lost.unlink()
    (tree / "stray.wav").write_bytes(b"RIFF....WAVE")
    recs = run_recordings_backup(tree, store, backups.key, cluster=CLUSTER, source_name="recs")
    with seeded_lab.state.postgres().target().connect() as conn:
        row = conn.execute(
            "SELECT id FROM siprec.recordings WHERE file_path = %s", (lost_rel,)
        ).fetchone()
    assert row is not None
    members = [
        backups.member("db"),
        SetMember(source="recs", kind="recordings", backup_id=recs.backup_id),
    ]
    config = VerificationConfig(
        checks=[SqlCheck(name="bad query", source="db", sql="SELECT nope", expected="0")],
        references=RecordingReferences(source="db"),
    )
    report = _verify(store, _set(store, members), backups.key, config)
    failed = _failed(report)
    assert failed["platform: every recording db references is restored"] == (
        f"1 missing: id {row[0]} ({lost_rel})"
    )
    assert failed["platform: every restored recording is referenced by db"] == (
        "1 unreferenced: stray.wav"
    )
    assert "nope" in failed["platform: bad query"]
    assert report.parts[0].passed and report.parts[1].passed  # each part restored fine


def test_a_scratch_server_that_fails_to_start_fails_the_part(
    backups: Backups, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-binaries"
    empty.mkdir()
    monkeypatch.setenv("SIPREC_LAB_PG_BIN", str(empty))
    store = backups.copy(tmp_path)
    report = _verify(store, _set(store, [backups.member("db")]), backups.key)
    failed = _failed(report)
    assert str(empty) in failed["db: scratch instance starts"]
    assert _marks(store)["db"].startswith("FAILED")


def test_a_partial_set_is_not_verified(backups: Backups, tmp_path: Path) -> None:
    store = backups.copy(tmp_path)
    members = [SetMember(source="db", kind="postgres", error="pg_dump failed: disk full")]
    report = _verify(store, _set(store, members), backups.key)
    assert _failed(report) == {"db: backup present in the set": "pg_dump failed: disk full"}


def test_the_cli_verifies_a_set_without_prefect(backups: Backups, tmp_path: Path) -> None:
    store = backups.copy(tmp_path)
    backup_set = _set(store, [backups.member("db"), backups.member("recs")])
    checks = tmp_path / "checks.yaml"
    checks.write_text(
        "checks:\n"
        "  - {name: one, source: db, sql: SELECT 1, expected: '1'}\n"
        "references: {source: db}\n"
    )
    key_file = tmp_path / "key"
    key_file.write_text(backups.key.material.hex())
    args = ["verify", "--store-dir", str(store.root), "--cluster", CLUSTER, "--key-file"]
    done = run_cli(*args, str(key_file), "--checks", str(checks), env=NO_PREFECT)
    assert done.returncode == 0, done.stderr
    assert f"backup set {backup_set.set_id} of {CLUSTER} verified" in done.stdout
    assert "every recording db references is restored" in done.stdout
    assert _marks(store)["db"] != "no"
    assert backups.key.material.hex() not in done.stdout + done.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  - {name: two, source: db, sql: SELECT 1, expected: '2'}\n")
    done = run_cli(*args, str(key_file), "--checks", str(bad), "--no-record", env=NO_PREFECT)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"siprec-backup: error: backup set {backup_set.set_id} of {CLUSTER} FAILED "
        "verification: platform: two (expected 2, got 1)"
    )
    assert _marks(store)["db"] != "no" and not _marks(store)["db"].startswith("FAILED")

    typo = tmp_path / "typo.yaml"
    typo.write_text("checks:\n  - {name: x, source: db, sql: SELECT 1}\n")
    done = run_cli(*args, str(key_file), "--checks", str(typo), env=NO_PREFECT)
    assert done.returncode == 1
    assert done.stderr == f"siprec-backup: error: {typo}: checks.0.expected: Field required\n"


def test_a_verification_killed_mid_run_is_swept_by_the_next(
    backups: Backups, tmp_path: Path
) -> None:
    """The work directory of a dead verification, with its scratch server still running, is
    removed (server killed) when the next verification starts in the same place."""
    base = tmp_path / "base"
    base.mkdir()
    abandoned = base / "siprec-verify-dead"
    abandoned.mkdir()
    server = start_scratch("redis", abandoned)
    try:
        owner = subprocess.Popen(["true"])  # the verification process, which then died
        owner.wait()
        (abandoned / "owner").write_text(f"{owner.pid} None\n")
        assert server.pid is not None and _process.is_alive(server.pid, None)
        store = backups.copy(tmp_path)
        with SetVerifier(store, "", _set(store, []), backups.key, work_dir=base):
            assert not abandoned.exists()
            assert not _process.is_alive(server.pid, None)
    finally:
        server.close()  # nothing left to stop when the sweep worked; no leak when it did not
