"""Source blocks by kind: the one place that maps a platform source to its block and engine."""

from __future__ import annotations

from pathlib import Path

from blocks.loading import load_block
from blocks.mysql import MySQLDatabase
from blocks.postgres import PostgresDatabase
from blocks.recordings import RecordingsDirectory
from blocks.redis import RedisServer
from siprec_backup.errors import ConfigurationError
from siprec_backup.sources.base import RestoreTarget, Source

#: Kinds streamed through one dump/restore pipe; "recordings" has its own engine.
STREAMED_KINDS = ("postgres", "mysql", "redis")
KINDS = (*STREAMED_KINDS, "recordings")


def _check_kind(kind: str, allowed: tuple[str, ...]) -> None:
    if kind not in allowed:
        raise ConfigurationError(
            f"unknown source kind {kind!r}; expected one of {', '.join(allowed)}"
        )


def load_source(kind: str, block: str) -> Source:
    """The engine source described by block `block` of `kind` (a streamed kind)."""
    _check_kind(kind, STREAMED_KINDS)
    if kind == "postgres":
        return load_block(PostgresDatabase, block).source()
    if kind == "mysql":
        return load_block(MySQLDatabase, block).source()
    return load_block(RedisServer, block).source()


def load_restore_target(kind: str, block: str, database: str | None = None) -> RestoreTarget:
    """Where to restore a streamed backup of `kind`: block `block`, optionally another database
    (PostgreSQL: database name; MySQL: the database a single-database dump is restored into)."""
    _check_kind(kind, STREAMED_KINDS)
    if kind == "postgres":
        return load_block(PostgresDatabase, block).target(database)
    if kind == "mysql":
        return load_block(MySQLDatabase, block).restore_target(database)
    if database:
        raise ConfigurationError("a Redis restore has no database name to choose")
    return load_block(RedisServer, block).restore_target()


def load_recordings(block: str) -> RecordingsDirectory:
    """The recordings directory block `block`."""
    return load_block(RecordingsDirectory, block)


def recordings_root(block: str) -> Path:
    return load_recordings(block).root()
