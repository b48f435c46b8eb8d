"""Incremental, content-addressed backup of a SIPREC recordings tree (source kind "recordings").

How one backup runs:

1. Read the previous complete backup's index of the same cluster/source (none: a full backup).
2. Scan the tree. A file whose path, size, mtime_ns and inode equal the previous index entry is
   reused without reading (like rsync/restic); ``full=True`` rereads everything.
3. A new or changed file whose size no other file (new or stored) has cannot be a duplicate: it
   is read once, hashed while it is packed (most audio files). Every other file is read first to
   hash it (metadata XML is parsed during the same read): content whose sha256 the previous
   index already holds is not uploaded (the new entry points at the earlier backup's pack and
   offset), and the same content under several paths is stored once.
4. Stream the new content into two packs: ``data.sbk`` (zstd) for compressible content,
   ``audio.sbk`` (no compression) for already-compressed audio. A file read twice must give the
   same sha256 both times, and no packed file may change (size, mtime, inode) or vanish while
   read; otherwise it is skipped with a recorded problem (its bytes stay in the pack,
   unreferenced).
5. Seal the index (``index.sbk``), then write the manifest last. On failure, everything this
   backup committed is deleted: a backup without its manifest does not exist.

Unchanged files are not read at all. Deduplication looks at the previous backup's index only:
content found solely in older backups is stored again.

Memory: the previous index (one :class:`IndexEntry` per file, digests as 32-byte ``bytes``) and
the new entries are O(files); file bytes only pass through bounded buffers (1 MiB reads, the
stream's chunks).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from siprec_backup import __version__
from siprec_backup.catalog import find_backup
from siprec_backup.errors import ConfigurationError, NotFoundError, SourceError
from siprec_backup.manifest import (
    MANIFEST_NAME,
    Manifest,
    StoredObject,
    backup_prefix,
    new_backup_id,
)
from siprec_backup.recordings.index import (
    AUDIO_PACK,
    DATA_PACK,
    INDEX_FORMAT,
    INDEX_OBJECT,
    PACK_OBJECT,
    IndexEntry,
    IterReader,
    index_lines,
    read_index,
)
from siprec_backup.recordings.metadata import MetadataError, MetadataParser
from siprec_backup.recordings.scan import (
    READ_SIZE,
    FileChangedError,
    ScannedFile,
    check_still_there,
    hash_file,
    same_file,
    scan_tree,
)
from siprec_backup.storage import ObjectStore
from siprec_backup.stream import DEFAULT_CHUNK_SIZE, Compression, MasterKey, seal

log = logging.getLogger(__name__)

SOURCE_KIND = "recordings"
#: Extensions of already-compressed content, stored in audio.sbk without recompression.
DEFAULT_COMPRESSED_EXTENSIONS: tuple[str, ...] = (
    "opus",
    "ogg",
    "oga",
    "mp3",
    "m4a",
    "mp4",
    "aac",
    "flac",
    "amr",
    "webm",
    "gz",
    "zst",
    "xz",
    "bz2",
    "zip",
)
#: zstd workers for the packs: reading files is cheap, so compression is the bottleneck; a second
#: worker took a 1 GiB tree from 0.82x to 0.93x ``tar | zstd | age`` (peak RSS 118 -> 131 MiB).
PACK_ZSTD_THREADS = 2
#: At most this many problems are listed in the manifest (all are counted).
MAX_LISTED_PROBLEMS = 100
PROGRESS_STEP = 8 << 20
STALE_UPLOAD_SECONDS = 24 * 3600

#: Called with (step, path): "scanned" (path "") once the tree is listed, "hashed" after a file's
#: first read, "packing" before a file is read into a pack. Tests change files there to prove
#: the change detection.
StepCallback = Callable[[str, str], None]


@dataclass
class _Content:
    """New content of this backup: its digest, size and the paths that hold it. ``hashed``
    False: a size no other file has, read once while packing (its digest is set then)."""

    sha256: bytes
    size: int
    pack: str
    candidates: list[ScannedFile]
    hashed: bool = True
    stored: ScannedFile | None = None
    offset: int = 0


@dataclass
class _Run:
    """What one backup run has learned so far."""

    root: Path
    backup_id: str
    progress: Callable[[int], None] | None
    problems: list[FileChangedError] = field(default_factory=list)
    metadata_problems: list[FileChangedError] = field(default_factory=list)
    bytes_read: int = 0
    next_progress: int = PROGRESS_STEP
    metadata_parsed: int = 0

    def count(self, n: int) -> None:
        self.bytes_read += n
        if self.progress is not None and self.bytes_read >= self.next_progress:
            self.next_progress = self.bytes_read + PROGRESS_STEP
            self.progress(self.bytes_read)

    def problem(self, problem: FileChangedError) -> None:
        log.warning("recordings backup %s: skipped %s", self.backup_id, problem)
        self.problems.append(problem)


class _PackReader:
    """The concatenated bytes of new content, read a second time, as a ``readinto`` source for
    :func:`seal`. Each content is read from its first candidate path that still matches its
    first read; a failed candidate's bytes stay in the pack unreferenced."""

    def __init__(
        self,
        run: _Run,
        contents: list[_Content],
        on_step: StepCallback | None,
        metadata: dict[str, tuple[str, ...] | None],
    ) -> None:
        self._run = run
        self._on_step = on_step
        self._metadata = metadata
        self._parser: MetadataParser | None = None
        self._todo = iter(contents)
        self._content: _Content | None = None
        self._candidates: list[ScannedFile] = []
        self._file: io.FileIO | None = None
        self._current: ScannedFile | None = None
        self._left = 0
        self._hash = hashlib.sha256()
        self.position = 0
        # The file's sha256 runs in this thread while seal hashes, compresses and encrypts the
        # same (read-only) buffer; it is joined before the buffer is refilled.
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pack-hash")
        self._hashing: Future[None] | None = None

    def _join_hash(self) -> None:
        if self._hashing is not None:
            self._hashing.result()
            self._hashing = None

    def readinto(self, buffer: memoryview) -> int:
        self._join_hash()
        while True:
            if self._file is None and not self._open_next():
                return 0
            assert self._file is not None
            want = min(len(buffer), self._left) if self._left else 1
            got = self._file.readinto(buffer[:want]) or 0
            if got and self._left:
                self._left -= got
                self._hashing = self._hasher.submit(self._hash.update, buffer[:got])
                if self._parser is not None:
                    self._parser.feed(buffer[:got])
                self.position += got
                self._run.count(got)
                return got
            # At the expected end (or short): one more byte must be EOF. A byte read beyond
            # the expected size is not pack data: the next file overwrites it in `buffer`.
            self._finish_file(grew=bool(got))

    def _open_next(self) -> bool:
        while not self._candidates:
            self._content = next(self._todo, None)
            if self._content is None:
                return False
            self._candidates = list(self._content.candidates)
        scanned = self._candidates.pop(0)
        if self._on_step is not None:
            self._on_step("packing", scanned.path)
        try:
            f = open(self._run.root / scanned.path, "rb", buffering=0)  # noqa: SIM115
        except FileNotFoundError:
            self._run.problem(FileChangedError(scanned.path, "vanished before it was stored"))
            return self._open_next()
        except PermissionError as exc:
            self._run.problem(FileChangedError(scanned.path, f"unreadable ({exc.strerror})"))
            return self._open_next()
        if not same_file(os.fstat(f.fileno()), scanned):
            f.close()
            self._run.problem(FileChangedError(scanned.path, "changed after the scan or hash"))
            return self._open_next()
        self._file = f
        self._current = scanned
        self._left = scanned.size
        self._hash = hashlib.sha256()
        assert self._content is not None
        self._content.offset = self.position
        single_read_xml = not self._content.hashed and _extension(scanned.path) == "xml"
        self._parser = MetadataParser(scanned.path) if single_read_xml else None
        return True

    def _finish_file(self, *, grew: bool) -> None:
        assert self._file is not None and self._current is not None and self._content is not None
        scanned, content = self._current, self._content
        after = os.fstat(self._file.fileno())
        self._file.close()
        self._file = None
        try:
            if grew or self._left or not same_file(after, scanned):
                raise FileChangedError(scanned.path, "changed while being stored")
            if content.hashed and self._hash.digest() != content.sha256:
                raise FileChangedError(scanned.path, "content differs between its two reads")
            check_still_there(self._run.root, scanned)
        except FileChangedError as problem:
            self._run.problem(problem)
            content.candidates.remove(scanned)
            return
        if not content.hashed:
            content.sha256 = self._hash.digest()
        if self._parser is not None:
            self._metadata[scanned.path] = _close_parser(self._run, self._parser, scanned.path)
        content.stored = scanned
        self._candidates = []  # the other paths share this stored copy

    def close(self) -> None:
        self._hasher.shutdown(wait=True)
        self._hashing = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _extension(path: str) -> str:
    return PurePosixPath(path).suffix.lower().lstrip(".")


