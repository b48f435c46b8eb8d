"""A scratch MariaDB server: ``mariadb-install-db`` + ``mariadbd`` from the lab's binaries, tuned
for a fast load of data that is thrown away (no binary log, no redo flush at commit, no
doublewrite, event scheduler off so restored events do not run), and the read-only queries both
scratch kinds of MySQL answer.

``root`` from 127.0.0.1 gets a fresh password through a 0600 ``--init-file`` (run before the
server accepts connections, deleted once it is ready): a root-equivalent account, since a
restore creates routines, triggers and events with other DEFINERs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from siprec_backup.errors import ScratchQueryError, SiprecBackupError
from siprec_backup.lab import mariadb as lab_my
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
from siprec_backup.sources.mysql import MySQLTarget, ServerVersion, _reason, quote_identifier

#: Rows fetched per round trip by :func:`iter_rows`.
FETCH_ROWS = 10_000

_INIT_SQL = """ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{password}';
ALTER USER 'root'@'localhost' IDENTIFIED BY '{password}';
"""


def backed_up_databases(manifest: Manifest) -> tuple[list[str], bool]:
    """The backup's database names and whether it is a one-database dump (no CREATE DATABASE:
    it restores under any name)."""
    names = [str(n) for n in manifest.source_info.get("databases") or []]
    return names, bool(manifest.source_info.get("single_database")) and len(names) == 1


def query_rows(target: MySQLTarget | None, text: str) -> list[tuple[Any, ...]]:
    """Every row of one query in a read-only transaction (buffered)."""
    return list(iter_rows(target, text, streamed=False))


def iter_rows(
    target: MySQLTarget | None, text: str, *, streamed: bool = True
) -> Iterator[tuple[Any, ...]]:
    """The rows of one query in a read-only transaction, on ``target.restore_database`` (the
    default database), unbuffered (SSCursor) unless ``streamed`` is false; ScratchQueryError
    with the server's message on failure."""
    if target is None:
        raise ScratchQueryError("no database was restored on this scratch server yet")
    cursor_class = pymysql.cursors.SSCursor if streamed else pymysql.cursors.Cursor
    try:
        with target.connect(target.restore_database) as conn, conn.cursor(cursor_class) as cur:
            cur.execute("START TRANSACTION READ ONLY")
            cur.execute(text)
            while rows := cur.fetchmany(FETCH_ROWS):
                yield from rows
    except (pymysql.Error, SiprecBackupError) as exc:
        reason = _reason(exc) if isinstance(exc, pymysql.Error) else first_line(exc)
        message = f"query on {target.describe()} failed: {reason}"
        raise ScratchQueryError(redact(message, target.password or "")) from None


def drop_databases(target: MySQLTarget, names: list[str]) -> None:
    """DROP DATABASE IF EXISTS each of ``names``."""
    with target.connect() as conn, conn.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")


class MariaDBScratch(StartedServer):
    """A MariaDB server of our own; a backup restores under its own database names."""

    kind = "mysql"
    label = "MariaDB"

    def __init__(self, directory: Path, mariadbd: Path, install: Path, account: str | None):
        super().__init__(directory)
        self.mariadbd = mariadbd
        self.install = install
        self.account = account
        self.data_dir = directory / "data"
        self._current: MySQLTarget | None = None

    def start(self, timeout: float) -> None:
        """install-db, then start mariadbd and wait until root logs in with the password."""
        lab_my._install_db(self.install, self.data_dir, self.account, self.log, "scratch mysql")
        init = self.directory / "init.sql"
        write_secret_file(init, _INIT_SQL.format(password=self._password), self.account)
        args: list[str | Path] = [
            self.mariadbd,
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--socket={self.directory / 'mariadb.sock'}",
            f"--pid-file={self.directory / 'mariadb.pid'}",
            f"--init-file={init}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--event-scheduler=OFF",
            "--innodb-buffer-pool-size=256M",
            "--innodb-log-file-size=48M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--max-allowed-packet=1G",
        ]
        if self.account is not None:
            args.insert(2, f"--user={self.account}")
        try:
            self.spawn(args, self._answers, timeout=timeout)
        finally:
            init.unlink(missing_ok=True)

    def _answers(self) -> bool:
        # Read timeouts too: if another program holds the port, it may never answer.
        try:
            with (
                pymysql.connect(
                    host=self.host,
                    port=self.port,
                    user="root",
                    password=self._password,
                    connect_timeout=2,
                    read_timeout=2,
                    write_timeout=2,
                ) as conn,
                conn.cursor() as cur,
            ):
                cur.execute("SELECT VERSION()")
                row = cur.fetchone()
        except pymysql.Error:
            return False
        version = ServerVersion.parse(str(row[0]) if row else "0.0.0").version
        self.version = ".".join(map(str, version))
        return True

    def target(self, *, databases: tuple[str, ...] = ()) -> MySQLTarget:
        """root's view of the server (carries the password; repr hides it)."""
        return MySQLTarget(
            host=self.host,
            port=self.port,
            user="root",
            password=self._password,
            databases=databases,
            connect_timeout=2,
        )

    def restore_target(self, manifest: Manifest) -> MySQLTarget:
        """The server, with the backup's databases dropped if a previous restore made them; a
        one-database backup keeps its name."""
        names, single = backed_up_databases(manifest)
        target = self.target(databases=tuple(names[:1]) if single else ())
        drop_databases(target, names)
        self._current = target if len(names) == 1 else self.target()
        return target

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Every row of one read-only query (default database: the restored one, if one)."""
        return query_rows(self._current, sql)

    def iter_query(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The rows of one read-only query, unbuffered (SSCursor)."""
        return iter_rows(self._current, sql)


def _find(bin_dir: Path, name: str) -> Path:
    """``name`` in ``bin_dir``, else in its sibling ``sbin`` / ``bin`` (a prefix layout)."""
    for candidate in (bin_dir, bin_dir.parent / "sbin", bin_dir.parent / "bin"):
        if (candidate / name).is_file():
            return candidate / name
    return find_tool("mysql", bin_dir, name)


def start(work_dir: Path, *, timeout: float, bin_dir: Path | None) -> MariaDBScratch:
    """Start a scratch MariaDB server under a new directory in ``work_dir``."""
    if bin_dir is None:
        mariadbd, install = lab_lookup("mysql", lab_my.find_server)
    else:
        mariadbd, install = _find(bin_dir, "mariadbd"), _find(bin_dir, "mariadb-install-db")
    account = lab_lookup("mysql", lab_my.mariadb_account)
    deadline = time.monotonic() + timeout
    directory = private_dir("mysql", work_dir, account)
    instance = MariaDBScratch(directory, mariadbd, install, account)
    with instance.starting():
        instance.start(max(1.0, deadline - time.monotonic()))
    return instance
