"""MariaDB 10.11 primary and GTID replica for the lab, and their seed data.

The primary gets an application user ``siprec`` (random password, a lab secret) with every
privilege on the databases matching ``siprec%`` (so tests restore into ``siprec_restore_<n>``),
plus RELOAD (the backup's read lock), BINLOG MONITOR and REPLICA MONITOR; its database ``siprec``
holds the SIPREC schema with a procedure, a trigger and an event, created by ``siprec`` so that
``siprec`` is their DEFINER and can restore them. ``root`` has no password from 127.0.0.1 (lab
administration). The replica replicates with ``MASTER_USE_GTID=slave_pos`` as ``repl`` and is
``read_only``.

``mariadbd`` refuses to run as root: it is started with ``--user=mysql`` (it drops privileges
itself, so the recorded PID is the server's) and ``--no-defaults`` (``/etc/mysql`` is never
read). ``mariadb-install-db`` runs once; the replica starts from a copy of that fresh datadir.
"""

from __future__ import annotations

import os
import pwd
import secrets as _secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors
from pymysql.constants import CLIENT

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.service import LabContext, Service, ServiceRecord
from siprec_backup.sources.mysql import MySQLTarget, quote_identifier

APP_USER = "siprec"
APP_DB = "siprec"
ADMIN_USER = "root"
REPL_USER = "repl"
SERVER_ACCOUNT = "mysql"
PASSWORD_SECRET = "mariadb_siprec_password"  # noqa: S105 - the key, not the password
REPL_PASSWORD_SECRET = "mariadb_repl_password"  # noqa: S105 - the key, not the password
LOOPBACK = "127.0.0.1"
TABLES = ("recording_sessions", "participants", "media_streams", "recordings")
#: Sessions per INSERT batch of the filler.
BATCH_SESSIONS = 20_000


@dataclass
class MariaDBEndpoint:
    """How to reach one lab MariaDB server (the primary or the replica).

    ``password`` belongs to the application user ``user``; ``admin_user`` (root) needs none over
    TCP from 127.0.0.1 or the unix ``socket``.
    """

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str
    admin_user: str
    socket: Path
    bin_dir: Path

    def target(self, database: str | None = None) -> MySQLTarget:
        """The engine's view of this server as the application user: it backs up ``dbname``
        and restores a one-database backup into ``database`` (default ``dbname``)."""
        return MySQLTarget(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            databases=(self.dbname,),
            database=database,
            bin_dir=self.bin_dir,
        )

    def connect(
        self, *, admin: bool = False, database: str | None = None, **kwargs: Any
    ) -> pymysql.connections.Connection[Any]:
        """A pymysql connection (autocommit) as the application user or as root."""
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.admin_user if admin else self.user,
            password="" if admin else self.password,
            database=database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=10,
            **kwargs,
        )

    def dsn(self) -> str:
        """``mysql://user@host:port/db`` without the password: safe to print."""
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    @classmethod
    def from_record(cls, record: ServiceRecord, password: str) -> MariaDBEndpoint:
        """Build the endpoint from a lab.json record and the application user's password."""
        if record.host is None or record.port is None:
            raise LabError(f"lab.json: {record.name} has no address")
        return cls(
            host=record.host,
            port=record.port,
            user=record.fact("user"),
            password=password,
            dbname=record.fact("dbname"),
            admin_user=record.fact("admin_user"),
            socket=Path(record.fact("socket")),
            bin_dir=Path(record.fact("bin_dir")),
        )


def find_server() -> tuple[Path, Path]:
    """``mariadbd`` and ``mariadb-install-db``: ``$SIPREC_LAB_MARIADB_BIN`` or PATH/sbin."""
    env = os.environ.get("SIPREC_LAB_MARIADB_BIN")
    dirs = [Path(env)] if env else [Path("/usr/sbin"), Path("/usr/bin")]
    found = [shutil.which(n, path=os.pathsep.join(map(str, dirs))) for n in ("mariadbd",)]
    install = shutil.which("mariadb-install-db", path=os.pathsep.join(map(str, dirs)))
    if not found[0] or not install:
        raise LabError(
            "MariaDB server binaries (mariadbd, mariadb-install-db) not found in "
            f"{', '.join(map(str, dirs))}: apt-get install mariadb-server, or set "
            "SIPREC_LAB_MARIADB_BIN"
        )
    return Path(found[0]), Path(install)


