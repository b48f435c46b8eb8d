"""Load any storage block by name: the one place that knows which block types are stores."""

from __future__ import annotations

from blocks.loading import load_block
from blocks.local_storage import LocalStorage
from siprec_backup.storage import ObjectStore


def load_store(name: str) -> tuple[ObjectStore, str]:
    """The engine store and the key prefix configured in storage block `name`."""
    block = load_block(LocalStorage, name)
    return block.store(), block.prefix
