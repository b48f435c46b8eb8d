"""The file index of a recordings backup: one JSON line per file, sorted by path.

What: the first line is a header ``{"format": INDEX_FORMAT, "backup_id": ..., "files": n}``; each
further line one :class:`IndexEntry`: path, size, sha256, mtime_ns, inode, where its bytes are
(backup_id, pack, offset) and the recording / session ids from the RFC 7865 metadata. Why lines:
the index is written and read as a stream (no whole-index document in memory beyond the entries
themselves), and a reader can check every line on its own. The index is stored sealed (zstd +
AES-GCM) because paths and AoRs are personal data. See docs/RECORDINGS.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, cast

from siprec_backup.errors import IntegrityError, ManifestMismatchError
from siprec_backup.manifest import StoredObject
from siprec_backup.restore import stream_differences
from siprec_backup.storage import ObjectStore
from siprec_backup.stream import Keyring, MasterKey, StreamStats, unseal

INDEX_FORMAT = "siprec-recordings-index/1"
#: Pack names: new compressible content, and new already-compressed audio.
DATA_PACK = "data"
AUDIO_PACK = "audio"
PACKS = (DATA_PACK, AUDIO_PACK)
PACK_OBJECT = {DATA_PACK: "data.sbk", AUDIO_PACK: "audio.sbk"}
INDEX_OBJECT = "index.sbk"
_MAX_LINE = 1 << 20


@dataclass(slots=True)
class IndexEntry:
    """One file of a backup and where its bytes are stored. ``sha256`` is the 32-byte digest
    (bytes, not hex: the dedup map of a large tree keeps one entry per file)."""

    path: str
    size: int
    sha256: bytes
    mtime_ns: int
    ino: int
    backup_id: str
    pack: str
    offset: int
    recording: str | None = None
    sessions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256.hex(),
            "mtime_ns": self.mtime_ns,
            "ino": self.ino,
            "backup_id": self.backup_id,
            "pack": self.pack,
            "offset": self.offset,
            "recording": self.recording,
            "sessions": list(self.sessions),
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> IndexEntry:
        """Check and build one entry; IntegrityError naming ``where`` if anything is off."""
        try:
            entry = cls(
                path=doc["path"],
                size=doc["size"],
                sha256=bytes.fromhex(doc["sha256"]),
                mtime_ns=doc["mtime_ns"],
                ino=doc["ino"],
                backup_id=doc["backup_id"],
                pack=doc["pack"],
                offset=doc["offset"],
                recording=doc.get("recording"),
                sessions=tuple(doc.get("sessions") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"index {where}: bad entry ({exc!r})") from None
        ints = (entry.size, entry.mtime_ns, entry.ino, entry.offset)
        if (
            not all(isinstance(v, int) and not isinstance(v, bool) for v in ints)
            or min(entry.size, entry.offset, entry.ino) < 0
            or len(entry.sha256) != 32
            or entry.pack not in PACKS
            or not isinstance(entry.backup_id, str)
            or not entry.backup_id
        ):
            raise IntegrityError(f"index {where}: bad entry for {entry.path!r}")
        check_relative_path(entry.path, where)
        return entry


def check_relative_path(path: Any, where: str) -> None:
    """A stored path must stay inside the restore directory: relative, no '..', no '.'."""
    if not isinstance(path, str) or not path:
        raise IntegrityError(f"index {where}: empty or non-text path")
    parts = PurePosixPath(path).parts
    if (
        path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(p in ("..", ".", "") for p in parts)
        or "/".join(parts) != path
    ):
        raise IntegrityError(f"index {where}: unsafe path {path!r}")


def index_lines(backup_id: str, entries: list[IndexEntry]) -> Iterator[bytes]:
    """The index as lines (header first), for :class:`IterReader`; `entries` sorted by path."""
    header = {"format": INDEX_FORMAT, "backup_id": backup_id, "files": len(entries)}
    yield _dump(header)
    for entry in entries:
        yield _dump(entry.to_json())


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class IterReader:
    """A ``readinto`` source over an iterator of byte pieces (feeds :func:`seal`)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._pending = memoryview(b"")

    def readinto(self, buffer: memoryview) -> int:
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = memoryview(piece)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _LineSink:
    """Splits the decrypted index into lines and hands each one to ``on_line``."""

    def __init__(self, on_line: Callable[[bytes], None]) -> None:
        self._on_line = on_line
        self._partial = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = bytes(data)
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._partial += chunk[start:end]
            self._on_line(bytes(self._partial))
            self._partial.clear()
            start = end + 1
        self._partial += chunk[start:]
        if len(self._partial) > _MAX_LINE:
            raise IntegrityError(f"index line longer than {_MAX_LINE} bytes")
        return len(chunk)

    def flush(self) -> None:
        """Nothing buffered to flush: whole lines are handed on as they complete."""

    def close(self) -> None:
        if self._partial:
            raise IntegrityError("index ends inside a line")


def check_object(obj: StoredObject, stats: StreamStats, what: str) -> None:
    """A decrypted object must be exactly what its manifest recorded."""
    problems = stream_differences(obj, stats)
    if problems:
        raise ManifestMismatchError(f"{what} does not match its manifest: {'; '.join(problems)}")


def read_index(
    store: ObjectStore, obj: StoredObject, keys: Keyring | MasterKey, backup_id: str
) -> list[IndexEntry]:
    """Stream-decrypt a backup's index and return its entries (sorted by path, checked)."""
    entries: list[IndexEntry] = []
    header: dict[str, Any] = {}
    where = obj.key

    def on_line(line: bytes) -> None:
        try:
            doc = json.loads(line)
        except ValueError:
            raise IntegrityError(f"index {where}: line {len(entries) + 2} is not JSON") from None
        if not header:
            if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
                raise IntegrityError(f"index {where}: not a {INDEX_FORMAT} index")
            header.update(doc)
            return
        entry = IndexEntry.from_json(doc, f"{where} line {len(entries) + 2}")
        if entries and entry.path <= entries[-1].path:
            raise IntegrityError(f"index {where}: paths not sorted at {entry.path!r}")
        entries.append(entry)

    sink = _LineSink(on_line)
    with store.open_reader(obj.key) as reader:
        stats = unseal(reader, cast(BinaryIO, sink), keys)
    sink.close()
    check_object(obj, stats, f"index of backup {backup_id}")
    if header.get("backup_id") != backup_id or header.get("files") != len(entries):
        raise IntegrityError(
            f"index {where}: header says backup {header.get('backup_id')!r} with "
            f"{header.get('files')} files; expected {backup_id!r} with {len(entries)}"
        )
    return entries