def _hash_and_parse(run: _Run, scanned: ScannedFile) -> tuple[bytes, tuple[str, ...] | None]:
    """First read: the digest, and the session ids if the file is metadata XML (None if not
    metadata or unparseable: the file is still backed up, the problem recorded)."""
    parser = MetadataParser(scanned.path) if _extension(scanned.path) == "xml" else None

    def feed(chunk: bytes) -> None:
        run.count(len(chunk))
        if parser is not None:
            parser.feed(chunk)

    digest = hash_file(run.root, scanned, feed)
    return digest, None if parser is None else _close_parser(run, parser, scanned.path)


def _close_parser(run: _Run, parser: MetadataParser, path: str) -> tuple[str, ...] | None:
    """The session ids of a fully fed document, or None (problem recorded) if unparseable."""
    try:
        meta = parser.close()
    except MetadataError as exc:
        log.warning("recordings backup %s: %s (file backed up anyway)", run.backup_id, exc)
        run.metadata_problems.append(FileChangedError(path, f"metadata not parsed: {exc}"))
        return None
    run.metadata_parsed += 1
    return meta.session_ids


def _previous_index(
    store: ObjectStore, prefix: str, cluster: str, source_name: str, key: MasterKey
) -> tuple[Manifest | None, list[IndexEntry]]:
    try:
        previous = find_backup(store, prefix, cluster, source_name)
    except NotFoundError:
        return None, []
    if previous.source_kind != SOURCE_KIND or "index" not in previous.extra_objects:
        raise ConfigurationError(
            f"{cluster}/{source_name} holds {previous.source_kind} backups, not recordings: "
            "choose another source name"
        )
    return previous, read_index(store, previous.extra_objects["index"], key, previous.backup_id)


