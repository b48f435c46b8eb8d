"""A throwaway three-node Redis 7.0 cluster (n1 primary, n2 and n3 its replicas) for failover tests.

Each node listens on its own loopback address (``127.0.12.K``) and a port free on that address,
with one random password (``requirepass`` and ``masterauth``) that stays in this object and the
nodes' 0600 files, never on a command line, in a log or a repr. Persistence is off (``save ''``,
no AOF); every node has its own ``dir``. Nodes run daemonized with a pidfile, so the Python
:meth:`RedisLabCluster.start` and the unit script's ``start`` run them the same way, and
``replica-announce-ip`` makes a primary list its replicas under their own addresses.

:meth:`RedisLabCluster.stall` cuts a replica's link by pointing it (REPLICAOF) at a port on its
own address that is bound but never listens, so every reconnect is refused while the node keeps
its data; while stalled, :meth:`~siprec_backup.failover.redis.RedisOps.inspect` shows that
port as the upstream and ``streaming`` False. :meth:`RedisLabCluster.unstall` points it back
(a partial resync).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.clusters import ADDRESS_PREFIX, NODE_NAMES, ClusterNode, free_port
from siprec_backup.lab.redis import find_redis_server
from siprec_backup.sources.redis import RedisTarget

KIND = "redis"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

_UNIT = """#!/bin/sh
# Lab unit of Redis node {name} ({host}:{port}): start|stop|restart|is-active|status.
# The password is read from a 0600 file into REDISCLI_AUTH, never put on a command line.
CONF="{conf}"
PIDFILE="{pidfile}"
AUTHFILE="{authfile}"
SERVER="{server}"
CLI="{cli}"

pid() {{
  [ -s "$PIDFILE" ] || return 1
  p=$(cat "$PIDFILE")
  kill -0 "$p" 2>/dev/null || return 1
  [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "redis-server" ] || return 1
  echo "$p"
}}

cli() {{
  REDISCLI_AUTH=$(cat "$AUTHFILE") "$CLI" -h {host} -p {port} --no-auth-warning "$@"
}}

do_start() {{
  pid >/dev/null && return 0
  "$SERVER" "$CONF" </dev/null >/dev/null 2>&1 || return 1
  i=0
  while [ $i -lt 200 ]; do
    [ "$(cli PING 2>/dev/null)" = "PONG" ] && return 0
    sleep 0.1; i=$((i + 1))
  done
  echo "{name}: redis-server not answering after 20 s" >&2
  return 1
}}

do_stop() {{
  p=$(pid) || return 0
  cli SHUTDOWN NOSAVE >/dev/null 2>&1
  i=0
  while [ $i -lt 100 ]; do
    kill -0 "$p" 2>/dev/null || return 0
    sleep 0.1; i=$((i + 1))
  done
  kill -9 "$p" 2>/dev/null
  return 0
}}

case "$1" in
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop && do_start ;;
  is-active)
    if pid >/dev/null; then echo active; exit 0; else echo inactive; exit 3; fi ;;
  status)
    if p=$(pid); then echo "{unit} - lab Redis {name}: active (running), pid $p"; exit 0; fi
    echo "{unit} - lab Redis {name}: inactive (dead)"; exit 3 ;;
  *) echo "usage: $0 start|stop|restart|is-active|status" >&2; exit 2 ;;
