"""MySQL / MariaDB: ``mariadb-dump`` (or ``mysqldump``) streamed out, the ``mariadb`` client in.

Consistent row counts: the manifest must count exactly the rows the dump holds, while the server
keeps taking writes. Our own connection takes ``FLUSH TABLES WITH READ LOCK`` (no commit can
happen), opens ``START TRANSACTION WITH CONSISTENT SNAPSHOT``, reads the binlog position and
GTID, then starts the dump (``--single-transaction``; its own read lock, if it takes one, is
compatible with ours). Once the dump has written its ``CHANGE MASTER TO`` comment it has taken its
snapshot, so we ``UNLOCK TABLES``: both snapshots saw the same frozen state, and our transaction
counts the rows in a thread while the dump streams. On MariaDB both snapshots' binlog positions
are compared at the end, as proof. Only transactional tables (InnoDB) are consistent, as with any
``--single-transaction`` dump. The read lock needs the RELOAD privilege.

One configured database is dumped without ``--databases`` (no ``CREATE DATABASE`` / ``USE`` in
the stream) so that it can be restored under another name, like PostgreSQL's target database;
several (or all) databases are dumped with ``--databases`` and come back under their own names.

Passwords reach the client tools through a temporary 0600 ``--defaults-extra-file`` (deleted when
the tool ends), never the command line, and never appear in messages.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import pymysql
import pymysql.cursors

from siprec_backup.errors import (
    ConfigurationError,
    RestoreError,
    SourceError,
    SourceUnavailableError,
    TargetNotEmptyError,
)
from siprec_backup.sources.base import BackgroundCount, DumpFacts, stderr_tail, widen_pipe

#: Databases that belong to the server, never backed up when "every database" is asked for.
SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
#: The dump's header up to its replication position comment is small; more means trouble.
_MAX_PREFIX = 1 << 20
#: How long our read lock may wait for the dump to take its snapshot.
SNAPSHOT_TIMEOUT = 60.0
#: Server-side lock wait for our FLUSH TABLES WITH READ LOCK (seconds).
LOCK_WAIT_TIMEOUT = 60
_ER_ACCESS_DENIED = (1044, 1045, 1227)
_IDENT = re.compile(r"^[^\x00/\\.]{1,64}$")
# "-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000002', MASTER_LOG_POS=1234;" (MariaDB, MySQL
# < 8.0.23) or "-- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='…', SOURCE_LOG_POS=…;".
_POSITION_LINE = re.compile(
    rb"^-- CHANGE (?:MASTER|REPLICATION SOURCE) TO (?:MASTER|SOURCE)_LOG_FILE='([^']+)', "
    rb"(?:MASTER|SOURCE)_LOG_POS=(\d+);",
    re.MULTILINE,
)
_GTID_LINE = re.compile(rb"^-- SET GLOBAL gtid_slave_pos='([^']*)';", re.MULTILINE)


def _check_identifier(kind: str, name: str) -> str:
    if not _IDENT.match(name):
        raise ConfigurationError(f"invalid {kind} name {name!r}")
    return name


def quote_identifier(name: str) -> str:
    """``name`` as a backquoted SQL identifier."""
    return "`" + name.replace("`", "``") + "`"


# --- server flavour, replication and binlog state ----------------------------------------------


@dataclass(frozen=True)
class ServerVersion:
    """What ``SELECT VERSION()`` says: flavour (mariadb or mysql) and the numeric version."""

    flavor: str
    version: tuple[int, int, int]
    text: str

    @classmethod
    def parse(cls, text: str) -> ServerVersion:
        """Parse e.g. ``10.11.19-MariaDB-0+deb12u1`` or ``8.0.36``."""
        match = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
        if not match:
            raise SourceError(f"cannot parse the server version {text!r}")
        major, minor, patch = (int(g) for g in match.groups())
        return cls("mariadb" if "mariadb" in text.lower() else "mysql", (major, minor, patch), text)

    @property
    def replica_status_sql(self) -> str:
        """``SHOW REPLICA STATUS`` where the server knows it (MariaDB 10.5.1+, MySQL 8.0.22+)."""
        new = (10, 5, 1) if self.flavor == "mariadb" else (8, 0, 22)
        return "SHOW REPLICA STATUS" if self.version >= new else "SHOW SLAVE STATUS"

    @property
    def binlog_status_sql(self) -> str:
        """``SHOW BINARY LOG STATUS`` on MySQL 8.2+ (it removed SHOW MASTER STATUS in 8.4)."""
        if self.flavor == "mysql" and self.version >= (8, 2, 0):
            return "SHOW BINARY LOG STATUS"
        return "SHOW MASTER STATUS"


#: One set of keys for both servers' replica status; each lists the MySQL 8 name first, then the
#: older / MariaDB one.
REPLICA_FIELDS: dict[str, tuple[str, ...]] = {
    "source_host": ("Source_Host", "Master_Host"),
    "source_port": ("Source_Port", "Master_Port"),
    "source_user": ("Source_User", "Master_User"),
    "io_state": ("Replica_IO_State", "Slave_IO_State"),
    "io_running": ("Replica_IO_Running", "Slave_IO_Running"),
    "sql_running": ("Replica_SQL_Running", "Slave_SQL_Running"),
    "seconds_behind": ("Seconds_Behind_Source", "Seconds_Behind_Master"),
    "source_log_file": ("Source_Log_File", "Master_Log_File"),
    "read_source_log_pos": ("Read_Source_Log_Pos", "Read_Master_Log_Pos"),
    "relay_source_log_file": ("Relay_Source_Log_File", "Relay_Master_Log_File"),
    "exec_source_log_pos": ("Exec_Source_Log_Pos", "Exec_Master_Log_Pos"),
    "last_io_error": ("Last_IO_Error",),
    "last_sql_error": ("Last_SQL_Error",),
    "source_server_id": ("Source_Server_Id", "Master_Server_Id"),
    "using_gtid": ("Using_Gtid",),  # MariaDB
    "gtid_io_pos": ("Gtid_IO_Pos",),  # MariaDB
    "retrieved_gtid_set": ("Retrieved_Gtid_Set",),  # MySQL
    "executed_gtid_set": ("Executed_Gtid_Set",),  # MySQL
    "channel": ("Channel_Name", "Connection_name"),
}


def normalise_replica_status(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row of SHOW REPLICA / SLAVE STATUS (MySQL or MariaDB naming) under REPLICA_FIELDS'
    keys; ``io_running`` / ``sql_running`` become booleans (``Connecting`` is not running) and
    ``seconds_behind`` an int or None (NULL while the replica is not connected)."""
    out: dict[str, Any] = {}
    for key, names in REPLICA_FIELDS.items():
        out[key] = next((row[n] for n in names if n in row), None)
    for key in ("io_running", "sql_running"):
        out[key] = str(out[key]).lower() == "yes" if out[key] is not None else None
    for key in ("source_port", "read_source_log_pos", "exec_source_log_pos", "source_server_id"):
        if out[key] is not None and out[key] != "":
            out[key] = int(out[key])
    behind = out["seconds_behind"]
    out["seconds_behind"] = None if behind is None or behind == "" else int(behind)
    return out