def client_bin_dir() -> Path:
    """The directory of the ``mariadb`` / ``mariadb-dump`` client tools."""
    found = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    if not found:
        raise LabError("mariadb-dump not found: apt-get install mariadb-client")
    return Path(found).parent


def mariadb_account() -> str | None:
    """``mysql`` when we run as root (mariadbd refuses root), else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise LabError(
            "running as root, but there is no 'mysql' account to run MariaDB as: "
            "install mariadb-server or run as a normal user"
        ) from None
    return SERVER_ACCOUNT


def _base_dir(root: Path) -> Path:
    """``<lab>/mariadb``: datadirs, sockets and pid files, owned by the server account."""
    return root / "mariadb"


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    pw = pwd.getpwnam(user)
    for dirpath, _dirs, files in os.walk(path):
        os.chown(dirpath, pw.pw_uid, pw.pw_gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid)


def _install_db(install: Path, data_dir: Path, user: str | None, log: Path, server: str) -> None:
    args: list[str | os.PathLike[str]] = [
        install,
        "--no-defaults",
        f"--datadir={data_dir}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
        "--innodb-log-file-size=48M",
    ]
    if user is not None:
        args.insert(2, f"--user={user}")
    _process.run(args, server=server, log=log, cwd=data_dir.parent)


def _admin_connect(port: int) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host=LOOPBACK, port=port, user=ADMIN_USER, password="", autocommit=True, connect_timeout=2
    )


def _answers(port: int) -> bool:
    try:
        with _admin_connect(port) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except pymysql.Error:
        return False


class _MariaDBService(Service):
    """What the primary and the replica share: a datadir under ``<lab>/mariadb``, SIGTERM."""

    group = "mariadb"
    stop_timeout = 30.0
    data_name: str
    server_id: int
    role: str
    extra_args: tuple[str, ...] = ()

    def data_dir(self, root: Path) -> Path:
        return _base_dir(root) / self.data_name

    def reset(self, root: Path) -> None:
        """Remove a datadir left by an interrupted first start."""
        shutil.rmtree(self.data_dir(root), ignore_errors=True)

    def _spawn(self, ctx: LabContext, mariadbd: Path, user: str | None) -> ServiceRecord:
        port = ctx.port(self.name)
        if not _process.port_is_free(port):
            raise LabError(f"{self.name}: port {port} on 127.0.0.1 is already in use")
        base = _base_dir(ctx.root)
        data_dir = self.data_dir(ctx.root)
        socket = base / f"{self.data_name}.sock"
        args: list[str | os.PathLike[str]] = [
            mariadbd,
            "--no-defaults",
            f"--datadir={data_dir}",
            f"--port={port}",
            f"--bind-address={LOOPBACK}",
            f"--socket={socket}",
            f"--pid-file={base / f'{self.data_name}.pid'}",
            "--skip-name-resolve",
            f"--server-id={self.server_id}",
            "--log-bin=binlog",
            "--log-slave-updates",
            "--binlog-format=ROW",
            "--log-bin-trust-function-creators=1",
            "--innodb-buffer-pool-size=256M",
            "--innodb-log-file-size=48M",
            "--innodb-flush-log-at-trx-commit=0",
            "--sync-binlog=0",
            "--max-allowed-packet=64M",
            *self.extra_args,
        ]
        if user is not None:
            args.insert(2, f"--user={user}")
        proc = _process.spawn(args, log=ctx.log(self.name), cwd=base)
        ticks = self.launch(ctx, proc, lambda: _answers(port), timeout=60.0)
        return ServiceRecord(
            name=self.name,
            pid=proc.pid,
            host=LOOPBACK,
            port=port,
            log=ctx.log(self.name),
            started_ticks=ticks,
            facts={
                "role": self.role,
                "dsn": f"mysql://{APP_USER}@{LOOPBACK}:{port}/{APP_DB}",
                "password": f"lab.json secrets.{PASSWORD_SECRET}",
                "user": APP_USER,
                "dbname": APP_DB,
                "admin_user": ADMIN_USER,
                "socket": str(socket),
                "data_dir": str(data_dir),
                "bin_dir": str(client_bin_dir()),
            },
        )

    def is_ready(self, record: ServiceRecord) -> bool:
        """The server answers ``SELECT 1`` as root over TCP."""
        return record.port is not None and _answers(record.port)


class MariaDBPrimary(_MariaDBService):
    """The primary: install-db (first start; the replica gets a copy), users, schema."""

    name = "mariadb-primary"
    data_name = "primary"
    server_id = 1
    role = "primary"

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Initialise (first start only), start, and bootstrap users and the schema."""
        mariadbd, install = find_server()
        user = mariadb_account()
        base = _base_dir(ctx.root)
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o755)  # noqa: S103 - sockets, reachable by clients
        _chown_tree(base, user)
        data_dir = self.data_dir(ctx.root)
        fresh = not (data_dir / "mysql").is_dir()
        if fresh:
            shutil.rmtree(data_dir, ignore_errors=True)
            _install_db(install, data_dir, user, ctx.log(self.name), self.name)
            replica = MariaDBReplica().data_dir(ctx.root)
            if not replica.exists():  # a fresh copy for the replica: saves a second install
                shutil.copytree(data_dir, replica, symlinks=True)
                _chown_tree(replica, user)
        ctx.secrets.setdefault(PASSWORD_SECRET, _secrets.token_urlsafe(24))
        ctx.secrets.setdefault(REPL_PASSWORD_SECRET, _secrets.token_urlsafe(24))
        record = self._spawn(ctx, mariadbd, user)
        try:
            if fresh:
                self._bootstrap(ctx, record)
        except BaseException:
            self.stop(record)
            raise
        return record

    def _bootstrap(self, ctx: LabContext, record: ServiceRecord) -> None:
        assert record.port is not None
        password = ctx.secrets[PASSWORD_SECRET]
        repl_password = ctx.secrets[REPL_PASSWORD_SECRET]
        try:
            with _admin_connect(record.port) as conn, conn.cursor() as cur:
                cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (APP_USER, password))
                cur.execute(f"GRANT ALL PRIVILEGES ON `{APP_DB}%%`.* TO %s@'%%'", (APP_USER,))
                cur.execute(
                    "GRANT RELOAD, PROCESS, BINLOG MONITOR, REPLICA MONITOR ON *.* TO %s@'%%'",
                    (APP_USER,),
                )
                cur.execute(
                    "CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (REPL_USER, repl_password)
                )
                cur.execute("GRANT REPLICATION SLAVE ON *.* TO %s@'127.0.0.1'", (REPL_USER,))
                cur.execute(f"CREATE DATABASE {quote_identifier(APP_DB)} CHARACTER SET utf8mb4")
        except pymysql.Error as exc:
            raise _process.failure(
                self.name, f"creating users and database failed: {exc}", ctx.log(self.name)
            ) from exc
        endpoint = MariaDBEndpoint.from_record(record, password)
        create_schema(endpoint)


