"""Failover steps for MySQL / MariaDB GTID replication (tested on MariaDB 10.11).

Positions are GTIDs: MariaDB ``domain-server-seq`` lists become ``{domain: seq}`` (the highest
seq of each domain), MySQL ``uuid:1-42:50-60`` sets ``{uuid: 60}`` (the highest transaction
number, an approximation that ignores gaps). The loss unit is transactions.

Applied-vs-received signal (:meth:`MySQLOps.wait_applied`): the GTID the IO thread has fetched
(MariaDB ``Gtid_IO_Pos``; MySQL ``Retrieved_Gtid_Set``) against the GTIDs applied
(``@@gtid_slave_pos``; MySQL ``@@gtid_executed``). GTIDs are transaction counts, comparable with a
primary's position given as ``until``; relay log space is not (it stays non-zero after apply).

Fencing is ``read_only`` (MySQL: ``super_read_only``) plus killing every other client session.
On MariaDB 10.11 ``read_only`` refuses writes and COMMITs of sessions without the READ ONLY
ADMIN privilege; SUPER no longer bypasses it, but ``ALL PRIVILEGES`` includes READ ONLY ADMIN,
so an admin session opened after the fence can still write: applications must not use such an
account. Open sessions are killed so they cannot keep a transaction going.

Messages never contain passwords: CHANGE MASTER errors are reported by error code only.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pymysql
import pymysql.cursors

from siprec_backup.errors import FailoverError, SafetyRefusalError
from siprec_backup.failover.databases import Endpoint, Kind, NodeState, Position
from siprec_backup.sources.mysql import (
    MySQLTarget,
    ServerVersion,
    normalise_replica_status,
)

_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_MYSQL_GTID = re.compile(r"^([0-9a-fA-F-]{36}(?::[A-Za-z0-9_]+)?)((?::\d+(?:-\d+)?)+)$")
#: Threads a fence never kills: replication (both sides), the event scheduler, server daemons.
_KEEP_COMMANDS = ("Binlog Dump", "Binlog Dump GTID", "Daemon", "Slave_IO", "Slave_SQL")
_KEEP_USERS = ("system user", "event_scheduler")
_ER_NO_SUCH_THREAD = 1094
_ER_LOCK_WAIT = 1205
#: Seconds a fence lets running write statements finish before it kills their sessions.
FENCE_LOCK_WAIT = 1
_POLL = 0.05

T = TypeVar("T")


def parse_gtids(text: str) -> dict[str, int]:
    """``{domain or uuid: highest seq}`` of a MariaDB GTID list or a MySQL GTID set."""
    parts: dict[str, int] = {}
    for item in (x.strip() for x in text.replace("\n", "").split(",")):
        if not item:
            continue
        maria = _MARIADB_GTID.match(item)
        if maria:
            domain, seq = maria.group(1), int(maria.group(3))
            parts[domain] = max(parts.get(domain, 0), seq)
            continue
        mysql = _MYSQL_GTID.match(item)
        if not mysql:
            raise ValueError(f"unrecognised GTID {item!r}")
        uuid = mysql.group(1).lower()
        ends = [int(r.split("-")[-1]) for r in mysql.group(2).strip(":").split(":")]
        parts[uuid] = max(parts.get(uuid, 0), *ends)
    return parts


def position(text: str | None) -> Position:
    """A :class:`Position` of kind ``mysql`` from a GTID list or set."""
    clean = (text or "").replace("\n", "").strip()
    return Position("mysql", clean, parse_gtids(clean))


def _merge(a: Position, b: Position) -> Position:
    """The later of two positions, domain by domain (received is never behind applied)."""
    if a.at_least(b):
        return a
    if b.at_least(a):
        return b
    parts = dict(a.parts)
    for key, n in b.parts.items():
        parts[key] = max(parts.get(key, 0), n)
    return Position("mysql", f"{a.text},{b.text}", parts)


def _reason(exc: BaseException) -> str:
    """A pymysql error as ``(code) message`` on one line."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) > 1:
        return f"({args[0]}) {' '.join(str(args[1]).split())}"
    return " ".join(str(exc).split()) or type(exc).__name__


