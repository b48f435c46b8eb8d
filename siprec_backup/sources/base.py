"""What every source offers the backup engine: a dump stream and the facts of its snapshot."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol


@dataclass(frozen=True)
class DumpFacts:
    """What a finished dump tells the manifest: positions, versions, per-table row counts."""

    source_info: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)


class Dump(Protocol):
    """A dump in progress: read `stream` to its end, then call `finish`."""

    stream: BinaryIO

    def finish(self) -> DumpFacts:
        """Wait for the dump to end; raise SourceError if it failed."""
        ...


class Source(Protocol):
    """Something we back up."""

    @property
    def kind(self) -> str:
        """postgres, mysql, redis, recordings: recorded in the manifest."""
        ...

    def describe(self) -> str:
        """Where the source is, for messages (never credentials)."""
        ...

    def estimate_bytes(self) -> int | None:
        """A size estimate for progress reporting, if the source can tell."""
        ...

    def open_dump(self) -> AbstractContextManager[Dump]:
        """Start a consistent dump; leaving the context stops it and frees its resources."""
        ...
