"""The master key block: the key that wraps every backup's data key."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._docs import DOCS_URL
from siprec_backup.errors import ConfigurationError
from siprec_backup.stream import Keyring, MasterKey


class EncryptionKey(Block):
    """A 256-bit master key for envelope encryption of backups.

    Each backup gets a random data key, wrapped by this master key; the key id is written into
    every backup's header so the right key can be found later. Keep a copy of the key outside
    Prefect (a password manager, an HSM export): the break-glass restore needs it when the
    Prefect server is lost.

    Example:
        ```python
        from blocks.encryption_key import EncryptionKey
        key = EncryptionKey.load("BLOCK_NAME").master_key()
        ```
    """

    _block_type_name = "SIPREC Backup Encryption Key"
    _block_type_slug = "siprec-backup-encryption-key"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "Master key (id + 32 secret bytes) that wraps each backup's data key."

    key_id: str = Field(
        title="Key id",
        description="Name of this key, written into every backup header (1-255 characters).",
        min_length=1,
        max_length=255,
    )
    key: SecretStr = Field(
        title="Key",
        description="The 32-byte master key as 64 hex characters or base64.",
    )
    retired_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        title="Retired keys",
        description="Older keys by id, still accepted for decryption after a rotation.",
    )

    @field_validator("key")
    @classmethod
    def _key_is_valid(cls, value: SecretStr) -> SecretStr:
        try:
            MasterKey.from_text("check", value.get_secret_value())
        except ConfigurationError:
            raise ValueError("expected 64 hex characters or the base64 of 32 bytes") from None
        return value

    def master_key(self) -> MasterKey:
        """The key new backups are encrypted with."""
        return MasterKey.from_text(self.key_id, self.key.get_secret_value())

    def keyring(self) -> Keyring:
        """Every key this block knows, for decryption."""
        retired = [
            MasterKey.from_text(k, v.get_secret_value()) for k, v in self.retired_keys.items()
        ]
        return Keyring([self.master_key(), *retired])
