"""PostgreSQL: ``pg_dump -Fc`` streamed out, ``pg_restore`` streamed in.

The dump runs in a snapshot exported by a REPEATABLE READ transaction that stays open for the
whole dump; the same transaction counts every table's rows, so the manifest's row counts describe
exactly the data in the dump. Passwords reach the client tools through the environment
(PGPASSWORD), never the command line, and never appear in messages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import psycopg
from psycopg import sql

from siprec_backup.errors import (
    ConfigurationError,
    RestoreError,
    SourceError,
    SourceUnavailableError,
    TargetNotEmptyError,
)
from siprec_backup.sources.base import BackgroundCount, DumpFacts, stderr_tail, widen_pipe

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY 1, 2
"""

_USER_RELATIONS_SQL = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
"""


@dataclass(frozen=True)
class PostgresTarget:
    """How to reach one PostgreSQL database. `password` is never shown by repr()."""

    host: str
    port: int
    user: str
    dbname: str
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"
    bin_dir: Path | None = None
    connect_timeout: int = 10

    def __post_init__(self) -> None:
        if self.sslmode not in SSL_MODES:
            raise ConfigurationError(
                f"invalid sslmode {self.sslmode!r}; expected one of {', '.join(SSL_MODES)}"
            )
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"invalid PostgreSQL port {self.port}")

    kind = "postgres"

    def prepare(self, *, overwrite: bool) -> None:
        """Create the database if missing; refuse a non-empty one unless `overwrite`."""
        ensure_restorable(self, overwrite=overwrite)

    def open_restore(self, *, overwrite: bool) -> PostgresRestore:
        return PostgresRestore(self, overwrite=overwrite)

    def restored_counts(self, tables: dict[str, int]) -> dict[str, int]:
        return restored_row_counts(self)

    def describe(self, dbname: str | None = None) -> str:
        return f"PostgreSQL {self.user}@{self.host}:{self.port}/{dbname or self.dbname}"

    def connect(self, *, dbname: str | None = None, autocommit: bool = False) -> psycopg.Connection:
        """Open a connection; SourceUnavailableError (without the password) if that fails."""
        try:
            return psycopg.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                dbname=dbname or self.dbname,
                password=self.password,
                sslmode=self.sslmode,
                connect_timeout=self.connect_timeout,
                autocommit=autocommit,
                application_name="siprec-backup",
            )
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise SourceUnavailableError(
                f"cannot connect to {self.describe(dbname)}: {reason}"
            ) from None

    def client_env(self) -> dict[str, str]:
        """Environment for pg_dump / pg_restore: the password never goes on a command line."""
        env = dict(os.environ)
        env.update(PGSSLMODE=self.sslmode, PGCONNECT_TIMEOUT=str(self.connect_timeout))
        env.pop("PGPASSWORD", None)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def client_args(self, dbname: str | None = None) -> list[str]:
        return [
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            dbname or self.dbname,
            "--no-password",
        ]

    def tool(self, name: str) -> str:
        """Path of a client tool: `bin_dir`, else the newest Debian version dir, else PATH."""
        if self.bin_dir:
            candidate = self.bin_dir / name
            if not candidate.is_file():
                raise ConfigurationError(f"{name} not found in {self.bin_dir}")
            return str(candidate)
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        )
        for bin_dir in reversed(versions):
            if (bin_dir / name).is_file():
                return str(bin_dir / name)
        found = shutil.which(name)
        if not found:
            raise ConfigurationError(f"{name} not found: install postgresql-client or set bin_dir")
        return found


def table_row_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Exact row count of every user table, as seen by `conn`'s current snapshot."""
    counts: dict[str, int] = {}
    with conn.cursor() as cur:
        tables = cur.execute(_TABLES_SQL).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            row = cur.execute(query).fetchone()
            counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


class PostgresDump:
    """One running ``pg_dump -Fc`` inside an exported snapshot (see the module docstring)."""

    def __init__(
        self,
        target: PostgresTarget,
        holder: psycopg.Connection[Any],
        proc: subprocess.Popen[bytes],
        stderr: IO[bytes],
        info: dict[str, Any],
    ) -> None:
        assert proc.stdout is not None
        self.stream = cast(BinaryIO, proc.stdout)
        self._target = target
        self._proc = proc
        self._stderr = stderr
        self._info = info
        self._counts = BackgroundCount(lambda: table_row_counts(holder), "pg-row-counts")

    def finish(self) -> DumpFacts:
        returncode = self._proc.wait()
        self._counts.join()
        if returncode != 0:
            raise SourceError(
                f"pg_dump of {self._target.describe()} failed (exit {returncode}): "
                f"{stderr_tail(self._stderr)}"
            )
        try:
            counts = self._counts.result()
        except Exception as exc:
            raise SourceError(f"counting rows in {self._target.describe()} failed: {exc}") from None
        return DumpFacts(source_info=self._info, tables=counts)


