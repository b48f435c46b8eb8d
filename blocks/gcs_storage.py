"""The Google Cloud Storage block."""

from __future__ import annotations

import json

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._docs import DOCS_URL
from siprec_backup.storage import GCSStore


class GCSStorage(Block):
    """A Google Cloud Storage bucket used as an object store.

    Backups are written with resumable uploads that become objects only when complete. Leave the
    service account empty to use the worker's Application Default Credentials
    (``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server).

    Example:
        ```python
        from blocks.gcs_storage import GCSStorage
        store = GCSStorage.load("BLOCK_NAME").store()
        ```
    """

    _block_type_name = "SIPREC Backup GCS Storage"
    _block_type_slug = "siprec-backup-gcs-storage"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "A Google Cloud Storage bucket holding backups."

    bucket: str = Field(title="Bucket", description="Bucket name.", min_length=3, max_length=222)
    prefix: str = Field(
        default="", title="Prefix", description="Object name prefix of the backups."
    )
    project: str | None = Field(
        default=None, title="Project", description="Project ID (else the credentials' project)."
    )
    service_account_info: SecretStr | None = Field(
        default=None,
        title="Service account key (JSON)",
        description="The JSON key file's content; empty: Application Default Credentials.",
    )
    endpoint: str | None = Field(
        default=None,
        title="Endpoint",
        description="Only for emulators, e.g. 'http://127.0.0.1:9023' (anonymous access).",
    )

    @field_validator("service_account_info")
    @classmethod
    def _json_object(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                parsed = json.loads(value.get_secret_value())
            except ValueError:
                raise ValueError("the service account key is not valid JSON") from None
            if not isinstance(parsed, dict) or "private_key" not in parsed:
                raise ValueError("the service account key is not a JSON key file")
        return value

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("endpoint must start with http:// or https://")
        return value

    def store(self) -> GCSStore:
        """The engine store this block describes."""
        info = self.service_account_info
        return GCSStore(
            self.bucket,
            project=self.project,
            service_account_info=info.get_secret_value() if info is not None else None,
            endpoint=self.endpoint,
        )