def server_version(conn: pymysql.connections.Connection[Any]) -> ServerVersion:
    """The server's flavour and version."""
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        row = cur.fetchone()
    return ServerVersion.parse(str(row[0]) if row else "")


def _dict_rows(cur: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def replica_status(conn: pymysql.connections.Connection[Any]) -> dict[str, Any] | None:
    """This server's replication state with normalised keys, or None if it is no replica."""
    sql = server_version(conn).replica_status_sql
    with conn.cursor() as cur:
        cur.execute(sql)
        rows = _dict_rows(cur)
    return normalise_replica_status(rows[0]) if rows else None


def normalise_binlog_status(row: Mapping[str, Any], gtid: str | None) -> dict[str, Any]:
    """A SHOW MASTER / BINARY LOG STATUS row as ``{file, position, gtid}``; ``gtid`` is
    MariaDB's ``@@gtid_binlog_pos``, else MySQL's ``Executed_Gtid_Set`` column is used."""
    executed = row.get("Executed_Gtid_Set")
    return {
        "file": str(row["File"]),
        "position": int(row["Position"]),
        "gtid": gtid if gtid is not None else (str(executed) if executed else ""),
    }


def binlog_position(conn: pymysql.connections.Connection[Any]) -> dict[str, Any] | None:
    """``{file, position, gtid}`` of the server's binary log, or None when it writes none."""
    version = server_version(conn)
    with conn.cursor() as cur:
        cur.execute(version.binlog_status_sql)
        rows = _dict_rows(cur)
        if not rows:
            return None
        gtid: str | None = None
        if version.flavor == "mariadb":
            cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
            row = cur.fetchone()
            gtid = str(row[0]) if row and row[0] is not None else ""
    return normalise_binlog_status(rows[0], gtid)


# --- the target: where to connect, and the restore side --------------------------------------


@dataclass(frozen=True)
class MySQLTarget:
    """How to reach a MySQL or MariaDB server. `password` is never shown by repr().

    ``databases`` are what a backup dumps (empty: every non-system database). ``database`` is
    where a restore puts a one-database backup (default: the only entry of ``databases``); a
    backup of several databases is restored under its own database names. ``ssl_ca`` turns on
    TLS with verification of the server certificate against that CA.
    """

    host: str
    port: int = 3306
    user: str = "root"
    password: str | None = field(default=None, repr=False)
    databases: tuple[str, ...] = ()
    database: str | None = None
    ssl_ca: Path | None = None
    bin_dir: Path | None = None
    connect_timeout: int = 10

    kind = "mysql"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"invalid MySQL port {self.port}")
        if not self.host:
            raise ConfigurationError("the MySQL host is empty")
        if not self.user:
            raise ConfigurationError("the MySQL user is empty")
        if not isinstance(self.databases, tuple):
            object.__setattr__(self, "databases", tuple(self.databases))
        for name in self.databases:
            _check_identifier("database", name)
        if len(set(self.databases)) != len(self.databases):
            raise ConfigurationError(f"databases listed twice in {list(self.databases)}")
        if self.database is not None:
            _check_identifier("database", self.database)

    # --- descriptions and connections -----------------------------------------------------------

    @property
    def restore_database(self) -> str | None:
        """The database a one-database backup is restored into (None: keep the dump's names)."""
        if self.database is not None:
            return self.database
        return self.databases[0] if len(self.databases) == 1 else None

    def describe(self) -> str:
        """``MySQL user@host:port/db1,db2`` (never the password)."""
        names = self.database or ",".join(self.databases) or "*"
        return f"MySQL {self.user}@{self.host}:{self.port}/{names}"

    def connect(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        """Open a connection; SourceUnavailableError (without the password) if that fails."""
        ssl: dict[str, Any] | None = None
        if self.ssl_ca is not None:
            ssl = {"ca": str(self.ssl_ca), "check_hostname": True}
        try:
            return pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password or "",
                database=database,
                connect_timeout=self.connect_timeout,
                charset="utf8mb4",
                autocommit=True,
                ssl=ssl,
            )
        except pymysql.Error as exc:
            raise SourceUnavailableError(
                f"cannot connect to {self.describe()}: {_reason(exc)}"
            ) from None

    def tool(self, *names: str) -> str:
        """Path of the first client tool of ``names`` found in ``bin_dir``, else on PATH."""
        for name in names:
            if self.bin_dir is not None:
                candidate = self.bin_dir / name
                if candidate.is_file():
                    return str(candidate)
            else:
                found = shutil.which(name)
                if found:
                    return found
        where = str(self.bin_dir) if self.bin_dir is not None else "PATH"
        raise ConfigurationError(
            f"none of {', '.join(names)} found in {where}: install mariadb-client or set bin_dir"
        )

    @contextmanager
    def options_file(self) -> Iterator[str]:
        """A 0600 option file with the password and TLS settings, for ``--defaults-extra-file``
        (which must be the tool's first option); deleted on leaving."""
        lines = ["[client]"]
        if self.password:
            escaped = self.password.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'password="{escaped}"')
        if self.ssl_ca is not None:
            lines += ["ssl", f"ssl-ca={self.ssl_ca}", "ssl-verify-server-cert"]
        fd, path = tempfile.mkstemp(prefix="siprec-my-", suffix=".cnf")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def client_args(self, options_file: str) -> list[str]:
        """Connection options for the client tools; the options file comes first."""
        return [
            f"--defaults-extra-file={options_file}",
            f"--host={self.host}",
            f"--port={self.port}",
            f"--user={self.user}",
            "--protocol=TCP",
            "--default-character-set=utf8mb4",
        ]

    # --- RestoreTarget -------------------------------------------------------------------------

    def prepare(self, *, overwrite: bool) -> None:
        """Create the restore database if missing; refuse databases that hold tables unless
        ``overwrite`` (TargetNotEmptyError naming them)."""
        with self.connect() as conn, conn.cursor() as cur:
            restore_db = self.restore_database
            if restore_db is not None:
                checked = [restore_db]
            elif self.databases:
                checked = list(self.databases)
            else:
                cur.execute("SHOW DATABASES")
                checked = [str(r[0]) for r in cur.fetchall() if r[0] not in SYSTEM_DATABASES]
            not_empty = _databases_with_tables(cur, checked)
            if not_empty and not overwrite:
                listed = ", ".join(f"{db} ({n} tables)" for db, n in not_empty.items())
                raise TargetNotEmptyError(
                    f"target {self.describe()} is not empty: {listed}; "
                    "restore into empty databases or allow overwrite"
                )
            if restore_db is not None and not _missing_databases(cur, [restore_db]):
                return
            if restore_db is not None:
                try:
                    cur.execute(
                        f"CREATE DATABASE {quote_identifier(restore_db)} CHARACTER SET utf8mb4"
                    )
                except pymysql.Error as exc:
                    raise RestoreError(
                        f"cannot create database {restore_db!r} on {self.describe()}: "
                        f"{_reason(exc)}"
                    ) from None

    def open_restore(self, *, overwrite: bool) -> MySQLRestore:
        """Start the ``mariadb`` client reading the dump from its stdin (stops at the first
        error). The dump drops and recreates each table, so ``overwrite`` needs nothing more."""
        return MySQLRestore(self)

    def restored_counts(self, tables: dict[str, int]) -> dict[str, int]:
        """Exact rows of each ``db.table`` named in ``tables``, keyed like them; a one-database
        backup's tables are counted in ``restore_database``."""
        restore_db = self.restore_database
        counts: dict[str, int] = {}
        with self.connect() as conn, conn.cursor() as cur:
            for key in tables:
                db, _, table = key.partition(".")
                where = restore_db or db
                try:
                    cur.execute(
                        f"SELECT COUNT(*) FROM {quote_identifier(where)}.{quote_identifier(table)}"
                    )
                except pymysql.Error as exc:
                    if exc.args and exc.args[0] == 1146:  # table does not exist
                        continue
                    raise RestoreError(
                        f"counting rows of {where}.{table} on {self.describe()} failed: "
                        f"{_reason(exc)}"
                    ) from None
                row = cur.fetchone()
                counts[key] = int(row[0]) if row else 0
        return counts


