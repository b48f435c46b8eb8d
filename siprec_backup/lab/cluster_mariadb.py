"""A throwaway three-node MariaDB 10.11 GTID cluster for the failover tests and demo.

``n1`` is the primary, ``n2`` and ``n3`` replicate from it with ``MASTER_USE_GTID=slave_pos`` as
``repl``. Every node runs with ``log_bin``, ``log_slave_updates``, ``binlog_format=ROW`` and
``gtid_strict_mode=ON``, so any node can become the primary, and starts ``read_only`` (also when
its unit script restarts it): a restarted node never takes writes until a failover step says so;
:meth:`MariaDBLabCluster.start` makes n1 writable.

Speed: ``mariadb-install-db`` runs once per process into a stopped template that already holds
the accounts (``admin``, ``repl``, ``siprec``) and the ``siprec.failover_probe`` table, written
with the binary log off so every copy starts at an empty GTID position. Each cluster copies it
three times, starts the copies in parallel and sets fresh random passwords on each node with
``sql_log_bin=0``. Lab administration uses ``root`` over each node's unix socket (no password).

Commits survive a SIGKILL (``innodb_flush_log_at_trx_commit=2``: written to the OS at each
commit, not synced), which is what :meth:`MariaDBLabCluster.kill` simulates.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.clusters import ADDRESS_PREFIX, NODE_NAMES, ClusterNode, free_port
from siprec_backup.lab.mariadb import SERVER_ACCOUNT, find_server, mariadb_account
from siprec_backup.sources.mysql import MySQLTarget

KIND = "mysql"
ADMIN_USER = "admin"
REPL_USER = "repl"
APP_USER = "siprec"
APP_DB = "siprec"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

#: Server options shared by the template and the nodes (redo log size must match the copy).
_COMMON_OPTIONS = (
    "--skip-name-resolve",
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
)

_TEMPLATE_SQL = (
    f"CREATE USER {ADMIN_USER}@'127.%' IDENTIFIED BY 'template'",
    f"GRANT ALL PRIVILEGES ON *.* TO {ADMIN_USER}@'127.%' WITH GRANT OPTION",
    f"CREATE USER {REPL_USER}@'127.%' IDENTIFIED BY 'template'",
    f"GRANT REPLICATION SLAVE ON *.* TO {REPL_USER}@'127.%'",
    f"CREATE USER {APP_USER}@'127.%' IDENTIFIED BY 'template'",
    f"GRANT ALL PRIVILEGES ON {APP_DB}.* TO {APP_USER}@'127.%'",
    f"CREATE DATABASE {APP_DB} CHARACTER SET utf8mb4",
    f"CREATE TABLE {APP_DB}.failover_probe (id BIGINT AUTO_INCREMENT PRIMARY KEY, note TEXT, "
    "at TIMESTAMP DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB",
)

_template_lock = threading.Lock()
_template_dir: Path | None = None


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _check_traversable(path: Path) -> None:
    """Fail clearly when the server account could not reach ``path`` (a 0700 parent)."""
    for parent in path.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise LabError(
                f"{parent} is not traversable by the '{SERVER_ACCOUNT}' account (mode "
                f"{parent.stat().st_mode & 0o777:o}): put the cluster root elsewhere"
            )


def _socket_connect(sock: Path, timeout: float = 5.0) -> pymysql.connections.Connection[Any]:
    """root over the node's unix socket (lab administration, no password)."""
    return pymysql.connect(
        unix_socket=str(sock),
        user="root",
        password="",
        autocommit=True,
        connect_timeout=max(1, int(timeout)),
        read_timeout=int(max(timeout, 5.0)),
    )


def _answers(sock: Path) -> bool:
    try:
        with _socket_connect(sock, 2.0) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except pymysql.Error:
        return False


