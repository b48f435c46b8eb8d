"""A throwaway three-node PostgreSQL 15 cluster for the failover tests and demo.

``n1`` is the primary, ``n2`` and ``n3`` are hot standbys streaming from it through physical
slots named after them, as the role ``replicator`` (scram-sha-256 password, so that a repoint
must keep real credentials); the superuser ``postgres`` is trusted on 127.0.0.0/8. Node ``nK``
listens on ``127.0.10.K`` only, on a free port.

The three data directories are built once per process into a stopped template (initdb,
schema, two base backups) and copied for every :meth:`PostgresLabCluster.start`; each copy gets
its ports in ``node.conf`` (included from postgresql.conf) and its replication settings in
``postgresql.auto.conf``. Servers run as the ``postgres`` account when we are root and are
started with ``pg_ctl`` (its own session, so the node's processes form one process group).
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.clusters import ADDRESS_PREFIX, NODE_NAMES, ClusterNode, free_port
from siprec_backup.lab.postgres import _check_reachable, find_bin_dir, server_user
from siprec_backup.sources.postgres import PostgresTarget

SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
DBNAME = "siprec"
PRIMARY = "n1"

_CONF = """
# --- siprec-backup lab failover cluster ---
include_if_exists = 'node.conf'
wal_level = replica
fsync = off
full_page_writes = off
synchronous_commit = off
wal_log_hints = on
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '16MB'
min_wal_size = '4MB'
max_wal_size = '64MB'
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = '1s'
wal_retrieve_retry_interval = '500ms'
"""

_NODE_CONF = """# this node's address and port (rewritten for every copy of the template)
listen_addresses = '{host}'
port = {port}
unix_socket_directories = '{socket_dir}'
cluster_name = '{name}'
"""

_HBA = """# siprec-backup lab failover cluster: postgres is trusted on loopback (administration),
# every other role (the replicator) authenticates with its password.
local   all           postgres                      trust
local   replication   postgres                      trust
host    all           postgres      127.0.0.0/8     trust
host    replication   postgres      127.0.0.0/8     trust
host    replication   all           127.0.0.0/8     scram-sha-256
host    all           all           127.0.0.0/8     scram-sha-256
"""

_SCHEMA = """
CREATE TABLE failover_probe (
    id bigserial PRIMARY KEY,
    note text,
    at timestamptz DEFAULT now()
)
"""

_UNIT = """#!/bin/sh
# siprec-backup lab unit {unit}: PostgreSQL node {name} ({host}:{port}).
# start|stop|restart|is-active|status, with systemctl's exit codes (is-active: 0 active, 3 not).
DATA={data}
LOG={log}
PG_CTL={pg_ctl}
as_pg() {{ {as_pg}"$@"; }}
running() {{ as_pg "$PG_CTL" -D "$DATA" status >/dev/null 2>&1; }}
case "$1" in
  start)
    running && exit 0
    as_pg "$PG_CTL" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null ;;
  stop)
    running || exit 0
    as_pg "$PG_CTL" -D "$DATA" -m fast -w -t 60 stop >/dev/null ;;
  restart)
    if running; then as_pg "$PG_CTL" -D "$DATA" -m fast -w -t 60 stop >/dev/null || exit 1; fi
    as_pg "$PG_CTL" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null ;;
  is-active)
    if running; then echo active; exit 0; fi
    echo inactive; exit 3 ;;
  status)
    as_pg "$PG_CTL" -D "$DATA" status
    rc=$?
    [ "$rc" -eq 0 ] && exit 0
    exit 3 ;;
  *)
    echo "usage: $0 start|stop|restart|is-active|status" >&2
    exit 2 ;;
esac
"""


@dataclass(frozen=True)
class _Template:
    """The stopped data directories every cluster copies, and the replicator's password."""

    directory: Path
    replication_password: str


_template: _Template | None = None
_template_lock = threading.Lock()


