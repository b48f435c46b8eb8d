"""Load any storage block by name: the one place that knows which block types are stores."""

from __future__ import annotations

from blocks.azure_storage import AzureBlobStorage
from blocks.gcs_storage import GCSStorage
from blocks.local_storage import LocalStorage
from blocks.s3_storage import S3Storage
from siprec_backup.errors import ConfigurationError
from siprec_backup.storage import ObjectStore

#: Every storage block type; a storage block name is looked up under each of them.
STORAGE_BLOCK_TYPES: tuple[type[LocalStorage | S3Storage | GCSStorage | AzureBlobStorage], ...] = (
    LocalStorage,
    S3Storage,
    GCSStorage,
    AzureBlobStorage,
)


def load_storage_block(name: str) -> LocalStorage | S3Storage | GCSStorage | AzureBlobStorage:
    """The storage block called `name`, whatever its type (Prefect names are per type)."""
    found: list[LocalStorage | S3Storage | GCSStorage | AzureBlobStorage] = []
    for cls in STORAGE_BLOCK_TYPES:
        try:
            block: object = cls.load(name)
        except ValueError:  # no block of this type has that name (or the type is unknown)
            continue
        if isinstance(block, cls):
            found.append(block)
    if not found:
        kinds = ", ".join(cls.get_block_type_name() for cls in STORAGE_BLOCK_TYPES)
        raise ConfigurationError(
            f"no storage block named {name!r} on the Prefect server (looked for: {kinds})"
        )
    if len(found) > 1:
        kinds = ", ".join(type(b).get_block_type_name() for b in found)
        raise ConfigurationError(
            f"the storage block name {name!r} is ambiguous: it exists as {kinds}; rename one"
        )
    return found[0]


def load_store(name: str) -> tuple[ObjectStore, str]:
    """The engine store and the key prefix configured in storage block `name`."""
    block = load_storage_block(name)
    return block.store(), block.prefix