def _reason(exc: BaseException) -> str:
    """The server's or driver's message of a pymysql error, on one line."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    text = str(args[1]) if len(args) > 1 else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _databases_with_tables(cur: Any, databases: Sequence[str]) -> dict[str, int]:
    """Which of ``databases`` exist and hold tables or views, with their count."""
    found: dict[str, int] = {}
    for db in databases:
        cur.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (db,))
        row = cur.fetchone()
        if row and int(row[0]):
            found[db] = int(row[0])
    return found


class MySQLRestore:
    """A running ``mariadb`` client reading SQL from its stdin; without ``--force`` it stops at
    the first error. It cannot roll back what it already ran: a failed restore leaves the tables
    restored so far, and the next restore of the same backup needs ``overwrite``."""

    def __init__(self, target: MySQLTarget) -> None:
        self._target = target
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._options = target.options_file()
        options = self._options.__enter__()
        args = [*target.client_args(options), "--batch", "--silent"]
        if target.restore_database is not None:
            args.append(f"--database={target.restore_database}")
        try:
            self._proc = subprocess.Popen(
                [target.tool("mariadb", "mysql"), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                bufsize=0,
            )
        except BaseException:
            self._options.__exit__(None, None, None)
            self._stderr.close()
            raise
        assert self._proc.stdin is not None
        widen_pipe(self._proc.stdin)
        self.stdin = cast(BinaryIO, self._proc.stdin)

    def _error(self, what: str) -> RestoreError:
        tail = stderr_tail(self._stderr)
        hint = ""
        if "No database selected" in tail:
            hint = " (a one-database backup: set the target's database)"
        return RestoreError(f"restore into {self._target.describe()} {what}: {tail}{hint}")

    def finish(self) -> None:
        """Close the input and wait; RestoreError with the client's last message on failure."""
        with contextlib.suppress(BrokenPipeError):
            self.stdin.close()
        returncode = self._proc.wait()
        if returncode != 0:
            raise self._error(f"failed (exit {returncode})")

    def died(self) -> RestoreError:
        """The error to raise when the client stopped reading its input (a broken pipe)."""
        self._proc.wait()
        return self._error("stopped reading")

    def close(self) -> None:
        """Kill the client if it still runs; remove its option file."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(OSError):
            self.stdin.close()
        self._options.__exit__(None, None, None)
        self._stderr.close()


# --- the source -------------------------------------------------------------------------------


class _PrefixedStream:
    """The bytes already read from the dump (its header), then the rest of the pipe."""

    def __init__(self, prefix: bytes, rest: IO[bytes]) -> None:
        self._prefix = memoryview(prefix)
        self._rest = rest

    def readinto(self, buffer: memoryview | bytearray) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._rest.readinto(view) or 0  # type: ignore[attr-defined]

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            n = len(self._prefix) if size < 0 else min(size, len(self._prefix))
            data = bytes(self._prefix[:n])
            self._prefix = self._prefix[n:]
            return data
        return self._rest.read(size)


def _read_header(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    """Read the dump's output up to its replication position comment (and the comment lines
    that follow it): past that point the dump has its snapshot. Raises SourceError if the dump
    ends, hangs or writes too much first."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = bytearray()
    while True:
        match = _POSITION_LINE.search(data)
        if match is not None:
            # The GTID comment lines follow the position; stop at the first statement after it.
            rest = data[match.end() :]
            if re.search(rb"\n(?!--|\n)[^\n]*\n", rest):
                return bytes(data)
        if len(data) > _MAX_PREFIX:
            raise SourceError("the dump wrote 1 MiB without its replication position comment")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SourceError(f"the dump did not take its snapshot within {SNAPSHOT_TIMEOUT:.0f} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            if match is not None:
                return bytes(data)  # a dump of empty databases may end right after it
            raise _DumpEndedError()
        data += chunk


class _DumpEndedError(Exception):
    """The dump exited before taking its snapshot; the caller reports its stderr."""


def _parse_position(header: bytes) -> dict[str, Any]:
    match = _POSITION_LINE.search(header)
    out: dict[str, Any] = {}
    if match:
        out["file"] = match.group(1).decode()
        out["position"] = int(match.group(2))
    gtid = _GTID_LINE.search(header)
    if gtid:
        out["gtid"] = gtid.group(1).decode()
    return out


def table_row_counts(cur: Any, databases: Sequence[str]) -> dict[str, int]:
    """Exact rows of every base table of ``databases``, as ``{"db.table": rows}``, in the
    snapshot of ``cur``'s transaction."""
    counts: dict[str, int] = {}
    for db in databases:
        cur.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (db,),
        )
        for (table,) in cur.fetchall():
            cur.execute(f"SELECT COUNT(*) FROM {quote_identifier(db)}.{quote_identifier(table)}")
            row = cur.fetchone()
            counts[f"{db}.{table}"] = int(row[0]) if row else 0
    return counts


