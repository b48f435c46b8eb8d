"""Object stores behind one streaming writer/reader interface."""

from siprec_backup.storage.base import ObjectInfo, ObjectStore, ObjectWriter, StoreLimits
from siprec_backup.storage.local import LocalStore

__all__ = ["LocalStore", "ObjectInfo", "ObjectStore", "ObjectWriter", "StoreLimits"]
