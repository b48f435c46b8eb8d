"""Walking a recordings tree and reading its files with change detection.

What: :func:`scan_tree` lists every regular file under a root (relative POSIX paths, sorted) with
the stat facts an incremental backup compares (size, mtime_ns, inode); :func:`hash_file` reads one
file once, in bounded chunks, and proves it did not change while being read. Why: a recorder keeps
writing while we back up; a file caught mid-write must be reported, never stored half-written.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from siprec_backup.errors import SourceError, SourceUnavailableError

#: Bytes per read: bounded memory whatever the file size.
READ_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """A regular file found by the scan, with the stat facts taken then."""

    path: str  # relative, '/'-separated
    size: int
    mtime_ns: int
    ino: int


class FileChangedError(Exception):
    """A file changed, vanished or could not be read while it was backed up (a problem entry,
    not a failure: the engine skips the file and reports why)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def scan_tree(root: Path) -> tuple[list[ScannedFile], list[FileChangedError]]:
    """Every regular file under `root`, sorted by path; plus what was skipped and why
    (symlinks, sockets, entries that vanished during the walk)."""
    if not root.is_dir():
        raise SourceUnavailableError(f"recordings directory {root} does not exist or is no dir")
    files: list[ScannedFile] = []
    problems: list[FileChangedError] = []
    pending = [(str(root), "")]
    while pending:
        directory, rel = pending.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except FileNotFoundError:
            problems.append(FileChangedError(rel or ".", "directory vanished during the scan"))
            continue
        except OSError as exc:
            raise SourceError(f"cannot list {directory}: {exc.strerror}") from None
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, path))
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                problems.append(FileChangedError(path, "vanished during the scan"))
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(FileChangedError(path, "not a regular file (symlink or special)"))
                continue
            files.append(ScannedFile(path, st.st_size, st.st_mtime_ns, st.st_ino))
    files.sort(key=lambda f: f.path)
    return files, problems


def same_file(before: os.stat_result, scanned: ScannedFile) -> bool:
    """True if `before` still describes the scanned file (no rewrite, no replacement)."""
    return (before.st_size, before.st_mtime_ns, before.st_ino) == (
        scanned.size,
        scanned.mtime_ns,
        scanned.ino,
    )


def hash_file(
    root: Path, scanned: ScannedFile, feed: Callable[[bytes], None] | None = None
) -> bytes:
    """Read the file once, in READ_SIZE chunks, and return its sha256 digest.

    `feed` also receives every chunk (the metadata parser). FileChangedError if the file vanished,
    was replaced or changed size or mtime since the scan or while being read.
    """
    digest = hashlib.sha256()
    try:
        with open(root / scanned.path, "rb", buffering=0) as f:
            if not same_file(os.fstat(f.fileno()), scanned):
                raise FileChangedError(scanned.path, "changed between the scan and the read")
            got = 0
            while chunk := f.read(READ_SIZE):
                got += len(chunk)
                digest.update(chunk)
                if feed is not None:
                    feed(chunk)
            after = os.fstat(f.fileno())
    except FileNotFoundError:
        raise FileChangedError(scanned.path, "vanished before it was read") from None
    except PermissionError as exc:
        raise FileChangedError(scanned.path, f"unreadable ({exc.strerror})") from None
    if got != scanned.size or not same_file(after, scanned):
        raise FileChangedError(scanned.path, "changed while being read")
    check_still_there(root, scanned)
    return digest.digest()


def check_still_there(root: Path, scanned: ScannedFile) -> None:
    """FileChangedError if the path no longer names the file that was read (deleted or replaced)."""
    try:
        now = os.stat(root / scanned.path, follow_symlinks=False)
    except FileNotFoundError:
        raise FileChangedError(scanned.path, "deleted while being read") from None
    if not same_file(now, scanned):
        raise FileChangedError(scanned.path, "replaced while being read")
