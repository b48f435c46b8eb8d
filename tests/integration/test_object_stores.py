"""One contract for every store: local directory, S3 (moto), GCS (emulator), Azure (Azurite).

Each cloud test gets a bucket (container) of its own on the lab's real emulator, so tests never
see each other's objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest

from siprec_backup.backup import run_backup
from siprec_backup.catalog import find_backup
from siprec_backup.errors import ConfigurationError, NotFoundError
from siprec_backup.lab import LabState
from siprec_backup.manifest import DATA_NAME, MANIFEST_NAME
from siprec_backup.restore import run_restore
from siprec_backup.sources.base import DumpFacts
from siprec_backup.storage import AzureBlobStore, GCSStore, LocalStore, ObjectStore, S3Store
from siprec_backup.stream import MasterKey

KINDS = ["local", "s3", "gcs", "azure"]
MiB = 1 << 20


def new_bucket(lab: LabState, kind: str) -> ObjectStore:
    """A store on a fresh, empty bucket (container) of the lab's `kind` emulator."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    store = lab.object_store(kind, name)
    if isinstance(store, S3Store):
        store.client.create_bucket(Bucket=name)
    elif isinstance(store, GCSStore):
        store.client.create_bucket(name)
    elif isinstance(store, AzureBlobStore):
        store.container_client.create_container()
    return store


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    lab: LabState = request.getfixturevalue("lab")
    return new_bucket(lab, request.param)