class MariaDBReplica(_MariaDBService):
    """A read-only GTID replica of the primary (``MASTER_USE_GTID=slave_pos``)."""

    name = "mariadb-replica"
    after = ("mariadb-primary",)
    data_name = "replica"
    server_id = 2
    role = "replica"
    extra_args = ("--read-only=1",)

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Start from the primary's fresh copy (or a new install), then replicate."""
        mariadbd, install = find_server()
        user = mariadb_account()
        data_dir = self.data_dir(ctx.root)
        fresh = not (data_dir / "master.info").exists()
        if not (data_dir / "mysql").is_dir():
            shutil.rmtree(data_dir, ignore_errors=True)
            _install_db(install, data_dir, user, ctx.log(self.name), self.name)
        primary = ctx.record("mariadb-primary")
        record = self._spawn(ctx, mariadbd, user)
        record.facts["primary"] = primary.name
        try:
            assert record.port is not None and primary.port is not None
            if fresh:
                with _admin_connect(record.port) as conn, conn.cursor() as cur:
                    cur.execute(
                        "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
                        "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                        (LOOPBACK, primary.port, REPL_USER, ctx.secrets[REPL_PASSWORD_SECRET]),
                    )
                    cur.execute("START SLAVE")
            port = record.port
            _process.wait_ready(
                self.name,
                lambda: _replicating(port),
                proc=_process.Recorded(record.pid, record.started_ticks),
                log=ctx.log(self.name),
                timeout=30.0,
                cancel=ctx.cancel,
            )
        except BaseException:
            self.stop(record)
            raise
        return record


def _replicating(port: int) -> bool:
    """Both replication threads run on the replica."""
    try:
        with _admin_connect(port) as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SHOW REPLICA STATUS")
            row = cur.fetchone()
    except pymysql.Error:
        return False
    if not row:
        return False
    return bool(row["Slave_IO_Running"] == "Yes" and row["Slave_SQL_Running"] == "Yes")