def _owner() -> tuple[int, int] | None:
    """(uid, gid) of the server account when we are root, else None."""
    user = server_user()
    if user is None:
        return None
    pw = pwd.getpwnam(user)
    return pw.pw_uid, grp.getgrgid(pw.pw_gid).gr_gid


def _make_dir(path: Path) -> None:
    """A directory the server account owns (mode 0755: clients may reach the sockets)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)  # noqa: S103 - holds unix sockets clients connect to
    owner = _owner()
    if owner is not None:
        os.chown(path, *owner)


def _make_reachable(path: Path) -> None:
    """Let the server account traverse down to ``path``: our own directories under the system
    temp dir (``mkdtemp`` makes them 0700) get o+x, traverse only; any other directory in the
    way is a LabError naming it."""
    user = server_user()
    if user is None:
        return
    temp = Path(tempfile.gettempdir()).resolve()
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if temp in parent.parents and st.st_uid == os.geteuid() and not st.st_mode & 0o001:
            os.chmod(parent, st.st_mode | 0o001)
    _check_reachable(path, user)


def _server_env() -> dict[str, str]:
    """Our environment without libpq settings, with the server account's HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"
    user = server_user()
    if user is not None:
        env["HOME"] = pwd.getpwnam(user).pw_dir
        env["USER"] = env["LOGNAME"] = user
    return env


def _run(argv: list[str | os.PathLike[str]], *, server: str, log: Path, timeout: float) -> None:
    """Run a server tool (initdb, pg_ctl, pg_basebackup) as the server account."""
    user = server_user()
    _process.run(
        argv,
        server=server,
        log=log,
        cwd=log.parent,
        user=user,
        env=_server_env(),
        timeout=timeout,
    )


def _admin(host: str, port: int, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        make_conninfo(host=host, port=port, user=SUPERUSER, dbname=dbname, connect_timeout=5),
        autocommit=True,
    )


def _primary_conninfo(host: str, port: int, application_name: str, password: str) -> str:
    return make_conninfo(
        host=host,
        port=port,
        user=REPLICATION_USER,
        password=password,
        application_name=application_name,
        connect_timeout=2,
    )


def _auto_conf(settings: dict[str, str]) -> str:
    """A postgresql.auto.conf with ``settings`` (values quoted as ALTER SYSTEM does)."""
    lines = ["# Do not edit this file manually!", "# It will be overwritten by ALTER SYSTEM."]
    for key, value in settings.items():
        quoted = value.replace("'", "''")
        lines.append(f"{key} = '{quoted}'")
    return "\n".join(lines) + "\n"


def _postmaster_pid(data_dir: Path) -> int | None:
    """The running postmaster of ``data_dir`` (checked against /proc), or None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError, IndexError):
        return None
    if str(data_dir) not in cmdline or _process._is_zombie(pid):
        return None
    return pid


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process of process group ``pgid`` remains."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _kill_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL every process of ``pgid`` and wait until they are gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            raise LabError(f"processes of group {pgid} survived SIGKILL")
        time.sleep(0.02)


def _pg_ctl_start(bin_dir: Path, data_dir: Path, log: Path, name: str) -> None:
    _run(
        [bin_dir / "pg_ctl", "-D", data_dir, "-l", log, "-w", "-t", "60", "start"],
        server=name,
        log=log.with_suffix(".ctl.log"),
        timeout=70.0,
    )


def _stop_data_dir(bin_dir: Path, data_dir: Path, name: str, log: Path) -> None:
    """Fast shutdown of the node's postmaster; SIGKILL its process group if that fails."""
    pid = _postmaster_pid(data_dir)
    if pid is None:
        return
    with contextlib.suppress(LabError):
        _run(
            [bin_dir / "pg_ctl", "-D", data_dir, "-m", "fast", "-w", "-t", "20", "stop"],
            server=name,
            log=log,
            timeout=30.0,
        )
    if _group_alive(pid):
        _kill_group(pid)


