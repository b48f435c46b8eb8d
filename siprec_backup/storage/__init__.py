"""Object stores behind one streaming writer/reader interface.

The cloud stores import their SDK (an optional extra) only when one is built.
"""

from siprec_backup.storage.azure import AzureBlobStore
from siprec_backup.storage.base import ObjectInfo, ObjectStore, ObjectWriter, StoreLimits
from siprec_backup.storage.gcs import GCSStore
from siprec_backup.storage.local import LocalStore
from siprec_backup.storage.s3 import S3Store
from siprec_backup.storage.url import open_store_url

__all__ = [
    "AzureBlobStore",
    "GCSStore",
    "LocalStore",
    "ObjectInfo",
    "ObjectStore",
    "ObjectWriter",
    "S3Store",
    "StoreLimits",
    "open_store_url",
]
