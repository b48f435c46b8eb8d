"""A scratch PostgreSQL cluster: ``initdb`` + ``postgres`` from the lab's binaries, tuned for a
fast bulk load of data that is thrown away (no fsync, no WAL beyond the minimum, no autovacuum),
and the read-only queries both scratch kinds of PostgreSQL answer.

The superuser ``postgres`` authenticates with a fresh password (scram-sha-256, set through a 0600
``--pwfile`` deleted after initdb); the server listens on 127.0.0.1 only, without a unix socket.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from siprec_backup.errors import ScratchQueryError, SiprecBackupError
from siprec_backup.lab import postgres as lab_pg
from siprec_backup.manifest import Manifest
from siprec_backup.scratch._common import (
    StartedServer,
    find_tool,
    first_line,
    lab_lookup,
    private_dir,
    redact,
    write_secret_file,
)
from siprec_backup.sources.postgres import PostgresTarget

#: Server settings for a throwaway bulk load (crash safety is worthless here).
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "1h",
    "maintenance_work_mem": "256MB",
    "autovacuum": "off",
    "log_min_messages": "warning",
}
#: Database names a restore must not take: the cluster's own.
RESERVED = frozenset({"postgres", "template0", "template1"})
#: Rows fetched per round trip by :func:`iter_rows`.
FETCH_ROWS = 10_000


def restore_dbname(manifest: Manifest) -> str:
    """The backed-up database's name (``source_info.database``), else ``restored``."""
    name = manifest.source_info.get("database")
    if not isinstance(name, str) or not name or name in RESERVED:
        return "restored"
    return name


def query_rows(target: PostgresTarget | None, text: str) -> list[tuple[Any, ...]]:
    """Every row of one query, in a read-only transaction of ``target``'s database."""
    return list(iter_rows(target, text, named=False))


def iter_rows(
    target: PostgresTarget | None, text: str, *, named: bool = True
) -> Iterator[tuple[Any, ...]]:
    """The rows of one query in a read-only transaction, through a server-side (named) cursor
    unless ``named`` is false; ScratchQueryError with the server's message on failure."""
    if target is None:
        raise ScratchQueryError("no database was restored on this scratch server yet")
    try:
        with target.connect() as conn:
            conn.read_only = True
            cur: psycopg.Cursor[Any] | psycopg.ServerCursor[Any]
            if named:
                cur = conn.cursor(name="siprec_scratch")
                cur.itersize = FETCH_ROWS
            else:
                cur = conn.cursor()
            with cur:
                cur.execute(text)
                yield from cur
    except (psycopg.Error, SiprecBackupError) as exc:
        raise ScratchQueryError(
            redact(f"query on {target.describe()} failed: {first_line(exc)}", target.password or "")
        ) from None


class PostgresScratch(StartedServer):
    """A PostgreSQL cluster of our own; its restored database is the query database."""

    kind = "postgres"
    label = "PostgreSQL"
    #: Immediate shutdown: no checkpoint of data about to be deleted; children exit too.
    stop_signal = signal.SIGQUIT

    def __init__(self, directory: Path, bin_dir: Path, account: str | None) -> None:
        super().__init__(directory)
        self.bin_dir = bin_dir
        self.account = account
        self.data_dir = directory / "data"
        self._current: PostgresTarget | None = None

    def start(self, timeout: float) -> None:
        """initdb, then start the postmaster and wait until it is ready."""
        pwfile = self.directory / "pwfile"
        write_secret_file(pwfile, self._password + "\n", self.account)
        env = lab_pg._server_env(self.account)
        try:
            self.run(
                [
                    self.bin_dir / "initdb",
                    "-D",
                    self.data_dir,
                    "-U",
                    lab_pg.SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                    "--no-instructions",
                ],
                cwd=self.directory,
                user=self.account,
                env=env,
                timeout=timeout,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self.version = (self.data_dir / "PG_VERSION").read_text().strip()
        options = [a for k, v in SETTINGS.items() for a in ("-c", f"{k}={v}")]
        self.spawn(
            [self.bin_dir / "postgres", "-D", self.data_dir, "-p", str(self.port), *options],
            lambda: lab_pg._postmaster_status(self.data_dir) == "ready",
            timeout=timeout,
            user=self.account,
            env=env,
        )

    def target(self, dbname: str = "postgres") -> PostgresTarget:
        """The superuser's view of ``dbname`` (carries the password; repr hides it)."""
        return PostgresTarget(
            host=self.host,
            port=self.port,
            user=lab_pg.SUPERUSER,
            dbname=dbname,
            password=self._password,
            sslmode="disable",
            bin_dir=self.bin_dir,
        )

    def restore_target(self, manifest: Manifest) -> PostgresTarget:
        """A fresh, empty database named like the backed-up one (recreated if it exists)."""
        target = self.target(restore_dbname(manifest))
        name = sql.Identifier(target.dbname)
        with self.target().connect(autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
        self._current = target
        return target

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Every row of one read-only query on the database restored last."""
        return query_rows(self._current, sql)

    def iter_query(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The rows of one read-only query, through a server-side cursor."""
        return iter_rows(self._current, sql)


def start(work_dir: Path, *, timeout: float, bin_dir: Path | None) -> PostgresScratch:
    """Start a scratch PostgreSQL cluster under a new directory in ``work_dir``."""
    if bin_dir is None:
        bin_dir = lab_lookup("postgres", lab_pg.find_bin_dir)
    else:
        for tool in ("initdb", "postgres", "pg_restore"):
            find_tool("postgres", bin_dir, tool)
    account = lab_lookup("postgres", lab_pg.server_user)
    deadline = time.monotonic() + timeout
    instance = PostgresScratch(private_dir("postgres", work_dir, account), bin_dir, account)
    with instance.starting():
        instance.start(max(1.0, deadline - time.monotonic()))
    return instance
