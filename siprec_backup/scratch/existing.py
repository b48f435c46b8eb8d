"""Scratch servers the operator named in a block, for flows that run far from the server
binaries. Nothing is started: each restore goes into a database made for it (PostgreSQL:
``CREATE DATABASE``, which needs CREATEDB; MySQL: one-database backups only) that :meth:`close`
drops, and a Redis server must be empty (it is flushed at close only if we restored into it).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pymysql
from psycopg import sql

from siprec_backup.errors import ConfigurationError, RestoreError
from siprec_backup.manifest import Manifest
from siprec_backup.scratch import mysql as scratch_my
from siprec_backup.scratch import postgres as scratch_pg
from siprec_backup.scratch._common import ScratchInstance, first_line
from siprec_backup.scratch.redis import no_sql
from siprec_backup.sources.base import RestoreTarget
from siprec_backup.sources.mysql import MySQLTarget
from siprec_backup.sources.postgres import PostgresTarget
from siprec_backup.sources.redis import RedisTarget

log = logging.getLogger("siprec_backup.scratch")


def verify_name() -> str:
    """A database name no one else uses: ``siprec_verify_<random hex>``."""
    return f"siprec_verify_{secrets.token_hex(6)}"


class _Existing:
    """What the three kinds share: a description, repr, and a close that never raises."""

    kind: str

    def __init__(self, target: PostgresTarget | MySQLTarget | RedisTarget) -> None:
        self._target = target
        self._closed = False

    def describe(self) -> str:
        """``existing scratch PostgreSQL user@host:port/db`` (no password)."""
        return f"existing scratch {self._target.describe()}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def close(self) -> None:
        """Remove what the restores made; idempotent, never raises (logs a warning)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._clean()
        except Exception as exc:
            log.warning("%s: cleaning up failed: %s", self.describe(), first_line(exc))

    def _clean(self) -> None:
        raise NotImplementedError


class ExistingPostgres(_Existing):
    """A PostgreSQL server: every restore gets a fresh ``siprec_verify_<hex>`` database."""

    kind = "postgres"

    def __init__(self, target: PostgresTarget) -> None:
        super().__init__(target)
        self._pg = target
        self._created: list[str] = []
        self._current: PostgresTarget | None = None

    def restore_target(self, manifest: Manifest) -> PostgresTarget:
        """A new, empty database owned by the block's user (it needs CREATEDB)."""
        name = verify_name()
        try:
            with self._pg.connect(autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise RestoreError(
                f"cannot create the scratch database {name} on {self.describe()} "
                f"(the user needs CREATEDB): {first_line(exc)}"
            ) from None
        self._created.append(name)
        self._current = replace(self._pg, dbname=name)
        return self._current

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Every row of one read-only query on the database restored last."""
        return scratch_pg.query_rows(self._current, sql)

    def iter_query(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The rows of one read-only query, through a server-side cursor."""
        return scratch_pg.iter_rows(self._current, sql)

    def _clean(self) -> None:
        with self._pg.connect(autocommit=True) as admin:
            while self._created:
                name = sql.Identifier(self._created.pop())
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


class ExistingMySQL(_Existing):
    """A MySQL/MariaDB server: a one-database backup restores into ``siprec_verify_<hex>``."""

    kind = "mysql"

    def __init__(self, target: MySQLTarget) -> None:
        super().__init__(target)
        self._my = target
        self._created: list[str] = []
        self._current: MySQLTarget | None = None

    def restore_target(self, manifest: Manifest) -> MySQLTarget:
        """A new database for a one-database backup; a multi-database backup is refused (its
        names could collide with the server's own databases)."""
        names, single = scratch_my.backed_up_databases(manifest)
        if not single:
            raise ConfigurationError(
                f"backup {manifest.backup_id} holds several databases ({', '.join(names)}); "
                f"{self.describe()} takes one-database backups only: start a scratch server"
            )
        name = verify_name()
        self._created.append(name)  # prepare() creates it; close() drops it either way
        self._current = replace(self._my, databases=(names[0],), database=name)
        return self._current

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Every row of one read-only query on the database restored last."""
        return scratch_my.query_rows(self._current, sql)

    def iter_query(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The rows of one read-only query, unbuffered (SSCursor)."""
        return scratch_my.iter_rows(self._current, sql)

    def _clean(self) -> None:
        try:
            scratch_my.drop_databases(self._my, self._created)
        except pymysql.Error as exc:
            raise RestoreError(first_line(exc)) from None
        self._created.clear()


class ExistingRedis(_Existing):
    """A Redis server that must be empty; flushed at close if a restore went into it."""

    kind = "redis"

    def __init__(self, target: RedisTarget) -> None:
        super().__init__(target)
        self._redis = target
        self._used = False

    def restore_target(self, manifest: Manifest) -> RedisTarget:
        """The server itself; ConfigurationError if it holds keys we did not restore."""
        if self._used:
            with self._redis.ping() as client:
                client.flushall()
        else:
            held = self._redis.key_counts()
            if held:
                listed = ", ".join(f"{db}={n}" for db, n in sorted(held.items()))
                raise ConfigurationError(
                    f"{self.describe()} holds keys ({listed}): a scratch Redis must be empty"
                )
        self._used = True
        return self._redis

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Refused: ConfigurationError."""
        no_sql(self.describe())

    def iter_query(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """Refused: ConfigurationError."""
        no_sql(self.describe())

    def _clean(self) -> None:
        if self._used:
            with self._redis.ping() as client:
                client.flushall()


def existing_scratch(target: RestoreTarget) -> ScratchInstance:
    """A scratch instance on a server the operator configured (see the module docstring)."""
    if isinstance(target, PostgresTarget):
        return ExistingPostgres(target)
    if isinstance(target, MySQLTarget):
        return ExistingMySQL(target)
    if isinstance(target, RedisTarget):
        return ExistingRedis(target)
    raise ConfigurationError(f"{target.describe()} cannot be a scratch server (kind {target.kind})")
