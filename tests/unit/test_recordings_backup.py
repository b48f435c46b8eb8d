"""Recordings backup engine on local trees: incremental logic and change detection.

Files are changed for real at the worst moments through the engine's ``on_step`` callback (after
the scan, between a file's two reads), not by patching the engine's reads.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from siprec_backup.errors import ConfigurationError, SourceError
from siprec_backup.lab.recordings import compressed_audio_bytes, wav_bytes
from siprec_backup.manifest import Manifest
from siprec_backup.recordings import read_index, run_recordings_backup, run_recordings_restore
from siprec_backup.storage import LocalStore
from siprec_backup.stream import MasterKey

XML = (
    '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>complete</datamode>'
    '<session session_id="{sid}"><sipSessionID>x</sipSessionID></session></recording>'
)
DAY = "recordings/2026/11/26"


def make_tree(root: Path, sessions: int = 3, seed: int = 1) -> dict[str, bytes]:
    """Per session: <uuid>.xml, <uuid>-1.wav, <uuid>-2.opus. Returns path -> bytes."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(sessions):
        uuid = f"{seed:02d}{i:06d}-0000-4000-8000-000000000000"
        files[f"{DAY}/{uuid}.xml"] = XML.format(sid=f"sid-{seed}-{i}").encode()
        files[f"{DAY}/{uuid}-1.wav"] = wav_bytes(6000 + i * 100, rng)
        files[f"{DAY}/{uuid}-2.opus"] = compressed_audio_bytes(3000 + i * 10, rng, "opus")
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def tree_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "rec"
        self.root.mkdir()
        self.store = LocalStore(tmp_path / "store")
        self.key = MasterKey.generate("k1")

    def backup(self, **kwargs: object) -> Manifest:
        return run_recordings_backup(
            self.root,
            self.store,
            self.key,
            cluster="c",
            source_name="rec",
            **kwargs,  # type: ignore[arg-type]
        )

    def restore(self, manifest: Manifest, name: str) -> dict[str, bytes]:
        out = self.tmp / name
        run_recordings_restore(self.store, "", manifest, self.key, out)
        return tree_of(out)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_unchanged_files_are_reused_without_reading(env: Env) -> None:
    files = make_tree(env.root)
    first = env.backup()
    second = env.backup()
    info = second.source_info
    assert info["files_reused"] == len(files) and info["bytes_read"] == 0
    assert info["files_new"] == 0 and second.object.plaintext_bytes == 0
    assert second.depends_on == [first.backup_id]
    assert env.restore(second, "out") == files


def test_full_rereads_everything_but_uploads_nothing_already_stored(env: Env) -> None:
    files = make_tree(env.root)
    env.backup()
    full = env.backup(full=True)
    info = full.source_info
    assert info["bytes_read"] == sum(len(b) for b in files.values())
    assert info["files_reused"] == 0 and info["files_deduplicated"] == len(files)
    assert info["bytes_new"] == 0
    assert full.extra_objects["audio"].plaintext_bytes == 0


def test_touched_file_is_reread_and_deduplicated_changed_file_uploaded(env: Env) -> None:
    files = make_tree(env.root)
    env.backup()
    touched, changed = f"{DAY}/01000000-0000-4000-8000-000000000000-1.wav", f"{DAY}/x.bin"
    os.utime(env.root / touched, ns=(1, 1))
    (env.root / changed).write_bytes(b"new content")
    second = env.backup()
    info = second.source_info
    assert info["files_deduplicated"] == 1 and info["files_new"] == 1
    assert info["bytes_new"] == len(b"new content")
    # The touched file has a stored size: hashed first (then deduplicated). The new file's size
    # is unique: read once, hashed while packed.
    assert info["bytes_read"] == len(files[touched]) + len(b"new content")
    restored = env.restore(second, "out")
    assert restored == {**files, changed: b"new content"}
    assert (env.tmp / "out" / touched).stat().st_mtime_ns == 1


def test_file_rewritten_between_its_two_reads_is_skipped_and_reported(env: Env) -> None:
    files = make_tree(env.root)
    victim = f"{DAY}/01000001-0000-4000-8000-000000000000-1.wav"

    def rewrite_in_place_keeping_size_and_mtime(step: str, path: str) -> None:
        if step == "hashed" and path == victim:
            st = (env.root / path).stat()
            with open(env.root / path, "r+b") as f:
                f.seek(100)
                f.write(b"\xff" * 16)
            os.utime(env.root / path, ns=(st.st_atime_ns, st.st_mtime_ns))

    manifest = env.backup(on_step=rewrite_in_place_keeping_size_and_mtime, single_read=False)
    info = manifest.source_info
    assert info["files_skipped"] == 1
    assert info["problems"] == [{"path": victim, "reason": "content differs between its two reads"}]
    assert manifest.tables["files"] == len(files) - 1
    restored = env.restore(manifest, "out")
    assert victim not in restored
    assert restored == {k: v for k, v in files.items() if k != victim}


def test_file_rewritten_after_hashing_with_new_mtime_is_skipped(env: Env) -> None:
    make_tree(env.root)
    victim = f"{DAY}/01000000-0000-4000-8000-000000000000-2.opus"

    def append(step: str, path: str) -> None:
        if step == "hashed" and path == victim:
            with open(env.root / path, "ab") as f:
                f.write(b"more audio")

    manifest = env.backup(on_step=append, single_read=False)
    assert manifest.source_info["problems"] == [
        {"path": victim, "reason": "changed after the scan or hash"}
    ]
    index = read_index(env.store, manifest.extra_objects["index"], env.key, manifest.backup_id)
    assert victim not in {e.path for e in index}


