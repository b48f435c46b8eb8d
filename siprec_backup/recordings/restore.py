"""Restore of a recordings backup into a directory, proven file by file.

What: read the backup's index, group its files by the pack holding their bytes (this backup's or
an earlier one it depends on), stream-decrypt each needed pack once, in offset order, into a sink
that routes byte ranges to files. Each file is written under a temporary name, its size and
sha256 checked, then renamed into place and given its mtime. Each pack's stream stats must equal
its manifest's record. Why: a restore must prove every byte, and a pack is read sequentially
(one pass, bounded memory) whatever the number of files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

from siprec_backup.catalog import read_manifest
from siprec_backup.errors import (
    ConfigurationError,
    IntegrityError,
    ManifestMismatchError,
    NotFoundError,
    TargetNotEmptyError,
)
from siprec_backup.manifest import Manifest, StoredObject
from siprec_backup.recordings.backup import SOURCE_KIND
from siprec_backup.recordings.index import (
    AUDIO_PACK,
    IndexEntry,
    check_object,
    read_index,
)
from siprec_backup.restore import ReadProgress, RestoreResult, with_progress
from siprec_backup.storage import ObjectStore
from siprec_backup.stream import Keyring, MasterKey, unseal

log = logging.getLogger(__name__)

_TMP_SUFFIX = ".sbk-restore-tmp"
#: Packs restored at once (a backup has two: compressed data and stored audio; an incremental
#: one also reads its bases' packs).
PARALLEL_PACKS = 2
_EMPTY_SHA256 = hashlib.sha256().digest()


@dataclass
class _Slot:
    """One stored content: its place in the pack and every path that gets it."""

    offset: int
    size: int
    sha256: bytes
    entries: list[IndexEntry] = field(default_factory=list)


class _RoutingSink:
    """Receives a pack's plaintext in order and writes each slot's byte range to its files."""

    def __init__(self, target: Path, slots: list[_Slot], where: str) -> None:
        self._target = target
        self._slots = slots
        self._where = where
        self._next = 0
        self._pos = 0
        self._file: BinaryIO | None = None
        self._tmp: Path | None = None
        self._hash = hashlib.sha256()
        self.restored = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        total = len(view)
        while view:
            if self._next >= len(self._slots):
                self._pos += len(view)
                break
            slot = self._slots[self._next]
            if self._pos < slot.offset:  # bytes no wanted file uses
                skip = min(len(view), slot.offset - self._pos)
                self._pos += skip
                view = view[skip:]
                continue
            if self._file is None:
                self._open(slot)
            assert self._file is not None
            take = min(len(view), slot.offset + slot.size - self._pos)
            self._file.write(view[:take])
            self._hash.update(view[:take])
            self._pos += take
            view = view[take:]
            if self._pos == slot.offset + slot.size:
                self._complete(slot)
        return total

    def flush(self) -> None:
        """Files are flushed when each one completes."""

    def _open(self, slot: _Slot) -> None:
        if slot.offset < self._pos:
            raise IntegrityError(f"{self._where}: index entries overlap at offset {slot.offset}")
        final = self._target / slot.entries[0].path
        final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = final.with_name(final.name + _TMP_SUFFIX)
        self._file = cast(BinaryIO, open(self._tmp, "wb"))  # noqa: SIM115
        self._hash = hashlib.sha256()

    def _complete(self, slot: _Slot) -> None:
        assert self._file is not None and self._tmp is not None
        self._file.close()
        self._file = None
        tmp, self._tmp = self._tmp, None
        if self._hash.digest() != slot.sha256:
            tmp.unlink()
            raise IntegrityError(
                f"{self._where}: restored {slot.entries[0].path} has sha256 "
                f"{self._hash.hexdigest()}, the index says {slot.sha256.hex()}"
            )
        for extra in slot.entries[1:]:
            place(self._target, tmp, extra, copy=True)
        place(self._target, tmp, slot.entries[0], copy=False)
        self.restored += len(slot.entries)
        self._next += 1

    def finish(self) -> None:
        """Every slot must have been completed: a pack shorter than its index is corrupt."""
        if self._next < len(self._slots):
            missing = self._slots[self._next]
            raise IntegrityError(
                f"{self._where}: ends before the bytes of {missing.entries[0].path} "
                f"(offset {missing.offset}, {missing.size} bytes)"
            )

    def close(self) -> None:
        """Remove a half-written temporary file after a failure."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def place(target: Path, tmp: Path, entry: IndexEntry, *, copy: bool) -> None:
    """Move (or copy) the checked temporary file to the entry's path and set its mtime."""
    final = target / entry.path
    final.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        staged = final.with_name(final.name + _TMP_SUFFIX)
        shutil.copyfile(tmp, staged)
        os.replace(staged, final)
    else:
        os.replace(tmp, final)
    os.utime(final, ns=(entry.mtime_ns, entry.mtime_ns))


def _check_target(target_dir: Path, overwrite: bool) -> None:
    if target_dir.exists():
        if not target_dir.is_dir():
            raise ConfigurationError(f"restore target {target_dir} exists and is not a directory")
        if not overwrite and any(target_dir.iterdir()):
            raise TargetNotEmptyError(
                f"restore target {target_dir} is not empty; pass overwrite to restore over it"
            )
    target_dir.mkdir(parents=True, exist_ok=True)


def _base_manifests(store: ObjectStore, prefix: str, manifest: Manifest) -> dict[str, Manifest]:
    """This backup's manifest and those of the backups it depends on (NotFoundError naming a
    missing one)."""
    manifests = {manifest.backup_id: manifest}
    for backup_id in manifest.depends_on:
        try:
            manifests[backup_id] = read_manifest(
                store, prefix, manifest.cluster, manifest.source, backup_id
            )
        except NotFoundError as exc:
            raise NotFoundError(
                f"backup {manifest.backup_id} depends on backup {backup_id}, which is missing: "
                f"{exc}"
            ) from None
    return manifests