class _Deadline:
    """The time left of one operation's ``timeout``."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def left(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0


class _Session:
    """One admin connection to a node, with the server's dialect."""

    def __init__(self, conn: pymysql.connections.Connection[Any], node: str) -> None:
        self.conn = conn
        self.node = node
        self.version = self._version()

    def _version(self) -> ServerVersion:
        row = self.one("SELECT VERSION()")
        return ServerVersion.parse(str(row[0]) if row else "")

    @property
    def mariadb(self) -> bool:
        return self.version.flavor == "mariadb"

    @property
    def replica_word(self) -> str:
        """``SLAVE`` / ``REPLICA`` in STOP/START/RESET statements."""
        return self.version.replica_status_sql.split()[1]

    def execute(self, statement: str, args: tuple[Any, ...] | None = None) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, args)
        except pymysql.Error as exc:
            raise FailoverError(f"{statement} failed: {_reason(exc)}", node=self.node) from exc

    def one(self, statement: str) -> tuple[Any, ...] | None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement)
                row = cur.fetchone()
        except pymysql.Error as exc:
            raise FailoverError(f"{statement} failed: {_reason(exc)}", node=self.node) from exc
        return tuple(row) if row else None

    def rows(self, statement: str) -> list[dict[str, Any]]:
        try:
            with self.conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        except pymysql.Error as exc:
            raise FailoverError(f"{statement} failed: {_reason(exc)}", node=self.node) from exc

    def replica_status(self) -> dict[str, Any] | None:
        """The default replication connection's raw status row with a Master_Host, or None."""
        for row in self.rows(self.version.replica_status_sql):
            status = normalise_replica_status(row)
            if status["channel"] in (None, "") and status["source_host"]:
                return row
        return None


