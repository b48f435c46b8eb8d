"""PostgreSQL 15 primary and streaming replica for the lab.

The primary gets a role ``siprec`` (random password, scram-sha-256 over TCP) owning a database
``siprec`` with the SIPREC schema, so the product exercises password authentication; the superuser
``postgres`` is trusted on the unix socket and 127.0.0.1 for lab administration. The replica is a
``pg_basebackup -R -X stream -C -S replica1`` copy that streams as ``application_name=replica1``.

``initdb`` and ``postgres`` refuse to run as root: when the lab runs as root the servers run as
the ``postgres`` account (the process drops privileges itself, so the recorded PID is the
postmaster's) and the PostgreSQL directories belong to it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.service import LabContext, Service, ServiceRecord
from siprec_backup.sources.postgres import PostgresTarget

PG_VERSION = "15"
SUPERUSER = "postgres"
APP_USER = "siprec"
APP_DB = "siprec"
REPLICA_NAME = "replica1"
PASSWORD_SECRET = "postgres_siprec_password"  # noqa: S105 - the key, not the password
LOOPBACK = "127.0.0.1"

_CONF = """
# --- siprec-backup lab (the port is given on the command line) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
wal_level = replica
fsync = off
full_page_writes = off
synchronous_commit = off
max_wal_size = '1GB'
hot_standby = on
hot_standby_feedback = on
"""

_HBA = """# siprec-backup lab: the superuser is trusted locally (lab administration),
# every other role authenticates with its password (scram-sha-256).
local   all           postgres                      trust
local   replication   all                           trust
host    replication   all           127.0.0.1/32    trust
host    all           postgres      127.0.0.1/32    trust
local   all           all                           scram-sha-256
host    all           all           127.0.0.1/32    scram-sha-256
"""


@dataclass
class PostgresEndpoint:
    """How to reach one lab PostgreSQL server (the primary or the replica).

    ``password`` belongs to the application role ``user``; the ``superuser`` needs none from
    127.0.0.1. Never log :meth:`conninfo` for the application role: it contains the password.
    """

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str
    superuser: str
    bin_dir: Path
    socket_dir: Path

    def conninfo(self, *, superuser: bool = False, dbname: str | None = None) -> str:
        """A libpq conninfo string, as the application role (with its password) or as the
        superuser (trusted, no password)."""
        user = self.superuser if superuser else self.user
        params: dict[str, str | int] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "dbname": dbname or self.dbname,
            "connect_timeout": 10,
        }
        if not superuser:
            params["password"] = self.password
        return make_conninfo(**params)  # type: ignore[arg-type]

    def target(self, dbname: str | None = None) -> PostgresTarget:
        """The engine's view of this server, as the password-authenticated application role."""
        return PostgresTarget(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=dbname or self.dbname,
            password=self.password,
            bin_dir=self.bin_dir,
        )

    def fresh_database(self, name: str) -> PostgresTarget:
        """An empty database ``name`` owned by the application role (dropped first if present):
        a scratch restore target, since the application role may not create databases."""
        admin = self.conninfo(superuser=True, dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self.user)
                )
            )
        return self.target(name)

    def dsn(self, *, superuser: bool = False) -> str:
        """The conninfo without any password: safe to print and log."""
        user = self.superuser if superuser else self.user
        return make_conninfo(host=self.host, port=self.port, user=user, dbname=self.dbname)

    @classmethod
    def from_record(cls, record: ServiceRecord, password: str) -> PostgresEndpoint:
        """Build the endpoint from a lab.json record and the app role's password."""
        if record.host is None or record.port is None:
            raise LabError(f"lab.json: {record.name} has no address")
        return cls(
            host=record.host,
            port=record.port,
            user=record.fact("user"),
            password=password,
            dbname=record.fact("dbname"),
            superuser=record.fact("superuser"),
            bin_dir=Path(record.fact("bin_dir")),
            socket_dir=Path(record.fact("socket_dir")),
        )


