"""Master-key rotation over a real local store, with backups made by the real engine.

The source is a few bytes in memory (the store, the stream format and the engine are real): the
rotation must re-wrap without re-encrypting, leave every backup restorable with the new key alone,
and finish an interrupted run when rerun.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from siprec_backup.backup import run_backup
from siprec_backup.catalog import find_backup, list_backups
from siprec_backup.errors import IntegrityError, WrongKeyError
from siprec_backup.keys import key_suffix, rotate_keys, rotated_name
from siprec_backup.manifest import MANIFEST_NAME, Manifest, StoredObject, backup_prefix
from siprec_backup.restore import check_stream, run_restore
from siprec_backup.sources.base import DumpFacts
from siprec_backup.storage import LocalStore
from siprec_backup.stream import Compression, Keyring, MasterKey, read_header, seal, unseal

PREFIX = "p"


# ---------------------------------------------------------------------------------------------
# a tiny in-memory source and restore target (shared with the retention CLI and flow tests)


class _MemoryDump:
    def __init__(self, data: bytes) -> None:
        self.stream: BinaryIO = io.BytesIO(data)

    def finish(self) -> DumpFacts:
        return DumpFacts(source_info={"memory": True}, tables={"bytes": 1})


@dataclass
class MemorySource:
    """A source whose dump is `data`."""

    data: bytes
    kind: str = "postgres"

    def describe(self) -> str:
        return f"{len(self.data)} bytes in memory"

    def estimate_bytes(self) -> int | None:
        return len(self.data)

    @contextlib.contextmanager
    def open_dump(self) -> Iterator[_MemoryDump]:
        yield _MemoryDump(self.data)


class _MemoryRestore:
    def __init__(self, sink: io.BytesIO) -> None:
        self.stdin: BinaryIO = sink

    def finish(self) -> None:
        pass

    def died(self) -> Exception:
        return RuntimeError("memory restore died")

    def close(self) -> None:
        pass


@dataclass
class MemoryTarget:
    """A restore target that keeps the restored bytes."""

    kind: str = "postgres"
    restored: io.BytesIO = field(default_factory=io.BytesIO)

    def describe(self) -> str:
        return "memory"

    def prepare(self, *, overwrite: bool) -> None:
        self.restored = io.BytesIO()

    def open_restore(self, *, overwrite: bool) -> _MemoryRestore:
        return _MemoryRestore(self.restored)

    def restored_counts(self, tables: dict[str, int]) -> dict[str, int]:
        return {"bytes": 1} if self.restored.getvalue() else {}


def make_backup(
    store: LocalStore,
    key: MasterKey,
    data: bytes,
    *,
    cluster: str = "lab",
    source: str = "db",
    backup_id: str | None = None,
    finished_at: datetime | None = None,
    depends_on: list[str] | None = None,
    extra: dict[str, bytes] | None = None,
) -> Manifest:
    """A real backup of `data`; its manifest optionally re-dated, with dependencies and extra
    objects (sealed with the same key), as an incremental recordings backup would have."""
    manifest = run_backup(
        MemorySource(data),
        store,
        key,
        cluster=cluster,
        source_name=source,
        prefix=PREFIX,
        backup_id=backup_id,
        chunk_size=1024,
    )
    base = backup_prefix(PREFIX, cluster, source, manifest.backup_id)
    extras: dict[str, StoredObject] = {}
    for role, payload in (extra or {}).items():
        with store.open_writer(base + f"{role}.sbk") as writer:
            stats = seal(
                io.BytesIO(payload),
                cast(BinaryIO, writer),
                key,
                compression=Compression.ZSTD,
                chunk_size=1024,
            )
            writer.commit()
        extras[role] = manifest.object.model_copy(
            update={
                "key": base + f"{role}.sbk",
                "plaintext_bytes": stats.plaintext_bytes,
                "plaintext_sha256": stats.plaintext_sha256,
                "ciphertext_bytes": stats.ciphertext_bytes,
                "ciphertext_sha256": stats.ciphertext_sha256,
            }
        )
    update: dict[str, object] = {"extra_objects": extras, "depends_on": depends_on or []}
    if finished_at is not None:
        update.update(started_at=finished_at, finished_at=finished_at)
    manifest = manifest.model_copy(update=update)
    store.put_bytes(base + MANIFEST_NAME, manifest.to_json())
    return manifest


# ---------------------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _body(data: bytes) -> bytes:
    return data[read_header(io.BytesIO(data)).size :]


def _plain(store: LocalStore, obj: StoredObject, keys: Keyring | MasterKey) -> bytes:
    out = io.BytesIO()
    with store.open_reader(obj.key) as reader:
        unseal(reader, out, keys)
    return out.getvalue()


@pytest.fixture
def k1() -> MasterKey:
    return MasterKey.generate("k1")


@pytest.fixture
def k2() -> MasterKey:
    return MasterKey.generate("k2/2026")  # a '/' is not safe in object names


def test_object_names(k1: MasterKey, k2: MasterKey) -> None:
    assert key_suffix("k1") == "k1"
    assert key_suffix("k2/2026").startswith("k2-2026-") and "/" not in key_suffix("k2/2026")
    assert rotated_name("a/b/data.sbk", "k0", "k1") == "a/b/data.k1.sbk"
    assert rotated_name("a/b/data.k1.sbk", "k1", "k3") == "a/b/data.k3.sbk"
    assert rotated_name("a/b/audio.k1.sbk", "k1", "k2/2026") == (
        f"a/b/audio.{key_suffix('k2/2026')}.sbk"
    )


def test_rotation_rewraps_without_reencrypting(
    tmp_path: Path, k1: MasterKey, k2: MasterKey
) -> None:
    store = LocalStore(tmp_path)
    payloads = [b"first backup " * 500, b"second " * 3000]
    made = [
        make_backup(store, k1, payloads[0]),
        make_backup(store, k1, payloads[1], extra={"index": b"index bytes " * 200}),
    ]
    before = _snapshot(tmp_path)

    dry = rotate_keys(store, PREFIX, Keyring([k1]), k2, dry_run=True)
    ids = sorted(m.backup_id for m in made)  # the catalog's order
    assert [r.backup_id for r in dry.rotated] == ids
    assert sum(len(r.objects) for r in dry.rotated) == 3
    assert _snapshot(tmp_path) == before  # a dry run writes nothing

    report = rotate_keys(store, PREFIX, Keyring([k1]), k2)
    assert [r.backup_id for r in report.rotated] == ids
    assert report.rotated[0].old_key_ids == ("k1",)
    after = _snapshot(tmp_path)
    for old, payload in zip(made, payloads, strict=True):
        new = find_backup(store, PREFIX, "lab", "db", old.backup_id)
        assert {o.key_id for o in new.objects} == {"k2/2026"}
        for old_obj, new_obj in zip(old.objects, new.objects, strict=True):
            assert new_obj.key == rotated_name(old_obj.key, "k1", k2.key_id)
            old_rel = str(Path(old_obj.key))
            assert old_rel not in after  # the old object is gone
            # header re-wrapped, every chunk byte-identical: no re-encryption
            assert _body(after[new_obj.key]) == _body(before[old_rel])
            assert after[new_obj.key] != before[old_rel]
            assert new_obj.plaintext_sha256 == old_obj.plaintext_sha256
            assert _plain(store, new_obj, k2) == _plain_from(before[old_rel], k1)
        # restore with the new key alone, proved against the rewritten manifest
        target = MemoryTarget()
        result = run_restore(store, new, k2, target)
        assert target.restored.getvalue() == payload
        assert result.backup_id == old.backup_id
        with store.open_reader(new.object.key) as reader:
            check_stream(new, unseal(reader, io.BytesIO(), Keyring([k2])))

    # The old key no longer opens anything, and the error names the key that is needed.
    with pytest.raises(WrongKeyError, match=r"sealed with master key 'k2/2026'.*available: 'k1'"):
        run_restore(store, find_backup(store, PREFIX, "lab", "db"), k1, MemoryTarget())

    # A rerun is a no-op.
    again = rotate_keys(store, PREFIX, Keyring([k2]), k2)
    assert again.rotated == [] and again.leftovers_deleted == []
    assert again.already_current == ids
    assert _snapshot(tmp_path) == after


def _plain_from(data: bytes, key: MasterKey) -> bytes:
    out = io.BytesIO()
    unseal(io.BytesIO(data), out, key)
    return out.getvalue()


def test_missing_old_key_is_named_before_anything_is_written(
    tmp_path: Path, k1: MasterKey, k2: MasterKey
) -> None:
    store = LocalStore(tmp_path)
    made = make_backup(store, k1, b"data" * 100)
    before = _snapshot(tmp_path)
    with pytest.raises(
        WrongKeyError,
        match=rf"key rotation needs master key 'k1' \(backup {made.backup_id}\), not in the "
        r"keyring \(available: 'k0'\)",
    ):
        rotate_keys(store, PREFIX, Keyring([MasterKey.generate("k0")]), k2)
    assert _snapshot(tmp_path) == before


def test_wrong_old_key_material_is_refused_and_leaves_no_copy(
    tmp_path: Path, k1: MasterKey, k2: MasterKey
) -> None:
    store = LocalStore(tmp_path)
    made = make_backup(store, k1, b"data" * 100)
    before = _snapshot(tmp_path)
    impostor = MasterKey.generate("k1")
    with pytest.raises(WrongKeyError, match=rf"{made.object.key}: master key 'k1' does not open"):
        rotate_keys(store, PREFIX, Keyring([impostor]), k2)
    assert _snapshot(tmp_path) == before


def test_object_not_matching_its_manifest_is_not_rotated(
    tmp_path: Path, k1: MasterKey, k2: MasterKey
) -> None:
    store = LocalStore(tmp_path)
    made = make_backup(store, k1, b"data" * 1000)
    path = tmp_path / made.object.key
    data = bytearray(path.read_bytes())
    data[-5] ^= 1  # a flipped bit in the last chunk: rewrap copies it, the hash check catches it
    path.write_bytes(bytes(data))
    before = _snapshot(tmp_path)
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        rotate_keys(store, PREFIX, Keyring([k1]), k2)
    assert _snapshot(tmp_path) == before


class _CrashBeforeManifest(LocalStore):
    """Dies (like a killed process) when rotation is about to rewrite a manifest."""

    def put_bytes(self, key: str, data: bytes) -> None:
        if key.endswith(MANIFEST_NAME):
            raise KeyboardInterrupt
        super().put_bytes(key, data)


class _CrashBeforeDelete(LocalStore):
    """Dies when rotation is about to delete the old objects."""

    def delete(self, key: str) -> None:
        raise KeyboardInterrupt


@pytest.mark.parametrize("crash", [_CrashBeforeManifest, _CrashBeforeDelete])
def test_interrupted_rotation_is_finished_by_a_rerun(
    tmp_path: Path, k1: MasterKey, k2: MasterKey, crash: type[LocalStore]
) -> None:
    store = LocalStore(tmp_path)
    payload = b"recording index " * 300
    made = make_backup(store, k1, payload, extra={"audio": b"audio " * 500})
    with pytest.raises(KeyboardInterrupt):
        rotate_keys(crash(tmp_path), PREFIX, Keyring([k1]), k2)

    # Mid-way, the backup is complete and restorable with the keys its manifest names.
    [entry] = list_backups(store, PREFIX)
    assert entry.status == "complete" and entry.manifest is not None
    middle = entry.manifest
    keyring = Keyring([k1, k2])
    for obj in middle.objects:
        assert store.exists(obj.key)
        assert _plain(store, obj, keyring)
    if crash is _CrashBeforeManifest:
        assert {o.key_id for o in middle.objects} == {"k1"}  # still the old objects
    else:
        assert {o.key_id for o in middle.objects} == {"k2/2026"}  # already the new ones

    report = rotate_keys(store, PREFIX, Keyring([k1]), k2)
    final = find_backup(store, PREFIX, "lab", "db", made.backup_id)
    assert {o.key_id for o in final.objects} == {"k2/2026"}
    names = sorted(
        p.name for p in (tmp_path / backup_prefix(PREFIX, "lab", "db", made.backup_id)).iterdir()
    )
    assert names == sorted(
        [MANIFEST_NAME, *(Path(o.key).name for o in final.objects)]
    )  # nothing left over
    if crash is _CrashBeforeDelete:
        assert len(report.leftovers_deleted) == 2 and report.rotated == []
    target = MemoryTarget()
    run_restore(store, final, k2, target)
    assert target.restored.getvalue() == payload


def test_only_one_cluster_or_source(tmp_path: Path, k1: MasterKey, k2: MasterKey) -> None:
    store = LocalStore(tmp_path)
    a = make_backup(store, k1, b"a" * 100, source="a")
    b = make_backup(store, k1, b"b" * 100, source="b")
    report = rotate_keys(store, PREFIX, Keyring([k1]), k2, cluster="lab", source="a")
    assert [r.backup_id for r in report.rotated] == [a.backup_id]
    assert find_backup(store, PREFIX, "lab", "b", b.backup_id).object.key_id == "k1"
    assert find_backup(store, PREFIX, "lab", "a", a.backup_id).object.key_id == "k2/2026"
