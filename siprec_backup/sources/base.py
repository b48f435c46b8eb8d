"""What every streamed source offers the engine: a dump stream and the facts of its snapshot for
the backup, and a target that takes the stream back for the restore.

PostgreSQL, MySQL/MariaDB and Redis fit this shape (one stream each way). Recording files do not
(many files, incremental) and have their own engine in :mod:`siprec_backup.recordings`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Protocol

#: How much of a failed client tool's stderr is read back to find its last message.
STDERR_TAIL = 4000
#: Pipe capacity asked for between us and a client tool (Linux default: 64 KiB).
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


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


class Restore(Protocol):
    """A restore in progress: write the plaintext into `stdin`, then call `finish`.

    `close` is always called last and kills the restore tool if it still runs, so that a failed
    restore commits nothing where the tool allows it (pg_restore --single-transaction).
    """

    stdin: BinaryIO

    def finish(self) -> None:
        """Close the input and wait; RestoreError naming the tool's last message on failure."""
        ...

    def died(self) -> Exception:
        """The error to raise when the tool stopped reading its input (a broken pipe)."""
        ...

    def close(self) -> None: ...


class RestoreTarget(Protocol):
    """Somewhere a streamed backup of one kind is restored into."""

    @property
    def kind(self) -> str:
        """The source kind this target takes (postgres, mysql, redis)."""
        ...

    def describe(self) -> str:
        """Where the target is, for messages (never credentials)."""
        ...

    def prepare(self, *, overwrite: bool) -> None:
        """Make the target ready; TargetNotEmptyError if it holds data and not `overwrite`."""
        ...

    def open_restore(self, *, overwrite: bool) -> Restore:
        """Start the restore tool reading from its stdin."""
        ...

    def restored_counts(self, tables: dict[str, int]) -> dict[str, int]:
        """Count again, after the restore, what the manifest's `tables` counted at backup time
        (rows per table, keys per Redis database); `tables` says which names to count."""
        ...


def stderr_tail(handle: IO[bytes]) -> str:
    """The last line a client tool (pg_dump, mariadb-dump...) wrote to its stderr file: the
    message an error names. Reads at most STDERR_TAIL bytes."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - STDERR_TAIL))
    lines = handle.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no error output"


def widen_pipe(pipe: IO[bytes] | None) -> None:
    """Let a pipe to or from a client tool hold PIPE_SIZE bytes instead of 64 KiB.

    With the default, every read returns at most 64 KiB and the tool and we take turns many
    times per megabyte; measured on mariadb-dump at 1 GiB, widening took our backup from 0.83x
    to 1.0x the shell pipeline's throughput. Best effort: a smaller limit
    (/proc/sys/fs/pipe-max-size) or another OS keeps the default.
    """
    if pipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, PIPE_SIZE)


class BackgroundCount:
    """Counts (rows per table) taken in a thread while the dump streams, in the dump's snapshot;
    :meth:`result` waits for them and re-raises what went wrong in the thread."""

    def __init__(self, count: Callable[[], dict[str, int]], name: str) -> None:
        self._count = count
        self._counts: dict[str, int] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._counts = self._count()
        except BaseException as exc:  # re-raised by result()
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def result(self) -> dict[str, int]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return dict(self._counts)