def _parsed_sessions(
    entries: list[IndexEntry], read_now: dict[str, tuple[str, ...] | None]
) -> dict[str, tuple[str, ...]]:
    """Session ids of every parsed metadata XML: read now (None: unparseable) or, for a file
    reused without reading, as the previous index had them (recording set = was parsed)."""
    sessions: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        if _extension(entry.path) != "xml":
            continue
        if entry.path in read_now:
            parsed = read_now[entry.path]
            if parsed is not None:
                sessions[entry.path] = parsed
        elif entry.recording is not None:
            sessions[entry.path] = entry.sessions
    return sessions


def _attach_recording_ids(entries: list[IndexEntry], sessions: dict[str, tuple[str, ...]]) -> None:
    """``<dir>/<uuid>.xml`` names recording ``<uuid>``; ``<dir>/<uuid>-N.ext`` beside it is one
    of its media files and shares its session ids."""
    for entry in entries:
        entry.recording, entry.sessions = None, ()
        pure = PurePosixPath(entry.path)
        stem = pure.stem
        xml = str(pure.with_suffix(".xml"))
        if pure.suffix.lower() != ".xml":
            base, dash, number = stem.rpartition("-")
            if not (dash and number.isdigit()):
                continue
            stem = base
            xml = str(pure.with_name(base + ".xml"))
        if xml in sessions:
            entry.recording = stem
            entry.sessions = sessions[xml]