def keys(store: ObjectStore, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


def write_in_pieces(writer: BinaryIO | object, data: bytes, piece: int = 777_777) -> None:
    for start in range(0, len(data), piece):
        writer.write(data[start : start + piece])  # type: ignore[attr-defined]


# --- a source and a restore target made of bytes, so the engine runs against every store ------


@dataclass
class _BytesDump:
    stream: BinaryIO

    def finish(self) -> DumpFacts:
        return DumpFacts(source_info={"origin": "test"}, tables={"blob": 1})


@dataclass
class BytesSource:
    """A source whose dump is `data` (a callable may run after `trigger_at` bytes were read)."""

    data: bytes
    trigger_at: int | None = None
    trigger: object = None
    kind: str = "bytes"

    def describe(self) -> str:
        return f"{len(self.data)} test bytes"

    def estimate_bytes(self) -> int | None:
        return len(self.data)

    @contextlib.contextmanager
    def open_dump(self) -> Iterator[_BytesDump]:
        yield _BytesDump(_TriggeringReader(self.data, self.trigger_at, self.trigger))


class _TriggeringReader(io.RawIOBase):
    def __init__(self, data: bytes, at: int | None, action: object) -> None:
        self._data, self._pos, self._at, self._action = data, 0, at, action

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._at is not None and self._pos >= self._at and callable(self._action):
            action, self._action = self._action, None
            action()
        chunk = self._data[self._pos : self._pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


@dataclass
class _BytesRestore:
    sink: io.BytesIO
    stdin: BinaryIO = field(init=False)

    def __post_init__(self) -> None:
        self.stdin = self.sink  # type: ignore[assignment]

    def finish(self) -> None:
        return None

    def died(self) -> Exception:
        return RuntimeError("the byte sink does not die")

    def close(self) -> None:
        return None


@dataclass
class BytesTarget:
    """A restore target keeping the restored plaintext in memory."""

    sink: io.BytesIO = field(default_factory=io.BytesIO)
    kind: str = "bytes"

    def describe(self) -> str:
        return "memory"

    def prepare(self, *, overwrite: bool) -> None:
        return None

    def open_restore(self, *, overwrite: bool) -> _BytesRestore:
        return _BytesRestore(self.sink)

    def restored_counts(self, tables: dict[str, int]) -> dict[str, int]:
        return {"blob": 1}


# --- the contract ------------------------------------------------------------------------------


def test_multipart_round_trip(store: ObjectStore) -> None:
    data = os.urandom(20 * MiB + 12345)
    with store.open_writer("rt/data.sbk") as writer:
        write_in_pieces(writer, data)
        writer.commit()
    assert [(i.key, i.size) for i in store.list("rt/")] == [("rt/data.sbk", len(data))]
    digest = hashlib.sha256()
    with store.open_reader("rt/data.sbk") as reader:
        while chunk := reader.read(3 * MiB):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert store.exists("rt/data.sbk")


def test_abort_leaves_nothing(store: ObjectStore) -> None:
    writer = store.open_writer("ab/data.sbk")
    write_in_pieces(writer, os.urandom(18 * MiB))
    writer.abort()
    writer.abort()  # twice is fine
    assert keys(store) == []
    assert not store.exists("ab/data.sbk")
    if isinstance(store, S3Store):
        assert list(store.unfinished_uploads("")) == []


def test_exception_inside_the_writer_leaves_nothing(store: ObjectStore) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.open_writer("ex/data.sbk") as writer:
        write_in_pieces(writer, os.urandom(10 * MiB))
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"), store.open_writer("ex/small") as writer:
        writer.write(b"small")
        raise RuntimeError("boom")
    assert keys(store) == []


def test_list_is_in_key_order_and_filtered_by_prefix(store: ObjectStore) -> None:
    for key in ["b/2", "a/2", "a/10", "ab", "a/1", "a/sub/x"]:
        store.put_bytes(key, key.encode())
    assert keys(store) == ["a/1", "a/10", "a/2", "a/sub/x", "ab", "b/2"]
    assert keys(store, "a/") == ["a/1", "a/10", "a/2", "a/sub/x"]
    assert keys(store, "a") == ["a/1", "a/10", "a/2", "a/sub/x", "ab"]
    assert keys(store, "zzz") == []
    assert store.get_bytes("a/10") == b"a/10"


def test_delete_and_missing_objects(store: ObjectStore) -> None:
    store.put_bytes("d/one", b"1")
    store.put_bytes("d/two", b"2")
    store.delete("d/one")
    store.delete("d/never-existed")
    assert keys(store) == ["d/two"]
    with pytest.raises(NotFoundError, match="d/one"):
        store.open_reader("d/one")
    with pytest.raises(NotFoundError):
        store.get_bytes("d/one")


def test_get_bytes_refuses_large_objects(store: ObjectStore) -> None:
    store.max_small_object = 1024
    store.put_bytes("big", b"x" * 2000)
    store.put_bytes("small", b"y" * 1024)
    with pytest.raises(ConfigurationError, match="too large"):
        store.get_bytes("big")
    assert store.get_bytes("small") == b"y" * 1024


def test_abort_stale_uploads(store: ObjectStore) -> None:
    store.put_bytes("stale/done", b"kept")
    if isinstance(store, S3Store):
        # What a killed backup leaves: a multipart upload with a part, never completed.
        up = store.client.create_multipart_upload(Bucket=store.bucket, Key="stale/left")
        store.client.upload_part(
            Bucket=store.bucket,
            Key="stale/left",
            UploadId=up["UploadId"],
            PartNumber=1,
            Body=b"z" * (5 * MiB),
        )
        # moto reports every upload as initiated in 2010: "too young" needs a century here.
        assert store.abort_stale_uploads("stale/", 100 * 365 * 86400) == ()
        assert store.abort_stale_uploads("other/", 0) == ()  # another directory
        assert store.abort_stale_uploads("stale/", 0) == ("stale/left",)
        assert list(store.unfinished_uploads("")) == []
    elif isinstance(store, LocalStore):
        writer = store.open_writer("stale/left")
        writer.write(b"partial")
        assert len(store.abort_stale_uploads("stale/", 0)) == 1
        assert not list((store.root / "stale").glob(".partial-*"))
    else:  # GCS sessions and Azure uncommitted blocks cannot be listed; they expire by themselves
        assert store.abort_stale_uploads("stale/", 0) == ()
    assert keys(store) == ["stale/done"]
    assert store.get_bytes("stale/done") == b"kept"


def test_backup_and_restore_through_the_store(store: ObjectStore) -> None:
    data = os.urandom(3 * MiB) + b"compressible " * 200_000
    key = MasterKey.generate("store-test")
    manifest = run_backup(
        BytesSource(data), store, key, cluster="c1", source_name="blob", prefix="pfx"
    )
    assert find_backup(store, "pfx", "c1", "blob") == manifest
    base = manifest.object.key.removesuffix(DATA_NAME)
    assert keys(store) == [base + DATA_NAME, base + MANIFEST_NAME]
    target = BytesTarget()
    result = run_restore(store, manifest, key, target)
    assert target.sink.getvalue() == data
    assert result.plaintext_bytes == len(data)