def tool_version(path: str) -> str:
    """The first line of ``tool --version``."""
    out = subprocess.run(
        [path, "--no-defaults", "--version"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


def dump_flags(tool_version_text: str) -> list[str]:
    """The consistency and content flags for the dump tool that reported ``tool_version_text``:
    MariaDB's ``--master-data=2 --gtid``, MySQL 8.0.26+'s ``--source-data=2``."""
    common = [
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--no-tablespaces",
    ]
    if "mariadb" in tool_version_text.lower():
        return [*common, "--master-data=2", "--gtid"]
    match = re.search(r"Ver (\d+)\.(\d+)\.(\d+)", tool_version_text)
    version = tuple(int(g) for g in match.groups()) if match else (0, 0, 0)
    source_data = "--source-data=2" if version >= (8, 0, 26) else "--master-data=2"
    return [*common, source_data, "--set-gtid-purged=COMMENTED"]


class MySQLDump:
    """One running dump whose rows are counted in our matching snapshot (module docstring)."""

    def __init__(
        self,
        source: MySQLSource,
        proc: subprocess.Popen[bytes],
        stderr: IO[bytes],
        header: bytes,
        holder: pymysql.connections.Connection[Any],
        databases: list[str],
        info: dict[str, Any],
    ) -> None:
        assert proc.stdout is not None
        self.stream = cast(BinaryIO, _PrefixedStream(header, proc.stdout))
        self._source = source
        self._proc = proc
        self._stderr = stderr
        self._holder = holder
        self._databases = databases
        self._info = info
        self._counts = BackgroundCount(self._count, "mysql-row-counts")

    def _count(self) -> dict[str, int]:
        with self._holder.cursor() as cur:
            counts = table_row_counts(cur, self._databases)
            cur.execute("COMMIT")
        return counts

    def finish(self) -> DumpFacts:
        """Wait for the dump; SourceError with its stderr tail if it failed."""
        returncode = self._proc.wait()
        self._counts.join()
        what = self._source.describe()
        if returncode != 0:
            raise SourceError(
                f"dump of {what} failed (exit {returncode}): {stderr_tail(self._stderr)}"
            )
        try:
            counts = self._counts.result()
        except Exception as exc:
            raise SourceError(f"counting rows in {what} failed: {_reason(exc)}") from None
        ours = self._info.get("snapshot_binlog")
        dumped = self._info.get("binlog")
        if (
            ours
            and dumped
            and (ours["file"], ours["position"])
            != (
                dumped.get("file"),
                dumped.get("position"),
            )
        ):
            raise SourceError(
                f"dump of {what}: the dump's snapshot ({dumped}) is not the snapshot the rows "
                f"were counted in ({ours}); nothing was recorded"
            )
        return DumpFacts(source_info=dict(self._info), tables=counts)


@dataclass(frozen=True)
class MySQLSource:
    """MySQL or MariaDB databases to back up with mariadb-dump / mysqldump (plain SQL)."""

    target: MySQLTarget
    kind: str = "mysql"

    def describe(self) -> str:
        return self.target.describe()

    def estimate_bytes(self) -> int | None:
        """Data plus index bytes of the databases, from information_schema (an estimate)."""
        with self.target.connect() as conn, conn.cursor() as cur:
            databases = self._databases(cur)
            if not databases:
                return 0
            marks = ",".join(["%s"] * len(databases))
            cur.execute(
                "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) "
                f"FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({marks})",
                databases,
            )
            row = cur.fetchone()
        return int(row[0]) if row else None

    def _databases(self, cur: Any) -> list[str]:
        """The configured databases, or every non-system database of the server."""
        if self.target.databases:
            return list(self.target.databases)
        cur.execute("SHOW DATABASES")
        return sorted(str(r[0]) for r in cur.fetchall() if r[0] not in SYSTEM_DATABASES)

    @contextmanager
    def open_dump(self) -> Iterator[MySQLDump]:
        """Start the dump in a snapshot shared with our row-counting transaction."""
        target = self.target
        dump_tool = target.tool("mariadb-dump", "mysqldump")
        dump_version = tool_version(dump_tool)
        holder = target.connect()
        proc: subprocess.Popen[bytes] | None = None
        try:
            with holder.cursor() as cur:
                version = server_version(holder)
                databases = self._databases(cur)
                if not databases:
                    raise SourceError(f"{self.describe()}: there is no database to back up")
                missing = _missing_databases(cur, databases)
                if missing:
                    raise SourceError(
                        f"{self.describe()}: database {', '.join(missing)} does not exist"
                    )
                _freeze(cur, self.describe())
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                position = binlog_position(holder)
                if position is None:
                    raise SourceError(
                        f"{self.describe()}: the server writes no binary log (log_bin is off); "
                        "a consistent dump with its position needs it"
                    )
                snapshot = _snapshot_binlog(cur, version)
            info: dict[str, Any] = {
                "host": target.host,
                "port": target.port,
                "flavor": version.flavor,
                "server_version": version.text,
                "databases": databases,
                "single_database": len(target.databases) == 1,
                "binlog_file": position["file"],
                "binlog_position": position["position"],
                "gtid_position": position["gtid"],
                "dump_tool": os.path.basename(dump_tool),
                "dump_tool_version": dump_version,
            }
            if snapshot is not None:
                info["snapshot_binlog"] = snapshot
            # One database: no --databases, so the dump restores under any database name.
            what = [databases[0]] if len(target.databases) == 1 else ["--databases", *databases]
            stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the with below
            with stderr, target.options_file() as options:
                proc = subprocess.Popen(
                    [dump_tool, *target.client_args(options), *dump_flags(dump_version), *what],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    stdin=subprocess.DEVNULL,
                    bufsize=0,
                )
                widen_pipe(proc.stdout)
                try:
                    header = _read_header(proc, time.monotonic() + SNAPSHOT_TIMEOUT)
                except _DumpEndedError:
                    proc.wait()
                    raise SourceError(
                        f"dump of {self.describe()} failed (exit {proc.returncode}): "
                        f"{stderr_tail(stderr)}"
                    ) from None
                with holder.cursor() as cur:
                    cur.execute("UNLOCK TABLES")
                dumped = _parse_position(header)
                info["binlog"] = {k: v for k, v in dumped.items() if k != "gtid"}
                if "gtid" in dumped:
                    info["dump_gtid_position"] = dumped["gtid"]
                yield MySQLDump(self, proc, stderr, header, holder, databases, info)
        except pymysql.Error as exc:
            raise SourceError(f"{self.describe()}: {_reason(exc)}") from None
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            with contextlib.suppress(Exception):
                holder.close()


def _missing_databases(cur: Any, databases: Sequence[str]) -> list[str]:
    cur.execute("SHOW DATABASES")
    present = {str(r[0]) for r in cur.fetchall()}
    return [db for db in databases if db not in present]


def _freeze(cur: Any, where: str) -> None:
    """FLUSH TABLES WITH READ LOCK; SourceError naming the RELOAD privilege if refused."""
    cur.execute(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_TIMEOUT}")
    try:
        cur.execute("FLUSH TABLES WITH READ LOCK")
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] in _ER_ACCESS_DENIED:
            raise SourceError(
                f"{where}: the backup user lacks the RELOAD privilege needed for FLUSH TABLES "
                "WITH READ LOCK (consistent row counts): GRANT RELOAD ON *.* TO the user"
            ) from None
        raise


def _snapshot_binlog(cur: Any, version: ServerVersion) -> dict[str, Any] | None:
    """MariaDB: the binlog position of our transaction's snapshot (binlog_snapshot_*)."""
    if version.flavor != "mariadb":
        return None
    cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
    status = {str(k).lower(): v for k, v in cur.fetchall()}
    if "binlog_snapshot_file" not in status:
        return None
    return {
        "file": str(status["binlog_snapshot_file"]),
        "position": int(status["binlog_snapshot_position"]),
    }