def run_recordings_backup(
    root: Path,
    store: ObjectStore,
    key: MasterKey,
    *,
    cluster: str,
    source_name: str,
    prefix: str = "",
    backup_id: str | None = None,
    full: bool = False,
    progress: Callable[[int], None] | None = None,
    compressed_extensions: Iterable[str] = DEFAULT_COMPRESSED_EXTENSIONS,
    fail_on_change: bool = False,
    level: int = 3,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_step: StepCallback | None = None,
    single_read: bool = True,
) -> Manifest:
    """Back up the tree under `root` incrementally; returns the manifest once it is written.

    Files that change or vanish while read are skipped and listed in ``source_info["problems"]``
    (SourceError instead with `fail_on_change`). `progress` receives the bytes read so far.
    `single_read` False hashes every new file before packing it (two reads), even one whose
    size no other file has.
    """
    root = Path(root)
    if not root.is_absolute():
        raise ConfigurationError(f"recordings directory must be an absolute path, got {root}")
    compressed = {e.lower().lstrip(".") for e in compressed_extensions}
    backup_id = backup_id or new_backup_id()
    base = backup_prefix(prefix, cluster, source_name, backup_id)
    started = datetime.now(UTC)
    for stale in store.abort_stale_uploads(
        backup_prefix(prefix, cluster, source_name), STALE_UPLOAD_SECONDS
    ):
        log.warning("discarded an unfinished upload left by an interrupted backup: %s", stale)
    previous, previous_entries = _previous_index(store, prefix, cluster, source_name, key)
    run = _Run(root=root, backup_id=backup_id, progress=progress)
    log.info(
        "recordings backup %s of %s: %s to %s (previous: %s%s)",
        backup_id,
        source_name,
        root,
        store.describe(),
        previous.backup_id if previous else "none",
        ", full reread" if full else "",
    )

    scanned_files, scan_problems = scan_tree(root)
    for problem in scan_problems:
        run.problem(problem)
    if on_step is not None:
        on_step("scanned", "")

    by_path = {e.path: e for e in previous_entries}
    by_hash = {e.sha256: e for e in previous_entries}
    entries: list[IndexEntry] = []
    contents: dict[bytes, _Content] = {}
    single: list[_Content] = []
    pending_ids: dict[str, tuple[str, ...] | None] = {}
    reused = deduplicated = 0
    to_read: list[ScannedFile] = []
    for scanned in scanned_files:
        old = by_path.get(scanned.path)
        if (
            not full
            and old is not None
            and (old.size, old.mtime_ns, old.ino)
            == (
                scanned.size,
                scanned.mtime_ns,
                scanned.ino,
            )
        ):
            entries.append(_entry_from(old, scanned))
            reused += 1
        else:
            to_read.append(scanned)
    # Content can only equal stored or other new content of the same size: a file whose size
    # nothing else has is read once, hashed while packed.
    sizes = Counter(f.size for f in to_read)
    sizes.update({e.size for e in previous_entries})
    for scanned in to_read:
        if single_read and sizes[scanned.size] == 1:
            pack = AUDIO_PACK if _extension(scanned.path) in compressed else DATA_PACK
            single.append(_Content(b"", scanned.size, pack, [scanned], hashed=False))
            continue
        try:
            digest, sessions = _hash_and_parse(run, scanned)
        except FileChangedError as problem:
            run.problem(problem)
            continue
        if on_step is not None:
            on_step("hashed", scanned.path)
        if _extension(scanned.path) == "xml":
            pending_ids[scanned.path] = sessions
        stored = by_hash.get(digest)
        if stored is not None:
            entries.append(_entry_from(stored, scanned, digest))
            deduplicated += 1
        elif digest in contents:
            contents[digest].candidates.append(scanned)
        else:
            pack = AUDIO_PACK if _extension(scanned.path) in compressed else DATA_PACK
            contents[digest] = _Content(digest, scanned.size, pack, [scanned])

    committed: list[str] = []
    try:
        objects: dict[str, StoredObject] = {}
        for pack in (DATA_PACK, AUDIO_PACK):
            todo = [c for c in (*contents.values(), *single) if c.pack == pack]
            todo.sort(key=lambda c: c.candidates[0].path)
            reader = _PackReader(run, todo, on_step, pending_ids)
            compression = Compression.NONE if pack == AUDIO_PACK else Compression.ZSTD
            try:
                objects[pack] = _seal_object(
                    store, base + PACK_OBJECT[pack], reader, key, compression, level, chunk_size
                )
            finally:
                reader.close()
            committed.append(base + PACK_OBJECT[pack])
            for content in todo:
                if content.stored is None:
                    continue
                for scanned in content.candidates:
                    entries.append(
                        IndexEntry(
                            path=scanned.path,
                            size=scanned.size,
                            sha256=content.sha256,
                            mtime_ns=scanned.mtime_ns,
                            ino=scanned.ino,
                            backup_id=backup_id,
                            pack=pack,
                            offset=content.offset,
                        )
                    )
        if fail_on_change and run.problems:
            raise SourceError(
                f"recordings backup {backup_id}: {len(run.problems)} files changed or could not "
                f"be read, first: {run.problems[0]} (fail_on_change is set)"
            )
        entries.sort(key=lambda e: e.path)
        _attach_recording_ids(entries, _parsed_sessions(entries, pending_ids))
        objects["index"] = _seal_object(
            store,
            base + INDEX_OBJECT,
            IterReader(index_lines(backup_id, entries)),
            key,
            Compression.ZSTD,
            level,
            chunk_size,
        )
        committed.append(base + INDEX_OBJECT)
        manifest = _manifest(
            run,
            backup_id=backup_id,
            cluster=cluster,
            source_name=source_name,
            started=started,
            objects=objects,
            entries=entries,
            new_contents=[c for c in (*contents.values(), *single) if c.stored is not None],
            reused=reused,
            deduplicated=deduplicated,
            previous=previous,
            full=full,
            compressed=compressed,
        )
        store.put_bytes(base + MANIFEST_NAME, manifest.to_json())
    except BaseException:
        for object_key in committed:
            store.delete(object_key)
        raise
    info = manifest.source_info
    log.info(
        "recordings backup %s of %s: complete, %d files (%d new, %d reused), %d bytes new%s",
        backup_id,
        source_name,
        info["files_total"],
        info["files_new"],
        info["files_reused"],
        info["bytes_new"],
        f", {info['files_skipped']} files skipped" if info["files_skipped"] else "",
    )
    return manifest


