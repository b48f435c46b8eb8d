"""The restore engine for streamed sources: store -> decrypt -> decompress -> restore tool, then
proof.

A restore streams the object into the target's tool (``pg_restore --single-transaction``, the
``mariadb`` client, a Redis loader), then checks what it restored against the manifest: plaintext
and ciphertext size and sha256, and every count the manifest took (rows per table, keys per Redis
database).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO, cast

from siprec_backup.errors import ConfigurationError, ManifestMismatchError
from siprec_backup.manifest import Manifest, StoredObject
from siprec_backup.sources.base import RestoreTarget
from siprec_backup.storage import ObjectStore
from siprec_backup.stream import Keyring, MasterKey, StreamStats, unseal

log = logging.getLogger(__name__)

#: Called with the number of ciphertext bytes of each read from the store (a delta, not a total).
ReadProgress = Callable[[int], None]


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did and what it proved."""

    backup_id: str
    target: str
    plaintext_bytes: int
    seconds: float
    tables: dict[str, int]

    @property
    def bytes_per_second(self) -> float:
        return self.plaintext_bytes / self.seconds if self.seconds > 0 else 0.0


class _ProgressReader:
    """Passes a store reader's reads through and reports the size of each one: one call per
    read, no per-byte work."""

    def __init__(self, raw: BinaryIO, progress: ReadProgress) -> None:
        self._raw = raw
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self._progress(len(data))
        return data

    def readinto(self, buffer: memoryview) -> int:
        readinto = getattr(self._raw, "readinto", None)
        if readinto is None:
            data = self.read(len(buffer))
            buffer[: len(data)] = data
            return len(data)
        got: int = readinto(buffer)
        if got:
            self._progress(got)
        return got


def with_progress(reader: BinaryIO, progress: ReadProgress | None) -> BinaryIO:
    """`reader`, reporting each read's size to `progress` (unchanged without one)."""
    if progress is None:
        return reader
    return cast(BinaryIO, _ProgressReader(reader, progress))


def stream_differences(expected: StoredObject, stats: StreamStats) -> list[str]:
    """How a decrypted stream differs from its manifest record (sizes, sha256); empty if not."""
    return [
        f"{name}: manifest {want}, restored {got}"
        for name, want, got in (
            ("ciphertext bytes", expected.ciphertext_bytes, stats.ciphertext_bytes),
            ("ciphertext sha256", expected.ciphertext_sha256, stats.ciphertext_sha256),
            ("plaintext bytes", expected.plaintext_bytes, stats.plaintext_bytes),
            ("plaintext sha256", expected.plaintext_sha256, stats.plaintext_sha256),
        )
        if want != got
    ]


def check_stream(manifest: Manifest, stats: StreamStats) -> None:
    """The decrypted stream must be exactly what the backup wrote."""
    problems = stream_differences(manifest.object, stats)
    if problems:
        raise ManifestMismatchError(
            f"backup {manifest.backup_id} does not match its manifest: {'; '.join(problems)}"
        )


def check_row_counts(manifest: Manifest, restored: dict[str, int]) -> None:
    """Every table the manifest counted must hold the same number of rows after the restore."""
    problems = [
        f"{table}: expected {rows}, got {restored.get(table, 'missing')}"
        for table, rows in sorted(manifest.tables.items())
        if restored.get(table) != rows
    ]
    if problems:
        raise ManifestMismatchError(
            f"restored rows differ from backup {manifest.backup_id}: {'; '.join(problems)}"
        )


def run_restore(
    store: ObjectStore,
    manifest: Manifest,
    keys: Keyring | MasterKey,
    target: RestoreTarget,
    *,
    overwrite: bool = False,
    progress: ReadProgress | None = None,
) -> RestoreResult:
    """Restore `manifest`'s backup into `target` and prove it against the manifest.

    `progress`, if given, receives the size of each read of ciphertext from the store.
    """
    if manifest.source_kind != target.kind:
        raise ConfigurationError(
            f"backup {manifest.backup_id} is a {manifest.source_kind} backup; "
            f"the target {target.describe()} takes {target.kind} backups"
        )
    started = datetime.now(UTC)
    target.prepare(overwrite=overwrite)
    log.info("restore %s of %s into %s", manifest.backup_id, manifest.source, target.describe())
    restore = target.open_restore(overwrite=overwrite)
    try:
        with store.open_reader(manifest.object.key) as reader:
            try:
                stats = unseal(with_progress(reader, progress), restore.stdin, keys)
            except BrokenPipeError:
                raise restore.died() from None
        restore.finish()
    finally:
        restore.close()
    check_stream(manifest, stats)
    restored = target.restored_counts(manifest.tables)
    check_row_counts(manifest, restored)
    seconds = (datetime.now(UTC) - started).total_seconds()
    log.info("restore %s: %d tables match the manifest", manifest.backup_id, len(restored))
    return RestoreResult(
        backup_id=manifest.backup_id,
        target=target.describe(),
        plaintext_bytes=stats.plaintext_bytes,
        seconds=seconds,
        tables={t: restored[t] for t in manifest.tables},
    )