def _pack_object(manifests: dict[str, Manifest], entry: IndexEntry, owner: str) -> StoredObject:
    base = manifests.get(entry.backup_id)
    if base is None:
        raise IntegrityError(
            f"index of backup {owner}: {entry.path} is stored in backup {entry.backup_id}, "
            "which the manifest does not list in depends_on"
        )
    if entry.pack == AUDIO_PACK:
        if "audio" not in base.extra_objects:
            raise IntegrityError(f"backup {entry.backup_id} has no audio pack")
        return base.extra_objects["audio"]
    return base.object


def run_recordings_restore(
    store: ObjectStore,
    prefix: str,
    manifest: Manifest,
    keys: Keyring | MasterKey,
    target_dir: Path,
    *,
    overwrite: bool = False,
    paths: Sequence[str] | None = None,
    progress: ReadProgress | None = None,
) -> RestoreResult:
    """Restore `manifest`'s recordings (or only `paths`) into `target_dir` and prove each file.

    `target_dir` must be empty unless `overwrite` (files of the backup replace existing ones;
    other files are left alone). `progress`, if given, receives the size of each read of the
    packs' ciphertext (this backup's and its bases'; not the small index).
    """
    if manifest.source_kind != SOURCE_KIND or "index" not in manifest.extra_objects:
        raise ConfigurationError(
            f"backup {manifest.backup_id} is a {manifest.source_kind} backup, not recordings"
        )
    started = datetime.now(UTC)
    target_dir = Path(target_dir)
    manifests = _base_manifests(store, prefix, manifest)
    entries = read_index(store, manifest.extra_objects["index"], keys, manifest.backup_id)
    if paths is not None:
        wanted = set(paths)
        entries = [e for e in entries if e.path in wanted]
        unknown = wanted - {e.path for e in entries}
        if unknown:
            raise NotFoundError(
                f"backup {manifest.backup_id} has no file {sorted(unknown)[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            )
    _check_target(target_dir, overwrite)
    log.info(
        "recordings restore %s of %s: %d files into %s",
        manifest.backup_id,
        manifest.source,
        len(entries),
        target_dir,
    )

    groups: dict[str, tuple[StoredObject, dict[int, _Slot]]] = {}
    restored = 0
    for entry in entries:
        if entry.size == 0:
            _write_empty(target_dir, entry)
            restored += 1
            continue
        obj = _pack_object(manifests, entry, manifest.backup_id)
        slots = groups.setdefault(obj.key, (obj, {}))[1]
        slot = slots.setdefault(entry.offset, _Slot(entry.offset, entry.size, entry.sha256))
        if (slot.size, slot.sha256) != (entry.size, entry.sha256):
            raise IntegrityError(
                f"index of backup {manifest.backup_id}: {entry.path} and "
                f"{slot.entries[0].path} share offset {entry.offset} with different content"
            )
        slot.entries.append(entry)

    # The packs are independent streams: restore two at a time, so that decryption, hashing
    # and writing (which release the GIL) use two cores.
    with ThreadPoolExecutor(max_workers=PARALLEL_PACKS, thread_name_prefix="pack") as pool:
        futures = [
            pool.submit(
                _restore_pack, store, obj, slots, target_dir, keys, progress, manifest.backup_id
            )
            for obj, slots in (groups[key] for key in sorted(groups))
        ]
        restored += sum(future.result() for future in futures)

    counts = {
        "files": restored,
        "metadata_xml": sum(1 for e in entries if e.path.lower().endswith(".xml")),
    }
    if paths is None and counts != manifest.tables:
        raise ManifestMismatchError(
            f"restore of {manifest.backup_id}: restored {counts}, the manifest says "
            f"{manifest.tables}"
        )
    seconds = (datetime.now(UTC) - started).total_seconds()
    log.info("recordings restore %s: %d files verified", manifest.backup_id, restored)
    return RestoreResult(
        backup_id=manifest.backup_id,
        target=str(target_dir),
        plaintext_bytes=sum(e.size for e in entries),
        seconds=seconds,
        tables=counts,
    )


def _restore_pack(
    store: ObjectStore,
    obj: StoredObject,
    slots: dict[int, _Slot],
    target_dir: Path,
    keys: Keyring | MasterKey,
    progress: ReadProgress | None,
    backup_id: str,
) -> int:
    """Stream one pack into its files, prove it against its manifest record; files restored."""
    where = f"pack {obj.key}"
    sink = _RoutingSink(target_dir, sorted(slots.values(), key=lambda s: s.offset), where)
    try:
        try:
            reader = store.open_reader(obj.key)
        except NotFoundError:
            raise NotFoundError(
                f"{where} is missing from {store.describe()}: backup "
                f"{backup_id} needs it for {len(slots)} stored files"
            ) from None
        with reader:
            stats = unseal(with_progress(reader, progress), cast(BinaryIO, sink), keys)
        sink.finish()
    finally:
        sink.close()
    check_object(obj, stats, where)
    return sink.restored


def _write_empty(target: Path, entry: IndexEntry) -> None:
    if entry.sha256 != _EMPTY_SHA256:
        raise IntegrityError(f"index: empty file {entry.path} with a non-empty sha256")
    final = target / entry.path
    final.parent.mkdir(parents=True, exist_ok=True)
    final.write_bytes(b"")
    os.utime(final, ns=(entry.mtime_ns, entry.mtime_ns))
