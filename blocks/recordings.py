"""The SIPREC recordings directory block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, field_validator

from blocks._docs import DOCS_URL
from siprec_backup.recordings import DEFAULT_COMPRESSED_EXTENSIONS


class RecordingsDirectory(Block):
    """The directory tree a SIPREC recorder writes its media files and metadata XML into.

    Backups of it are incremental by content: only files whose content is not yet stored are
    uploaded. Files with a compressed extension (opus, mp3...) are stored without recompression.

    Example:
        ```python
        from blocks.recordings import RecordingsDirectory
        root = RecordingsDirectory.load("BLOCK_NAME").root()
        ```
    """

    _block_type_name = "SIPREC Backup Recordings Directory"
    _block_type_slug = "siprec-backup-recordings-directory"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "A directory of SIPREC recordings (audio files and RFC 7865 metadata XML)."

    path: str = Field(title="Path", description="Absolute path of the recordings root directory.")
    compressed_extensions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_COMPRESSED_EXTENSIONS),
        title="Compressed extensions",
        description="File extensions (without dot) of already-compressed content, stored "
        "without recompression.",
    )
    fail_on_change: bool = Field(
        default=False,
        title="Fail on change",
        description="Fail the backup when a file changes while it is read, instead of skipping "
        "the file and reporting it.",
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must be absolute")
        return value

    @field_validator("compressed_extensions")
    @classmethod
    def _extensions(cls, value: list[str]) -> list[str]:
        cleaned = [e.strip().lower().lstrip(".") for e in value]
        bad = [e for e in cleaned if not e or "/" in e]
        if bad:
            raise ValueError(f"invalid extension {bad[0]!r}")
        return cleaned

    def root(self) -> Path:
        """The recordings root directory."""
        return Path(self.path)

    def engine_options(self) -> dict[str, Any]:
        """The keyword arguments of ``run_recordings_backup`` this block configures."""
        return {
            "compressed_extensions": tuple(self.compressed_extensions),
            "fail_on_change": self.fail_on_change,
        }