def _entry_from(old: IndexEntry, scanned: ScannedFile, digest: bytes | None = None) -> IndexEntry:
    """A new entry for `scanned` whose bytes are already stored where `old` says."""
    return IndexEntry(
        path=scanned.path,
        size=scanned.size,
        sha256=digest or old.sha256,
        mtime_ns=scanned.mtime_ns,
        ino=scanned.ino,
        backup_id=old.backup_id,
        pack=old.pack,
        offset=old.offset,
        recording=old.recording if digest is None else None,
        sessions=old.sessions if digest is None else (),
    )


def _seal_object(
    store: ObjectStore,
    object_key: str,
    source: object,
    key: MasterKey,
    compression: Compression,
    level: int,
    chunk_size: int,
) -> StoredObject:
    """Seal `source` into a committed object and describe it for the manifest."""
    with store.open_writer(object_key) as writer:
        stats = seal(
            cast(BinaryIO, source),
            cast(BinaryIO, writer),
            key,
            compression=compression,
            level=level,
            chunk_size=chunk_size,
            read_size=READ_SIZE,
            threads=PACK_ZSTD_THREADS,
        )
        writer.commit()
    return StoredObject(
        key=object_key,
        plaintext_bytes=stats.plaintext_bytes,
        plaintext_sha256=stats.plaintext_sha256,
        ciphertext_bytes=stats.ciphertext_bytes,
        ciphertext_sha256=stats.ciphertext_sha256,
        compression=compression.name.lower(),
        chunk_size=chunk_size,
        key_id=key.key_id,
    )


def _manifest(
    run: _Run,
    *,
    backup_id: str,
    cluster: str,
    source_name: str,
    started: datetime,
    objects: dict[str, StoredObject],
    entries: list[IndexEntry],
    new_contents: list[_Content],
    reused: int,
    deduplicated: int,
    previous: Manifest | None,
    full: bool,
    compressed: set[str],
) -> Manifest:
    new_files = sum(len(c.candidates) for c in new_contents)
    source_info: dict[str, Any] = {
        "root_name": run.root.name,
        "index_format": INDEX_FORMAT,
        "previous_backup_id": previous.backup_id if previous else None,
        "full": full or previous is None,
        "files_total": len(entries),
        "files_new": new_files,
        "files_new_content": len(new_contents),
        "files_reused": reused,
        "files_deduplicated": deduplicated + new_files - len(new_contents),
        "bytes_total": sum(e.size for e in entries),
        "bytes_new": sum(c.size for c in new_contents),
        "bytes_read": run.bytes_read,
        "metadata_parsed": run.metadata_parsed,
        "files_skipped": len(run.problems),
        "metadata_unparsed": len(run.metadata_problems),
        "problems_count": len(run.problems) + len(run.metadata_problems),
        "problems": [
            {"path": p.path, "reason": p.reason}
            for p in (run.problems + run.metadata_problems)[:MAX_LISTED_PROBLEMS]
        ],
        "compressed_extensions": sorted(compressed),
    }
    depends_on = sorted({e.backup_id for e in entries if e.backup_id != backup_id})
    return Manifest(
        backup_id=backup_id,
        cluster=cluster,
        source=source_name,
        source_kind=SOURCE_KIND,
        started_at=started,
        finished_at=datetime.now(UTC),
        object=objects[DATA_PACK],
        extra_objects={"audio": objects[AUDIO_PACK], "index": objects["index"]},
        depends_on=depends_on,
        source_info=source_info,
        tables={
            "files": len(entries),
            "metadata_xml": sum(1 for e in entries if _extension(e.path) == "xml"),
        },
        tool_version=__version__,
    )
