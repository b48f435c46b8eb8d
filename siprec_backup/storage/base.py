"""The one writer/reader interface every store implements (Barman's cloud interface is the model).

A store holds objects under string keys ("<prefix>/<cluster>/<source>/<backup-id>/data.sbk").
Writing is streaming and all-or-nothing: an :class:`ObjectWriter` is committed explicitly, and a
writer that is closed without a commit (an exception, an interrupt) aborts, leaving nothing behind.
Each store declares its limits so that callers can size parts before the first byte is sent.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import BinaryIO, Self

from siprec_backup.errors import ConfigurationError, NotFoundError


@dataclass(frozen=True)
class StoreLimits:
    """What a store accepts: the largest part, the most parts, the largest object (bytes)."""

    max_part_size: int | None = None
    max_parts: int | None = None
    max_object_size: int | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as listed."""

    key: str
    size: int
    modified: datetime


class ObjectWriter(abc.ABC):
    """A streaming upload of one object; visible only after :meth:`commit`."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.bytes_written = 0
        self._done = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._done:
            raise ValueError(f"write to a finished object writer for {self.key!r}")
        self._write(data)
        self.bytes_written += len(data)
        return len(data)

    def commit(self) -> None:
        """Make the object visible under its key, atomically."""
        if not self._done:
            self._commit()
            self._done = True

    def abort(self) -> None:
        """Discard everything written; safe to call more than once."""
        if not self._done:
            self._done = True
            self._abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Only an explicit commit publishes; anything else, including an exception, aborts.
        self.abort()

    @abc.abstractmethod
    def _write(self, data: bytes | bytearray | memoryview) -> None: ...

    @abc.abstractmethod
    def _commit(self) -> None: ...

    @abc.abstractmethod
    def _abort(self) -> None: ...


class ObjectStore(abc.ABC):
    """A place that holds backup objects."""

    limits = StoreLimits()
    #: Largest object :meth:`get_bytes` returns: manifests are small, whole reads of data are not.
    max_small_object = 16 << 20

    @abc.abstractmethod
    def describe(self) -> str:
        """Where this store is, for messages and logs (never credentials)."""

    @abc.abstractmethod
    def open_writer(self, key: str) -> ObjectWriter:
        """Start a streaming upload of `key`."""

    @abc.abstractmethod
    def open_reader(self, key: str) -> BinaryIO:
        """Open `key` for streaming reads; NotFoundError if it does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every committed object whose key starts with `prefix`, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing key is not an error."""

    def abort_stale_uploads(self, prefix: str, older_than_seconds: float) -> tuple[str, ...]:
        """Discard uploads under `prefix` that a killed process left unfinished.

        A crash can skip the writer's abort: a local temporary file, an S3 multipart upload.
        Returns what was discarded. Stores with nothing to clean keep this default.
        """
        return ()

    def exists(self, key: str) -> bool:
        try:
            self.open_reader(key).close()
        except NotFoundError:
            return False
        return True

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small object (a manifest) atomically."""
        with self.open_writer(key) as writer:
            writer.write(data)
            writer.commit()

    def get_bytes(self, key: str) -> bytes:
        """Read a small object (a manifest) whole, refusing anything larger than a manifest."""
        with self.open_reader(key) as reader:
            data = reader.read(self.max_small_object + 1)
        if len(data) > self.max_small_object:
            raise ConfigurationError(f"object {key!r} is too large to read whole")
        return data