def _build_template() -> Path:
    """install-db into a fresh directory, add accounts and schema with the binlog off, stop."""
    mariadbd, install = find_server()
    user = mariadb_account()
    base = Path(tempfile.mkdtemp(prefix="siprec-mariadb-template-"))
    os.chmod(base, 0o755)  # noqa: S103 - the server account must traverse it
    _chown(base, user)
    data = base / "data"
    log = base / "template.log"
    args: list[str | os.PathLike[str]] = [
        install,
        "--no-defaults",
        f"--datadir={data}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        *_COMMON_OPTIONS,
    ]
    if user is not None:
        args.insert(2, f"--user={user}")
    _process.run(args, server="mariadb-template", log=log, cwd=base)
    sock = base / "t.sock"
    server: list[str | os.PathLike[str]] = [
        mariadbd,
        "--no-defaults",
        f"--datadir={data}",
        "--skip-networking",
        f"--socket={sock}",
        f"--pid-file={base / 't.pid'}",
        "--skip-log-bin",
        *_COMMON_OPTIONS,
    ]
    if user is not None:
        server.insert(2, f"--user={user}")
    proc = _process.spawn(server, log=log, cwd=base)
    try:
        _process.wait_ready(
            "mariadb-template", lambda: _answers(sock), proc=proc, log=log, timeout=START_TIMEOUT
        )
        with _socket_connect(sock) as conn, conn.cursor() as cur:
            for statement in _TEMPLATE_SQL:
                cur.execute(statement)
    finally:
        _process.stop_process(proc.pid, None, timeout=STOP_TIMEOUT)
        proc.wait(timeout=5)
    for leftover in ("t.pid", "t.sock"):
        (base / leftover).unlink(missing_ok=True)
    atexit.register(shutil.rmtree, base, True)
    return data


def template() -> Path:
    """The stopped template datadir of this process (built on first use)."""
    global _template_dir
    with _template_lock:
        if _template_dir is None or not (_template_dir / "mysql").is_dir():
            _template_dir = _build_template()
        return _template_dir


def _password() -> str:
    return secrets.token_urlsafe(24)


_UNIT = """#!/bin/sh
# Lab unit {unit}: MariaDB node {name} on {address} (start|stop|restart|is-active|status).
PIDFILE={pidfile}
SOCKET={socket}
running() {{
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE" 2>/dev/null)
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  set -- $(cat "/proc/$pid/stat" 2>/dev/null)
  [ "$2" = "(mariadbd)" ] && [ "$3" != "Z" ]
}}
do_start() {{
  running && return 0
  rm -f "$PIDFILE"
  setsid {command} </dev/null >>{log} 2>&1 &
  i=0
  while [ $i -lt {ticks} ]; do
    if {ping} >/dev/null 2>&1; then return 0; fi
    sleep 0.1; i=$((i + 1))
  done
  echo "{name}: not ready after {timeout} s (log: {log})" >&2
  return 1
}}
do_stop() {{
  running || return 0
  kill -TERM "$pid"
  i=0
  while running; do
    if [ $i -ge {ticks} ]; then kill -KILL "$pid"; sleep 0.5; break; fi
    sleep 0.1; i=$((i + 1))
  done
  return 0
}}
case "$1" in
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop && do_start ;;
  is-active) if running; then echo active; exit 0; else echo inactive; exit 3; fi ;;
  status)
    echo "* {unit} - MariaDB lab node {name} ({address})"
    if running; then echo "   Active: active (running), main PID $pid"; exit 0; fi
    echo "   Active: inactive (dead)"; exit 3 ;;
  *) echo "usage: $0 start|stop|restart|is-active|status" >&2; exit 2 ;;
esac
"""


