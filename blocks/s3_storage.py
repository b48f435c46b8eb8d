"""The Amazon S3 (or S3-compatible) storage block."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._docs import DOCS_URL
from siprec_backup.storage import S3Store
from siprec_backup.storage.s3 import MAX_OBJECT


class S3Storage(Block):
    """An S3 bucket (AWS, MinIO or any S3-compatible server) used as an object store.

    Backups are written with multipart uploads that become visible only when complete; unfinished
    uploads of killed backups are aborted by the next backup. Leave the keys empty to use the
    worker's standard AWS credentials (environment, profile, instance role).

    Example:
        ```python
        from blocks.s3_storage import S3Storage
        store = S3Storage.load("BLOCK_NAME").store()
        ```
    """

    _block_type_name = "SIPREC Backup S3 Storage"
    _block_type_slug = "siprec-backup-s3-storage"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An Amazon S3 or S3-compatible bucket holding backups."

    bucket: str = Field(title="Bucket", description="Bucket name.", min_length=3, max_length=63)
    prefix: str = Field(
        default="", title="Prefix", description="Key prefix of the backups, e.g. 'siprec'."
    )
    region: str | None = Field(default=None, title="Region", description="e.g. 'eu-west-1'.")
    endpoint_url: str | None = Field(
        default=None,
        title="Endpoint URL",
        description="For S3-compatible servers, e.g. 'https://minio.example:9000'.",
    )
    aws_access_key_id: str | None = Field(
        default=None, title="Access key ID", description="Empty: standard AWS credentials."
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None, title="Secret access key", description="Goes with the access key ID."
    )
    aws_session_token: SecretStr | None = Field(
        default=None, title="Session token", description="For temporary credentials only."
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        title="Addressing style",
        description="'path' for most S3-compatible servers.",
    )
    max_object_size: int = Field(
        default=MAX_OBJECT,
        title="Largest object (bytes)",
        description="Largest backup accepted; S3's own maximum is 5 TiB.",
        gt=0,
        le=MAX_OBJECT,
    )

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("endpoint_url must start with http:// or https://")
        return value

    @field_validator("aws_secret_access_key")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("the secret access key is empty")
        return value

    def store(self) -> S3Store:
        """The engine store this block describes."""
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            from siprec_backup.errors import ConfigurationError

            raise ConfigurationError(
                "S3 storage block: give both the access key ID and the secret access key, or none"
            )
        return S3Store(
            self.bucket,
            endpoint_url=self.endpoint_url,
            region=self.region,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=_secret(self.aws_secret_access_key),
            aws_session_token=_secret(self.aws_session_token),
            addressing_style=self.addressing_style,
            max_object_size=self.max_object_size,
        )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