# --- schema and seed data ----------------------------------------------------------------------


def create_schema(endpoint: MariaDBEndpoint, database: str | None = None) -> None:
    """Create the SIPREC tables, procedure, trigger and event as the application user."""
    text = resources.files("siprec_backup.lab").joinpath("mariadb_schema.sql").read_text()
    try:
        with (
            endpoint.connect(
                database=database or endpoint.dbname, client_flag=CLIENT.MULTI_STATEMENTS
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(text)
            while cur.nextset():
                pass
    except pymysql.Error as exc:
        raise LabError(f"creating the MariaDB siprec schema failed: {exc}") from exc


def _uuid(expr: str) -> str:
    """A uuid-shaped string from an md5 hex expression."""
    return (
        f"CONCAT_WS('-', SUBSTR({expr},1,8), SUBSTR({expr},9,4), SUBSTR({expr},13,4), "
        f"SUBSTR({expr},17,4), SUBSTR({expr},21,12))"
    )


def _h(g: str, n: int) -> str:
    """A pseudo-random non-negative integer derived from the session id ``g``."""
    return f"CONV(SUBSTR(MD5(CONCAT({g}, ':{n}')), 1, 12), 16, 10)"


_FIRST = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Olivia Peggy Rupert Sybil Zoe"
_LAST = "Smith Garcia Müller Rossi Nguyen Kowalski Silva Novak Tanaka Dubois Jensen Okafor"


def _pick(words: str, g: str, n: int) -> str:
    items = words.split()
    quoted = ", ".join("'" + w + "'" for w in items)
    return f"ELT(1 + {_h(g, n)} % {len(items)}, {quoted})"


def _sessions_sql(lo: int, hi: int) -> str:
    su = _uuid("MD5(CONCAT('rs', s.seq))")
    iso = "DATE_FORMAT(TIMESTAMP'2026-01-01 00:00:00' + INTERVAL s.seq * 9 SECOND, '%Y-%m-%dT%TZ')"
    caller = (
        f"CONCAT('sip:+1', 2000000000 + {_h('s.seq', 3)} % 7999999999, '@pstn.carrier.example.com')"
    )
    agent = f"CONCAT('sip:agent', LPAD({_h('s.seq', 4)} % 2000, 4, '0'), '@cc.example.com')"
    xml = (
        'CONCAT(\'<?xml version="1.0" encoding="UTF-8"?>\\n'
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1">\\n'
        "  <datamode>complete</datamode>\\n"
        "  <group group_id=\"', MD5(CONCAT('grp', s.seq DIV 3)), '\">\\n"
        "    <associate-time>', " + iso + ", '</associate-time>\\n  </group>\\n"
        "  <session session_id=\"', " + su + ", '\">\\n"
        "    <sipSessionID>', MD5(CONCAT('sip', s.seq)), ';remote=', MD5(CONCAT('rm', s.seq)),"
        " '</sipSessionID>\\n    <start-time>', " + iso + ", '</start-time>\\n  </session>\\n"
        "  <participant participant_id=\"', "
        + _uuid("MD5(CONCAT('pa', s.seq, ':0'))")
        + ", '\">\\n"
        "    <nameID aor=\"', "
        + caller
        + ', \'">\\n      <name xml:lang="en">\', '
        + _pick(_FIRST, "s.seq", 5)
        + ", ' ', "
        + _pick(_LAST, "s.seq", 6)
        + ", '</name>\\n"
        "    </nameID>\\n  </participant>\\n"
        "  <participant participant_id=\"', "
        + _uuid("MD5(CONCAT('pa', s.seq, ':1'))")
        + ", '\">\\n"
        "    <nameID aor=\"', " + agent + ", '\"/>\\n  </participant>\\n"
        "  <stream stream_id=\"', "
        + _uuid("MD5(CONCAT('st', s.seq, ':0'))")
        + ", '\" session_id=\"', "
        + su
        + ", '\">\\n    <label>1</label>\\n  </stream>\\n"
        "  <stream stream_id=\"', "
        + _uuid("MD5(CONCAT('st', s.seq, ':1'))")
        + ", '\" session_id=\"', "
        + su
        + ", '\">\\n    <label>2</label>\\n  </stream>\\n"
        "</recording>\\n')"
    )
    return f"""
INSERT INTO recording_sessions
    (id, session_uuid, call_id, started_at, ended_at, state, recorder_node, metadata_xml)
SELECT s.seq, {su},
       CONCAT(MD5(CONCAT('call', s.seq)), '@sbc', s.seq % 3 + 1, '.carrier.example.com'),
       TIMESTAMP'2026-01-01 00:00:00' + INTERVAL s.seq * 9 SECOND,
       TIMESTAMP'2026-01-01 00:00:00' + INTERVAL s.seq * 9 SECOND
           + INTERVAL (4000 + {_h("s.seq", 1)} % 1200000) * 1000 MICROSECOND,
       ELT(1 + LEAST({_h("s.seq", 2)} % 100, 2), 'failed', 'active', 'completed'),
       CONCAT('srs-', s.seq % 4 + 1, '.rec.example.net'),
       {xml}
FROM seq_{lo}_to_{hi} AS s"""


def _children_sql(lo: int, hi: int) -> list[str]:
    g = "s.seq"
    codec = f"ELT(1 + {g} % 4, 'PCMU', 'PCMA', 'G722', 'opus')"
    caller = f"CONCAT('sip:+1', 2000000000 + {_h(g, 3)} % 7999999999, '@pstn.carrier.example.com')"
    agent = f"CONCAT('sip:agent', LPAD({_h(g, 4)} % 2000, 4, '0'), '@cc.example.com')"
    name = f"CONCAT({_pick(_FIRST, g, 5)}, ' ', {_pick(_LAST, g, 6)})"
    nparts = f"2 + ({g} % 5 = 0)"
    nstreams = f"2 + ({g} % 20 = 0)"
    pa_uuid = _uuid(f"MD5(CONCAT('pa', {g}, ':', k.seq))")
    st_uuid = _uuid(f"MD5(CONCAT('st', {g}, ':', k.seq))")
    rs_uuid = _uuid(f"MD5(CONCAT('rs', {g}))")
    participants = f"""
INSERT INTO participants
    (id, session_id, participant_uuid, aor, display_name, role, direction, sends, receives)
SELECT {g} * 4 + k.seq, {g}, {pa_uuid},
       ELT(k.seq + 1, {caller}, {agent}, CONCAT('sip:supervisor', {g} % 40, '@cc.example.com')),
       ELT(k.seq + 1, {name}, CONCAT('Agent ', LPAD({_h(g, 4)} % 2000, 4, '0')),
           CONCAT('Supervisor ', {g} % 40)),
       ELT(k.seq + 1, 'caller', 'agent', 'supervisor'),
       ELT(k.seq + 1, 'inbound', 'outbound', 'internal'),
       k.seq < 2, TRUE
FROM seq_{lo}_to_{hi} AS s JOIN seq_0_to_2 AS k ON k.seq < {nparts}"""
    streams = f"""
INSERT INTO media_streams
    (id, session_id, stream_uuid, label, media_type, codec, sdp, local_port, remote_port)
SELECT {g} * 4 + k.seq, {g}, {st_uuid}, k.seq + 1,
       IF(k.seq = 2, 'video', 'audio'), IF(k.seq = 2, 'H264', {codec}),
       CONCAT('m=', IF(k.seq = 2, 'video', 'audio'), ' ', 20000 + ({_h(g, 7)} + k.seq * 2) % 40000,
              ' RTP/AVP ', IF(k.seq = 2, 96, ELT(1 + {g} % 4, 0, 8, 9, 111)), '\\r\\n',
              'c=IN IP4 198.51.100.', 1 + {_h(g, 8)} % 254, '\\r\\n',
              'a=rtpmap:', IF(k.seq = 2, '96 H264/90000', ELT(1 + {g} % 4, '0 PCMU/8000',
              '8 PCMA/8000', '9 G722/8000', '111 opus/48000/2')), '\\r\\n',
              'a=label:', k.seq + 1, '\\r\\na=recvonly\\r\\n'),
       20000 + ({_h(g, 7)} + k.seq * 2) % 40000, 10000 + ({_h(g, 9)} + k.seq * 2) % 50000
FROM seq_{lo}_to_{hi} AS s JOIN seq_0_to_2 AS k ON k.seq < {nstreams}"""
    dur = f"(4000 + {_h(g, 1)} % 1200000)"
    fmt = f"IF(k.seq = 2, 'mp4', IF({g} % 4 = 3, 'opus', 'wav'))"
    bpm = f"IF(k.seq = 2, 125, IF({g} % 4 = 3, 4, IF({g} % 4 = 2, 16, 8)))"
    day = (
        "CONCAT('recordings/', DATE_FORMAT(TIMESTAMP'2026-01-01 00:00:00' + INTERVAL "
        f"{g} * 9 SECOND, '%Y/%m/%d'), '/', {rs_uuid})"
    )
    recordings = f"""
INSERT INTO recordings
    (id, session_id, stream_id, file_path, size_bytes, sha256, format, duration_ms, metadata_path)
SELECT {g} * 4 + k.seq, {g}, {g} * 4 + k.seq,
       CONCAT({day}, '-', k.seq + 1, '.', {fmt}),
       {dur} * {bpm} + 44, SHA2(CONCAT('file', {g}, ':', k.seq), 256), {fmt}, {dur},
       CONCAT({day}, '.xml')
FROM seq_{lo}_to_{hi} AS s JOIN seq_0_to_2 AS k ON k.seq < {nstreams}"""
    return [participants, streams, recordings]


@dataclass(frozen=True)
class MariaDBSeedStats:
    """What :func:`fill_mariadb` left: exact rows per ``db.table`` and data + index bytes."""

    rows: dict[str, int]
    bytes: int
    sessions_added: int = 0
    seconds: float = 0.0

    @property
    def mb(self) -> float:
        """Total size in MiB."""
        return self.bytes / (1024 * 1024)


def _size(cur: Any, database: str) -> int:
    cur.execute(
        "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s",
        (database,),
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0


def fill_mariadb(
    endpoint: MariaDBEndpoint,
    target_mb: int,
    *,
    database: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> MariaDBSeedStats:
    """Add recording sessions until ``database`` (default ``siprec``) holds about ``target_mb``
    MiB of data and indexes; nothing if it is already that big. Server-side batches of
    ``INSERT ... SELECT ... FROM seq_lo_to_hi`` (the SEQUENCE engine), one transaction each."""
    database = database or endpoint.dbname
    target = target_mb * 1024 * 1024
    t0 = time.monotonic()
    added = 0
    tables = ", ".join(quote_identifier(t) for t in TABLES)
    try:
        with endpoint.connect(database=database) as conn, conn.cursor() as cur:
            cur.execute(f"ANALYZE TABLE {tables}")
            cur.fetchall()
            size = _size(cur, database)
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM recording_sessions")
            row = cur.fetchone()
            next_id = int(row[0]) + 1 if row else 1
            per_session = 4000.0
            calibrated = False
            while target - size > max(per_session, target * 0.005):
                n = int((target - size) / per_session) + 1
                n = max(100, min(BATCH_SESSIONS if calibrated else 1000, n))
                calibrated = True
                lo, hi = next_id, next_id + n - 1
                cur.execute("START TRANSACTION")
                for statement in [_sessions_sql(lo, hi), *_children_sql(lo, hi)]:
                    cur.execute(statement)
                cur.execute("COMMIT")
                next_id += n
                added += n
                cur.execute(f"ANALYZE TABLE {tables}")
                cur.fetchall()
                new_size = _size(cur, database)
                if new_size > size:
                    per_session = max(500.0, (new_size - size) / n)
                size = new_size
                if progress is not None:
                    progress(size)
    except pymysql.Error as exc:
        raise LabError(f"filling the MariaDB siprec database failed: {exc}") from exc
    return MariaDBSeedStats(
        rows=mariadb_row_counts(endpoint, database),
        bytes=size,
        sessions_added=added,
        seconds=time.monotonic() - t0,
    )


def mariadb_row_counts(endpoint: MariaDBEndpoint, database: str | None = None) -> dict[str, int]:
    """Exact rows of each SIPREC table, keyed ``db.table`` like a manifest's ``tables``."""
    database = database or endpoint.dbname
    counts: dict[str, int] = {}
    with endpoint.connect(database=database) as conn, conn.cursor() as cur:
        for table in TABLES:
            cur.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)}")
            row = cur.fetchone()
            counts[f"{database}.{table}"] = int(row[0]) if row else 0
    return counts


def wait_replica_caught_up(
    primary: MariaDBEndpoint, replica: MariaDBEndpoint, timeout: float = 30.0
) -> None:
    """Wait until the replica has applied the primary's current GTID position."""
    with primary.connect(admin=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        row = cur.fetchone()
    pos = str(row[0]) if row else ""
    with replica.connect(admin=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (pos, timeout))
        row = cur.fetchone()
    if not row or int(row[0]) != 0:
        raise LabError(f"the MariaDB replica did not reach GTID {pos} within {timeout:.0f} s")