def _build_template(bin_dir: Path) -> _Template:
    """initdb n1, add the schema, base-back-up n2 and n3 from it, stop it: once per process."""
    directory = Path(tempfile.mkdtemp(prefix="siprec-pg-cluster-template-"))
    _make_dir(directory)
    atexit.register(shutil.rmtree, directory, True)
    password = secrets.token_urlsafe(18)
    host, port = f"{ADDRESS_PREFIX['postgres']}.1", free_port(f"{ADDRESS_PREFIX['postgres']}.1")
    log = directory / "template.log"
    for name in NODE_NAMES:
        _make_dir(directory / name)
    primary = directory / PRIMARY / "data"
    _run(
        [
            bin_dir / "initdb",
            "-D",
            primary,
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
            "--wal-segsize=1",
        ],
        server="template",
        log=log,
        timeout=120.0,
    )
    with (primary / "postgresql.conf").open("a") as f:
        f.write(_CONF)
    (primary / "pg_hba.conf").write_text(_HBA)
    (primary / "node.conf").write_text(
        _NODE_CONF.format(host=host, port=port, socket_dir=directory / PRIMARY, name=PRIMARY)
    )
    _pg_ctl_start(bin_dir, primary, directory / "template-n1.log", "template")
    try:
        with _admin(host, port) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                    sql.Identifier(REPLICATION_USER), sql.Literal(password)
                )
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DBNAME)))
        with _admin(host, port, DBNAME) as conn:
            conn.execute(_SCHEMA)
        for name in NODE_NAMES[1:]:
            conninfo = make_conninfo(host=host, port=port, user=SUPERUSER)
            _run(
                [
                    bin_dir / "pg_basebackup",
                    "-d",
                    conninfo,
                    "-D",
                    directory / name / "data",
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "-C",
                    "-S",
                    name,
                    "--no-sync",
                ],
                server="template",
                log=log,
                timeout=120.0,
            )
    finally:
        _stop_data_dir(bin_dir, primary, "template", log)
    return _Template(directory, password)


def _get_template(bin_dir: Path) -> _Template:
    global _template
    with _template_lock:
        if _template is None or not _template.directory.is_dir():
            _template = _build_template(bin_dir)
        return _template


