"""Typed block loading with a one-line error naming the missing block, for one block type or
for a family of them (storages, load balancers) whose names are looked up under every type."""

from __future__ import annotations

from collections.abc import Sequence
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


def load_one_of(classes: Sequence[type[B]], name: str, what: str) -> B:
    """The block called `name` of whichever of `classes` has one (Prefect names are per type);
    ConfigurationError naming `what` if none has, or if several have (ambiguous)."""
    found: list[B] = []
    for cls in classes:
        try:
            block: object = cls.load(name)
        except ValueError:  # no block of this type has that name (or the type is unknown)
            continue
        if isinstance(block, cls):
            found.append(block)
    if not found:
        kinds = ", ".join(cls.get_block_type_name() for cls in classes)
        raise ConfigurationError(
            f"no {what} block named {name!r} on the Prefect server (looked for: {kinds})"
        )
    if len(found) > 1:
        kinds = ", ".join(type(b).get_block_type_name() for b in found)
        raise ConfigurationError(
            f"the {what} block name {name!r} is ambiguous: it exists as {kinds}; rename one"
        )
    return found[0]
