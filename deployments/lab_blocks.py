"""Blocks pointing at the lab's servers, saved under the names the deployments use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from blocks.encryption_key import EncryptionKey
from blocks.local_storage import LocalStorage
from blocks.postgres import PostgresDatabase
from siprec_backup.lab import LabState
from siprec_backup.stream import MasterKey

KEY_ID = "lab-master-1"
STORE_PREFIX = "siprec"


@dataclass(frozen=True)
class LabBlocks:
    """The names of the saved blocks and where the break-glass copy of the key is."""

    database: str
    storage: str
    key: str
    key_file: Path
    store_dir: Path
    prefix: str = STORE_PREFIX


def lab_master_key(state: LabState) -> tuple[MasterKey, Path]:
    """The lab's master key, kept in a 0600 file beside the lab (the break-glass copy)."""
    path = state.root / "master.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(MasterKey.generate(KEY_ID).material.hex() + "\n")
    return MasterKey.from_text(KEY_ID, path.read_text()), path


def save_lab_blocks(
    state: LabState,
    *,
    database: str = "siprec-postgres",
    storage: str = "siprec-storage",
    key: str = "siprec-key",
) -> LabBlocks:
    """Save (overwrite) the blocks the nightly deployment uses, pointing at this lab."""
    master, key_file = lab_master_key(state)
    pg = state.postgres("primary")
    PostgresDatabase(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=SecretStr(pg.password),
        dbname=pg.dbname,
        sslmode="prefer",
        bin_dir=str(pg.bin_dir),
    ).save(database, overwrite=True)
    store_dir = state.root / "backups"
    store_dir.mkdir(exist_ok=True)
    LocalStorage(path=str(store_dir), prefix=STORE_PREFIX).save(storage, overwrite=True)
    EncryptionKey(key_id=master.key_id, key=SecretStr(master.material.hex())).save(
        key, overwrite=True
    )
    return LabBlocks(database, storage, key, key_file, store_dir)
