"""Typed block loading with a one-line error naming the missing block."""

from __future__ import annotations

from typing import TypeVar

from prefect.blocks.core import Block

from siprec_backup.errors import ConfigurationError

B = TypeVar("B", bound=Block)


def load_block(cls: type[B], name: str) -> B:
    """Load block `name` of type `cls` (ConfigurationError if the server has none)."""
    try:
        block = cls.load(name)
    except ValueError as exc:
        raise ConfigurationError(
            f"no {cls.get_block_type_name()} block named {name!r} on the Prefect server"
        ) from exc
    if not isinstance(block, cls):
        raise ConfigurationError(f"block {name!r} is not a {cls.get_block_type_name()}")
    return block
