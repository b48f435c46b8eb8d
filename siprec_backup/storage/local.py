"""A local (or NFS-mounted) directory used as an object store.

Each object is written under a temporary name in its final directory, flushed, fsynced and then
renamed into place, so a reader never sees a partial object and an interrupted write leaves only
a temporary file that listings ignore and :meth:`LocalStore.open_writer` cleans up on abort.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from siprec_backup.errors import (
    ConfigurationError,
    NotFoundError,
    PermanentStorageError,
    TransientStorageError,
)
from siprec_backup.storage.base import ObjectInfo, ObjectStore, ObjectWriter

TEMP_MARK = ".partial-"

# Errors that retrying can plausibly fix (a busy NFS server).
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.EIO, errno.ESTALE}
# The disk (or the quota, or the file size limit) is full: retrying the same backup will not fit.
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _storage_error(action: str, key: str, exc: OSError, where: Path | None = None) -> Exception:
    if exc.errno in _FULL_ERRNOS:
        place = where if where is not None else "the backup directory"
        return PermanentStorageError(
            f"no space left on {place} for {key!r} ({exc.strerror or exc}): free space or "
            "raise the limit, then run the backup again"
        )
    message = f"local store: cannot {action} {key!r}: {exc.strerror or exc}"
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientStorageError(message)
    return PermanentStorageError(message)


class _LocalWriter(ObjectWriter):
    def __init__(self, key: str, final: Path) -> None:
        super().__init__(key)
        self._final = final
        self._temp = final.with_name(f"{TEMP_MARK}{uuid.uuid4().hex}-{final.name}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._temp, "xb")  # noqa: SIM115 - closed in commit/abort
        except OSError as exc:
            raise _storage_error("create", key, exc) from exc

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise _storage_error("write", self.key, exc, self._final.parent) from exc

    def _commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._temp, self._final)
            _fsync_dir(self._final.parent)
        except OSError as exc:
            self._abort()
            raise _storage_error("commit", self.key, exc, self._final.parent) from exc

    def _abort(self) -> None:
        try:
            self._file.close()  # may fail again flushing its buffer on a full disk
        except OSError:
            pass
        finally:
            self._temp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(ObjectStore):
    """Objects as files under `root`; keys are relative POSIX paths."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"local directory {self.root}"

    def _path(self, key: str) -> Path:
        pure = PurePosixPath(key)
        if not key or pure.is_absolute() or ".." in pure.parts or TEMP_MARK in key:
            raise ConfigurationError(f"invalid object key {key!r}")
        return self.root.joinpath(*pure.parts)

    def open_writer(self, key: str) -> ObjectWriter:
        return _LocalWriter(key, self._path(key))

    def open_reader(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"no object {key!r} in {self.describe()}") from exc
        except OSError as exc:
            raise _storage_error("open", key, exc) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        found: list[ObjectInfo] = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMP_MARK):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    stat = path.stat()
                    modified = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
                    found.append(ObjectInfo(key=key, size=stat.st_size, modified=modified))
        yield from sorted(found, key=lambda info: info.key)

    def abort_stale_uploads(self, prefix: str, older_than_seconds: float) -> tuple[str, ...]:
        """Remove temporary files under `prefix` of writes a killed process never finished."""
        top = self.root.joinpath(*PurePosixPath(prefix).parts)
        if not top.is_dir():
            return ()
        cutoff = time.time() - older_than_seconds
        removed = []
        for path in top.rglob(f"{TEMP_MARK}*"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path.relative_to(self.root).as_posix())
        return tuple(removed)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _storage_error("delete", key, exc) from exc
        # Remove directories the delete emptied, up to the root.
        parent = path.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