@dataclass(frozen=True)
class PostgresSource:
    """A PostgreSQL database to back up with pg_dump (custom format, uncompressed: we compress)."""

    target: PostgresTarget
    kind: str = "postgres"

    def describe(self) -> str:
        return self.target.describe()

    def estimate_bytes(self) -> int | None:
        with self.target.connect(autocommit=True) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else None

    @contextmanager
    def open_dump(self) -> Iterator[PostgresDump]:
        target = self.target
        holder = target.connect()
        proc: subprocess.Popen[bytes] | None = None
        try:
            holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = holder.execute(
                "SELECT pg_export_snapshot(), current_setting('server_version'), "
                "pg_is_in_recovery(), "
                "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                "ELSE pg_current_wal_lsn() END::text, "
                "(SELECT timeline_id FROM pg_control_checkpoint()), "
                "pg_database_size(current_database())"
            ).fetchone()
            assert row is not None
            snapshot, version, in_recovery, lsn, timeline, db_size = row
            info = {
                "host": target.host,
                "port": target.port,
                "database": target.dbname,
                "server_version": version,
                "in_recovery": bool(in_recovery),
                "wal_lsn": lsn,
                "timeline": timeline,
                "database_size_bytes": db_size,
                "snapshot": snapshot,
                "pg_dump_version": _tool_version(target.tool("pg_dump")),
            }
            stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the with below
            args = [
                target.tool("pg_dump"),
                *target.client_args(),
                "--format=custom",
                "--compress=0",
                f"--snapshot={snapshot}",
            ]
            proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=target.client_env(),
                bufsize=0,
            )
            widen_pipe(proc.stdout)
            with stderr:
                yield PostgresDump(target, holder, proc, stderr, info)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            holder.close()


def _tool_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def ensure_restorable(target: PostgresTarget, *, overwrite: bool) -> bool:
    """Create the target database if missing; refuse a non-empty one unless `overwrite`.

    Returns True when the database was created here.
    """
    with target.connect(dbname="postgres", autocommit=True) as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (target.dbname,)
        ).fetchone()
        if not exists:
            try:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.dbname)))
            except psycopg.Error as exc:
                raise RestoreError(
                    f"cannot create database {target.dbname!r} on {target.describe()}: "
                    f"{str(exc).strip()}"
                ) from None
            return True
    with target.connect(autocommit=True) as conn:
        row = conn.execute(_USER_RELATIONS_SQL).fetchone()
    relations = int(row[0]) if row else 0
    if relations and not overwrite:
        raise TargetNotEmptyError(
            f"target {target.describe()} is not empty ({relations} relations); "
            "restore into an empty database or allow overwrite"
        )
    return False


class PostgresRestore:
    """A running ``pg_restore`` reading a custom-format dump from its stdin, in one transaction."""

    def __init__(self, target: PostgresTarget, *, overwrite: bool) -> None:
        self._target = target
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        args = [
            target.tool("pg_restore"),
            *target.client_args(),
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
        ]
        if overwrite:
            args += ["--clean", "--if-exists"]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=target.client_env(),
            bufsize=0,
        )
        assert self._proc.stdin is not None
        widen_pipe(self._proc.stdin)
        self.stdin = cast(BinaryIO, self._proc.stdin)

    def finish(self) -> None:
        """Close the input and wait; RestoreError with pg_restore's last message on failure."""
        with contextlib.suppress(BrokenPipeError):
            self.stdin.close()
        returncode = self._proc.wait()
        if returncode != 0:
            raise RestoreError(
                f"pg_restore into {self._target.describe()} failed (exit {returncode}): "
                f"{stderr_tail(self._stderr)}"
            )

    def died(self) -> RestoreError:
        """The error to raise when pg_restore stopped reading its input (a broken pipe)."""
        self._proc.wait()
        return RestoreError(
            f"pg_restore into {self._target.describe()} stopped reading: "
            f"{stderr_tail(self._stderr)}"
        )

    def close(self) -> None:
        """Kill pg_restore if it still runs: its single transaction then commits nothing."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(OSError):
            self.stdin.close()
        self._stderr.close()


def restored_row_counts(target: PostgresTarget) -> dict[str, int]:
    with target.connect() as conn:
        return table_row_counts(conn)