esac
"""


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (it holds the password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class RedisLabCluster:
    """Three redis-server nodes under ``<root>/redis-cluster``: n1 primary, n2 and n3 replicas."""

    kind = KIND

    def __init__(self, root: Path) -> None:
        self.dir = root / "redis-cluster"
        self.nodes: list[ClusterNode] = []
        self._password = ""
        self._server = ""
        self._pids: dict[str, tuple[int, int | None]] = {}
        #: Per stalled node: the socket holding its dead port, and the upstream to go back to.
        self._stalled: dict[str, tuple[socket.socket, str, int]] = {}

    def __repr__(self) -> str:
        return f"RedisLabCluster({self.dir}, nodes={[n.address for n in self.nodes]})"

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start n1, then n2 and n3 as its replicas; return once both replicas stream."""
        if self.nodes:
            raise LabError(f"{self!r} is already started")
        self._server = str(find_redis_server())
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self._password = secrets.token_hex(24)
        prefix = ADDRESS_PREFIX[KIND]
        for k, name in enumerate(NODE_NAMES, start=1):
            host = f"{prefix}.{k}"
            port = free_port(host)
            unit = f"siprec-lab-redis-{name}-{port}.service"
            self.nodes.append(ClusterNode(name=name, host=host, port=port, unit=unit))
        try:
            primary = self.nodes[0]
            self._launch(primary, replicaof=None)
            self._wait(primary, lambda info: True)
            for node in self.nodes[1:]:
                self._launch(node, replicaof=primary)
            for node in self.nodes[1:]:
                self._wait(node, lambda info: info.get("master_link_status") == "up")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node (SHUTDOWN NOSAVE, SIGKILL if that hangs) and remove the files."""
        for sock, _, _ in self._stalled.values():
            sock.close()
        self._stalled.clear()
        for node in self.nodes:
            self._shutdown(node)
        self.nodes = []
        self._pids.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self, node: str) -> None:
        """SIGKILL ``node``'s redis-server (a crash: its memory, i.e. all its data, is gone)."""
        n = self.node(node)
        pid, ticks = self._pid(n)
        if not _process.is_alive(pid, ticks):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _process.wait_gone(pid, ticks, STOP_TIMEOUT):
            raise LabError(f"redis {node}: pid {pid} still alive after SIGKILL")

    def stall(self, node: str) -> None:
        """Cut replica ``node``'s link: REPLICAOF a port on its own address that is bound but
        never listens (connections refused); the node keeps its data and falls behind."""
        n = self.node(node)
        if node in self._stalled:
            return
        info = self._info(n)
        if info.get("role") != "slave":
            raise LabError(f"redis {node} is not a replica: cannot stall it")
        upstream = (str(info["master_host"]), int(info["master_port"]))
        dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            dead.bind((n.host, 0))
            with self._client(n) as c:
                c.slaveof(n.host, int(dead.getsockname()[1]))
        except (OSError, redis.RedisError) as exc:
            dead.close()
            raise LabError(f"redis {node}: stall failed: {exc}") from None
        self._stalled[node] = (dead, *upstream)

    def unstall(self, node: str) -> None:
        """Point a stalled replica back at the upstream it had (it resyncs partially), unless
        something repointed it since."""
        entry = self._stalled.pop(node, None)
        if entry is None:
            return
        dead, host, port = entry
        dead_port = int(dead.getsockname()[1])
        dead.close()
        n = self.node(node)
        if int(self._info(n).get("master_port", 0)) != dead_port:
            return  # repointed meanwhile (e.g. by a failover): leave it there
        try:
            with self._client(n) as c:
                c.slaveof(host, port)
        except redis.RedisError as exc:
            raise LabError(f"redis {node}: unstall failed: {exc}") from None

    # --- access ------------------------------------------------------------------------------

    def node(self, name: str) -> ClusterNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"redis cluster has no node {name!r} (nodes: {', '.join(NODE_NAMES)})")

    def target(self, node: str) -> RedisTarget:
        """The node as a RedisTarget with the cluster's password (short timeouts)."""
        n = self.node(node)
        return RedisTarget(
            host=n.host,
            port=n.port,
            password=self._password,
            connect_timeout=5.0,
            read_timeout=10.0,
        )

    def unit_script(self, node: str) -> str:
        """The /bin/sh unit of ``node`` for the lab systemctl (see :mod:`.units`)."""
        n = self.node(node)
        d = self._node_dir(n)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise LabError("redis-cli not found: install it (Debian: apt-get install redis-tools)")
        return _UNIT.format(
            name=n.name,
            host=n.host,
            port=n.port,
            unit=n.unit,
            conf=d / "redis.conf",
            pidfile=d / "redis.pid",
            authfile=d / "auth",
            server=self._server,
            cli=cli,
        )

    # --- internals ---------------------------------------------------------------------------

    def _node_dir(self, node: ClusterNode) -> Path:
        return self.dir / node.name

    def _client(self, node: ClusterNode, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis(
            host=node.host,
            port=node.port,
            password=self._password,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def _info(self, node: ClusterNode) -> dict[str, Any]:
        try:
            with self._client(node) as c:
                return cast(dict[str, Any], c.info("replication"))
        except redis.RedisError as exc:
            raise LabError(f"redis {node.name} ({node.address}): {exc}") from None

    def _config(self, node: ClusterNode, replicaof: ClusterNode | None) -> str:
        d = self._node_dir(node)
        lines = [
            f"bind {node.host}",
            f"port {node.port}",
            "protected-mode yes",
            "daemonize yes",
            f'pidfile "{d / "redis.pid"}"',
            f'logfile "{d / "redis.log"}"',
            f'dir "{d}"',
            'save ""',
            "appendonly no",
            "repl-diskless-sync-delay 0",
            f"replica-announce-ip {node.host}",
            f'requirepass "{self._password}"',
            f'masterauth "{self._password}"',
        ]
        if replicaof is not None:
            lines.append(f"replicaof {replicaof.host} {replicaof.port}")
        return "\n".join(lines) + "\n"

    def _launch(self, node: ClusterNode, replicaof: ClusterNode | None) -> None:
        """Write the node's files and run redis-server (it daemonizes and writes its pidfile)."""
        if not _port_is_free(node.host, node.port):
            raise LabError(f"redis {node.name}: {node.address} is already in use")
        d = self._node_dir(node)
        d.mkdir(parents=True, exist_ok=True)
        _write_private(d / "redis.conf", self._config(node, replicaof))
        _write_private(d / "auth", self._password)
        _process.run(
            [self._server, d / "redis.conf"],
            server=f"redis {node.name}",
            log=d / "start.log",
            cwd=d,
            timeout=START_TIMEOUT,
        )

    def _pid(self, node: ClusterNode) -> tuple[int, int | None]:
        """The node's redis-server pid and start time, from its pidfile."""
        try:
            pid = int((self._node_dir(node) / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return self._pids.get(node.name, (0, None))
        known = self._pids.get(node.name)
        if known is None or known[0] != pid:
            known = (pid, _process.start_ticks(pid))
            self._pids[node.name] = known
        return known

    def _wait(self, node: ClusterNode, ready: Callable[[dict[str, Any]], bool]) -> None:
        """Wait until the node answers INFO and ``ready(info)`` holds."""
        deadline = time.monotonic() + START_TIMEOUT
        log = self._node_dir(node) / "redis.log"
        while True:
            try:
                with self._client(node, timeout=2.0) as c:
                    if ready(cast(dict[str, Any], c.info("replication"))):
                        self._pid(node)
                        return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise _process.failure(
                    f"redis {node.name}", f"not ready after {START_TIMEOUT:.0f} s", log
                )
            time.sleep(0.02)

    def _shutdown(self, node: ClusterNode) -> None:
        pid, ticks = self._pid(node)
        if not _process.is_alive(pid, ticks):
            return
        # SHUTDOWN by hand: redis-py's shutdown() retries its connection for seconds after.
        with contextlib.suppress(redis.RedisError), self._client(node, timeout=2.0) as c:
            c.execute_command("SHUTDOWN", "NOSAVE")
        if not _process.wait_gone(pid, ticks, STOP_TIMEOUT):
            _process.stop_process(pid, ticks, sig=signal.SIGKILL, timeout=STOP_TIMEOUT)
