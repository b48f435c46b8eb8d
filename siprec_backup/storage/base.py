"""The one writer/reader interface every store implements (Barman's cloud interface is the model).

A store holds objects under string keys ("<prefix>/<cluster>/<source>/<backup-id>/data.sbk").
Writing is streaming and all-or-nothing: an :class:`ObjectWriter` is committed explicitly, and a
writer that is closed without a commit (an exception, an interrupt) aborts, leaving nothing behind.
Each store declares its limits so that callers can size parts before the first byte is sent.
"""

from __future__ import annotations

import abc
import io
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, BinaryIO, Self

from siprec_backup.errors import ConfigurationError, NotFoundError, PermanentStorageError

MiB = 1 << 20
TiB = 1 << 40


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


def part_size(part_number: int, *, first: int, grow_every: int, max_part: int) -> int:
    """Size of part `part_number` (1-based) of a multipart upload whose parts grow.

    Parts start at `first` bytes and double every `grow_every` parts, capped at `max_part`. Small
    and medium backups therefore use small, flat memory, while the part count limit (S3: 10,000)
    still reaches the largest object we accept. Only the last part may be shorter.
    """
    if part_number < 1:
        raise ValueError("part numbers start at 1")
    return min(first << ((part_number - 1) // grow_every), max_part)


def schedule_capacity(parts: int, *, first: int, grow_every: int, max_part: int) -> int:
    """Bytes that `parts` parts of the :func:`part_size` schedule hold at most."""
    total, number = 0, 1
    while number <= parts:
        size = part_size(number, first=first, grow_every=grow_every, max_part=max_part)
        run = min(grow_every - (number - 1) % grow_every, parts - number + 1)
        total += size * run
        number += run
    return total


class PartedWriter(ObjectWriter):
    """A writer that cuts the stream into growing parts and uploads them in the background.

    At most `in_flight` parts are being uploaded while the next one fills, so memory stays near
    ``(in_flight + 1) * part size``. An object that never fills its first part is sent whole at
    commit (one request). Subclasses say how to start, send, finish and cancel an upload.
    """

    def __init__(
        self,
        key: str,
        *,
        store: str,
        first_part: int,
        grow_every: int,
        limits: StoreLimits,
        in_flight: int = 2,
    ) -> None:
        super().__init__(key)
        assert limits.max_part_size and limits.max_parts and limits.max_object_size
        self._store = store
        self._first, self._every, self._limits = first_part, grow_every, limits
        self._buffer = bytearray()
        self._number = 0
        self._tokens: list[Any] = []
        self._pending: deque[Future[Any]] = deque()
        self._in_flight = in_flight
        self._pool: ThreadPoolExecutor | None = None
        self._started = False

    def _next_size(self) -> int:
        return part_size(
            self._number + 1,
            first=self._first,
            grow_every=self._every,
            max_part=self._limits.max_part_size or 0,
        )

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        limit = self._limits.max_object_size or 0
        if self.bytes_written + len(data) > limit:
            raise PermanentStorageError(
                f"{self._store}: object {self.key!r} would exceed the largest accepted size "
                f"({limit} bytes)"
            )
        self._buffer += data
        while len(self._buffer) >= self._next_size():
            size = self._next_size()
            with memoryview(self._buffer) as view:
                part = bytes(view[:size])  # one copy; the view is released before the del
            del self._buffer[:size]
            self._send(part)

    def _send(self, part: bytes) -> None:
        if self._number >= (self._limits.max_parts or 0):
            raise PermanentStorageError(f"{self._store}: too many parts for {self.key!r}")
        if not self._started:
            self._start_upload()
            self._started = True
            self._pool = ThreadPoolExecutor(self._in_flight, thread_name_prefix="store-part")
        while len(self._pending) >= self._in_flight:
            self._tokens.append(self._pending.popleft().result())
        self._number += 1
        assert self._pool is not None
        self._pending.append(self._pool.submit(self._upload_part, self._number, part))

    def _commit(self) -> None:
        if not self._started:
            self._put_whole(bytes(self._buffer))
            self._buffer = bytearray()
            return
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer = bytearray()
        while self._pending:
            self._tokens.append(self._pending.popleft().result())
        self._shutdown()
        self._complete_upload(self._tokens)

    def _abort(self) -> None:
        self._buffer = bytearray()
        for fut in self._pending:
            fut.cancel()
        self._shutdown()
        self._pending.clear()
        if self._started:
            self._cancel_upload()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @abc.abstractmethod
    def _start_upload(self) -> None:
        """Begin a multipart upload (called before the first part)."""

    @abc.abstractmethod
    def _upload_part(self, number: int, data: bytes) -> Any:
        """Send part `number` (1-based); returns what :meth:`_complete_upload` needs."""

    @abc.abstractmethod
    def _complete_upload(self, tokens: list[Any]) -> None:
        """Publish the object from its parts, in order."""

    @abc.abstractmethod
    def _put_whole(self, data: bytes) -> None:
        """Store a small object in one request."""

    @abc.abstractmethod
    def _cancel_upload(self) -> None:
        """Discard the started upload (best effort: must not raise on a broken connection)."""


class StoreReader(io.RawIOBase):
    """A read-only stream over a store's download; `read_some` maps SDK errors to ours.

    ``read(n)`` returns exactly `n` bytes unless the object ends first, like a regular file.
    """

    def __init__(self, read_some: Callable[[int], bytes], close: Callable[[], None]) -> None:
        super().__init__()
        self._read_some = read_some
        self._close = close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read_some(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        parts: list[bytes] = []
        remaining = size
        while remaining > 0:
            data = self._read_some(min(remaining, 8 * MiB))
            if not data:
                break
            parts.append(data)
            remaining -= len(data)
        return b"".join(parts)

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while data := self._read_some(8 * MiB):
            parts.append(data)
        return b"".join(parts)

    def close(self) -> None:
        if not self.closed:
            try:
                self._close()
            finally:
                super().close()
