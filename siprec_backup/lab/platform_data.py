"""Seed data for the whole lab platform: the databases, Redis and the recordings tree.

PostgreSQL gets most of the data (it is the recording server's main database); MariaDB and Redis
get a fraction, as on a real platform; the recordings tree holds one audio file per recordings
row of PostgreSQL (up to `max_files`) plus each session's metadata XML; the rows are updated to
reference exactly those files and the rows past `max_files` are deleted, so that the database and
the tree agree (a restore verification cross-checks them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from siprec_backup.lab.lab import LabState
from siprec_backup.lab.mariadb import fill_mariadb
from siprec_backup.lab.recordings import WrittenRecordings, drop_rows_past, write_recordings
from siprec_backup.lab.redis import fill_redis, redis_key_counts
from siprec_backup.lab.seed import fill

#: Recording files written for the lab platform unless told otherwise.
DEFAULT_MAX_FILES = 500


@dataclass(frozen=True)
class PlatformData:
    """Where the platform's seed data went."""

    recordings_dir: Path
    recordings: WrittenRecordings


def seed_platform(
    state: LabState,
    scale_mb: int,
    recordings_dir: Path,
    *,
    max_files: int = DEFAULT_MAX_FILES,
) -> PlatformData:
    """Grow PostgreSQL to about `scale_mb` MiB, MariaDB to a quarter of it, give Redis about a
    tenth (once), and write the recordings tree under `recordings_dir`."""
    fill(state.postgres().conninfo(), scale_mb)
    fill_mariadb(state.mariadb(), max(1, scale_mb // 4))
    redis = state.redis().target()
    if not redis_key_counts(redis):
        fill_redis(redis, max(1, scale_mb // 10))
    conninfo = state.postgres().conninfo()
    written = write_recordings(conninfo, recordings_dir, max_files=max_files)
    drop_rows_past(conninfo, max_files)
    return PlatformData(recordings_dir, written)