def find_bin_dir() -> Path:
    """The PostgreSQL server binaries: ``$SIPREC_LAB_PG_BIN``, else Debian's
    /usr/lib/postgresql/15/bin (or the newest version installed there)."""
    env = os.environ.get("SIPREC_LAB_PG_BIN")
    base = Path("/usr/lib/postgresql")
    candidates = [Path(env)] if env else [base / PG_VERSION / "bin"]
    if not env and base.is_dir():
        versions = sorted(
            (p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True
        )
        candidates += [p / "bin" for p in versions]
    for cand in candidates:
        if all((cand / tool).is_file() for tool in ("initdb", "postgres", "pg_basebackup")):
            return cand
    raise LabError(
        "PostgreSQL server binaries (initdb, postgres, pg_basebackup) not found in "
        f"{', '.join(str(c) for c in candidates)}: install them "
        "(Debian: apt-get install postgresql-15) or set SIPREC_LAB_PG_BIN"
    )


def server_user() -> str | None:
    """The account the servers run as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise LabError(
            "running as root, but there is no 'postgres' account to run PostgreSQL as "
            "(PostgreSQL refuses root): install the postgresql package or run as a normal user"
        ) from None
    return SUPERUSER


def _check_reachable(path: Path, user: str) -> None:
    """Fail early, with a clear message, if ``user`` cannot traverse to ``path``."""
    pw = pwd.getpwnam(user)
    for p in [*reversed(path.parents), path]:
        st = p.stat()
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == pw.pw_gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise LabError(
                f"the lab directory {path} is not reachable by the {user!r} account that runs "
                f"PostgreSQL ({p} has mode {stat.filemode(st.st_mode)}): choose a directory "
                "under /tmp (--dir or SIPREC_LAB_DIR)"
            )


def _pg_dir(ctx: LabContext, user: str | None) -> Path:
    """``<lab>/postgres``: data directories and unix sockets, owned by the server account."""
    d = ctx.root / "postgres"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)  # noqa: S103 - socket directory, reachable by clients
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(d, pw.pw_uid, grp.getgrgid(pw.pw_gid).gr_gid)
        _check_reachable(d, user)
    return d


def _postmaster_status(data_dir: Path) -> str | None:
    """Line 8 of postmaster.pid: ``starting``, ``ready``, ``standby`` or ``stopping``."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    return lines[7].strip() if len(lines) > 7 else None


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _admin_conninfo(port: int, dbname: str = "postgres") -> str:
    return make_conninfo(host=LOOPBACK, port=port, user=SUPERUSER, dbname=dbname, connect_timeout=5)


class _PostgresService(Service):
    """What the primary and the replica share: start from a data dir, SIGINT to stop."""

    group = "postgres"
    stop_signal = signal.SIGINT
    stop_group = False
    stop_timeout = 30.0
    data_name: str
    ready_status: tuple[str, ...]
    role: str

    def stop(self, record: ServiceRecord) -> None:
        """Fast shutdown: SIGINT to the postmaster named in postmaster.pid."""
        data_dir = Path(record.fact("data_dir"))
        pid = _postmaster_pid(data_dir)
        if pid is not None and pid != record.pid:
            _process.stop_process(pid, None, sig=self.stop_signal, timeout=self.stop_timeout)
        super().stop(record)

    def stop_orphans(self, root: Path) -> None:
        """Also stop a postmaster still running on ``<lab>/postgres/<data>`` (postmaster.pid)."""
        super().stop_orphans(root)
        data_dir = root / "postgres" / self.data_name
        pid = _postmaster_pid(data_dir)
        if pid is None:
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return
        if str(data_dir) in cmdline:
            _process.stop_process(pid, None, sig=self.stop_signal, timeout=self.stop_timeout)

    def reset(self, root: Path) -> None:
        """Remove a data directory left by an interrupted first start."""
        shutil.rmtree(root / "postgres" / self.data_name, ignore_errors=True)

    def _spawn(
        self, ctx: LabContext, bin_dir: Path, data_dir: Path, user: str | None
    ) -> tuple[int, int | None]:
        """Start the postmaster and wait until it accepts connections; (pid, start ticks)."""
        port = ctx.port(self.name)
        if not _process.port_is_free(port):
            raise LabError(f"{self.name}: port {port} on 127.0.0.1 is already in use")
        proc = _process.spawn(
            [bin_dir / "postgres", "-D", data_dir, "-p", str(port)],
            log=ctx.log(self.name),
            cwd=data_dir.parent,
            user=user,
            env=_server_env(user),
        )
        ticks = self.launch(
            ctx,
            proc,
            lambda: _postmaster_status(data_dir) in self.ready_status,
            timeout=60.0,
        )
        return proc.pid, ticks

    def _record(
        self,
        ctx: LabContext,
        proc: tuple[int, int | None],
        bin_dir: Path,
        data_dir: Path,
        **extra: str,
    ) -> ServiceRecord:
        port = ctx.port(self.name)
        dsn = make_conninfo(host=LOOPBACK, port=port, user=APP_USER, dbname=APP_DB)
        return ServiceRecord(
            name=self.name,
            pid=proc[0],
            host=LOOPBACK,
            port=port,
            log=ctx.log(self.name),
            started_ticks=proc[1],
            facts={
                "role": self.role,
                "dsn": dsn,
                "password": f"lab.json secrets.{PASSWORD_SECRET}",
                "user": APP_USER,
                "dbname": APP_DB,
                "superuser": SUPERUSER,
                "data_dir": str(data_dir),
                "socket_dir": str(data_dir.parent),
                "bin_dir": str(bin_dir),
                **extra,
            },
        )

    def is_ready(self, record: ServiceRecord) -> bool:
        """The postmaster reports that it accepts connections (read-only on the replica)."""
        return _postmaster_status(Path(record.fact("data_dir"))) in self.ready_status


def _server_env(user: str | None) -> dict[str, str]:
    """Our environment without libpq settings (PGHOST...), with the server account's HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"
    if user is not None:
        env["HOME"] = pwd.getpwnam(user).pw_dir
        env["USER"] = env["LOGNAME"] = user
    return env


class PostgresPrimary(_PostgresService):
    """The primary: initdb on first start, then the ``siprec`` role, database and schema."""

    name = "postgres-primary"
    data_name = "primary"
    ready_status = ("ready",)
    role = "primary"

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Initialise (first start only), start, and bootstrap the application database."""
        bin_dir = find_bin_dir()
        user = server_user()
        data_dir = _pg_dir(ctx, user) / self.data_name
        fresh = not (data_dir / "PG_VERSION").exists()
        log = ctx.log(self.name)
        if fresh:
            _process.run(
                [
                    bin_dir / "initdb",
                    "-D",
                    data_dir,
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                    "--no-instructions",
                ],
                server=self.name,
                log=log,
                cwd=data_dir.parent,
                user=user,
                env=_server_env(user),
            )
            with (data_dir / "postgresql.conf").open("a") as f:
                f.write(_CONF.format(socket_dir=data_dir.parent))
            (data_dir / "pg_hba.conf").write_text(_HBA)
        record = self._record(ctx, self._spawn(ctx, bin_dir, data_dir, user), bin_dir, data_dir)
        try:
            if fresh:
                self._bootstrap(ctx)
        except BaseException:
            self.stop(record)
            raise
        return record

    def _bootstrap(self, ctx: LabContext) -> None:
        """Create the password-protected application role, its database and the schema."""
        from siprec_backup.lab import seed

        password = ctx.secrets[PASSWORD_SECRET]
        port = ctx.port(self.name)
        try:
            with psycopg.connect(_admin_conninfo(port), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(APP_USER), sql.Literal(password)
                    )
                )
                conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(APP_USER)))
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(APP_DB), sql.Identifier(APP_USER)
                    )
                )
        except psycopg.Error as exc:
            raise _process.failure(
                self.name, f"creating role and database failed: {exc}", ctx.log(self.name)
            ) from exc
        app = make_conninfo(
            host=LOOPBACK, port=port, user=APP_USER, password=password, dbname=APP_DB
        )
        seed.create_schema(app)


