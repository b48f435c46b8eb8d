"""Redis backup and restore against the lab's real servers (primary, replica, scratch target).

The restore target is the lab's ``redis-scratch`` server, emptied (FLUSHALL) before each restore:
the replica is shared by every test and must stay a replica.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from siprec_backup.backup import run_backup
from siprec_backup.errors import SourceError, SourceUnavailableError, TargetNotEmptyError
from siprec_backup.lab import LabState, fill_redis, redis_key_counts
from siprec_backup.lab.redis import wait_replica_synced
from siprec_backup.manifest import Manifest
from siprec_backup.restore import run_restore
from siprec_backup.sources.redis import RedisSource, RedisTarget
from siprec_backup.storage import LocalStore
from siprec_backup.stream import MasterKey

pytestmark = pytest.mark.lab

SEED_MB = 2


@pytest.fixture(scope="module")
def seeded(lab: LabState) -> dict[str, int]:
    """The primary with SIPREC state in db0-db2; returns its key counts."""
    primary = lab.redis().target()
    if not redis_key_counts(primary).get("db2"):  # another module may have flushed it
        fill_redis(primary, SEED_MB)
    with lab.redis().client() as c:
        c.set("siprec:no-ttl", "kept forever")
        c.set("siprec:short-ttl", "gone soon", px=600_000)
    wait_replica_synced(primary, lab.redis("replica").target())
    counts = redis_key_counts(primary)
    assert set(counts) == {"db0", "db1", "db2"}
    return counts


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="module")
def key() -> MasterKey:
    return MasterKey.generate("redis-test")


@pytest.fixture
def scratch(lab: LabState) -> Iterator[RedisTarget]:
    """The lab's empty restore target."""
    with lab.redis("scratch").client() as c:
        c.flushall()
    yield lab.redis("scratch").target()


def backup(source: RedisTarget, store: LocalStore, key: MasterKey, name: str) -> Manifest:
    return run_backup(RedisSource(source), store, key, cluster="lab", source_name=name)


def all_keys(client: redis.Redis) -> list[bytes]:
    return sorted(client.scan_iter(count=1000))


_READERS = {
    b"string": lambda p, k: p.get(k),
    b"hash": lambda p, k: p.hgetall(k),
    b"list": lambda p, k: p.lrange(k, 0, -1),
    b"set": lambda p, k: p.smembers(k),
    b"zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
    b"stream": lambda p, k: p.xrange(k),
}


def values_and_ttls(client: redis.Redis, keys: list[bytes]) -> tuple[list[object], list[int]]:
    """Every key's type and logical value (field order aside), and its PTTL."""
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.type(k)
        pipe.pttl(k)
    replies = pipe.execute()
    types, ttls = replies[0::2], replies[1::2]
    for k, t in zip(keys, types, strict=True):
        _READERS[t](pipe, k)
    values = [(t, v) for t, v in zip(types, pipe.execute(), strict=True)]
    return values, ttls


def test_backup_restore_round_trip(
    lab: LabState,
    seeded: dict[str, int],
    store: LocalStore,
    key: MasterKey,
    scratch: RedisTarget,
) -> None:
    manifest = backup(lab.redis().target(), store, key, "redis-primary")
    assert manifest.source_kind == "redis"
    assert manifest.tables == seeded
    info = manifest.source_info
    assert info["transfer_mode"] == "diskless" and info["rdb_version"] == 10
    assert info["rdb_bytes"] == manifest.object.plaintext_bytes > 0
    assert str(info["redis_version"]).startswith("7.")

    result = run_restore(store, manifest, key, scratch)
    assert result.tables == seeded
    assert redis_key_counts(scratch) == seeded

    # every key of every database: same value, same TTL (to the restore's duration)
    for db in (0, 1, 2):
        with lab.redis().client(db) as src, lab.redis("scratch").client(db) as dst:
            keys = all_keys(src)
            assert keys == all_keys(dst)
            values_src, ttls_src = values_and_ttls(src, keys)
            values_dst, ttls_dst = values_and_ttls(dst, keys)
            assert values_src == values_dst
            for k, ttl_src, ttl_dst in zip(keys, ttls_src, ttls_dst, strict=True):
                if ttl_src == -1:
                    assert ttl_dst == -1, k
                else:
                    assert 0 < ttl_dst <= ttl_src + 60_000 and ttl_src - ttl_dst < 60_000, k
    with lab.redis("scratch").client() as dst:
        assert dst.get("siprec:no-ttl") == b"kept forever" and dst.pttl("siprec:no-ttl") == -1
        assert 0 < dst.pttl("siprec:short-ttl") <= 600_000


