"""The replication-protocol dump against a private real redis-server: both transfer framings,
end marks split across reads, authentication, and a link cut mid-transfer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from siprec_backup.errors import (
    ConfigurationError,
    RestoreError,
    SourceError,
    SourceUnavailableError,
)
from siprec_backup.sources.rdb import RdbCounter
from siprec_backup.sources.redis import RedisRestore, RedisSource, RedisTarget
from tests.integration.test_rdb_scanner import (
    EVERY_TYPE_KEYS,
    PrivateRedis,
    fill_every_type,
    start_private_redis,
    stop_private_redis,
)

PASSWORD = "unit-test-secret-pw"


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateRedis]:
    srv = start_private_redis()
    try:
        with srv.client() as c0, srv.client(3) as c3:
            fill_every_type(c0, c3)
            c0.config_set("requirepass", PASSWORD)
        yield srv
    finally:
        stop_private_redis(srv)


def target(srv: PrivateRedis, password: str | None = PASSWORD) -> RedisTarget:
    return RedisTarget(host="127.0.0.1", port=srv.port, password=password)


def admin(srv: PrivateRedis) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=srv.port, password=PASSWORD)


def dump_all(source: RedisSource, read_size: int) -> tuple[bytes, dict[str, object], dict]:
    with source.open_dump() as dump:
        parts = []
        while piece := dump.stream.read(read_size):
            parts.append(piece)
        facts = dump.finish()
    return b"".join(parts), facts.source_info, facts.tables


@pytest.mark.parametrize("read_size", [1, 7, 39, 40, 41, 65536])
def test_diskless_end_mark_split_across_reads(server: PrivateRedis, read_size: int) -> None:
    data, info, tables = dump_all(RedisSource(target(server)), read_size)
    assert info["transfer_mode"] == "diskless"
    assert tables == EVERY_TYPE_KEYS
    assert data.startswith(b"REDIS0010") and len(data) == info["rdb_bytes"]
    assert info["redis_version"] == "7.0.15" or str(info["redis_version"]).startswith("7.")
    assert isinstance(info["replication_offset"], int) and len(str(info["replid"])) == 40


def test_disk_based_transfer(server: PrivateRedis) -> None:
    with admin(server) as c:
        c.config_set("repl-diskless-sync", "no")
        try:
            data, info, tables = dump_all(RedisSource(target(server)), 5)
        finally:
            c.config_set("repl-diskless-sync", "yes")
    assert info["transfer_mode"] == "disk"
    assert tables == EVERY_TYPE_KEYS
    # the same snapshot as a file: SAVE writes what a disk-based sync sends
    assert len(data) == info["rdb_bytes"] and data[:9] == b"REDIS0010"


def test_replica_slot_is_freed_after_the_dump(server: PrivateRedis) -> None:
    dump_all(RedisSource(target(server)), 1 << 20)
    with admin(server) as c:
        assert c.client_list(_type="replica") == []


def test_wrong_password_names_auth_not_the_password(server: PrivateRedis) -> None:
    with pytest.raises(SourceError, match="authentication") as caught:
        dump_all(RedisSource(target(server, "not-the-password")), 4096)
    assert "not-the-password" not in str(caught.value)
    assert not isinstance(caught.value, SourceUnavailableError)


def test_missing_password_says_one_is_required(server: PrivateRedis) -> None:
    with pytest.raises(SourceError, match="requires a password"):
        dump_all(RedisSource(target(server, None)), 4096)


def test_unreachable_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        source = RedisSource(RedisTarget(host="127.0.0.1", port=port, password=PASSWORD))
        with pytest.raises(SourceUnavailableError, match=f"127.0.0.1:{port}"):
            dump_all(source, 4096)


def test_link_killed_mid_transfer_is_an_error(server: PrivateRedis) -> None:
    """The master drops the replica (as client-output-buffer-limit does): never a short dump."""
    with admin(server) as c:
        c.set("big:filler", b"\x01" * (64 << 20))  # more than the socket buffers hold
        try:
            with (
                pytest.raises(SourceError, match="closed the replication link mid-transfer"),
                RedisSource(target(server)).open_dump() as dump,
            ):
                dump.stream.read(1024)
                deadline = time.monotonic() + 10
                # Under load the link may not be listed as a replica yet: kill until it is.
                while not c.client_kill_filter(_type="slave"):
                    assert time.monotonic() < deadline, "the link never showed as a replica"
                    time.sleep(0.01)
                while dump.stream.read(1 << 20):
                    pass
                dump.finish()
        finally:
            c.delete("big:filler")


def test_invalid_target_fields() -> None:
    with pytest.raises(ConfigurationError, match="port"):
        RedisTarget(host="h", port=0)
    with pytest.raises(ConfigurationError, match="host"):
        RedisTarget(host="")
    assert "secret" not in repr(RedisTarget(host="h", password="secret"))


def test_corrupt_rdb_fails_the_restore_with_the_server_log(server: PrivateRedis) -> None:
    data, _, _ = dump_all(RedisSource(target(server)), 1 << 20)
    broken = bytearray(data)
    broken[len(broken) // 2 : len(broken) // 2 + 64] = b"\xee" * 64  # checksum no longer holds
    restore = RedisRestore(target(server), overwrite=False)
    rdb_dir: Path | None = None
    try:
        rdb_dir = restore._dir
        restore.stdin.write(bytes(broken))
        with pytest.raises(RestoreError) as caught:
            restore.finish()
    finally:
        restore.close()
    assert "RDB" in str(caught.value)
    assert rdb_dir is not None and not rdb_dir.exists()  # the file and the scratch dir are gone


def test_a_scanner_error_does_not_block_the_producer() -> None:
    counter = RdbCounter(depth=2)
    for _ in range(50):  # far more than the queue holds: feed must not block
        counter.feed(b"not an rdb at all" * 100)
    with pytest.raises(SourceError, match="bad magic"):
        counter.result()
