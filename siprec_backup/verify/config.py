"""What a verification checks beyond the manifest: user SQL checks and the recordings cross-check.

Both run against the restored copy in a scratch instance, never against production, so a check's
SQL can be anything the operator likes; it only has to return one value (a check) or rows of
``(id, path)`` (the references query).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: The lab's SIPREC schema: every audio file and every session's metadata document a row names.
DEFAULT_REFERENCES_SQL = (
    "SELECT id, file_path FROM siprec.recordings "
    "UNION ALL SELECT id, metadata_path FROM siprec.recordings"
)


class SqlCheck(BaseModel):
    """A query on a restored database and the one value it must return."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Shown in the report, e.g. 'no recording without a hash'.")
    source: str = Field(description="The database source whose restored copy is queried.")
    sql: str = Field(description="A query returning exactly one row of one column.")
    expected: str = Field(description="The value it must return, compared as text.")


class RecordingReferences(BaseModel):
    """Which restored database names the recording files, and how to list them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="The database source whose rows reference the recordings.")
    sql: str = Field(
        default=DEFAULT_REFERENCES_SQL,
        description="Rows of (id, path): the row id to report and the file's path relative to "
        "the recordings directory.",
    )


class VerificationConfig(BaseModel):
    """Everything a platform's verification checks besides the manifest's own facts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checks: list[SqlCheck] = Field(default_factory=list, description="User SQL checks.")
    references: RecordingReferences | None = Field(
        default=None,
        description="Cross-check recordings against the restored database (orphans either way).",
    )
