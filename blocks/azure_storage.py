"""The Azure Blob Storage block."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from blocks._docs import DOCS_URL
from siprec_backup.storage import AzureBlobStore
from siprec_backup.storage.azure import API_VERSION


class AzureBlobStorage(Block):
    """An Azure Blob Storage container used as an object store.

    Backups are block blobs whose blocks become visible only when the block list is committed at
    the end. Give either a connection string or an account URL with its account key.

    Example:
        ```python
        from blocks.azure_storage import AzureBlobStorage
        store = AzureBlobStorage.load("BLOCK_NAME").store()
        ```
    """

    _block_type_name = "SIPREC Backup Azure Blob Storage"
    _block_type_slug = "siprec-backup-azure-blob-storage"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An Azure Blob Storage container holding backups."

    container: str = Field(
        title="Container", description="Container name.", min_length=3, max_length=63
    )
    prefix: str = Field(default="", title="Prefix", description="Blob name prefix of the backups.")
    connection_string: SecretStr | None = Field(
        default=None, title="Connection string", description="Contains the account key."
    )
    account_url: str | None = Field(
        default=None,
        title="Account URL",
        description="e.g. 'https://ACCOUNT.blob.core.windows.net' (with the account key).",
    )
    account_key: SecretStr | None = Field(
        default=None, title="Account key", description="Goes with the account URL."
    )
    api_version: str | None = Field(
        default=API_VERSION,
        title="API version",
        description="Storage API version sent; pinned so that emulators accept it.",
    )

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> AzureBlobStorage:
        if (self.connection_string is None) == (self.account_url is None):
            raise ValueError("give either a connection string or an account URL")
        if self.account_url is not None and not self.account_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("account_url must start with http:// or https://")
        return self

    def store(self) -> AzureBlobStore:
        """The engine store this block describes."""
        return AzureBlobStore(
            self.container,
            connection_string=(
                self.connection_string.get_secret_value() if self.connection_string else None
            ),
            account_url=self.account_url,
            account_key=self.account_key.get_secret_value() if self.account_key else None,
            api_version=self.api_version,
        )
