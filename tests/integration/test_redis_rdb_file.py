"""Redis restore into an RDB file (the fast path), and the scratch server that proves a restore
by starting from that file, against the lab's real Redis."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siprec_backup.backup import run_backup
from siprec_backup.errors import (
    ConfigurationError,
    IntegrityError,
    RestoreError,
    TargetNotEmptyError,
)
from siprec_backup.lab import LabState, fill_redis, redis_key_counts
from siprec_backup.manifest import Manifest
from siprec_backup.restore import run_restore
from siprec_backup.scratch import start_scratch
from siprec_backup.scratch.redis import RedisScratch
from siprec_backup.sources.redis import RdbFileTarget, RedisSource, RedisTarget
from siprec_backup.storage import LocalStore
from siprec_backup.stream import MasterKey
from siprec_backup.targets import restore_target

pytestmark = pytest.mark.lab

SEED_MB = 2


@pytest.fixture(scope="module")
def key() -> MasterKey:
    return MasterKey.generate("rdb-file-test")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    return LocalStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def manifest(lab: LabState, store: LocalStore, key: MasterKey) -> Manifest:
    """One backup of the lab's primary, holding keys in db0-db2."""
    primary = lab.redis().target()
    if not redis_key_counts(primary).get("db2"):  # another module may have flushed it
        fill_redis(primary, SEED_MB)
    made = run_backup(RedisSource(primary), store, key, cluster="lab", source_name="rdb-file")
    assert {"db0", "db1", "db2"} <= set(made.tables)
    return made


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[RedisScratch]:
    instance = start_scratch("redis", tmp_path)
    assert isinstance(instance, RedisScratch)
    try:
        yield instance
    finally:
        instance.close()


def rdb_of(target: RedisTarget) -> bytes:
    """A whole RDB snapshot of `target` (small test data only)."""
    with RedisSource(target).open_dump() as dump:
        data = b"".join(iter(lambda: dump.stream.read(1 << 20), b""))
        dump.finish()
    return data


def test_restore_into_an_rdb_file_that_a_server_loads(
    manifest: Manifest, store: LocalStore, key: MasterKey, tmp_path: Path, scratch: RedisScratch
) -> None:
    path = tmp_path / "dump.rdb"
    result = run_restore(store, manifest, key, RdbFileTarget(path))
    assert result.tables == manifest.tables
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_size == manifest.object.plaintext_bytes
    assert not path.with_name("dump.rdb.tmp").exists()

    os.replace(path, scratch.rdb)  # a redis-server started on the file: DBSIZE per database
    loaded, _ = scratch.load_rdb(16)
    assert loaded == manifest.tables
    for name, count in manifest.tables.items():
        with scratch.target().ping(int(name[2:])) as client:
            assert client.dbsize() == count


def test_an_existing_file_is_refused_unless_overwrite(
    manifest: Manifest, store: LocalStore, key: MasterKey, tmp_path: Path
) -> None:
    path = tmp_path / "dump.rdb"
    path.write_bytes(b"precious")
    with pytest.raises(TargetNotEmptyError) as info:
        run_restore(store, manifest, key, RdbFileTarget(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == b"precious"

    result = run_restore(store, manifest, key, RdbFileTarget(path), overwrite=True)
    assert result.tables == manifest.tables
    assert path.stat().st_size == manifest.object.plaintext_bytes

    with pytest.raises(ConfigurationError, match="does not exist"):
        RdbFileTarget(tmp_path / "no-such-dir" / "dump.rdb").prepare(overwrite=False)


def test_a_corrupted_stream_leaves_no_file(
    manifest: Manifest, store: LocalStore, key: MasterKey, tmp_path: Path
) -> None:
    broken = LocalStore(tmp_path / "broken")
    data = bytearray(store._path(manifest.object.key).read_bytes())
    data[len(data) * 3 // 4] ^= 0x01  # past the first chunks: some plaintext was written
    target_object = broken._path(manifest.object.key)
    target_object.parent.mkdir(parents=True)
    target_object.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError):
        run_restore(broken, manifest, key, RdbFileTarget(out / "dump.rdb"))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("payload", ["garbage", "truncated"])
def test_not_an_rdb_is_a_restore_error(lab: LabState, payload: str, tmp_path: Path) -> None:
    data = b"not an RDB at all\n" * 10_000
    if payload == "truncated":
        data = rdb_of(lab.redis().target())[:-100]
    target = RdbFileTarget(tmp_path / "dump.rdb")
    target.prepare(overwrite=False)
    restore = target.open_restore(overwrite=False)
    try:
        restore.stdin.write(data)
        with pytest.raises(RestoreError) as info:
            restore.finish()
    finally:
        restore.close()
    assert str(info.value).startswith("the backup is not a valid RDB") and "\n" not in str(
        info.value
    )
    assert list(tmp_path.iterdir()) == []


def test_urls_that_name_an_rdb_file() -> None:
    assert isinstance(restore_target("redis", "file:///tmp/x/dump.rdb"), RdbFileTarget)
    target = restore_target("redis", "/tmp/x/dump.rdb")
    assert isinstance(target, RdbFileTarget) and target.path == Path("/tmp/x/dump.rdb")
    assert isinstance(restore_target("redis", "redis://127.0.0.1:6379"), RedisTarget)
    with pytest.raises(ConfigurationError, match="file:///absolute/path"):
        restore_target("redis", "file://otherhost/x/dump.rdb")
    with pytest.raises(ConfigurationError):
        restore_target("redis", "dump.rdb")  # relative: not a file target, not a URL either


def test_scratch_counts_keys_that_expired_since_the_backup(
    lab: LabState,
    store: LocalStore,
    key: MasterKey,
    scratch: RedisScratch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with lab.redis().client(3) as c:
        c.flushdb()
        c.set("siprec:kept", "1")
        c.set("siprec:expiring", "1", px=1500)
    try:
        made = run_backup(
            RedisSource(lab.redis().target()), store, key, cluster="lab", source_name="expiring"
        )
    finally:
        with lab.redis().client(3) as c:
            c.flushdb()
    assert made.tables["db3"] == 2
    time.sleep(2)
    caplog.set_level(logging.WARNING, logger="siprec_backup.scratch")
    result = run_restore(store, made, key, scratch.restore_target(made))
    assert result.tables == made.tables
    assert "1 keys of the RDB had expired" in caplog.text
    with scratch.target().ping(3) as client:
        assert client.dbsize() == 1


def test_scratch_server_that_cannot_load_the_file(
    lab: LabState, manifest: Manifest, scratch: RedisScratch
) -> None:
    data = bytearray(rdb_of(lab.redis().target()))
    data[-1] ^= 0xFF  # the CRC-64 at the end: the scanner reads it, the server checks it
    target = scratch.restore_target(manifest)
    target.prepare(overwrite=False)
    restore = target.open_restore(overwrite=False)
    try:
        restore.stdin.write(bytes(data))
        restore.finish()
    finally:
        restore.close()
    with pytest.raises(RestoreError) as info:
        target.restored_counts({"db0": 1})
    message = str(info.value)
    print(f"\n{message}")
    assert "could not load the restored RDB" in message and "\n" not in message
    assert scratch._password not in message