class PostgresReplica(_PostgresService):
    """A streaming hot standby of the primary through the physical slot ``replica1``."""

    name = "postgres-replica"
    after = ("postgres-primary",)
    data_name = "replica"
    # A hot standby reports "ready" once it accepts read-only connections ("standby" without
    # hot_standby).
    ready_status = ("ready", "standby")
    role = "replica"

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Clone the primary (first start only), start, and wait until it streams."""
        bin_dir = find_bin_dir()
        user = server_user()
        data_dir = _pg_dir(ctx, user) / self.data_name
        primary = ctx.record("postgres-primary")
        assert primary.port is not None
        if not (data_dir / "PG_VERSION").exists():
            self._drop_stale_slot(primary.port)
            conn = make_conninfo(
                host=LOOPBACK,
                port=primary.port,
                user=SUPERUSER,
                application_name=REPLICA_NAME,
            )
            _process.run(
                [
                    bin_dir / "pg_basebackup",
                    "-d",
                    conn,
                    "-D",
                    data_dir,
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "-C",
                    "-S",
                    REPLICA_NAME,
                    "--no-sync",
                ],
                server=self.name,
                log=ctx.log(self.name),
                cwd=data_dir.parent,
                user=user,
                env=_server_env(user),
            )
        record = self._record(
            ctx,
            self._spawn(ctx, bin_dir, data_dir, user),
            bin_dir,
            data_dir,
            primary="postgres-primary",
            slot=REPLICA_NAME,
            application_name=REPLICA_NAME,
        )
        try:
            _process.wait_ready(
                self.name,
                lambda: _streaming(primary.port or 0),
                proc=_process.Recorded(record.pid, record.started_ticks),
                log=ctx.log(self.name),
                timeout=30.0,
                cancel=ctx.cancel,
            )
        except BaseException:
            self.stop(record)
            raise
        return record

    @staticmethod
    def _drop_stale_slot(port: int) -> None:
        """A slot left by a replica whose data was deleted would make ``-C`` fail."""
        with psycopg.connect(_admin_conninfo(port), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                (REPLICA_NAME,),
            )


def _streaming(primary_port: int) -> bool:
    """Whether the primary sees ``replica1`` in state ``streaming``."""
    try:
        with psycopg.connect(_admin_conninfo(primary_port)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_replication"
                " WHERE application_name = %s AND state = 'streaming'",
                (REPLICA_NAME,),
            ).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])
