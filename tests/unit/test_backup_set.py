"""Backup sets: order of sources, status, storage round trip; the platform block's validation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from blocks.platform import Platform, PlatformSource
from siprec_backup.backup_set import (
    BackupSet,
    SetMember,
    find_backup_set,
    list_backup_sets,
    sort_sources,
    write_backup_set,
)
from siprec_backup.catalog import list_backups
from siprec_backup.errors import NotFoundError
from siprec_backup.storage import LocalStore

T0 = datetime(2026, 11, 26, 2, 30, tzinfo=UTC)


def _set(set_id: str, *, failed: bool = False) -> BackupSet:
    members = [
        SetMember(source="db", kind="postgres", backup_id=f"{set_id}-db"),
        SetMember(source="recs", kind="recordings", backup_id=None if failed else f"{set_id}-r"),
    ]
    return BackupSet.build(set_id, "lab", T0, members)


def test_databases_first_then_redis_then_recordings() -> None:
    sources = [("recs", "recordings"), ("cache", "redis"), ("db", "postgres"), ("m", "mysql")]
    assert [name for name, _ in sort_sources(sources)] == ["db", "m", "cache", "recs"]


def test_status_is_partial_when_a_source_failed() -> None:
    assert _set("20261126T023000Z-aaaaaa").status == "complete"
    assert _set("20261126T023000Z-aaaaaa", failed=True).status == "partial"
    assert BackupSet.build("x", "lab", T0, []).status == "partial"


def test_store_round_trip_and_latest_complete(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    write_backup_set(store, "p", _set("20261126T023000Z-aaaaaa"))
    write_backup_set(store, "p", _set("20261127T023000Z-bbbbbb", failed=True))
    sets = list_backup_sets(store, "p", "lab")
    assert [s.set_id for s in sets] == ["20261126T023000Z-aaaaaa", "20261127T023000Z-bbbbbb"]
    assert find_backup_set(store, "p", "lab").set_id == "20261126T023000Z-aaaaaa"
    assert find_backup_set(store, "p", "lab", "20261127T023000Z-bbbbbb").status == "partial"
    assert find_backup_set(store, "p", "lab").member("db").backup_id == "20261126T023000Z-aaaaaa-db"
    # The per-source catalog does not mistake set documents for backups.
    assert list_backups(store, "p") == []


def test_missing_sets_are_named(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(NotFoundError, match="no complete backup set of lab"):
        find_backup_set(store, "p", "lab")
    with pytest.raises(NotFoundError, match="no backup set 'nope'"):
        find_backup_set(store, "p", "lab", "nope")
    with pytest.raises(NotFoundError, match="no source 'x'"):
        _set("20261126T023000Z-aaaaaa").member("x")


def test_platform_block_validation() -> None:
    source = PlatformSource(name="db", kind="postgres", block="siprec-postgres")
    Platform(cluster="lab", storage="s", key="k", sources=[source])
    with pytest.raises(ValidationError, match="must be unique"):
        Platform(cluster="lab", storage="s", key="k", sources=[source, source])
    with pytest.raises(ValidationError, match="source name '_sets'"):
        PlatformSource(name="_sets", kind="postgres", block="b")
    with pytest.raises(ValidationError, match="cluster 'a/b'"):
        Platform(cluster="a/b", storage="s", key="k", sources=[source])
    with pytest.raises(ValidationError):
        PlatformSource(name="db", kind="oracle", block="b")  # type: ignore[arg-type]
