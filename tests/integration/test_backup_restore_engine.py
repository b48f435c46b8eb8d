"""The backup and restore engine against the lab's PostgreSQL, without Prefect: faults included."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import psycopg
import pytest

from siprec_backup.backup import run_backup
from siprec_backup.catalog import find_backup
from siprec_backup.errors import (
    ManifestMismatchError,
    NotFoundError,
    SourceError,
    SourceUnavailableError,
    TransientStorageError,
    TruncatedError,
    WrongKeyError,
)
from siprec_backup.manifest import Manifest
from siprec_backup.restore import run_restore
from siprec_backup.sources.postgres import PostgresSource, PostgresTarget
from siprec_backup.storage import LocalStore, ObjectWriter
from siprec_backup.stream import MasterKey, read_header
from tests.conftest import SeededLab


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _relations(target: PostgresTarget) -> int:
    with target.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_%' AND c.relkind = 'r'"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture(scope="module")
def made(
    seeded_lab: SeededLab, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LocalStore, Manifest, MasterKey]:
    store = LocalStore(tmp_path_factory.mktemp("store"))
    key = MasterKey.generate("engine-test")
    manifest = run_backup(
        PostgresSource(seeded_lab.app_target()),
        store,
        key,
        cluster="lab",
        source_name="siprec",
        prefix="p",
        chunk_size=64 * 1024,
    )
    return store, manifest, key


def test_backup_records_what_a_restore_needs(
    made: tuple[LocalStore, Manifest, MasterKey], seeded_lab: SeededLab
) -> None:
    store, manifest, key = made
    assert find_backup(store, "p", "lab", "siprec") == manifest
    assert manifest.tables == seeded_lab.tables
    assert manifest.source_info["server_version"].startswith("15")
    assert manifest.object.plaintext_bytes > manifest.object.ciphertext_bytes > 0
    assert manifest.object.key_id == key.key_id


def test_restore_round_trip(
    made: tuple[LocalStore, Manifest, MasterKey], seeded_lab: SeededLab
) -> None:
    store, manifest, key = made
    target = seeded_lab.scratch("engine_roundtrip")
    result = run_restore(store, manifest, key, target)
    assert result.tables == manifest.tables
    assert result.plaintext_bytes == manifest.object.plaintext_bytes


def test_wrong_key_restores_nothing(
    made: tuple[LocalStore, Manifest, MasterKey], seeded_lab: SeededLab
) -> None:
    store, manifest, _ = made
    target = seeded_lab.scratch("engine_wrong_key")
    with pytest.raises(WrongKeyError, match="engine-test"):
        run_restore(store, manifest, MasterKey.generate("engine-test"), target)
    assert _relations(target) == 0


def test_truncated_object_restores_nothing(
    made: tuple[LocalStore, Manifest, MasterKey], seeded_lab: SeededLab, tmp_path: Path
) -> None:
    store, manifest, key = made
    copy = LocalStore(tmp_path)
    shutil.copytree(store.root, tmp_path, dirs_exist_ok=True)
    data = tmp_path / manifest.object.key
    with open(data, "r+b") as handle:  # cut exactly at a chunk boundary, in the middle
        header = read_header(handle)
        chunks = (data.stat().st_size - header.size) // (header.chunk_size + 16)
        assert chunks > 4
        handle.truncate(header.size + (chunks // 2) * (header.chunk_size + 16))
    target = seeded_lab.scratch("engine_truncated")
    with pytest.raises(TruncatedError):
        run_restore(copy, manifest, key, target)
    assert _relations(target) == 0


def test_altered_manifest_is_detected(
    made: tuple[LocalStore, Manifest, MasterKey], seeded_lab: SeededLab
) -> None:
    store, manifest, key = made
    altered = manifest.model_copy(update={"tables": {**manifest.tables, "siprec.recordings": 1}})
    with pytest.raises(ManifestMismatchError, match=r"siprec.recordings: expected 1, got \d+"):
        run_restore(store, altered, key, seeded_lab.scratch("engine_altered"))


def test_missing_manifest_and_unknown_id(
    made: tuple[LocalStore, Manifest, MasterKey], tmp_path: Path
) -> None:
    store, manifest, _ = made
    copy = LocalStore(tmp_path)
    shutil.copytree(store.root, tmp_path, dirs_exist_ok=True)
    (tmp_path / manifest.object.key).with_name("manifest.json").unlink()
    with pytest.raises(NotFoundError, match="no manifest"):
        find_backup(copy, "p", "lab", "siprec", manifest.backup_id)
    with pytest.raises(NotFoundError, match="no backup '20990101T000000Z-ffffff'"):
        find_backup(store, "p", "lab", "siprec", "20990101T000000Z-ffffff")


def test_unreachable_database_is_named(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = PostgresTarget(
        host="127.0.0.1", port=port, user="siprec", dbname="siprec", password="not-shown-anywhere"
    )
    store = LocalStore(tmp_path)
    with pytest.raises(SourceUnavailableError) as caught:
        run_backup(
            PostgresSource(target), store, MasterKey.generate("k"), cluster="c", source_name="s"
        )
    message = str(caught.value)
    assert f"cannot connect to PostgreSQL siprec@127.0.0.1:{port}/siprec" in message
    assert "not-shown-anywhere" not in message
    assert _files(tmp_path) == []


class _FailingWriter(ObjectWriter):
    """Wraps a real local writer and fails after `limit` bytes, like a dropped connection."""

    def __init__(self, inner: ObjectWriter, limit: int) -> None:
        super().__init__(inner.key)
        self._inner, self._limit = inner, limit

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self.bytes_written + len(data) > self._limit:
            raise TransientStorageError("connection reset while uploading")
        self._inner.write(data)

    def _commit(self) -> None:
        self._inner.commit()

    def _abort(self) -> None:
        self._inner.abort()


class _FlakyStore(LocalStore):
    def open_writer(self, key: str) -> ObjectWriter:
        return _FailingWriter(super().open_writer(key), limit=200_000)


def test_interrupted_upload_leaves_no_object(seeded_lab: SeededLab, tmp_path: Path) -> None:
    with pytest.raises(TransientStorageError):
        run_backup(
            PostgresSource(seeded_lab.app_target()),
            _FlakyStore(tmp_path),
            MasterKey.generate("k"),
            cluster="c",
            source_name="s",
        )
    assert _files(tmp_path) == []


def test_failed_dump_leaves_no_object(seeded_lab: SeededLab, tmp_path: Path) -> None:
    # A table the backup role may not read makes pg_dump fail part-way.
    with psycopg.connect(seeded_lab.superuser_conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.secret_audit (id int)")
        conn.execute("REVOKE ALL ON public.secret_audit FROM PUBLIC")
    try:
        with pytest.raises(SourceError, match=r"pg_dump of PostgreSQL .* failed"):
            run_backup(
                PostgresSource(seeded_lab.app_target()),
                LocalStore(tmp_path),
                MasterKey.generate("k"),
                cluster="c",
                source_name="s",
            )
    finally:
        with psycopg.connect(seeded_lab.superuser_conninfo(), autocommit=True) as conn:
            conn.execute("DROP TABLE public.secret_audit")
    assert _files(tmp_path) == []


def _wait_for_replica(seeded_lab: SeededLab) -> None:
    with psycopg.connect(seeded_lab.superuser_conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    replica = seeded_lab.state.postgres("replica")
    deadline = time.monotonic() + 30
    with psycopg.connect(replica.conninfo(superuser=True), autocommit=True) as conn:
        while True:
            done = conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)
            ).fetchone()
            if done and done[0]:
                return
            assert time.monotonic() < deadline, "the replica did not catch up in 30 s"
            time.sleep(0.1)


def test_backup_from_the_streaming_replica(seeded_lab: SeededLab, tmp_path: Path) -> None:
    """Operators back up from a standby to spare the primary: same rows, standby's position."""
    _wait_for_replica(seeded_lab)
    replica = seeded_lab.state.postgres("replica").target()
    manifest = run_backup(
        PostgresSource(replica),
        LocalStore(tmp_path),
        MasterKey.generate("k"),
        cluster="c",
        source_name="s",
    )
    assert manifest.source_info["in_recovery"] is True
    assert manifest.tables == seeded_lab.tables


def test_password_never_on_a_command_line(seeded_lab: SeededLab) -> None:
    target = seeded_lab.app_target()
    assert target.password
    assert target.password not in " ".join(target.client_args())
    assert target.client_env()["PGPASSWORD"] == target.password
    assert target.password not in repr(target)
