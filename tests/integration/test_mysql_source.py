"""The MySQL/MariaDB source and restore target against the lab's real MariaDB 10.11 primary and
replica (no Prefect): round trips, routines/triggers/events, snapshot facts, concurrent writes,
faults, and secrets kept out of argv, errors and manifests."""

from __future__ import annotations

import itertools
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import psutil
import pymysql
import pytest

from siprec_backup.backup import run_backup
from siprec_backup.errors import (
    RestoreError,
    SourceError,
    SourceUnavailableError,
    TargetNotEmptyError,
)
from siprec_backup.lab import LabState, MariaDBEndpoint, fill_mariadb, mariadb_row_counts
from siprec_backup.lab._process import free_ports
from siprec_backup.lab.mariadb import wait_replica_caught_up
from siprec_backup.manifest import Manifest
from siprec_backup.restore import run_restore
from siprec_backup.sources.base import Dump, DumpFacts
from siprec_backup.sources.mysql import (
    MySQLSource,
    MySQLTarget,
    binlog_position,
    quote_identifier,
    replica_status,
)
from siprec_backup.storage import LocalStore
from siprec_backup.stream import MasterKey

pytestmark = pytest.mark.lab

SEED_MB = 3
_names = itertools.count(1)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _scratch_name(what: str) -> str:
    return f"siprec_restore_{what}_{next(_names)}"


def _drop(ep: MariaDBEndpoint, *names: str) -> None:
    with ep.connect(admin=True) as conn, conn.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")


def _checksums(ep: MariaDBEndpoint, database: str) -> dict[str, int]:
    tables = ("recording_sessions", "participants", "media_streams", "recordings")
    with ep.connect(database=database) as conn, conn.cursor() as cur:
        cur.execute("CHECKSUM TABLE " + ", ".join(quote_identifier(t) for t in tables))
        return {str(name).split(".", 1)[1]: int(value) for name, value in cur.fetchall()}


@pytest.fixture(scope="module")
def primary(lab: LabState) -> MariaDBEndpoint:
    ep = lab.mariadb("primary")
    fill_mariadb(ep, SEED_MB)
    return ep


@pytest.fixture(scope="module")
def made(
    primary: MariaDBEndpoint, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LocalStore, Manifest, MasterKey]:
    store = LocalStore(tmp_path_factory.mktemp("mysql-store"))
    key = MasterKey.generate("mysql-test")
    manifest = run_backup(
        MySQLSource(primary.target()), store, key, cluster="lab", source_name="mariadb"
    )
    return store, manifest, key


def test_backup_counts_exactly_the_seeded_rows(
    made: tuple[LocalStore, Manifest, MasterKey], primary: MariaDBEndpoint
) -> None:
    _store, manifest, _key = made
    assert manifest.source_kind == "mysql"
    assert manifest.tables == mariadb_row_counts(primary)
    assert all(n > 0 for n in manifest.tables.values())
    assert manifest.object.plaintext_bytes > manifest.object.ciphertext_bytes > 0


def test_manifest_records_binlog_and_gtid(
    made: tuple[LocalStore, Manifest, MasterKey], primary: MariaDBEndpoint
) -> None:
    _store, manifest, _key = made
    info = manifest.source_info
    assert info["flavor"] == "mariadb"
    assert info["server_version"].startswith("10.11")
    assert info["databases"] == ["siprec"]
    assert info["single_database"] is True
    assert re.fullmatch(r"binlog\.\d{6}", info["binlog_file"])
    assert info["binlog_position"] > 0
    assert re.fullmatch(r"0-1-\d+", info["gtid_position"])
    assert "MariaDB" in info["dump_tool_version"]
    # The dump's own CHANGE MASTER position is the snapshot the rows were counted in.
    assert info["binlog"] == {"file": info["binlog_file"], "position": info["binlog_position"]}
    assert info["snapshot_binlog"] == info["binlog"]
    with primary.connect() as conn:  # nothing was written since: the position is current
        now = binlog_position(conn)
    assert now is not None and now["gtid"] == info["gtid_position"]
    assert (now["file"], now["position"]) == (info["binlog_file"], info["binlog_position"])