class MariaDBLabCluster:
    """Three MariaDB nodes on 127.0.11.1-3: n1 primary, n2 and n3 its GTID replicas."""

    kind = KIND

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.nodes: list[ClusterNode] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._admin_password = _password()
        self._repl_password = _password()
        self._app_password = _password()

    def __repr__(self) -> str:
        return (
            f"MariaDBLabCluster(root={str(self.root)!r}, nodes={[n.address for n in self.nodes]})"
        )

    # --- credentials and targets -----------------------------------------------------------------

    def replication_auth(self) -> tuple[str, str]:
        """The replication user and its password (for CHANGE MASTER in a demote)."""
        return REPL_USER, self._repl_password

    def app_auth(self) -> tuple[str, str]:
        """The application user (no SUPER, no READ ONLY ADMIN) and its password."""
        return APP_USER, self._app_password

    def target(self, node: str) -> MySQLTarget:
        """The admin target of ``node`` (ALL PRIVILEGES WITH GRANT OPTION, over TCP)."""
        n = self.node(node)
        return MySQLTarget(
            host=n.host,
            port=n.port,
            user=ADMIN_USER,
            password=self._admin_password,
            database=APP_DB,
        )

    def app_target(self, node: str) -> MySQLTarget:
        """The application user's target of ``node``."""
        n = self.node(node)
        return MySQLTarget(
            host=n.host, port=n.port, user=APP_USER, password=self._app_password, database=APP_DB
        )

    def node(self, name: str) -> ClusterNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no node {name!r} in the MariaDB lab cluster (started?)")

    # --- files and commands ------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _socket(self, name: str) -> Path:
        return self._dir(name) / "mariadbd.sock"

    def _pidfile(self, name: str) -> Path:
        return self._dir(name) / "mariadbd.pid"

    def _log(self, name: str) -> Path:
        return self._dir(name) / "mariadbd.log"

    def _argv(self, node: ClusterNode, server_id: int) -> list[str]:
        mariadbd, _install = find_server()
        d = self._dir(node.name)
        argv = [
            str(mariadbd),
            "--no-defaults",
            f"--datadir={d / 'data'}",
            f"--port={node.port}",
            f"--bind-address={node.host}",
            f"--socket={self._socket(node.name)}",
            f"--pid-file={self._pidfile(node.name)}",
            f"--server-id={server_id}",
            "--log-bin=binlog",
            "--log-slave-updates",
            "--binlog-format=ROW",
            "--gtid-strict-mode=ON",
            "--read-only=ON",
            "--relay-log=relay",
            *_COMMON_OPTIONS,
        ]
        user = mariadb_account()
        if user is not None:
            argv.insert(2, f"--user={user}")
        return argv

    def unit_script(self, node: str) -> str:
        """A /bin/sh unit for the lab systemctl: start, stop (clean), restart, is-active, status."""
        n = self.node(node)
        index = NODE_NAMES.index(node) + 1
        ping = (
            f"{shlex.quote(shutil.which('mariadb-admin') or 'mariadb-admin')} --no-defaults "
            f"--socket={shlex.quote(str(self._socket(node)))} -uroot --connect-timeout=1 ping"
        )
        return _UNIT.format(
            unit=n.unit,
            name=n.name,
            address=n.address,
            pidfile=shlex.quote(str(self._pidfile(node))),
            socket=shlex.quote(str(self._socket(node))),
            command=shlex.join(self._argv(n, index)),
            log=shlex.quote(str(self._log(node))),
            ping=ping,
            ticks=int(START_TIMEOUT * 10),
            timeout=int(START_TIMEOUT),
        )

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Copy the template three times, start the nodes, set passwords, replicate from n1."""
        if self.nodes:
            raise LabError("the MariaDB lab cluster is already started")
        data = template()
        user = mariadb_account()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # noqa: S103 - the server account must traverse it
        if user is not None:
            _check_traversable(self.root)
        prefix = ADDRESS_PREFIX[KIND]
        for index, name in enumerate(NODE_NAMES, start=1):
            host = f"{prefix}.{index}"
            port = free_port(host)
            self.nodes.append(
                ClusterNode(name, host, port, f"siprec-lab-mariadb-{name}-{port}.service")
            )
        try:
            for index, n in enumerate(self.nodes, start=1):
                self._spawn(n, index, data, user)
            for n in self.nodes:
                self._wait_ready(n.name)
            for n in self.nodes:
                self._set_passwords(n.name)
            self._admin_sql(self.nodes[0].name, "SET GLOBAL read_only = OFF")
            for n in self.nodes[1:]:
                self._replicate(n.name, self.nodes[0])
            for n in self.nodes[1:]:
                self._wait_replicating(n.name)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, node: ClusterNode, index: int, data: Path, user: str | None) -> None:
        d = self._dir(node.name)
        d.mkdir(parents=True, exist_ok=True)
        _chown(d, user)
        subprocess.run(  # cp -a keeps the server account's ownership
            ["cp", "-a", "--reflink=auto", str(data), str(d / "data")],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        self._procs[node.name] = _process.spawn(
            self._argv(node, index), log=self._log(node.name), cwd=d
        )

    def _wait_ready(self, name: str) -> None:
        sock = self._socket(name)
        _process.wait_ready(
            f"mariadb-{name}",
            lambda: _answers(sock),
            proc=self._procs[name],
            log=self._log(name),
            timeout=START_TIMEOUT,
        )

    def _admin_sql(self, name: str, *statements: str) -> None:
        try:
            with _socket_connect(self._socket(name)) as conn, conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        except pymysql.Error as exc:
            code = exc.args[0] if exc.args else "?"
            raise LabError(f"mariadb-{name}: lab administration failed (error {code})") from None

    def _set_passwords(self, name: str) -> None:
        """Fresh random passwords, not binlogged (every node gets the same ones itself)."""
        users = (
            (ADMIN_USER, self._admin_password),
            (REPL_USER, self._repl_password),
            (APP_USER, self._app_password),
        )
        try:
            with _socket_connect(self._socket(name)) as conn, conn.cursor() as cur:
                cur.execute("SET SESSION sql_log_bin = 0")
                for user, password in users:
                    cur.execute(f"ALTER USER {user}@'127.%%' IDENTIFIED BY %s", (password,))
        except pymysql.Error as exc:
            code = exc.args[0] if exc.args else "?"
            raise LabError(f"mariadb-{name}: setting passwords failed (error {code})") from None

    def _replicate(self, name: str, primary: ClusterNode) -> None:
        try:
            with _socket_connect(self._socket(name)) as conn, conn.cursor() as cur:
                cur.execute(
                    "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
                    "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                    (primary.host, primary.port, REPL_USER, self._repl_password),
                )
                cur.execute("START SLAVE")
        except pymysql.Error as exc:
            code = exc.args[0] if exc.args else "?"
            raise LabError(f"mariadb-{name}: starting replication failed (error {code})") from None

    def _wait_replicating(self, name: str) -> None:
        sock = self._socket(name)

        def streaming() -> bool:
            try:
                with _socket_connect(sock) as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
                    cur.execute("SHOW SLAVE STATUS")
                    row = cur.fetchone()
            except pymysql.Error:
                return False
            if row is None:
                return False
            return bool(row["Slave_IO_Running"] == "Yes" and row["Slave_SQL_Running"] == "Yes")

        _process.wait_ready(
            f"mariadb-{name}",
            streaming,
            proc=self._procs[name],
            log=self._log(name),
            timeout=30.0,
        )

    def start_node(self, node: str) -> None:
        """Start a stopped (or killed) node through its unit script: it comes back read-only,
        replicating again if it was a replica."""
        script = self._dir(node) / "unit.sh"
        script.write_text(self.unit_script(node))
        script.chmod(0o755)
        try:
            result = subprocess.run(
                [str(script), "start"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                timeout=START_TIMEOUT + 10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise _process.failure(
                f"mariadb-{node}", "unit start timed out", self._log(node)
            ) from None
        if result.returncode != 0:
            raise _process.failure(
                f"mariadb-{node}", f"unit start exited with {result.returncode}", self._log(node)
            )

    def _pid(self, name: str) -> int | None:
        """The PID of ``name``'s running mariadbd (from its pid file), or None."""
        try:
            pid = int(self._pidfile(name).read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.split()
        if len(fields) < 3 or fields[1] != "(mariadbd)" or fields[2] == "Z":
            return None
        return pid

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()

    def _signal(self, name: str, sig: signal.Signals, timeout: float) -> None:
        self._reap()
        pid = self._pid(name)
        if pid is None:
            return
        ticks = _process.start_ticks(pid)
        _process.stop_process(pid, ticks, sig=sig, timeout=timeout)
        self._reap()

    def is_running(self, node: str) -> bool:
        """Whether ``node``'s server process runs."""
        self._reap()
        return self._pid(node) is not None

    def kill(self, node: str) -> None:
        """SIGKILL ``node``'s mariadbd (a crash: committed transactions stay on disk)."""
        self.node(node)
        self._signal(node, signal.SIGKILL, 5.0)

    def stall(self, node: str) -> None:
        """``STOP SLAVE IO_THREAD`` on replica ``node``: it receives nothing more."""
        self.node(node)
        self._admin_sql(node, "STOP SLAVE IO_THREAD")

    def stop(self) -> None:
        """Stop every node (SIGTERM, SIGKILL after a timeout) and remove the cluster's files."""
        errors: list[str] = []
        for n in self.nodes:
            try:
                self._signal(n.name, signal.SIGTERM, STOP_TIMEOUT)
            except LabError as exc:
                errors.append(str(exc))
        for proc in self._procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        self._procs.clear()
        self.nodes = []
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise LabError("; ".join(errors))
