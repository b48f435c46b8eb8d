"""Recordings backup and restore end to end: local trees, and the lab's tree written from the
lab PostgreSQL's recordings rows (real server)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import psycopg
import pytest

from siprec_backup.errors import IntegrityError, NotFoundError, TargetNotEmptyError
from siprec_backup.lab.recordings import compressed_audio_bytes, wav_bytes, write_recordings
from siprec_backup.manifest import MANIFEST_NAME, Manifest, backup_prefix
from siprec_backup.recordings import read_index, run_recordings_backup, run_recordings_restore
from siprec_backup.storage import LocalStore
from siprec_backup.stream import Compression, MasterKey, read_header
from tests.conftest import SeededLab

DAY = "recordings/2026/11/26"
XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>complete</datamode>'
    '<session session_id="{uuid}"><sipSessionID>abc;remote=def</sipSessionID></session>'
    '<participant participant_id="p1"><nameID aor="sip:+15550100@pstn.example.com"/></participant>'
    "</recording>\n"
)


def session_files(rng: random.Random, uuid: str) -> dict[str, bytes]:
    return {
        f"{DAY}/{uuid}.xml": XML.format(uuid=uuid).encode(),
        f"{DAY}/{uuid}-1.wav": wav_bytes(rng.randrange(20_000, 40_000), rng),
        f"{DAY}/{uuid}-2.opus": compressed_audio_bytes(rng.randrange(8_000, 16_000), rng, "opus"),
    }


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def tree_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "spool"
        self.root.mkdir()
        self.store = LocalStore(tmp_path / "store")
        self.key = MasterKey.generate("rec-key")
        self.rng = random.Random(7)

    def sessions(self, n: int, start: int = 0) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for i in range(start, start + n):
            files.update(session_files(self.rng, f"{i:08d}-aaaa-4bbb-8ccc-000000000000"))
        write(self.root, files)
        return files

    def backup(self) -> Manifest:
        return run_recordings_backup(
            self.root, self.store, self.key, cluster="lab", source_name="recordings"
        )

    def restore(self, manifest: Manifest, name: str, **kwargs: object) -> Path:
        out = self.tmp / name
        run_recordings_restore(self.store, "", manifest, self.key, out, **kwargs)  # type: ignore[arg-type]
        return out

    def pack_path(self, manifest: Manifest, role: str) -> Path:
        obj = manifest.object if role == "data" else manifest.extra_objects[role]
        return self.tmp / "store" / obj.key


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_full_backup_restores_every_file_byte_for_byte(env: Env) -> None:
    files = env.sessions(6)
    manifest = env.backup()
    assert manifest.tables == {"files": 18, "metadata_xml": 6}
    assert manifest.depends_on == [] and manifest.source_info["full"] is True
    out = env.restore(manifest, "out")
    assert tree_of(out) == files
    for rel in files:
        assert (out / rel).stat().st_mtime_ns == (env.root / rel).stat().st_mtime_ns
    # Paths and AoRs are personal data: not readable in any stored object.
    for path in (env.tmp / "store").rglob("*.sbk"):
        assert (
            b"pstn.example.com" not in path.read_bytes() and b"recordings/" not in path.read_bytes()
        )


def test_incremental_backup_uploads_only_new_files(env: Env) -> None:
    files = env.sessions(5)
    first = env.backup()
    added = env.sessions(1, start=100)  # three new files: xml, wav, opus
    gone = f"{DAY}/00000002-aaaa-4bbb-8ccc-000000000000-1.wav"
    (env.root / gone).unlink()
    second = env.backup()
    info = second.source_info
    assert (info["files_new"], info["files_reused"], info["files_total"]) == (3, 14, 17)
    assert info["bytes_new"] == sum(len(b) for b in added.values())
    # Audio of a size nothing else has is read once; the XML (same size as the stored ones) is
    # hashed, then packed. Unchanged files are not read at all.
    xml = sum(len(v) for k, v in added.items() if k.endswith(".xml"))
    assert info["bytes_read"] == info["bytes_new"] + xml
    new_plain = second.object.plaintext_bytes + second.extra_objects["audio"].plaintext_bytes
    assert new_plain == info["bytes_new"]
    assert second.stored_bytes < first.stored_bytes / 3
    assert second.depends_on == [first.backup_id]
    expected = {k: v for k, v in {**files, **added}.items() if k != gone}
    out = env.restore(second, "out")
    assert tree_of(out) == expected and not (out / gone).exists()
    assert tree_of(env.restore(first, "first")) == files  # the base is untouched


def test_same_content_under_two_paths_is_stored_once(env: Env) -> None:
    env.sessions(1)
    opus = compressed_audio_bytes(50_000, env.rng, "opus")
    write(env.root, {"a/copy-1.opus": opus, "b/copy-2.opus": opus})
    manifest = env.backup()
    info = manifest.source_info
    assert info["files_deduplicated"] == 1 and info["files_new_content"] == 4
    audio = manifest.extra_objects["audio"]
    opus_total = sum(len(v) for k, v in tree_of(env.root).items() if k.endswith(".opus"))
    assert audio.plaintext_bytes == opus_total - len(opus)
    index = read_index(env.store, manifest.extra_objects["index"], env.key, manifest.backup_id)
    where = {e.path: (e.pack, e.offset) for e in index}
    assert where["a/copy-1.opus"] == where["b/copy-2.opus"]
    out = env.restore(manifest, "out")
    assert (out / "a/copy-1.opus").read_bytes() == opus == (out / "b/copy-2.opus").read_bytes()


def test_opus_is_stored_uncompressed_and_wav_compressed(env: Env) -> None:
    env.sessions(4)
    manifest = env.backup()
    with open(env.pack_path(manifest, "audio"), "rb") as f:
        assert read_header(f).compression is Compression.NONE
    with open(env.pack_path(manifest, "data"), "rb") as f:
        assert read_header(f).compression is Compression.ZSTD
    data, audio = manifest.object, manifest.extra_objects["audio"]
    assert data.ciphertext_bytes < 0.8 * data.plaintext_bytes  # speech-like PCM compresses
    assert audio.ciphertext_bytes > audio.plaintext_bytes  # opus: only the AEAD overhead
    assert audio.compression == "none" and data.compression == "zstd"


def test_restore_fails_naming_a_deleted_base_pack(env: Env) -> None:
    env.sessions(3)
    first = env.backup()
    env.sessions(1, start=50)
    second = env.backup()
    env.pack_path(first, "audio").unlink()
    with pytest.raises(NotFoundError) as caught:
        env.restore(second, "out")
    assert first.backup_id in str(caught.value) and "audio.sbk" in str(caught.value)


def test_restore_fails_naming_a_missing_base_backup(env: Env) -> None:
    env.sessions(2)
    first = env.backup()
    env.sessions(1, start=50)
    second = env.backup()
    key = backup_prefix("", "lab", "recordings", first.backup_id) + MANIFEST_NAME
    env.store.delete(key)
    with pytest.raises(NotFoundError, match=f"depends on backup {first.backup_id}"):
        env.restore(second, "out")


def test_a_corrupted_pack_is_detected(env: Env) -> None:
    env.sessions(2)
    manifest = env.backup()
    path = env.pack_path(manifest, "data")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        env.restore(manifest, "out")
    assert not any(p.name.endswith(".sbk-restore-tmp") for p in (env.tmp / "out").rglob("*"))


def test_restore_refuses_a_non_empty_target_unless_overwrite(env: Env) -> None:
    files = env.sessions(1)
    manifest = env.backup()
    out = env.tmp / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(TargetNotEmptyError, match=str(out)):
        env.restore(manifest, "out")
    env.restore(manifest, "out", overwrite=True)
    assert tree_of(out) == {**files, "keep.txt": b"x"}


def test_restore_of_selected_paths(env: Env) -> None:
    files = env.sessions(3)
    manifest = env.backup()
    wanted = sorted(files)[:2]
    out = env.restore(manifest, "out", paths=wanted)
    assert tree_of(out) == {k: files[k] for k in wanted}
    with pytest.raises(NotFoundError, match=r"no file 'nope\.wav'"):
        env.restore(manifest, "out2", paths=["nope.wav"])


def test_lab_recordings_tree_backs_up_and_restores(seeded_lab: SeededLab, tmp_path: Path) -> None:
    conninfo = seeded_lab.state.postgres().conninfo()
    root = tmp_path / "spool"
    written = write_recordings(conninfo, root, max_files=120)
    assert written.audio_files == 120 and written.metadata_files >= 40
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT file_path, size_bytes, sha256, metadata_path FROM siprec.recordings"
            " ORDER BY id LIMIT 120"
        ).fetchall()
    for file_path, size, sha, metadata_path in rows:
        data = (root / file_path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha)
        assert (root / metadata_path).is_file()
    store, key = LocalStore(tmp_path / "store"), MasterKey.generate("lab")
    manifest = run_recordings_backup(root, store, key, cluster="lab", source_name="recordings")
    assert manifest.tables == {
        "files": written.audio_files + written.metadata_files,
        "metadata_xml": written.metadata_files,
    }
    assert manifest.source_info["metadata_parsed"] == written.metadata_files
    assert manifest.source_info["problems_count"] == 0
    index = read_index(store, manifest.extra_objects["index"], key, manifest.backup_id)
    first = next(e for e in index if e.path == rows[0][0])
    assert first.recording is not None and first.recording in rows[0][0]
    assert first.sessions == (first.recording,)  # the seed's session_id is the file's uuid
    result = run_recordings_restore(store, "", manifest, key, tmp_path / "out")
    assert result.tables == manifest.tables
    assert tree_of(tmp_path / "out") == tree_of(root)
