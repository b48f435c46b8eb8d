"""The siprec-backup command line: break-glass decrypt and the catalog, with no Prefect server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from siprec_backup.backup import run_backup
from siprec_backup.manifest import Manifest
from siprec_backup.sources.postgres import PostgresSource
from siprec_backup.storage import LocalStore
from siprec_backup.stream import MasterKey
from tests.conftest import SeededLab

CLI = str(Path(sys.executable).with_name("siprec-backup"))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("SIPREC_BACKUP_KEY", "PREFECT_API_URL")
    }
    return subprocess.run(
        [CLI, *args], capture_output=True, env={**clean, **(env or {})}, timeout=120, check=False
    )


def _one_line_error(done: subprocess.CompletedProcess[bytes], *fragments: str) -> None:
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert err.startswith("siprec-backup: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.fixture(scope="module")
def backup(
    seeded_lab: SeededLab, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Manifest, Path]:
    root = tmp_path_factory.mktemp("cli-store")
    key = MasterKey.generate("cli-key")
    manifest = run_backup(
        PostgresSource(seeded_lab.app_target()),
        LocalStore(root),
        key,
        cluster="lab",
        source_name="siprec",
    )
    key_file = root.parent / "cli.key"
    key_file.write_text(key.material.hex() + "\n")
    return root, manifest, key_file


def test_decrypt_to_stdout_gives_the_pg_dump_archive(backup: tuple[Path, Manifest, Path]) -> None:
    root, manifest, key_file = backup
    done = _cli("decrypt", str(root / manifest.object.key), "--key-file", str(key_file))
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == manifest.object.plaintext_sha256
    assert done.stdout.startswith(b"PGDMP")  # pg_dump custom format


def test_decrypt_with_key_from_environment_to_file(
    backup: tuple[Path, Manifest, Path], tmp_path: Path
) -> None:
    root, manifest, key_file = backup
    out = tmp_path / "dump.pgc"
    done = _cli(
        "decrypt",
        str(root / manifest.object.key),
        "-o",
        str(out),
        env={"SIPREC_BACKUP_KEY": key_file.read_text()},
    )
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == manifest.object.plaintext_sha256


def test_decrypt_wrong_key_fails_in_one_line(
    backup: tuple[Path, Manifest, Path], tmp_path: Path
) -> None:
    root, manifest, _ = backup
    wrong = tmp_path / "wrong.key"
    wrong.write_text(MasterKey.generate("x").material.hex())
    out = tmp_path / "out.pgc"
    done = _cli(
        "decrypt", str(root / manifest.object.key), "--key-file", str(wrong), "-o", str(out)
    )
    _one_line_error(done, "cli-key")
    assert list(tmp_path.iterdir()) == [wrong]  # nothing half-written


def test_decrypt_truncated_object_fails(
    backup: tuple[Path, Manifest, Path], tmp_path: Path
) -> None:
    root, manifest, key_file = backup
    cut = tmp_path / "cut.sbk"
    data = (root / manifest.object.key).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.pgc"
    done = _cli("decrypt", str(cut), "--key-file", str(key_file), "-o", str(out))
    _one_line_error(done)
    assert not out.exists()


def test_decrypt_bad_input_messages(backup: tuple[Path, Manifest, Path], tmp_path: Path) -> None:
    root, manifest, key_file = backup
    _one_line_error(
        _cli("decrypt", str(tmp_path / "nope.sbk"), "--key-file", str(key_file)),
        "no such object file",
    )
    _one_line_error(_cli("decrypt", str(root / manifest.object.key)), "SIPREC_BACKUP_KEY")
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not-a-key-secretvalue")
    done = _cli("decrypt", str(root / manifest.object.key), "--key-file", str(bad_key))
    _one_line_error(done)
    assert "secretvalue" not in done.stderr.decode()


def test_backup_list(backup: tuple[Path, Manifest, Path], tmp_path: Path) -> None:
    root, manifest, _ = backup
    done = _cli("backup", "list", "--store-dir", str(root))
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert manifest.backup_id in out and "complete" in out
    assert (
        '"status": "complete"'
        in _cli("backup", "list", "--store-dir", str(root), "--json").stdout.decode()
    )
    _one_line_error(
        _cli("backup", "list", "--store-dir", str(tmp_path / "missing")), "does not exist"
    )
