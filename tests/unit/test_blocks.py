"""Block types: documented like prefect-aws's (standard suite), validated, secrets masked."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from blocks import (
    AzureBlobStorage,
    EncryptionKey,
    GCSStorage,
    LocalStorage,
    MySQLDatabase,
    Platform,
    PostgresDatabase,
    RecordingsDirectory,
    RedisServer,
    S3Storage,
)

KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


class TestBlocksFollowTheStandard(BlockStandardTestSuite):
    @pytest.fixture(
        params=[
            AzureBlobStorage,
            EncryptionKey,
            GCSStorage,
            LocalStorage,
            MySQLDatabase,
            Platform,
            PostgresDatabase,
            RecordingsDirectory,
            RedisServer,
            S3Storage,
        ]
    )
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        block_type: type[Block] = request.param
        return block_type

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """We ship no logo (the suite would download one); the slug is ours and stable."""
        assert block._block_type_slug is not None
        assert block._block_type_slug.startswith("siprec-backup-")


def test_postgres_block_builds_the_engine_target() -> None:
    block = PostgresDatabase(
        host="db", port=5433, user="u", password=SecretStr("pw"), dbname="siprec"
    )
    target = block.target("other")
    assert (target.host, target.port, target.dbname, target.sslmode) == (
        "db",
        5433,
        "other",
        "prefer",
    )
    assert "pw" not in repr(target) and "pw" not in repr(block)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"port": 70000}, "port"),
        ({"sslmode": "maybe"}, "sslmode"),
        ({"host": ""}, "host"),
    ],
)
def test_invalid_postgres_fields_are_named(fields: dict[str, object], field_name: str) -> None:
    base: dict[str, object] = {"host": "db", "user": "u", "dbname": "d"}
    with pytest.raises(ValidationError) as caught:
        PostgresDatabase(**{**base, **fields})
    assert [e["loc"][0] for e in caught.value.errors()] == [field_name]


def test_invalid_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        EncryptionKey(key_id="k", key=SecretStr("too-short-secret"))
    assert "too-short-secret" not in str(caught.value)


def test_key_block_keyring_includes_retired_keys() -> None:
    block = EncryptionKey(
        key_id="new", key=SecretStr(KEY_HEX), retired_keys={"old": SecretStr(KEY_HEX[::-1])}
    )
    assert block.master_key().key_id == "new"
    assert set(block.keyring().key_ids) == {"new", "old"}
    assert KEY_HEX not in repr(block)


def test_local_storage_requires_an_absolute_path() -> None:
    with pytest.raises(ValidationError, match="path must be absolute"):
        LocalStorage(path="relative/dir")
