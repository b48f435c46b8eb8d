"""Load any storage block by name: the one place that knows which block types are stores."""

from __future__ import annotations

from blocks.azure_storage import AzureBlobStorage
from blocks.gcs_storage import GCSStorage
from blocks.loading import load_one_of
from blocks.local_storage import LocalStorage
from blocks.s3_storage import S3Storage
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
    return load_one_of(STORAGE_BLOCK_TYPES, name, "storage")


def load_store(name: str) -> tuple[ObjectStore, str]:
    """The engine store and the key prefix configured in storage block `name`."""
    block = load_storage_block(name)
    return block.store(), block.prefix