class MySQLOps:
    """:class:`~siprec_backup.failover.databases.DatabaseOps` for MySQL 8 and MariaDB 10.5+."""

    kind: Kind = "mysql"

    # --- connections -----------------------------------------------------------------------------

    @contextmanager
    def _session(self, target: MySQLTarget, deadline: _Deadline) -> Iterator[_Session]:
        node = f"{target.host}:{target.port}"
        left = max(1.0, deadline.left())
        bound = math.ceil(left)
        ssl = {"ca": str(target.ssl_ca), "check_hostname": True} if target.ssl_ca else None
        try:
            conn = pymysql.connect(
                host=target.host,
                port=target.port,
                user=target.user,
                password=target.password or "",
                connect_timeout=bound,
                read_timeout=bound + 5,
                write_timeout=bound + 5,
                charset="utf8mb4",
                autocommit=True,
                ssl=ssl,
            )
        except pymysql.Error as exc:
            raise FailoverError(
                f"cannot connect as {target.user}: {_reason(exc)}", node=node
            ) from None
        try:
            session = _Session(conn, node)
            if session.mariadb:  # a server-side bound on every statement, too
                session.execute(
                    f"SET SESSION max_statement_time = {bound}, lock_wait_timeout = {bound}"
                )
            else:
                session.execute(f"SET SESSION lock_wait_timeout = {bound}")
            yield session
        finally:
            with contextlib.suppress(pymysql.Error):  # a connection the server already dropped
                conn.close()

    @staticmethod
    def _loop(
        s: _Session,
        deadline: _Deadline,
        check: Callable[[_Session], T | None],
        what: Callable[[], str],
    ) -> T:
        """Call ``check`` until it returns a value; FailoverError when the deadline passes."""
        while True:
            result = check(s)
            if result is not None:
                return result
            if deadline.passed():
                raise FailoverError(
                    f"{what()} not reached within {deadline.timeout:.0f} s", node=s.node
                )
            time.sleep(_POLL)

    # --- reading -------------------------------------------------------------------------------

    def _state(self, s: _Session) -> NodeState:
        row = s.replica_status()
        positions = (
            "@@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_slave_pos"
            if s.mariadb
            else "@@GLOBAL.gtid_executed, @@GLOBAL.gtid_executed"
        )
        super_flag = "0" if s.mariadb else "@@GLOBAL.super_read_only"
        flags = s.one(f"SELECT @@GLOBAL.read_only, {super_flag}, {positions}, @@GLOBAL.server_id")
        assert flags is not None
        read_only, super_read_only = bool(flags[0]), bool(flags[1])
        binlog_pos, slave_pos = str(flags[2] or ""), str(flags[3] or "")
        facts: dict[str, Any] = {
            "flavor": s.version.flavor,
            "server_version": s.version.text,
            "server_id": flags[4],
            "read_only": read_only,
            "gtid_binlog_pos": binlog_pos,
        }
        if not s.mariadb:
            facts["super_read_only"] = super_read_only
        if row is None:
            pos = position(binlog_pos)
            return NodeState(
                role="primary",
                received=pos,
                applied=pos,
                writable=not read_only and not super_read_only,
                facts=facts,
            )
        status = normalise_replica_status(row)
        applied = position(slave_pos)
        fetched = status["gtid_io_pos"] if s.mariadb else status["retrieved_gtid_set"]
        received = _merge(position(str(fetched or "")), applied)
        facts.update(
            gtid_slave_pos=slave_pos,
            io_running=bool(status["io_running"]),
            sql_running=bool(status["sql_running"]),
            io_state=status["io_state"],
            last_io_error=status["last_io_error"] or "",
            last_sql_error=status["last_sql_error"] or "",
            seconds_behind=status["seconds_behind"],
            using_gtid=status["using_gtid"],
        )
        return NodeState(
            role="replica",
            received=received,
            applied=applied,
            upstream=Endpoint(str(status["source_host"]), int(status["source_port"])),
            streaming=bool(status["io_running"]) and bool(status["sql_running"]),
            writable=False,
            facts=facts,
        )

    def inspect(self, target: MySQLTarget, *, timeout: float) -> NodeState:
        """Role (replica when a replication connection is configured), GTID positions, upstream,
        streaming (IO and SQL threads running) and writability (a primary not read_only)."""
        with self._session(target, _Deadline(timeout)) as s:
            return self._state(s)

    # --- fencing -------------------------------------------------------------------------------

    def _set_read_only(self, s: _Session, on: bool) -> None:
        value = "ON" if on else "OFF"
        if s.mariadb:
            s.execute(f"SET GLOBAL read_only = {value}")
        elif on:
            s.execute("SET GLOBAL super_read_only = ON")  # implies read_only
        else:
            s.execute("SET GLOBAL super_read_only = OFF")
            s.execute("SET GLOBAL read_only = OFF")

    def _kill_clients(self, s: _Session) -> list[int]:
        """KILL every other client session (not replication, not daemons, not ours)."""
        rows = s.rows(
            "SELECT ID, USER, COMMAND FROM information_schema.PROCESSLIST "
            "WHERE ID <> CONNECTION_ID()"
        )
        killed: list[int] = []
        for row in rows:
            if str(row["COMMAND"]) in _KEEP_COMMANDS or str(row["USER"]) in _KEEP_USERS:
                continue
            try:
                with s.conn.cursor() as cur:
                    cur.execute(f"KILL CONNECTION {int(row['ID'])}")
                killed.append(int(row["ID"]))
            except pymysql.Error as exc:
                if exc.args and exc.args[0] == _ER_NO_SUCH_THREAD:
                    continue  # it ended by itself
                raise FailoverError(f"KILL CONNECTION failed: {_reason(exc)}", node=s.node) from exc
        return killed

    def _fence_read_only(self, s: _Session, deadline: _Deadline) -> None:
        """read_only ON. Setting it waits for running write statements (a global read lock):
        when that wait passes ``FENCE_LOCK_WAIT`` seconds, kill the client sessions and retry."""
        s.execute(f"SET SESSION lock_wait_timeout = {FENCE_LOCK_WAIT}")
        while True:
            try:
                self._set_read_only(s, True)
                return
            except FailoverError as exc:
                cause = exc.__cause__
                waited = isinstance(cause, pymysql.Error) and cause.args[:1] == (_ER_LOCK_WAIT,)
                if not waited or deadline.passed():
                    raise
            self._kill_clients(s)

    def fence(self, target: MySQLTarget, *, timeout: float) -> None:
        """read_only ON (MySQL: super_read_only), then kill the other client sessions; a replica
        is left as it is. A write statement still running is killed too (it would hold the
        read_only switch up). Survives a restart only where the server is started read-only
        (the lab's nodes are)."""
        deadline = _Deadline(timeout)
        with self._session(target, deadline) as s:
            if s.replica_status() is not None:
                return
            self._fence_read_only(s, deadline)
            self._kill_clients(s)

    def unfence(self, target: MySQLTarget, *, timeout: float) -> None:
        """read_only OFF on a primary; a replica is left read-only (promote it instead)."""
        with self._session(target, _Deadline(timeout)) as s:
            if s.replica_status() is not None:
                return
            self._set_read_only(s, False)

    # --- waiting -------------------------------------------------------------------------------

    def _applied_check(self, until: Position | None) -> Callable[[_Session], NodeState | None]:
        def check(s: _Session) -> NodeState | None:
            state = self._state(s)
            if until is not None and not state.applied.at_least(until):
                if state.role == "replica" and not state.facts.get("sql_running"):
                    self._raise_stopped(s, state)
                return None
            if state.applied.at_least(state.received):
                return state
            if not state.facts.get("sql_running"):
                self._raise_stopped(s, state)
            return None

        return check

    @staticmethod
    def _raise_stopped(s: _Session, state: NodeState) -> None:
        error = state.facts.get("last_sql_error") or "none"
        raise FailoverError(
            f"the SQL thread is not running, nothing more can be applied "
            f"(applied {state.applied.text or 'nothing'}, last SQL error: {error})",
            node=s.node,
        )

    def _wait_applied(self, s: _Session, deadline: _Deadline, until: Position | None) -> NodeState:
        def what() -> str:
            return f"applied >= received{f' and >= {until.text}' if until else ''}"

        return self._loop(s, deadline, self._applied_check(until), what)

    def wait_applied(
        self, target: MySQLTarget, *, timeout: float, until: Position | None = None
    ) -> NodeState:
        """Wait until the GTIDs applied cover the GTIDs the IO thread fetched (and ``until``).
        A primary is applied by definition (it only waits for ``until``)."""
        deadline = _Deadline(timeout)
        with self._session(target, deadline) as s:
            return self._wait_applied(s, deadline, until)

    # --- promotion and replication -----------------------------------------------------------

    def _drain(self, s: _Session, deadline: _Deadline) -> NodeState:
        """Stop the IO thread and wait until the SQL thread applied everything received
        (restarting a stopped SQL thread that still has work)."""
        word = s.replica_word
        s.execute(f"STOP {word} IO_THREAD")
        state = self._state(s)
        if not state.facts.get("sql_running") and not state.applied.at_least(state.received):
            s.execute(f"START {word} SQL_THREAD")
        return self._wait_applied(s, deadline, None)

    def promote(self, target: MySQLTarget, *, timeout: float) -> NodeState:
        """Stop receiving, apply every received transaction, drop the replication config and
        turn read_only off. Idempotent: a primary is only made writable."""
        deadline = _Deadline(timeout)
        with self._session(target, deadline) as s:
            if s.replica_status() is not None:
                self._drain(s, deadline)
                s.execute(f"STOP {s.replica_word}")
                state = self._state(s)
                if not state.applied.at_least(state.received):
                    raise FailoverError(
                        f"received transactions not applied ({state.received.text} > "
                        f"{state.applied.text}): not promoting",
                        node=s.node,
                    )
                s.execute(f"RESET {s.replica_word} ALL")
            self._set_read_only(s, False)
            state = self._state(s)
            if state.role != "primary" or not state.writable:
                raise FailoverError("promoted, but the node is not a writable primary", node=s.node)
            return state

    def _change_source(
        self, s: _Session, primary: Endpoint, credentials: tuple[str, str] | None
    ) -> None:
        """CHANGE MASTER / REPLICATION SOURCE to ``primary`` with GTID auto-positioning."""
        if s.mariadb:
            sql = "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USE_GTID=slave_pos"
            auth = ", MASTER_USER=%s, MASTER_PASSWORD=%s, MASTER_CONNECT_RETRY=1"
        elif s.version.version < (8, 0, 23):
            sql = "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_AUTO_POSITION=1"
            auth = ", MASTER_USER=%s, MASTER_PASSWORD=%s, MASTER_CONNECT_RETRY=1"
        else:
            sql = (
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST=%s, SOURCE_PORT=%s, "
                "SOURCE_AUTO_POSITION=1"
            )
            auth = ", SOURCE_USER=%s, SOURCE_PASSWORD=%s, SOURCE_CONNECT_RETRY=1"
        args: tuple[Any, ...] = (primary.host, primary.port)
        if credentials is not None:
            sql += auth
            args += credentials
        try:
            with s.conn.cursor() as cur:
                cur.execute(sql, args)
        except pymysql.Error as exc:
            code = exc.args[0] if exc.args else "?"
            # the server's text could quote the statement, password included: code only
            raise FailoverError(
                f"changing the replication source to {primary} failed (error {code})",
                node=s.node,
            ) from None

    def repoint(self, target: MySQLTarget, primary: Endpoint, *, timeout: float) -> None:
        """Follow ``primary``, keeping the configured replication user and password: stop
        receiving, apply what was received, change host and port (slave_pos GTID), restart."""
        deadline = _Deadline(timeout)
        with self._session(target, deadline) as s:
            if s.replica_status() is None:
                raise SafetyRefusalError(
                    "not a replica (no replication configured): use demote to make it one",
                    node=s.node,
                )
            state = self._state(s)
            if state.upstream == primary and state.streaming:
                return
            self._drain(s, deadline)
            s.execute(f"STOP {s.replica_word}")
            self._change_source(s, primary, None)
            s.execute(f"START {s.replica_word}")

    def wait_streaming(
        self, target: MySQLTarget, primary: Endpoint, *, timeout: float
    ) -> NodeState:
        """Wait until the replica follows ``primary`` with both threads running; fails at once
        when the IO thread stopped with an error (e.g. GTIDs the primary does not have)."""
        deadline = _Deadline(timeout)
        last: dict[str, Any] = {}

        def check(s: _Session) -> NodeState | None:
            state = self._state(s)
            last.update(state.facts)
            if state.role != "replica" or state.upstream != primary:
                now = str(state.upstream) if state.upstream else "none"
                raise FailoverError(f"replicates from {now}, not {primary}", node=s.node)
            if state.streaming:
                return state
            io_state = str(state.facts.get("io_state") or "")
            error = state.facts.get("last_io_error") or state.facts.get("last_sql_error")
            stopped = not state.facts.get("io_running") and not io_state.startswith("Connecting")
            if error and (stopped or not state.facts.get("sql_running")):
                raise FailoverError(f"replication from {primary} stopped: {error}", node=s.node)
            return None

        def what() -> str:
            error = last.get("last_io_error") or last.get("last_sql_error") or "none"
            return f"streaming from {primary} (last error: {error})"

        with self._session(target, deadline) as s:
            return self._loop(s, deadline, check, what)

    def demote(
        self,
        target: MySQLTarget,
        primary: Endpoint,
        *,
        timeout: float,
        user: str,
        password: str,
    ) -> None:
        """Make a (fenced) former primary a read-only replica of ``primary``. MariaDB: set
        ``gtid_slave_pos`` from ``gtid_binlog_pos`` (its own writes are its replication start
        point), then ``MASTER_USE_GTID=slave_pos``. Idempotent: a replica of ``primary`` is
        left as it is. Transactions it has that ``primary`` lacks make the IO thread fail
        (gtid_strict_mode): :meth:`wait_streaming` reports it."""
        deadline = _Deadline(timeout)
        with self._session(target, deadline) as s:
            row = s.replica_status()
            word = s.replica_word
            if row is not None:
                state = self._state(s)
                if state.upstream == primary:
                    self._set_read_only(s, True)
                    if not state.streaming:
                        s.execute(f"START {word}")
                    return
            self._set_read_only(s, True)
            if row is not None:
                s.execute(f"STOP {word}")
            if s.mariadb:
                s.execute("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos")
            self._change_source(s, primary, (user, password))
            s.execute(f"START {word}")


OPS = MySQLOps()