def test_restore_round_trip_under_another_name(
    made: tuple[LocalStore, Manifest, MasterKey], primary: MariaDBEndpoint
) -> None:
    store, manifest, key = made
    name = _scratch_name("rt")
    try:
        result = run_restore(store, manifest, key, primary.target(name))
        assert result.tables == manifest.tables
        assert mariadb_row_counts(primary, name) == {
            k.replace("siprec.", f"{name}.", 1): v for k, v in manifest.tables.items()
        }
        assert _checksums(primary, name) == _checksums(primary, "siprec")
        # Routines, triggers and events came back, and work.
        with primary.connect(database=name) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA=%s",
                (name,),
            )
            assert [r[0] for r in cur.fetchall()] == ["session_summary"]
            cur.execute(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA=%s",
                (name,),
            )
            assert [r[0] for r in cur.fetchall()] == ["recordings_format_lower"]
            cur.execute(
                "SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA=%s",
                (name,),
            )
            assert cur.fetchall() == (("purge_failed_sessions", "DISABLED"),)
            cur.execute("CALL session_summary(1)")
            row = cur.fetchone()
            assert row is not None and row[0] == 1 and row[2] >= 2
            while cur.nextset():
                pass
            cur.execute(
                "INSERT INTO recordings (session_id, stream_id, file_path, size_bytes, sha256,"
                " format, duration_ms, metadata_path) VALUES (1, 4, 'x/trigger.WAV', 1, %s,"
                " 'WAV', 1, 'x/trigger.xml')",
                ("0" * 64,),
            )
            cur.execute("SELECT format FROM recordings WHERE file_path = 'x/trigger.WAV'")
            assert cur.fetchone() == ("wav",)  # the restored trigger lowered it
    finally:
        _drop(primary, name)


def test_restore_refuses_a_database_with_tables_unless_overwrite(
    made: tuple[LocalStore, Manifest, MasterKey], primary: MariaDBEndpoint
) -> None:
    store, manifest, key = made
    name = _scratch_name("ow")
    try:
        run_restore(store, manifest, key, primary.target(name))
        with pytest.raises(TargetNotEmptyError, match=rf"{name} \(4 tables\)"):
            run_restore(store, manifest, key, primary.target(name))
        with primary.connect(database=name) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM recordings WHERE id % 2 = 0")
        result = run_restore(store, manifest, key, primary.target(name), overwrite=True)
        assert result.tables == manifest.tables
    finally:
        _drop(primary, name)


def test_several_databases_come_back_under_their_own_names(
    primary: MariaDBEndpoint, tmp_path: Path
) -> None:
    a, b = _scratch_name("multi_a"), _scratch_name("multi_b")
    try:
        with primary.connect() as conn, conn.cursor() as cur:
            for db in (a, b):
                cur.execute(f"CREATE DATABASE {quote_identifier(db)}")
                cur.execute(f"CREATE TABLE {quote_identifier(db)}.t (id INT PRIMARY KEY)")
            cur.execute(f"INSERT INTO {quote_identifier(a)}.t VALUES (1),(2),(3),(4),(5),(6),(7)")
            cur.execute(f"INSERT INTO {quote_identifier(b)}.t VALUES (1), (2), (3)")
        target = replace(primary.target(), databases=(a, b))
        store, key = LocalStore(tmp_path), MasterKey.generate("multi")
        manifest = run_backup(MySQLSource(target), store, key, cluster="c", source_name="s")
        assert manifest.tables == {f"{a}.t": 7, f"{b}.t": 3}
        assert manifest.source_info["single_database"] is False
        _drop(primary, a, b)
        result = run_restore(store, manifest, key, target)
        assert result.tables == {f"{a}.t": 7, f"{b}.t": 3}
    finally:
        _drop(primary, a, b)


