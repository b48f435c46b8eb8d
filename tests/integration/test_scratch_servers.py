"""Scratch servers for restore verification against the real binaries and the lab (no Prefect):
a tiny real backup of each kind restores into a brand-new PostgreSQL cluster, MariaDB server and
Redis server, which answer queries and vanish at close; failed starts leave nothing behind;
servers named by the operator (existing_scratch) get a database of their own or must be empty.
Passwords never show in descriptions, reprs or errors."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import psycopg
import pytest

from siprec_backup.backup import run_backup
from siprec_backup.errors import ConfigurationError, ScratchQueryError, ScratchStartError
from siprec_backup.lab import LabState
from siprec_backup.lab._process import is_alive, port_is_free
from siprec_backup.manifest import Manifest
from siprec_backup.restore import run_restore
from siprec_backup.scratch import (
    ScratchInstance,
    _common,
    existing_scratch,
    scratch_server,
    start_scratch,
)
from siprec_backup.scratch.redis import RedisScratch
from siprec_backup.sources.base import Source
from siprec_backup.sources.mysql import MySQLSource, MySQLTarget
from siprec_backup.sources.postgres import PostgresSource, PostgresTarget
from siprec_backup.sources.redis import RdbFileTarget, RedisSource
from siprec_backup.storage import LocalStore
from siprec_backup.stream import MasterKey

pytestmark = pytest.mark.lab

KINDS = ("postgres", "mysql", "redis")
PG_DB = "siprec_scratch_src"
MY_DB = "siprec_scratch_src"
ROWS = 321
#: The check query each kind answers after the restore, and its answer.
CHECK = {
    "postgres": ("SELECT count(*), sum(duration_ms) FROM calls", [(ROWS, ROWS * (ROWS + 1) // 2)]),
    "mysql": ("SELECT COUNT(*), SUM(duration_ms) FROM calls", [(ROWS, ROWS * (ROWS + 1) // 2)]),
}
STREAM = {
    "postgres": "SELECT g FROM generate_series(1, 50000) AS g",
    "mysql": "SELECT seq FROM seq_1_to_50000",
}


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A directory the server accounts (postgres, mysql) can traverse: not pytest's tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="siprec-scratch-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def key() -> MasterKey:
    return MasterKey.generate("scratch-test")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    return LocalStore(tmp_path_factory.mktemp("scratch-store"))


def _pg_source(lab: LabState) -> PostgresSource:
    target = lab.postgres().fresh_database(PG_DB)
    with target.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE calls (id int PRIMARY KEY, call_id text, duration_ms bigint)")
        conn.execute(
            "INSERT INTO calls SELECT g, 'call-' || g, g FROM generate_series(1, %s) AS g", (ROWS,)
        )
    return PostgresSource(target)


def _my_source(lab: LabState) -> MySQLSource:
    ep = lab.mariadb()
    with ep.connect(admin=True) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {MY_DB}")
        cur.execute(f"CREATE DATABASE {MY_DB}")
    with ep.connect(database=MY_DB) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE calls (id INT PRIMARY KEY, call_id TEXT, duration_ms BIGINT)")
        cur.execute(f"INSERT INTO calls SELECT seq, CONCAT('call-', seq), seq FROM seq_1_to_{ROWS}")
        # Objects with the application user as DEFINER: the scratch root must recreate them.
        cur.execute("CREATE TABLE audit (n INT)")
        cur.execute(
            "CREATE TRIGGER calls_ai AFTER INSERT ON calls FOR EACH ROW "
            "INSERT INTO audit VALUES (1)"
        )
        cur.execute("CREATE PROCEDURE calls_count() SELECT COUNT(*) FROM calls")
    return MySQLSource(replace(ep.target(), databases=(MY_DB,)))


def _redis_source(lab: LabState) -> RedisSource:
    """A tiny data set on the lab's scratch Redis (the primary's seed data is shared by the
    whole session and must stay as it is)."""
    server = lab.redis("scratch")
    with server.client(0) as c0, server.client(1) as c1:
        c0.flushall()
        for n in range(ROWS):
            c0.set(f"siprec:call:{n}", f"state-{n}")
        c1.rpush("siprec:queue", *range(10))
    return RedisSource(server.target())


@pytest.fixture(scope="module")
def backups(lab: LabState, store: LocalStore, key: MasterKey) -> dict[str, Manifest]:
    """One tiny real backup of each kind from the lab."""
    sources: dict[str, Source] = {
        "postgres": _pg_source(lab),
        "mysql": _my_source(lab),
        "redis": _redis_source(lab),
    }
    return {
        kind: run_backup(source, store, key, cluster="lab", source_name=f"scratch-{kind}")
        for kind, source in sources.items()
    }


def _password(target: object) -> str:
    password = getattr(target, "password", None)
    assert isinstance(password, str) and len(password) >= 20
    return password


def _assert_gone(pid: int, children: list[int], port: int, directory: Path) -> None:
    assert not is_alive(pid, None)
    assert not any(
        psutil.pid_exists(c) and psutil.Process(c).status() != "zombie" for c in children
    )
    assert port_is_free(port)
    assert not directory.exists()


def _connectable_and_empty(kind: str, target: object) -> None:
    """The target answers with its password and holds nothing yet."""
    if isinstance(target, PostgresTarget):
        with target.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public'"
            ).fetchone()
        assert row == (0,)
    elif isinstance(target, MySQLTarget):
        with target.connect() as my_conn, my_conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN "
                "('mysql', 'information_schema', 'performance_schema', 'sys')"
            )
            assert cur.fetchone() == (0,)
    else:  # the RDB file the scratch redis-server restarts from, not written yet
        assert isinstance(target, RdbFileTarget)
        assert not target.path.exists()
    getattr(target, "prepare")(overwrite=False)  # noqa: B009 - RestoreTarget, any kind


@pytest.mark.parametrize("kind", KINDS)
def test_start_restore_query_close(
    kind: str, work_dir: Path, backups: dict[str, Manifest], store: LocalStore, key: MasterKey
) -> None:
    manifest = backups[kind]
    t0 = time.monotonic()
    instance = start_scratch(kind, work_dir)
    started = time.monotonic() - t0
    print(f"\nscratch {kind}: started in {started:.2f} s: {instance.describe()}")
    assert isinstance(instance, _common.StartedServer)
    pid, port, directory = instance.pid, instance.port, instance.directory
    assert pid is not None and directory.parent == work_dir
    children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
    try:
        assert instance.kind == kind
        target = instance.restore_target(manifest)
        # Redis restores into a file: the password is the server's (its own target's).
        password = _password(instance.target() if isinstance(instance, RedisScratch) else target)
        _connectable_and_empty(kind, target)
        for shown in (instance.describe(), repr(instance), repr(target), target.describe()):
            assert password not in shown
        assert password not in " ".join(psutil.Process(pid).cmdline())

        result = run_restore(store, manifest, key, target)
        assert result.tables == manifest.tables and manifest.tables

        if kind == "redis":
            with pytest.raises(ConfigurationError, match="SQL checks need a database"):
                instance.query("SELECT 1")
        else:
            sql, expected = CHECK[kind]
            assert [tuple(int(v) for v in row) for row in instance.query(sql)] == expected
            assert sum(1 for _ in instance.iter_query(STREAM[kind])) == 50_000
            with pytest.raises(ScratchQueryError) as info:
                instance.query("SELECT * FROM no_such_table")
            assert "no_such_table" in str(info.value) and "\n" not in str(info.value)
            assert password not in str(info.value)
            with pytest.raises(ScratchQueryError):
                list(instance.iter_query("SELECT * FROM no_such_table"))
        # A second restore target is empty again.
        _connectable_and_empty(kind, instance.restore_target(manifest))
    finally:
        t1 = time.monotonic()
        instance.close()
        print(f"scratch {kind}: closed in {time.monotonic() - t1:.2f} s")
    _assert_gone(pid, children, port, directory)
    instance.close()  # twice is fine
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_missing_binaries_fail_cleanly(kind: str, work_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-binaries"
    empty.mkdir()
    with pytest.raises(ScratchStartError) as info:
        start_scratch(kind, work_dir, bin_dir=empty)
    message = str(info.value)
    assert kind in message and str(empty) in message and "\n" not in message
    assert list(work_dir.iterdir()) == []


def _ours(work_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(work_dir) in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_port_taken_fails_cleanly(
    kind: str, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server exits at once (its port is taken): one line, no process, no directory."""
    secret = "scratch-password-" + "x" * 16
    monkeypatch.setattr(_common, "new_password", lambda: secret)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setattr(_common, "pick_port", lambda: port)
        with pytest.raises(ScratchStartError) as info:
            start_scratch(kind, work_dir, timeout=30)
    message = str(info.value)
    print(f"\n{message}")
    assert f"scratch {kind}" in message and "\n" not in message
    assert "exited" in message and "log:" in message
    assert secret not in message
    assert list(work_dir.iterdir()) == []
    assert _ours(work_dir) == []


