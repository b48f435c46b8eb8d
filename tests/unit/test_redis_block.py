"""The Redis server block: validation, the engine objects it builds, the secret kept secret."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from blocks.redis import RedisServer
from siprec_backup.sources.redis import RedisSource, RedisTarget


def test_builds_source_and_restore_target() -> None:
    block = RedisServer(host="cache", port=6380, username="backup", password=SecretStr("pw-x1"))
    target = block.target()
    assert (target.host, target.port, target.username, target.tls) == (
        "cache",
        6380,
        "backup",
        False,
    )
    assert target.password == "pw-x1"
    assert isinstance(block.source(), RedisSource) and block.source().target == target
    assert isinstance(block.restore_target(), RedisTarget)
    assert block.restore_target().kind == block.source().kind == "redis"
    assert "pw-x1" not in repr(block) and "pw-x1" not in repr(target)
    assert "pw-x1" not in target.describe()
    assert block._block_type_slug == "siprec-backup-redis-server"


def test_defaults() -> None:
    target = RedisServer(host="cache").target()
    assert (target.port, target.username, target.password, target.redis_server_bin) == (
        6379,
        None,
        None,
        None,
    )
    assert RedisServer(host="cache", tls=True).target().describe() == "Redis rediss://cache:6379"


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"host": ""}, "host"),
        ({"tls": "maybe"}, "tls"),
    ],
)
def test_invalid_fields_are_named(fields: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RedisServer(**{"host": "cache", **fields})
    assert [e["loc"][0] for e in caught.value.errors()] == [field_name]


def test_invalid_password_is_not_echoed() -> None:
    with pytest.raises(ValidationError) as caught:
        RedisServer(host="cache", port="nope", password=SecretStr("s3cret-pw"))
    assert "s3cret-pw" not in str(caught.value)