# --- concurrent writes ------------------------------------------------------------------------


@dataclass
class _SlowDump:
    """Passes the dump through slowly, so that the writer commits while the dump streams."""

    inner: Dump
    on_first_read: Any = None
    reads: int = 0

    @property
    def stream(self) -> BinaryIO:
        return self  # type: ignore[return-value]

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 1 and self.on_first_read is not None:
            self.on_first_read()
        time.sleep(0.01)
        return self.inner.stream.read(min(size, 32 * 1024) if size > 0 else 32 * 1024)

    def finish(self) -> DumpFacts:
        return self.inner.finish()


@dataclass(frozen=True)
class _SlowSource:
    inner: MySQLSource
    on_first_read: Any = None
    kind: str = "mysql"

    def describe(self) -> str:
        return self.inner.describe()

    def estimate_bytes(self) -> int | None:
        return None

    @contextmanager
    def _open(self) -> Iterator[_SlowDump]:
        with self.inner.open_dump() as dump:
            yield _SlowDump(dump, self.on_first_read)

    def open_dump(self) -> AbstractContextManager[_SlowDump]:
        return self._open()


class _Writer(threading.Thread):
    """Commits new sessions with their children, one transaction each, until stopped."""

    def __init__(self, ep: MariaDBEndpoint) -> None:
        super().__init__(name="mariadb-writer", daemon=True)
        self.ep = ep
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.ep.connect(database=self.ep.dbname) as conn, conn.cursor() as cur:
                cur.execute("SELECT MAX(id) FROM recording_sessions")
                row = cur.fetchone()
                base = int(row[0]) if row and row[0] else 0
                for i in itertools.count(10_000_000 + base):
                    if self.stop.is_set():
                        return
                    cur.execute("START TRANSACTION")
                    cur.execute(
                        "INSERT INTO recording_sessions (id, session_uuid, call_id, started_at,"
                        " state, recorder_node, metadata_xml) VALUES (%s, UUID(), %s, NOW(6),"
                        " 'active', 'srs-w', '<recording/>')",
                        (i, f"w{i}"),
                    )
                    cur.execute(
                        "INSERT INTO media_streams (id, session_id, stream_uuid, label,"
                        " media_type, codec, sdp, local_port, remote_port)"
                        " VALUES (%s, %s, UUID(), '1', 'audio', 'PCMU', 'm=audio', 1, 2)",
                        (i, i),
                    )
                    cur.execute(
                        "INSERT INTO recordings (session_id, stream_id, file_path, size_bytes,"
                        " sha256, format, duration_ms, metadata_path)"
                        " VALUES (%s, %s, %s, 1, SHA2(%s, 256), 'wav', 1, 'm')",
                        (i, i, f"w/{i}.wav", str(i)),
                    )
                    cur.execute("COMMIT")
                    self.commits += 1
        except BaseException as exc:
            self.error = exc


def test_concurrent_writes_never_make_counts_differ_from_the_dump(
    primary: MariaDBEndpoint, tmp_path: Path
) -> None:
    writer = _Writer(primary)
    store, key = LocalStore(tmp_path), MasterKey.generate("concurrent")
    writer.start()
    name = _scratch_name("conc")
    try:
        while writer.commits < 20 and writer.error is None:
            time.sleep(0.01)
        before = mariadb_row_counts(primary)
        commits_at_first_read: list[int] = []
        source = _SlowSource(
            MySQLSource(primary.target()), lambda: commits_at_first_read.append(writer.commits)
        )
        manifest = run_backup(source, store, key, cluster="c", source_name="s")
        commits_after = writer.commits
        after = mariadb_row_counts(primary)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None, writer.error
    # Writes committed before, while the dump streamed, and after.
    assert commits_after > commits_at_first_read[0] + 5
    sessions = "siprec.recording_sessions"
    assert before[sessions] < manifest.tables[sessions] < after[sessions]
    try:
        result = run_restore(store, manifest, key, primary.target(name))  # checks the counts
        assert result.tables == manifest.tables
    finally:
        _drop(primary, name)