def test_single_read_file_changed_before_it_is_packed_is_skipped(env: Env) -> None:
    files = make_tree(env.root)
    victim = f"{DAY}/01000001-0000-4000-8000-000000000000-1.wav"

    def append(step: str, path: str) -> None:
        if step == "packing" and path == victim:
            with open(env.root / path, "ab") as f:
                f.write(b"late audio")

    manifest = env.backup(on_step=append)
    # Audio sizes are unique: read once. The three XML have one size: hashed, then packed.
    xml_bytes = sum(len(v) for k, v in files.items() if k.endswith(".xml"))
    audio_bytes = sum(len(v) for k, v in files.items() if k != victim and not k.endswith(".xml"))
    assert manifest.source_info["bytes_read"] == audio_bytes + 2 * xml_bytes
    assert manifest.source_info["problems"] == [
        {"path": victim, "reason": "changed after the scan or hash"}
    ]
    assert victim not in env.restore(manifest, "out")


def test_same_size_files_are_hashed_first_and_equal_content_stored_once(env: Env) -> None:
    for name in ("a.wav", "b.wav", "c.wav"):
        (env.root / name).write_bytes(b"A" * 1000 if name != "c.wav" else b"C" * 1000)
    manifest = env.backup()
    info = manifest.source_info
    assert info["bytes_read"] == 3000 + 2000  # all hashed; two distinct contents packed
    assert info["files_new_content"] == 2 and manifest.object.plaintext_bytes == 2000


def test_file_deleted_after_the_scan_is_skipped_and_reported(env: Env) -> None:
    files = make_tree(env.root)
    victim = f"{DAY}/01000002-0000-4000-8000-000000000000.xml"

    def delete(step: str, path: str) -> None:
        if step == "scanned":
            (env.root / victim).unlink()

    manifest = env.backup(on_step=delete)
    assert manifest.source_info["files_skipped"] == 1
    assert manifest.source_info["problems"][0] == {
        "path": victim,
        "reason": "vanished before it was read",
    }
    assert manifest.tables == {"files": len(files) - 1, "metadata_xml": 2}


def test_fail_on_change_fails_and_leaves_nothing(env: Env) -> None:
    make_tree(env.root)

    def delete(step: str, path: str) -> None:
        if step == "scanned":
            (env.root / f"{DAY}/01000000-0000-4000-8000-000000000000-1.wav").unlink()

    with pytest.raises(SourceError, match="1 files changed or could not be read"):
        env.backup(on_step=delete, fail_on_change=True)
    assert list(env.store.list("")) == []


def test_unparseable_metadata_is_backed_up_and_reported(env: Env) -> None:
    files = make_tree(env.root)
    bad = f"{DAY}/01000000-0000-4000-8000-000000000000.xml"
    (env.root / bad).write_bytes(b"<recording><oops")
    files[bad] = b"<recording><oops"
    manifest = env.backup()
    info = manifest.source_info
    assert info["files_skipped"] == 0 and info["metadata_unparsed"] == 1
    assert info["metadata_parsed"] == 2
    assert info["problems"][0]["path"] == bad
    assert "not well-formed" in info["problems"][0]["reason"]
    assert env.restore(manifest, "out") == files


def test_recording_and_session_ids_follow_the_file_name_convention(env: Env) -> None:
    make_tree(env.root, sessions=2)
    (env.root / DAY / "stray.wav").write_bytes(b"RIFF")
    manifest = env.backup()
    index = read_index(env.store, manifest.extra_objects["index"], env.key, manifest.backup_id)
    ids = {e.path.rsplit("/", 1)[1]: (e.recording, e.sessions) for e in index}
    uuid = "01000001-0000-4000-8000-000000000000"
    for name in (f"{uuid}.xml", f"{uuid}-1.wav", f"{uuid}-2.opus"):
        assert ids[name] == (uuid, ("sid-1-1",))
    assert ids["stray.wav"] == (None, ())
    # Reused without reading: the ids come from the previous index.
    again = env.backup()
    index2 = read_index(env.store, again.extra_objects["index"], env.key, again.backup_id)
    assert again.source_info["bytes_read"] == 0
    assert [(e.recording, e.sessions) for e in index2] == [(e.recording, e.sessions) for e in index]


def test_symlinks_are_skipped_with_a_reason(env: Env) -> None:
    make_tree(env.root, sessions=1)
    (env.root / "link.wav").symlink_to("/etc/hostname")
    manifest = env.backup()
    assert manifest.source_info["problems"] == [
        {"path": "link.wav", "reason": "not a regular file (symlink or special)"}
    ]


def test_relative_or_missing_root_is_refused(env: Env) -> None:
    with pytest.raises(ConfigurationError, match="absolute"):
        run_recordings_backup(Path("rec"), env.store, env.key, cluster="c", source_name="r")
    with pytest.raises(SourceError, match="does not exist"):
        run_recordings_backup(env.tmp / "nope", env.store, env.key, cluster="c", source_name="r")
