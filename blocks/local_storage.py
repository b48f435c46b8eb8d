"""The local (or NFS) directory storage block."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, field_validator

from blocks._docs import DOCS_URL
from siprec_backup.storage import LocalStore


class LocalStorage(Block):
    """A directory used as an object store.

    Objects are written under a temporary name and renamed into place, so a crash never leaves a
    partial object that looks complete. An NFS mount works the same way.

    Example:
        ```python
        from blocks.local_storage import LocalStorage
        store = LocalStorage.load("BLOCK_NAME").store()
        ```
    """

    _block_type_name = "SIPREC Backup Local Storage"
    _block_type_slug = "siprec-backup-local-storage"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "A local or NFS directory holding backups as files."

    path: str = Field(title="Path", description="Absolute path of the backup directory.")
    prefix: str = Field(
        default="",
        title="Prefix",
        description="Sub-path under which backups are stored, e.g. 'siprec'.",
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must be absolute")
        return value

    def store(self) -> LocalStore:
        return LocalStore(self.path)
