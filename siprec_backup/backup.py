"""The backup engine: source dump -> compress -> encrypt -> store, then the manifest.

Every byte flows one way through fixed-size buffers (the stream module reads 1 MiB at a time), so
memory does not grow with the database. The data object is committed only after the source
reports success, and the manifest is written last: a backup without a manifest does not exist,
and a failure at any point leaves neither a manifest nor a stray data object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import BinaryIO, cast

from siprec_backup import __version__
from siprec_backup.manifest import (
    DATA_NAME,
    MANIFEST_NAME,
    Manifest,
    StoredObject,
    backup_prefix,
    new_backup_id,
)
from siprec_backup.sources.base import Source
from siprec_backup.storage import ObjectStore
from siprec_backup.stream import DEFAULT_CHUNK_SIZE, Compression, MasterKey, seal

log = logging.getLogger(__name__)

#: How often (in source bytes) the progress callback is called.
PROGRESS_STEP = 8 << 20
#: Unfinished uploads older than this were left by a killed backup and are discarded.
STALE_UPLOAD_SECONDS = 24 * 3600

ProgressCallback = Callable[[int], None]


class _ProgressReader:
    """Passes reads through and reports the running byte count every PROGRESS_STEP bytes."""

    def __init__(self, raw: BinaryIO, progress: ProgressCallback | None) -> None:
        self._raw = raw
        self._progress = progress
        self._count = 0
        self._next = PROGRESS_STEP

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._count += len(data)
        if self._progress is not None and self._count >= self._next:
            self._next = self._count + PROGRESS_STEP
            self._progress(self._count)
        return data


def run_backup(
    source: Source,
    store: ObjectStore,
    key: MasterKey,
    *,
    cluster: str,
    source_name: str,
    prefix: str = "",
    backup_id: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    level: int = 3,
    progress: ProgressCallback | None = None,
) -> Manifest:
    """Back up `source` into `store`; returns the manifest once it is written."""
    backup_id = backup_id or new_backup_id()
    base = backup_prefix(prefix, cluster, source_name, backup_id)
    started = datetime.now(UTC)
    # Only this source's directory: a killed backup of it left its partial upload there.
    source_dir = backup_prefix(prefix, cluster, source_name)
    for stale in store.abort_stale_uploads(source_dir, STALE_UPLOAD_SECONDS):
        log.warning("discarded an unfinished upload left by an interrupted backup: %s", stale)
    log.info(
        "backup %s of %s: dumping %s to %s",
        backup_id,
        source_name,
        source.describe(),
        store.describe(),
    )
    with source.open_dump() as dump, store.open_writer(base + DATA_NAME) as writer:
        stats = seal(
            cast(BinaryIO, _ProgressReader(dump.stream, progress)),
            cast(BinaryIO, writer),
            key,
            compression=Compression.ZSTD,
            level=level,
            chunk_size=chunk_size,
        )
        facts = dump.finish()
        writer.commit()
    manifest = Manifest(
        backup_id=backup_id,
        cluster=cluster,
        source=source_name,
        source_kind=source.kind,
        started_at=started,
        finished_at=datetime.now(UTC),
        object=StoredObject(
            key=base + DATA_NAME,
            plaintext_bytes=stats.plaintext_bytes,
            plaintext_sha256=stats.plaintext_sha256,
            ciphertext_bytes=stats.ciphertext_bytes,
            ciphertext_sha256=stats.ciphertext_sha256,
            compression=Compression.ZSTD.name.lower(),
            chunk_size=chunk_size,
            key_id=key.key_id,
        ),
        source_info=facts.source_info,
        tables=facts.tables,
        tool_version=__version__,
    )
    try:
        store.put_bytes(base + MANIFEST_NAME, manifest.to_json())
    except BaseException:
        store.delete(base + DATA_NAME)
        raise
    log.info(
        "backup %s of %s: complete, %d bytes dumped, %d bytes stored",
        backup_id,
        source_name,
        stats.plaintext_bytes,
        stats.ciphertext_bytes,
    )
    return manifest
