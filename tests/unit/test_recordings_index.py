"""The recordings file index: entries round-trip, bad entries and unsafe paths are refused."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from siprec_backup.errors import IntegrityError
from siprec_backup.manifest import StoredObject
from siprec_backup.recordings import IndexEntry, read_index
from siprec_backup.recordings.index import IterReader, check_relative_path, index_lines
from siprec_backup.storage import LocalStore
from siprec_backup.stream import Compression, MasterKey, seal

BACKUP = "20261126T000000Z-abcdef"


def _entry(path: str, **changes: Any) -> IndexEntry:
    fields: dict[str, Any] = {
        "path": path,
        "size": 5,
        "sha256": hashlib.sha256(path.encode()).digest(),
        "mtime_ns": 1_700_000_000_123_456_789,
        "ino": 42,
        "backup_id": BACKUP,
        "pack": "audio",
        "offset": 10,
        "recording": "uuid-1",
        "sessions": ("s1", "s2"),
    }
    fields.update(changes)
    return IndexEntry(**fields)


def _store_index(tmp_path: Path, lines: list[bytes]) -> tuple[LocalStore, StoredObject, MasterKey]:
    store, key = LocalStore(tmp_path / "store"), MasterKey.generate("k")
    with store.open_writer("c/s/b/index.sbk") as writer:
        stats = seal(cast(BinaryIO, IterReader(lines)), cast(BinaryIO, writer), key)
        writer.commit()
    obj = StoredObject(
        key="c/s/b/index.sbk",
        plaintext_bytes=stats.plaintext_bytes,
        plaintext_sha256=stats.plaintext_sha256,
        ciphertext_bytes=stats.ciphertext_bytes,
        ciphertext_sha256=stats.ciphertext_sha256,
        compression=Compression.ZSTD.name.lower(),
        chunk_size=1 << 20,
        key_id=key.key_id,
    )
    return store, obj, key


def test_entry_round_trips_through_json() -> None:
    entry = _entry("recordings/2026/11/26/uuid-1-1.wav")
    assert IndexEntry.from_json(entry.to_json(), "t") == entry


def test_sealed_index_round_trips_and_is_one_line_per_file(tmp_path: Path) -> None:
    entries = [_entry(f"r/{i:04d}.wav", offset=i * 5) for i in range(300)]
    lines = list(index_lines(BACKUP, entries))
    assert len(lines) == 301 and all(line.endswith(b"\n") for line in lines)
    store, obj, key = _store_index(tmp_path, lines)
    assert read_index(store, obj, key, BACKUP) == entries
    # The index is encrypted: paths and AoRs do not appear in the stored object.
    assert b"r/0001.wav" not in (tmp_path / "store" / obj.key).read_bytes()


def test_index_of_another_backup_is_refused(tmp_path: Path) -> None:
    store, obj, key = _store_index(tmp_path, list(index_lines(BACKUP, [_entry("a")])))
    with pytest.raises(IntegrityError, match="header says backup"):
        read_index(store, obj, key, "20261126T000000Z-other")


def test_unsorted_index_is_refused(tmp_path: Path) -> None:
    store, obj, key = _store_index(tmp_path, list(index_lines(BACKUP, [_entry("b"), _entry("a")])))
    with pytest.raises(IntegrityError, match="not sorted"):
        read_index(store, obj, key, BACKUP)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"pack": "video"}, "bad entry"),
        ({"size": -1}, "bad entry"),
        ({"offset": "3"}, "bad entry"),
        ({"backup_id": ""}, "bad entry"),
    ],
)
def test_bad_entries_are_refused(changes: dict[str, Any], expected: str) -> None:
    doc = {**_entry("a").to_json(), **changes}
    with pytest.raises(IntegrityError, match=expected):
        IndexEntry.from_json(doc, "t")


def test_bad_digest_is_refused() -> None:
    doc = {**_entry("a").to_json(), "sha256": "abcd"}
    with pytest.raises(IntegrityError, match="bad entry"):
        IndexEntry.from_json(doc, "t")


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "", "a\\b", "a\x00b"]
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(IntegrityError, match="path"):
        check_relative_path(path, "t")


def test_normal_paths_are_accepted() -> None:
    check_relative_path("recordings/2026/11/26/0f0e-1.opus", "t")
    check_relative_path("a b/ü.xml", "t")