class PostgresLabCluster:
    """Three PostgreSQL nodes under ``root``: n1 primary, n2 and n3 streaming standbys of n1.

    ``root`` must be reachable by the ``postgres`` account: it is made mode 0755, and our own
    0700 parents under the system temp dir (``mkdtemp``) get o+x.
    :attr:`replication_password` is the replicator's password (never shown)."""

    kind = "postgres"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[ClusterNode] = []
        self._bin_dir: Path | None = None
        self._password = ""

    def __repr__(self) -> str:
        return f"PostgresLabCluster(root={self.root!s}, nodes={[n.address for n in self.nodes]})"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    @property
    def replication_password(self) -> str:
        return self._password

    # --- LabCluster ---------------------------------------------------------------------------

    def start(self) -> None:
        """Copy the template, give every node a free port, start n1 then the standbys, and wait
        until both stream from n1."""
        template = _get_template(self.bin_dir)
        self._password = template.replication_password
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # noqa: S103 - the postgres account must traverse it
        _make_reachable(self.root)
        self.nodes = []
        try:
            for index, name in enumerate(NODE_NAMES, start=1):
                host = f"{ADDRESS_PREFIX['postgres']}.{index}"
                port = free_port(host)
                self.nodes.append(
                    ClusterNode(name, host, port, f"siprec-lab-pg-{name}-{port}.service")
                )
            self._copy_nodes(template)
            primary = self.node(PRIMARY)
            for node in self.nodes:
                self._configure(node, primary)
            for node in self.nodes:
                _pg_ctl_start(
                    self.bin_dir, self.data_directory(node.name), self._log(node), node.name
                )
            self._wait_streaming(timeout=30.0)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node (SIGKILL if a fast shutdown fails) and remove ``root``."""
        for node in self.nodes:
            _stop_data_dir(self.bin_dir, self.data_directory(node.name), node.name, self._log(node))
        shutil.rmtree(self.root, ignore_errors=True)

    def kill(self, node: str) -> None:
        """SIGKILL the node's postmaster and every backend of it (its process group)."""
        pid = _postmaster_pid(self.data_directory(node))
        if pid is None:
            raise LabError(f"{node} is not running")
        _kill_group(pid)

    def stall(self, node: str) -> None:
        """Cut ``node``'s replication link: empty primary_conninfo, reload (it stays a standby)."""
        n = self.node(node)
        with _admin(n.host, n.port) as conn:
            conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with _admin(n.host, n.port) as conn:
                row = conn.execute("SELECT count(*) FROM pg_stat_wal_receiver").fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.05)
        raise LabError(f"{node}: its WAL receiver still runs 10 s after the link was cut")

    def target(self, node: str) -> PostgresTarget:
        n = self.node(node)
        return PostgresTarget(host=n.host, port=n.port, user=SUPERUSER, dbname=DBNAME)

    def unit_script(self, node: str) -> str:
        n = self.node(node)
        user = server_user()
        return _UNIT.format(
            unit=n.unit,
            name=n.name,
            host=n.host,
            port=n.port,
            data=shlex.quote(str(self.data_directory(node))),
            log=shlex.quote(str(self._log(n))),
            pg_ctl=shlex.quote(str(self.bin_dir / "pg_ctl")),
            as_pg=f"runuser -u {user} -- " if user else "",
        )

    def node(self, name: str) -> ClusterNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no node {name!r} in the PostgreSQL lab cluster (is it started?)")

    def data_directory(self, node: str) -> Path:
        return self.root / node / "data"

    def is_running(self, node: str) -> bool:
        """Whether the node's postmaster runs."""
        return _postmaster_pid(self.data_directory(node)) is not None

    # --- helpers ------------------------------------------------------------------------------

    def _log(self, node: ClusterNode) -> Path:
        return self.root / node.name / "postgres.log"

    def _copy_nodes(self, template: _Template) -> None:
        """``cp -a`` the three template data directories, in parallel (the copy is I/O bound)."""
        copies = []
        for name in NODE_NAMES:
            _make_dir(self.root / name)
            source, dest = template.directory / name / "data", self.root / name / "data"
            copies.append(
                subprocess.Popen(
                    ["cp", "-a", str(source), str(dest)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
            )
        codes = [proc.wait(timeout=120) for proc in copies]
        if any(codes):
            raise LabError(f"copying the template data directories failed (cp exit {codes})")

    def _configure(self, node: ClusterNode, primary: ClusterNode) -> None:
        """Write the node's address and, on a standby, its replication settings."""
        data = self.data_directory(node.name)
        (data / "node.conf").write_text(
            _NODE_CONF.format(
                host=node.host, port=node.port, socket_dir=self.root / node.name, name=node.name
            )
        )
        settings: dict[str, str] = {}
        if node.name != PRIMARY:
            settings = {
                "primary_conninfo": _primary_conninfo(
                    primary.host, primary.port, node.name, self._password
                ),
                "primary_slot_name": node.name,
            }
        auto = data / "postgresql.auto.conf"
        auto.write_text(_auto_conf(settings))
        owner = _owner()
        for path in (data / "node.conf", auto):
            os.chmod(path, 0o600)
            if owner is not None:
                os.chown(path, *owner)

    def _wait_streaming(self, *, timeout: float) -> None:
        primary = self.node(PRIMARY)
        standbys = {n.name for n in self.nodes if n.name != PRIMARY}
        deadline = time.monotonic() + timeout
        while True:
            with _admin(primary.host, primary.port) as conn:
                rows = conn.execute(
                    "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
                ).fetchall()
            if standbys <= {r[0] for r in rows}:
                return
            if time.monotonic() > deadline:
                raise LabError(
                    f"standbys {sorted(standbys)} not all streaming from n1 after {timeout:.0f} s"
                    f" (logs under {self.root})"
                )
            time.sleep(0.05)