def test_backup_from_the_replica(
    lab: LabState,
    seeded: dict[str, int],
    store: LocalStore,
    key: MasterKey,
    scratch: RedisTarget,
) -> None:
    manifest = backup(lab.redis("replica").target(), store, key, "redis-replica")
    assert manifest.tables == seeded
    assert manifest.source_info["role"] == "slave"
    with lab.redis("replica").client() as replica:  # the replica is still a working replica
        assert replica.info("replication")["master_link_status"] == "up"
    assert run_restore(store, manifest, key, scratch).tables == seeded


def test_unreachable_port(key: MasterKey, store: LocalStore) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(SourceUnavailableError, match=f"127.0.0.1:{port}"):
            backup(RedisTarget(host="127.0.0.1", port=port), store, key, "gone")
    assert list(store.list("")) == []  # nothing stored, no manifest


def test_wrong_password(lab: LabState, key: MasterKey, store: LocalStore) -> None:
    ep = lab.redis()
    bad = RedisTarget(host=ep.host, port=ep.port, password="wrong-" + ep.password[:4])
    with pytest.raises(SourceError, match="authentication") as caught:
        backup(bad, store, key, "badpw")
    assert "wrong-" not in str(caught.value)
    assert list(store.list("")) == []


def test_target_not_empty_and_overwrite(
    lab: LabState,
    seeded: dict[str, int],
    store: LocalStore,
    key: MasterKey,
    scratch: RedisTarget,
) -> None:
    manifest = backup(lab.redis().target(), store, key, "redis-primary")
    with lab.redis("scratch").client(1) as c:
        c.set("already:here", "1")
        c.set("and:here", "2")
    with pytest.raises(TargetNotEmptyError, match="db1=2 keys"):
        run_restore(store, manifest, key, scratch)
    with lab.redis("scratch").client(1) as c:
        assert c.dbsize() == 2  # nothing was touched
    result = run_restore(store, manifest, key, scratch, overwrite=True)
    assert result.tables == seeded
    with lab.redis("scratch").client(1) as c:
        assert c.get("already:here") is None


def test_password_never_in_argv_errors_or_manifest(
    lab: LabState, seeded: dict[str, int], store: LocalStore, key: MasterKey
) -> None:
    password = lab.redis().password
    manifest = backup(lab.redis().target(), store, key, "redis-primary")
    assert password not in manifest.to_json().decode()
    assert password not in json.dumps(manifest.source_info)
    assert password not in repr(lab.redis()) and password not in repr(lab.redis().target())
    for rec in (lab.services[f"redis-{r}"] for r in ("primary", "replica", "scratch")):
        cmdline = Path(f"/proc/{rec.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "redis-server" in cmdline and password not in cmdline
        assert password not in rec.log.read_text(errors="replace")


def test_replica_link_survives_a_primary_backup(lab: LabState, seeded: dict[str, int]) -> None:
    """Our link is rdb-only and closed after the payload: the master lists one replica after."""
    with lab.redis().client() as c:
        before = c.info("replication")["connected_slaves"]
        with RedisSource(lab.redis().target()).open_dump() as dump:
            while dump.stream.read(1 << 20):
                pass
            dump.finish()
        deadline = time.monotonic() + 5
        while c.info("replication")["connected_slaves"] != before:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert before == 1
