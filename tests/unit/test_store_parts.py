"""The part-size schedules of the multipart stores (pure functions, no server)."""

from __future__ import annotations

import base64

import pytest

from siprec_backup.errors import ConfigurationError
from siprec_backup.storage import azure, s3
from siprec_backup.storage.base import MiB, TiB, part_size, schedule_capacity


def s3_part(n: int) -> int:
    return part_size(n, first=s3.FIRST_PART, grow_every=s3.GROW_EVERY, max_part=s3.MAX_PART)


def test_s3_parts_start_small_and_double_every_thousand() -> None:
    assert [s3_part(n) for n in (1, 1000, 1001, 2000, 2001, 10_000)] == [
        8 * MiB,
        8 * MiB,
        16 * MiB,
        16 * MiB,
        32 * MiB,
        4096 * MiB,
    ]
    assert all(5 * MiB <= s3_part(n) <= s3.MAX_PART for n in range(1, s3.MAX_PARTS + 1))


def test_s3_ten_thousand_parts_reach_five_tib() -> None:
    capacity = schedule_capacity(
        s3.MAX_PARTS, first=s3.FIRST_PART, grow_every=s3.GROW_EVERY, max_part=s3.MAX_PART
    )
    assert capacity == sum(s3_part(n) for n in range(1, s3.MAX_PARTS + 1))
    assert capacity >= s3.MAX_OBJECT == 5 * TiB
    # an ordinary backup (100 GiB) never needs parts above 16 MiB: memory stays flat
    assert schedule_capacity(
        1000, first=s3.FIRST_PART, grow_every=s3.GROW_EVERY, max_part=s3.MAX_PART
    ) >= 7 * (1 << 30)


def test_azure_blocks_reach_five_tib_within_azure_limits() -> None:
    capacity = schedule_capacity(
        azure.MAX_BLOCKS,
        first=azure.FIRST_BLOCK,
        grow_every=azure.GROW_EVERY,
        max_part=azure.MAX_BLOCK,
    )
    assert capacity >= azure.MAX_OBJECT
    last = part_size(
        azure.MAX_BLOCKS,
        first=azure.FIRST_BLOCK,
        grow_every=azure.GROW_EVERY,
        max_part=azure.MAX_BLOCK,
    )
    assert last == azure.MAX_BLOCK == 4000 * MiB


def test_block_ids_have_one_length() -> None:
    ids = {azure.block_id(n) for n in (1, 9, 10, 49_999, 50_000)}
    assert len(ids) == 5 and len({len(i) for i in ids}) == 1
    assert base64.b64decode(azure.block_id(42)) == b"0000000042"


def test_part_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        s3_part(0)


def test_s3_refuses_an_object_limit_its_parts_cannot_reach() -> None:
    with pytest.raises(ConfigurationError, match="max_object_size"):
        s3.S3Store("bucket", region="us-east-1", max_object_size=6 * TiB)
    with pytest.raises(ConfigurationError, match="first part"):
        s3.S3Store("bucket", region="us-east-1", first_part=MiB)
