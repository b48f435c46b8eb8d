"""The local store: atomic commit, abort leaves nothing, listings ignore partial objects."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from siprec_backup.errors import ConfigurationError, NotFoundError
from siprec_backup.storage import LocalStore


def test_commit_publishes_and_reader_streams(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with store.open_writer("a/b/data.sbk") as writer:
        writer.write(b"x" * 1000)
        writer.write(memoryview(b"y" * 10))
        assert list(store.list()) == []  # invisible until committed
        writer.commit()
    assert writer.bytes_written == 1010
    [info] = store.list()
    assert (info.key, info.size) == ("a/b/data.sbk", 1010)
    with store.open_reader("a/b/data.sbk") as reader:
        assert reader.read(5) == b"xxxxx"


def test_exception_aborts_and_leaves_no_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(RuntimeError), store.open_writer("c/data.sbk") as writer:
        writer.write(b"partial")
        raise RuntimeError("source failed")
    assert list(store.list()) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_write_after_commit_is_refused(tmp_path: Path) -> None:
    writer = LocalStore(tmp_path).open_writer("k")
    writer.commit()
    with pytest.raises(ValueError, match="finished"):
        writer.write(b"late")


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a/../../b", "a/.partial-x"])
def test_invalid_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid object key"):
        LocalStore(tmp_path).open_writer(key)


def test_missing_object_is_not_found(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(NotFoundError, match="no object 'nope'"):
        store.open_reader("nope")
    assert not store.exists("nope")


def test_delete_removes_emptied_directories(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("p/c/s/id/manifest.json", b"{}")
    store.delete("p/c/s/id/manifest.json")
    assert list(tmp_path.iterdir()) == []
    store.delete("p/c/s/id/manifest.json")  # deleting a missing key is fine


def test_get_bytes_refuses_large_objects(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.max_small_object = 10
    store.put_bytes("big", b"z" * 11)
    with pytest.raises(ConfigurationError, match="too large"):
        store.get_bytes("big")


def test_stale_partial_files_of_a_killed_writer_are_discarded(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    killed = store.open_writer("c/s/old/data.sbk")  # a process killed here never aborts
    killed.write(b"half")
    fresh = store.open_writer("c/s/new/data.sbk")  # a backup running right now
    fresh.write(b"busy")
    [old_temp] = (tmp_path / "c/s/old").iterdir()
    os.utime(old_temp, (time.time() - 7200, time.time() - 7200))
    assert store.abort_stale_uploads("other/", 3600) == ()  # outside the prefix: untouched
    assert store.abort_stale_uploads("c/s/", 3600) == (old_temp.relative_to(tmp_path).as_posix(),)
    assert not old_temp.exists()
    assert len(list((tmp_path / "c/s/new").iterdir())) == 1
    fresh.commit()
    assert [i.key for i in store.list()] == ["c/s/new/data.sbk"]