def test_context_manager_closes(work_dir: Path) -> None:
    with pytest.raises(RuntimeError), scratch_server("redis", work_dir) as instance:
        assert isinstance(instance, _common.StartedServer)
        pid, port = instance.pid, instance.port
        raise RuntimeError("boom")
    assert pid is not None and not is_alive(pid, None) and port_is_free(port)
    assert list(work_dir.iterdir()) == []


def test_unknown_kind(work_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown scratch server kind 'oracle'"):
        start_scratch("oracle", work_dir)


def _lab_superuser(lab: LabState) -> PostgresTarget:
    ep = lab.postgres()
    return PostgresTarget(host=ep.host, port=ep.port, user=ep.superuser, dbname="postgres")


def _pg_databases(lab: LabState) -> set[str]:
    with psycopg.connect(lab.postgres().conninfo(superuser=True, dbname="postgres")) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def test_existing_postgres_gets_its_own_database(
    lab: LabState, backups: dict[str, Manifest], store: LocalStore, key: MasterKey
) -> None:
    instance = existing_scratch(_lab_superuser(lab))
    assert instance.kind == "postgres"
    before = _pg_databases(lab)
    target = instance.restore_target(backups["postgres"])
    assert isinstance(target, PostgresTarget)
    assert target.dbname.startswith("siprec_verify_") and target.dbname not in before
    assert target.dbname in _pg_databases(lab)
    run_restore(store, backups["postgres"], key, target)
    sql, expected = CHECK["postgres"]
    assert [tuple(int(v) for v in row) for row in instance.query(sql)] == expected
    assert sum(1 for _ in instance.iter_query(STREAM["postgres"])) == 50_000
    instance.close()
    assert _pg_databases(lab) == before
    instance.close()


def test_existing_mysql_one_database_only(
    lab: LabState, backups: dict[str, Manifest], store: LocalStore, key: MasterKey
) -> None:
    ep = lab.mariadb()
    instance = existing_scratch(ep.target())
    manifest = backups["mysql"]
    several = manifest.model_copy(
        update={
            "source_info": {
                **manifest.source_info,
                "databases": ["a", "b"],
                "single_database": False,
            }
        }
    )
    with pytest.raises(ConfigurationError, match="one-database backups only"):
        instance.restore_target(several)
    target = instance.restore_target(manifest)
    assert isinstance(target, MySQLTarget) and target.database is not None
    assert target.database.startswith("siprec_verify_")
    run_restore(store, manifest, key, target)
    sql, expected = CHECK["mysql"]
    assert [tuple(int(v) for v in row) for row in instance.query(sql)] == expected
    instance.close()
    with ep.connect(admin=True) as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'siprec\\_verify\\_%'")
        assert cur.fetchall() == ()


def test_existing_redis_must_be_empty(
    lab: LabState, backups: dict[str, Manifest], store: LocalStore, key: MasterKey
) -> None:
    scratch = lab.redis("scratch")
    with scratch.client() as c:
        c.flushall()
        c.set("operator:data", "keep me")
    instance: ScratchInstance = existing_scratch(scratch.target())
    with pytest.raises(ConfigurationError, match="must be empty") as info:
        instance.restore_target(backups["redis"])
    assert scratch.password not in str(info.value)
    instance.close()  # nothing was restored: the operator's key stays
    with scratch.client() as c:
        assert c.get("operator:data") == b"keep me"
        c.flushall()

    instance = existing_scratch(scratch.target())
    target = instance.restore_target(backups["redis"])
    run_restore(store, backups["redis"], key, target)
    with pytest.raises(ConfigurationError, match="SQL checks need a database"):
        instance.query("SELECT 1")
    instance.close()
    assert scratch.target().key_counts() == {}
