"""The ``keys`` and ``backup prune`` commands on a real local store, run as the installed CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from siprec_backup.catalog import find_backup, list_backups
from siprec_backup.manifest import backup_prefix
from siprec_backup.storage import LocalStore
from siprec_backup.stream import MasterKey
from tests.conftest import run_cli
from tests.integration.test_key_rotation import PREFIX, make_backup

NOW = datetime.now(UTC)


def _one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("siprec-backup: error: ") and done.stderr.count("\n") == 1
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_keys_generate_writes_a_private_file_once(tmp_path: Path) -> None:
    out = tmp_path / "new.key"
    done = run_cli("keys", "generate", "--key-id", "k2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert MasterKey.from_text("k2", text).key_id == "k2"
    assert text.strip() not in done.stdout + done.stderr  # the key is never echoed
    again = run_cli("keys", "generate", "--key-id", "k2", "--out", str(out))
    _one_line_error(again, "already exists: refusing to overwrite")
    assert out.read_text() == text


def test_keys_rotate_from_the_command_line(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = LocalStore(store_dir)
    k1 = MasterKey.generate("k1")
    made = [make_backup(store, k1, b"payload %d " % i * 200) for i in range(2)]
    old_file, new_file = tmp_path / "k1.key", tmp_path / "k2.key"
    old_file.write_text(k1.material.hex() + "\n")
    assert run_cli("keys", "generate", "--key-id", "k2", "--out", str(new_file)).returncode == 0
    new_text = new_file.read_text().strip()
    base = ("keys", "rotate", "--store-dir", str(store_dir), "--prefix", PREFIX)

    missing = run_cli(*base, "--new-key-file", str(new_file), "--new-key-id", "k2")
    _one_line_error(missing, "no key: pass --old-key-file or set SIPREC_BACKUP_KEY")

    before = _snapshot(store_dir)
    dry = run_cli(*base, "--new-key-file", str(new_file), "--new-key-id", "k2", "--dry-run",
               env={"SIPREC_BACKUP_KEY": k1.material.hex()})  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would re-wrap lab/db ") == 2
    assert _snapshot(store_dir) == before

    done = run_cli(*base, "--old-key-file", str(old_file), "--new-key-file", str(new_file),
                "--new-key-id", "k2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "re-wrapped 2 objects" in done.stdout
    for output in (dry.stdout + dry.stderr, done.stdout + done.stderr):
        assert k1.material.hex() not in output and new_text not in output
    for manifest in made:
        assert find_backup(store, PREFIX, "lab", "db", manifest.backup_id).object.key_id == "k2"

    # The break-glass decrypt of a rotated object works with the new key only.
    rotated = find_backup(store, PREFIX, "lab", "db", made[0].backup_id).object
    plain = run_cli("decrypt", str(store_dir / rotated.key), "--key-file", str(new_file))
    assert plain.returncode == 0 and plain.stdout.encode() == b"payload 0 " * 200
    wrong = run_cli("decrypt", str(store_dir / rotated.key), "--key-file", str(old_file))
    _one_line_error(wrong, "master key 'k2' does not open this object")

    rerun = run_cli(*base, "--new-key-file", str(new_file), "--new-key-id", "k2")
    assert rerun.returncode == 0, rerun.stderr  # no old key needed: nothing is left to rotate
    assert "2 backups already on it" in rerun.stdout


def _age(store_dir: Path, backup_id: str, hours: float) -> None:
    """Make an incomplete backup's objects look `hours` old."""
    moment = time.time() - hours * 3600
    for path in (store_dir / backup_prefix(PREFIX, "lab", "rec", backup_id)).iterdir():
        os.utime(path, (moment, moment))


def test_backup_prune_plans_then_deletes_exactly_the_plan(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = LocalStore(store_dir)
    key = MasterKey.generate("k1")

    def backup(days: float, depends_on: list[str] | None = None) -> str:
        moment = NOW - timedelta(days=days)
        backup_id = f"{moment:%Y%m%dT%H%M%SZ}-{len(list(store_dir.rglob('*'))):06x}"
        made = make_backup(
            store, key, b"x" * 100, source="rec", backup_id=backup_id, finished_at=moment,
            depends_on=depends_on,
        )  # fmt: skip
        return made.backup_id

    full = backup(60)  # the full backup the incrementals build on
    inc1 = backup(40, [full])
    unrelated_old = backup(35)
    inc2 = backup(2, [inc1, full])
    recent = backup(1)
    newest = backup(0.1, [full])
    interrupted = backup(3)
    (store_dir / backup_prefix(PREFIX, "lab", "rec", interrupted) / "manifest.json").unlink()
    _age(store_dir, interrupted, 72)

    before = _snapshot(store_dir)
    args = ("backup", "prune", "--store-dir", str(store_dir), "--prefix", PREFIX)
    policy = ("--keep-last", "4", "--max-age-days", "30")
    dry = run_cli(*args, *policy, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert _snapshot(store_dir) == before  # a dry run deletes nothing
    lines = dry.stdout.splitlines()
    assert lines[0].split() == [
        "ACTION", "CLUSTER", "SOURCE", "BACKUP_ID", "STATUS", "FINISHED_AT", "SIZE_BYTES",
        "REASONS",
    ]  # fmt: skip
    rows = {line.split()[3]: line for line in lines[1:-1]}
    planned = {backup_id: line.split()[0] for backup_id, line in rows.items()}
    assert planned == {
        full: "KEEP",  # base of kept backups, although 60 days old
        inc1: "KEEP",  # base of the kept inc2, although 40 days old
        unrelated_old: "DELETE",  # selected by keep-last 4, but older than 30 days
        inc2: "KEEP",
        recent: "KEEP",
        newest: "KEEP",
        interrupted: "DELETE",  # no manifest and idle for 72 h
    }
    assert rows[newest].endswith("newest complete; last 1")
    assert rows[inc1].endswith(f"base of kept {inc2}")
    assert "base of kept" in rows[full]
    assert rows[unrelated_old].endswith("older than 30 days")
    assert "incomplete (interrupted) for 72.0h" in rows[interrupted]
    assert lines[-1].startswith("dry run: 5 kept, 2 to delete")
    assert lines[-1].endswith("nothing deleted")

    done = run_cli(*args, *policy)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    deleted = sorted(line.split()[1] for line in out if line.startswith("deleted "))
    assert deleted == sorted([unrelated_old, interrupted])
    assert out[-1].startswith("5 kept, 2 deleted")
    remaining = {e.backup_id: e.status for e in list_backups(store, PREFIX)}
    assert remaining == {k: "complete" for k, action in planned.items() if action == "KEEP"}
    again = run_cli(*args, *policy)
    assert again.returncode == 0, again.stderr
    assert not [line for line in again.stdout.splitlines() if line.startswith("deleted ")]

    bad = run_cli(*args, "--max-age-days", "30")
    _one_line_error(bad, "invalid retention policy: the policy keeps nothing")
    neither = run_cli("backup", "prune", "--keep-last", "1")
    _one_line_error(neither, "give exactly one of --store, --store-dir or --storage-block")
