"""Manifests and the catalog read from a store."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from siprec_backup.catalog import find_backup, list_backups
from siprec_backup.errors import IntegrityError, NotFoundError
from siprec_backup.manifest import Manifest, StoredObject, backup_prefix, new_backup_id
from siprec_backup.storage import LocalStore


def _manifest(backup_id: str, source: str = "db") -> Manifest:
    now = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
    return Manifest(
        backup_id=backup_id,
        cluster="lab",
        source=source,
        source_kind="postgres",
        started_at=now,
        finished_at=now,
        object=StoredObject(
            key=backup_prefix("p", "lab", source, backup_id) + "data.sbk",
            plaintext_bytes=10,
            plaintext_sha256="a" * 64,
            ciphertext_bytes=99,
            ciphertext_sha256="b" * 64,
            compression="zstd",
            chunk_size=1 << 20,
            key_id="k1",
        ),
        tables={"siprec.recordings": 3},
        tool_version="0.1.0",
    )


def _store_backup(store: LocalStore, manifest: Manifest, *, with_manifest: bool = True) -> None:
    base = backup_prefix("p", manifest.cluster, manifest.source, manifest.backup_id)
    store.put_bytes(base + "data.sbk", b"\0" * 99)
    if with_manifest:
        store.put_bytes(base + "manifest.json", manifest.to_json())


def test_backup_ids_sort_by_time() -> None:
    early = new_backup_id(datetime(2026, 1, 1, tzinfo=UTC))
    late = new_backup_id(datetime(2026, 1, 2, tzinfo=UTC))
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", early)
    assert early < late


def test_manifest_round_trip() -> None:
    manifest = _manifest("20261126T040000Z-000001")
    assert Manifest.from_json(manifest.to_json(), where="m") == manifest


def test_altered_manifest_is_rejected_with_the_field_named() -> None:
    data = (
        _manifest("20261126T040000Z-000001")
        .to_json()
        .replace(b'"plaintext_bytes": 10', b'"plaintext_bytes": "ten"')
    )
    with pytest.raises(IntegrityError, match=r"manifest m is invalid \(object.plaintext_bytes"):
        Manifest.from_json(data, where="m")


def test_catalog_lists_complete_and_incomplete(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first, second, broken = (f"20261126T04000{i}Z-00000{i}" for i in range(3))
    _store_backup(store, _manifest(first))
    _store_backup(store, _manifest(second))
    _store_backup(store, _manifest(broken), with_manifest=False)
    entries = list_backups(store, "p")
    assert [(e.backup_id, e.status) for e in entries] == [
        (first, "complete"),
        (second, "complete"),
        (broken, "incomplete"),
    ]
    assert entries[0].row()["size_bytes"] == "99"
    # "latest" is the newest *complete* backup, never an interrupted one.
    assert find_backup(store, "p", "lab", "db").backup_id == second
    assert find_backup(store, "p", "lab", "db", first).backup_id == first


def test_unknown_backup_id_is_named(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(NotFoundError, match="no backup 'nope' of lab/db"):
        find_backup(store, "p", "lab", "db", "nope")
    with pytest.raises(NotFoundError, match="no complete backup of lab/db"):
        find_backup(store, "p", "lab", "db")