# --- faults -----------------------------------------------------------------------------------


def test_unreachable_source(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    target = MySQLTarget(
        host="127.0.0.1",
        port=port,
        user="siprec",
        password="not-shown-anywhere",
        databases=("siprec",),
        connect_timeout=2,
    )
    with pytest.raises(SourceUnavailableError) as caught:
        run_backup(
            MySQLSource(target),
            LocalStore(tmp_path),
            MasterKey.generate("k"),
            cluster="c",
            source_name="s",
        )
    message = str(caught.value)
    assert f"cannot connect to MySQL siprec@127.0.0.1:{port}/siprec" in message
    assert "\n" not in message and "not-shown-anywhere" not in message
    assert _files(tmp_path) == []


def test_wrong_password(primary: MariaDBEndpoint, tmp_path: Path) -> None:
    target = replace(primary.target(), password="wrong-and-secret")
    with pytest.raises(SourceUnavailableError, match="Access denied") as caught:
        run_backup(
            MySQLSource(target),
            LocalStore(tmp_path),
            MasterKey.generate("k"),
            cluster="c",
            source_name="s",
        )
    assert "wrong-and-secret" not in str(caught.value)
    assert _files(tmp_path) == []


def test_missing_reload_privilege_is_named(primary: MariaDBEndpoint, tmp_path: Path) -> None:
    with primary.connect(admin=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE OR REPLACE USER 'noreload'@'%' IDENTIFIED BY 'noreload-pw'")
        cur.execute("GRANT SELECT, SHOW VIEW, EVENT, TRIGGER ON siprec.* TO 'noreload'@'%'")
    try:
        target = replace(primary.target(), user="noreload", password="noreload-pw")
        with pytest.raises(SourceError, match="lacks the RELOAD privilege"):
            run_backup(
                MySQLSource(target),
                LocalStore(tmp_path),
                MasterKey.generate("k"),
                cluster="c",
                source_name="s",
            )
        assert _files(tmp_path) == []
    finally:
        with primary.connect(admin=True) as conn, conn.cursor() as cur:
            cur.execute("DROP USER 'noreload'@'%'")


def test_dump_failing_half_way_leaves_nothing(primary: MariaDBEndpoint, tmp_path: Path) -> None:
    """A view the dump cannot read (its table is gone) fails the dump after the tables' data
    has streamed: SourceError with the tool's message, and nothing in the store."""
    db = _scratch_name("broken")
    try:
        with primary.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {quote_identifier(db)}")
            cur.execute(f"USE {quote_identifier(db)}")
            cur.execute("CREATE TABLE a_data (id INT PRIMARY KEY, v TEXT)")
            cur.execute("INSERT INTO a_data SELECT seq, REPEAT(MD5(seq), 20) FROM seq_1_to_3000")
            cur.execute("CREATE TABLE gone (id INT)")
            cur.execute("CREATE VIEW z_view AS SELECT id FROM gone")
            cur.execute("DROP TABLE gone")
        target = replace(primary.target(), databases=(db,))
        with pytest.raises(SourceError, match=r"failed \(exit \d+\): .*z_view") as caught:
            run_backup(
                MySQLSource(target),
                LocalStore(tmp_path),
                MasterKey.generate("k"),
                cluster="c",
                source_name="s",
            )
        assert "\n" not in str(caught.value)
        assert _files(tmp_path) == []
    finally:
        _drop(primary, db)


def test_server_killing_the_dump_leaves_nothing(primary: MariaDBEndpoint, tmp_path: Path) -> None:
    def kill_dump_connection() -> None:
        with primary.connect(admin=True) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND ID <> "
                "CONNECTION_ID() AND (INFO LIKE 'SELECT /*!40001 SQL_NO_CACHE */%%' OR "
                "COMMAND = 'Sleep')",
                (primary.user,),
            )
            for (conn_id,) in cur.fetchall():
                cur.execute(f"KILL {int(conn_id)}")

    source = _SlowSource(MySQLSource(primary.target()), kill_dump_connection)
    with pytest.raises(SourceError, match=r"failed \(exit \d+\)"):
        run_backup(
            source, LocalStore(tmp_path), MasterKey.generate("k"), cluster="c", source_name="s"
        )
    assert _files(tmp_path) == []


def test_restore_failure_names_the_client_error(
    made: tuple[LocalStore, Manifest, MasterKey], primary: MariaDBEndpoint
) -> None:
    store, manifest, key = made
    with primary.connect(admin=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE OR REPLACE USER 'readonly'@'%' IDENTIFIED BY 'readonly-pw'")
        cur.execute("GRANT SELECT ON `siprec%`.* TO 'readonly'@'%'")
    name = _scratch_name("denied")
    try:
        with primary.connect(admin=True) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {quote_identifier(name)}")
        target = replace(primary.target(name), user="readonly", password="readonly-pw")
        with pytest.raises(RestoreError, match="command denied") as caught:
            run_restore(store, manifest, key, target)
        assert "readonly-pw" not in str(caught.value)
    finally:
        _drop(primary, name)
        with primary.connect(admin=True) as conn, conn.cursor() as cur:
            cur.execute("DROP USER 'readonly'@'%'")


# --- secrets ----------------------------------------------------------------------------------


def test_password_never_on_argv_nor_in_manifest(primary: MariaDBEndpoint, tmp_path: Path) -> None:
    seen: list[list[str]] = []
    modes: list[int] = []

    def inspect_children() -> None:
        for child in psutil.Process().children(recursive=True):
            cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")
            args = [a.decode() for a in cmdline if a]
            if args and args[0].endswith(("mariadb-dump", "mysqldump")):
                seen.append(args)
                options = args[1].split("=", 1)[1]
                modes.append(os.stat(options).st_mode)

    target = primary.target()
    assert primary.password not in repr(target) and primary.password not in target.describe()
    store = LocalStore(tmp_path)
    manifest = run_backup(
        _SlowSource(MySQLSource(target), inspect_children),
        store,
        MasterKey.generate("k"),
        cluster="c",
        source_name="s",
    )
    assert len(seen) == 1
    assert seen[0][1].startswith("--defaults-extra-file=")
    assert not any(primary.password in a for a in seen[0])
    assert stat.S_IMODE(modes[0]) == 0o600
    assert not Path(seen[0][1].split("=", 1)[1]).exists()  # removed after the dump
    assert primary.password not in manifest.to_json().decode()
    for path in _files(tmp_path):
        assert primary.password.encode() not in path.read_bytes()


# --- replica ----------------------------------------------------------------------------------


def test_backup_from_the_replica(lab: LabState, primary: MariaDBEndpoint, tmp_path: Path) -> None:
    replica = lab.mariadb("replica")
    wait_replica_caught_up(primary, replica)
    with replica.connect(admin=True) as conn:
        status = replica_status(conn)
    assert status is not None and status["io_running"] and status["sql_running"]
    assert status["using_gtid"] == "Slave_Pos" and status["source_port"] == primary.port
    with primary.connect(admin=True) as conn:
        assert replica_status(conn) is None
    manifest = run_backup(
        MySQLSource(replica.target()),
        LocalStore(tmp_path),
        MasterKey.generate("k"),
        cluster="c",
        source_name="s",
    )
    assert manifest.tables == mariadb_row_counts(primary)
    with primary.connect() as conn:
        position = binlog_position(conn)
    assert position is not None  # the replica logs what it applied (log-slave-updates)
    assert manifest.source_info["gtid_position"] == position["gtid"]


def test_replica_is_read_only(lab: LabState) -> None:
    replica = lab.mariadb("replica")
    with replica.connect() as conn, conn.cursor() as cur, pytest.raises(pymysql.Error):
        cur.execute("INSERT INTO siprec.recording_sessions (id) VALUES (-1)")
