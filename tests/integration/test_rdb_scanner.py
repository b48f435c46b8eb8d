"""The streaming RDB scanner on RDB files written by a real redis-server holding every type."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from siprec_backup.lab import _process
from siprec_backup.sources.rdb import RdbCounter, RdbFormatError, RdbSummary, scan_file


@dataclass
class PrivateRedis:
    """A throwaway redis-server of this test module (TCP on a free port, no password)."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes]

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db)

    def save(self) -> Path:
        """SAVE and return the RDB it wrote."""
        with self.client() as c:
            c.save()
        return self.dir / "dump.rdb"


def start_private_redis(*extra: str) -> PrivateRedis:
    """Start redis-server 7 on a free loopback port (fails the test if it cannot start)."""
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed"
    port = _process.free_ports(1)[0]
    workdir = Path(tempfile.mkdtemp(prefix="siprec-rdb-test-"))
    log = workdir / "redis.log"
    proc = subprocess.Popen(
        [
            server,
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", str(workdir), "--repl-diskless-sync-delay", "0", "--logfile", str(log)),
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with redis.Redis(host="127.0.0.1", port=port) as c:
                c.ping()
            return PrivateRedis(port, workdir, proc)
        except redis.ConnectionError:
            assert proc.poll() is None, f"redis-server exited: {log.read_text()[-500:]}"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)


def stop_private_redis(server: PrivateRedis) -> None:
    server.proc.terminate()
    server.proc.wait(10)
    shutil.rmtree(server.dir, ignore_errors=True)


#: Keys per database that fill_every_type writes.
EVERY_TYPE_KEYS = {"db0": 19, "db3": 2}


def fill_every_type(c0: redis.Redis, c3: redis.Redis) -> None:
    """One key of every type and encoding Redis 7.0 writes, expiries, and a second database."""
    c0.set("str:raw", "hello")
    c0.set("str:int8", 7)
    c0.set("str:int16", 1000)
    c0.set("str:int32", 100000)
    c0.set("str:lzf", "siprec " * 2000)  # compressible: stored LZF-compressed
    c0.set("str:ttl", "x", px=3_600_000)
    c0.rpush("list:listpack", "a", "b", 3)
    c0.rpush("list:quicklist", *[f"item-{i}" * 20 for i in range(2000)])  # several nodes
    c0.sadd("set:intset", 1, 2, 3)
    c0.sadd("set:hashtable", *[f"member-{i}" for i in range(200)])
    c0.zadd("zset:listpack", {"a": 1.5, "b": 2})
    c0.zadd("zset:skiplist", {f"m{i}": i / 3 for i in range(300)})  # ZSET_2 doubles
    c0.zadd(
        "zset:inf", {"lo": float("-inf"), "hi": float("inf")} | {f"k{i}": i for i in range(200)}
    )
    c0.hset("hash:listpack", mapping={"f": "v", "n": 1})
    c0.hset("hash:hashtable", mapping={f"field-{i}": "v" * 100 for i in range(600)})
    c0.xadd("stream:plain", {"type": "call.start"})
    for i in range(50):
        c0.xadd("stream:groups", {"type": "call.state", "n": i})
    c0.xgroup_create("stream:groups", "uploader", id="0")
    c0.xreadgroup("uploader", "worker-1", {"stream:groups": ">"}, count=5)  # a PEL
    c0.xgroup_createconsumer("stream:groups", "uploader", "worker-2")
    c0.expire("hash:listpack", 7200)
    c0.function_load(
        "#!lua name=siprec\nredis.register_function('ping2', function() return 'pong' end)"
    )
    c0.set("str:big", b"\x00\xff" * 300_000)  # 600 KB, spans many chunks
    c0.set("str:neg", -5)
    c3.set("other:db", "x")
    c3.rpush("other:list", "y")


@pytest.fixture(scope="module")
def every_type_rdb() -> Iterator[Path]:
    server = start_private_redis("--maxmemory-policy", "allkeys-lfu")  # FREQ opcodes too
    try:
        with server.client() as c0, server.client(3) as c3:
            fill_every_type(c0, c3)
            assert {f"db{k[2:]}": v["keys"] for k, v in c0.info("keyspace").items()} == (
                EVERY_TYPE_KEYS
            )
        path = server.save()
        copy = Path(tempfile.mkdtemp(prefix="siprec-rdb-file-")) / "every-type.rdb"
        shutil.copy(path, copy)
        yield copy
        shutil.rmtree(copy.parent, ignore_errors=True)
    finally:
        stop_private_redis(server)


def scan_in_chunks(data: bytes, size: int) -> RdbSummary:
    counter = RdbCounter()
    for i in range(0, len(data), size):
        counter.feed(data[i : i + size])
    return counter.result()


def test_counts_every_type_per_database(every_type_rdb: Path) -> None:
    summary = scan_file(str(every_type_rdb))
    assert summary.keys == EVERY_TYPE_KEYS
    assert summary.rdb_version == 10
    assert summary.aux["redis-ver"].startswith("7.")
    assert summary.functions == 1
    assert summary.bytes_scanned == every_type_rdb.stat().st_size


@pytest.mark.parametrize("size", [1, 13, 40, 4096, 1 << 20])
def test_chunk_borders_do_not_matter(every_type_rdb: Path, size: int) -> None:
    data = every_type_rdb.read_bytes()
    if size == 1:
        data = data[:4000]  # byte by byte: only the head, then the end is missing
        with pytest.raises(RdbFormatError, match="truncated"):
            scan_in_chunks(data, size)
        return
    assert scan_in_chunks(data, size).keys == EVERY_TYPE_KEYS


@pytest.mark.parametrize("cut", [5, 9, 100, 5000, -9, -1])
def test_truncated_stream_is_an_error(every_type_rdb: Path, cut: int) -> None:
    data = every_type_rdb.read_bytes()
    with pytest.raises(RdbFormatError, match="truncated after"):
        scan_in_chunks(data[:cut], 4096)


def test_bad_magic_is_refused(every_type_rdb: Path) -> None:
    data = every_type_rdb.read_bytes()
    with pytest.raises(RdbFormatError, match="bad magic"):
        scan_in_chunks(b"RDIS" + data[4:], 4096)
    with pytest.raises(RdbFormatError, match="bad magic"):
        scan_in_chunks(b"PGDMP" + data[5:], 4096)


def test_unknown_version_is_refused(every_type_rdb: Path) -> None:
    data = every_type_rdb.read_bytes()
    with pytest.raises(RdbFormatError, match="version 12 is not supported"):
        scan_in_chunks(b"REDIS0012" + data[9:], 4096)


def test_unknown_value_type_is_refused() -> None:
    data = b"REDIS0010" + b"\xfe\x00" + b"\x63\x01k\x01v" + b"\xff" + bytes(8)
    with pytest.raises(RdbFormatError, match="unknown value type 99"):
        scan_in_chunks(data, 4096)


def _len64(n: int) -> bytes:
    return b"\x81" + n.to_bytes(8, "big")


def test_module_keys_are_skipped_and_counted() -> None:
    """A Redis-module value (type MODULE_2) is self-describing: skipped, counted, reported."""
    value = (
        _len64(0x1234_5678_9ABC_DE01)  # module id
        + b"\x02\x05"  # UINT 5
        + b"\x01\x81"
        + (2**40).to_bytes(8, "big")  # SINT, 64-bit length encoding
        + b"\x03"
        + bytes(4)  # FLOAT
        + b"\x04"
        + bytes(8)  # DOUBLE
        + b"\x05\x03abc"  # STRING
        + b"\x00"  # EOF
    )
    data = b"REDIS0010\xfe\x00" + b"\x07\x03mod" + value + b"\x00\x01s\x01v" + b"\xff" + bytes(8)
    summary = scan_in_chunks(data, 3)
    assert summary.keys == {"db0": 2}
    assert summary.module_keys == 1


def test_garbage_after_a_valid_header_is_an_error() -> None:
    with pytest.raises(RdbFormatError):
        scan_in_chunks(b"REDIS0010" + b"\xc5" * 50, 4096)
