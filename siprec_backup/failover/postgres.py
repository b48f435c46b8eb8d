"""PostgreSQL (15) failover steps: inspect, fence, wait until applied, promote, repoint, and the
pieces of a planned switchover that turns the old primary into a standby without pg_rewind.

Positions are LSNs (``Position("postgres", "0/3000148", {"lsn": 50331976})``). A fence is
``default_transaction_read_only = on`` through ALTER SYSTEM (it survives a restart), plus the
termination of the client sessions open at that moment. It is a soft fence: a client that sets
``default_transaction_read_only = off`` or starts ``BEGIN READ WRITE`` itself can still write.

A standby's ``primary_conninfo`` holds the replication password: it is read and rewritten here
but never logged or put into an error; psycopg errors are reduced to the server's one-line
message with any known secret removed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from siprec_backup.errors import FailoverError, SourceUnavailableError
from siprec_backup.failover.databases import Endpoint, Kind, NodeState, Position
from siprec_backup.sources.postgres import PostgresTarget

_POLL = 0.05
T = TypeVar("T")

_RECEIVER_SQL = """
SELECT status, sender_host, sender_port, received_tli, slot_name,
       flushed_lsn::text AS flushed_lsn
FROM pg_stat_wal_receiver
"""

_STANDBY_SQL = """
SELECT pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_is_wal_replay_paused() AS replay_paused,
       pg_get_wal_replay_pause_state() AS replay_pause_state,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_timeline
"""

_REPLICAS_SQL = """
SELECT application_name, state, sent_lsn::text AS sent_lsn, replay_lsn::text AS replay_lsn
FROM pg_stat_replication ORDER BY application_name
"""

_TERMINATE_SQL = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, %s))
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> its byte position."""
    high, _, low = text.partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(f"not a PostgreSQL LSN: {text!r}") from None


def format_lsn(lsn: int) -> str:
    """A byte position as PostgreSQL writes it (``'16/B374D848'``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_position(text: str) -> Position:
    """A PostgreSQL LSN as a :class:`Position`."""
    return Position("postgres", text, {"lsn": parse_lsn(text)})


def _node(target: PostgresTarget) -> str:
    return f"{target.host}:{target.port}"


def _redact(message: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def _one_line(exc: BaseException) -> str:
    """The server's primary message (never the statement text), else the first line."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        return str(primary)
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextmanager
def _connect(
    target: PostgresTarget, timeout: float, *, secrets: tuple[str, ...] = ()
) -> Iterator[psycopg.Connection]:
    """An autocommit admin session bounded by ``timeout`` (connect and each statement); any
    psycopg or connection error becomes a FailoverError naming the node, without secrets."""
    bounded = dataclasses.replace(target, connect_timeout=max(1, math.ceil(min(timeout, 30.0))))
    node = _node(target)
    try:
        conn = bounded.connect(autocommit=True)
    except SourceUnavailableError as exc:
        raise FailoverError(_redact(str(exc), secrets), node=node) from None
    try:
        with conn:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (str(max(1, int(timeout * 1000))),),
            )
            yield conn
    except psycopg.Error as exc:
        raise FailoverError(_redact(_one_line(exc), secrets), node=node) from None


def _scalar(conn: psycopg.Connection, query: str | sql.Composed, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _poll(
    check: Callable[[], T | None], *, timeout: float, node: str, what: Callable[[], str]
) -> T:
    """Call ``check`` until it returns something other than None; FailoverError after
    ``timeout`` with ``what()`` describing the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise FailoverError(f"{what()} after {timeout:g} s", node=node)
        time.sleep(_POLL)


def _remaining(deadline: float) -> float:
    return max(0.5, deadline - time.monotonic())


def _replace_conninfo(conninfo: str, **changes: str | int) -> str:
    """``conninfo`` with some keywords replaced (hostaddr dropped when host changes)."""
    params: dict[str, Any] = conninfo_to_dict(conninfo)
    if "host" in changes:
        params.pop("hostaddr", None)
    params.update(changes)
    return make_conninfo(**params)


def _conninfo_secrets(conninfo: str) -> tuple[str, ...]:
    """The values of a conninfo that must never be shown (its password)."""
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:  # unparsable: take whatever follows password=
        found = re.search(r"password\s*=\s*'?([^'\s]+)", conninfo)
        password = found.group(1) if found else None
    return (str(password),) if password else ()


class PostgresOps:
    """The failover steps on PostgreSQL 13+ (tested on 15), through a superuser target."""

    kind: Kind = "postgres"

    # --- read -----------------------------------------------------------------------------

    def inspect(self, target: PostgresTarget, *, timeout: float) -> NodeState:
        """The node's role, LSNs, upstream, streaming state and writability (a new session, so
        ``writable`` reflects the configured default_transaction_read_only)."""
        with _connect(target, timeout) as conn:
            return self._state(conn)

    def _state(self, conn: psycopg.Connection) -> NodeState:
        version = int(_scalar(conn, "SHOW server_version_num"))
        read_only = _scalar(conn, "SHOW default_transaction_read_only") == "on"
        if _scalar(conn, "SELECT pg_is_in_recovery()"):
            return self._standby_state(conn, version, read_only)
        current = lsn_position(_scalar(conn, "SELECT pg_current_wal_lsn()::text"))
        timeline = int(_scalar(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())")[:8], 16)
        with conn.cursor(row_factory=dict_row) as cur:
            replicas = list(cur.execute(_REPLICAS_SQL).fetchall())
        facts = {
            "server_version_num": version,
            "timeline": timeline,
            "fenced": read_only,
            "replicas": replicas,
        }
        return NodeState(
            role="primary",
            received=current,
            applied=current,
            writable=not read_only,
            facts=facts,
        )

    def _standby_state(self, conn: psycopg.Connection, version: int, read_only: bool) -> NodeState:
        with conn.cursor(row_factory=dict_row) as cur:
            standby = cur.execute(_STANDBY_SQL).fetchone() or {}
            receiver = cur.execute(_RECEIVER_SQL).fetchone()
        replay = lsn_position(standby["replay_lsn"] or "0/0")
        received = lsn_position(standby["receive_lsn"] or standby["replay_lsn"] or "0/0")
        if replay.at_least(received):  # WAL read from pg_wal at startup counts as received
            received = replay
        upstream = self._upstream(conn, receiver)
        status = receiver["status"] if receiver else None
        facts = {
            "server_version_num": version,
            "timeline": (receiver or {}).get("received_tli") or standby["checkpoint_timeline"],
            "fenced": read_only,
            "replay_paused": bool(standby["replay_paused"]),
            "replay_pause_state": standby["replay_pause_state"],
            "receiver_status": status,
            "slot_name": _scalar(conn, "SHOW primary_slot_name") or None,
        }
        return NodeState(
            role="replica",
            received=received,
            applied=replay,
            upstream=upstream,
            streaming=status == "streaming",
            writable=False,
            facts=facts,
        )

    @staticmethod
    def _upstream(conn: psycopg.Connection, receiver: dict[str, Any] | None) -> Endpoint | None:
        """Where the standby receives from, else where primary_conninfo points (only host and
        port are read out of it)."""
        if receiver and receiver.get("sender_host") and receiver.get("sender_port"):
            return Endpoint(str(receiver["sender_host"]), int(receiver["sender_port"]))
        conninfo = _scalar(conn, "SHOW primary_conninfo") or ""
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error:
            return None
        host = params.get("host") or params.get("hostaddr")
        if not host:
            return None
        return Endpoint(str(host), int(params.get("port") or 5432))

    # --- fence ----------------------------------------------------------------------------

    def fence(self, target: PostgresTarget, *, timeout: float) -> None:
        """Make the primary read-only: ALTER SYSTEM default_transaction_read_only = on, reload,
        wait until new sessions get it, then terminate every other client session (walsenders
        are kept) so that none keeps writing. Re-running it terminates the sessions again."""
        deadline = time.monotonic() + timeout
        with _connect(target, timeout) as conn:
            if _scalar(conn, "SELECT pg_is_in_recovery()"):
                return
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
        self._wait_default_read_only(target, True, deadline)
        with _connect(target, _remaining(deadline)) as conn:
            wait_ms = int(min(5.0, _remaining(deadline)) * 1000)
            conn.execute(_TERMINATE_SQL, (wait_ms,))

    def unfence(self, target: PostgresTarget, *, timeout: float) -> None:
        """Undo :meth:`fence`: reset default_transaction_read_only, reload, wait until new
        sessions are read-write."""
        deadline = time.monotonic() + timeout
        self._reset_fence(target, timeout)
        with _connect(target, _remaining(deadline)) as conn:
            if _scalar(conn, "SELECT pg_is_in_recovery()"):
                return
        self._wait_default_read_only(target, False, deadline)

    @staticmethod
    def _reset_fence(target: PostgresTarget, timeout: float) -> None:
        with _connect(target, timeout) as conn:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            conn.execute("SELECT pg_reload_conf()")

    @staticmethod
    def _wait_default_read_only(target: PostgresTarget, wanted: bool, deadline: float) -> None:
        """Wait until a new session's default_transaction_read_only is ``wanted`` (the
        postmaster applies a reload asynchronously)."""
        value = "on" if wanted else "off"
        seen: list[str] = []

        def check() -> bool | None:
            with _connect(target, _remaining(deadline)) as conn:
                seen[:] = [str(_scalar(conn, "SHOW default_transaction_read_only"))]
            return True if seen[0] == value else None

        _poll(
            check,
            timeout=max(0.0, deadline - time.monotonic()),
            node=_node(target),
            what=lambda: f"default_transaction_read_only still {seen[0] if seen else '?'}",
        )

    # --- replay and promotion -------------------------------------------------------------

    def wait_applied(
        self, target: PostgresTarget, *, timeout: float, until: Position | None = None
    ) -> NodeState:
        """Wait until the standby has replayed all it received (and at least ``until``),
        resuming replay if it was paused. A primary has applied everything it wrote."""
        deadline = time.monotonic() + timeout
        last: list[NodeState] = []

        def check() -> NodeState | None:
            with _connect(target, _remaining(deadline)) as conn:
                state = self._state(conn)
                paused = state.role == "replica" and (
                    state.facts.get("replay_pause_state") != "not paused"
                )
                if paused:
                    conn.execute("SELECT pg_wal_replay_resume()")
            last[:] = [state]
            if paused:
                return None  # look again once replay runs
            caught_up = state.applied.at_least(state.received)
            if caught_up and (until is None or state.applied.at_least(until)):
                return state
            return None

        def what() -> str:
            if not last:
                return "no state read"
            s = last[0]
            goal = f", wanted {until.text}" if until else ""
            return f"replay at {s.applied.text}, received {s.received.text}{goal}"

        return _poll(check, timeout=timeout, node=_node(target), what=what)

    def wait_disconnected(self, target: PostgresTarget, *, timeout: float) -> NodeState:
        """Wait until the standby's WAL receiver no longer streams (its primary has stopped):
        what a switchover waits for before promoting, so that the old primary's shutdown
        checkpoint has arrived."""
        last: list[NodeState] = []

        def check() -> NodeState | None:
            state = self.inspect(target, timeout=timeout)
            last[:] = [state]
            return state if not state.streaming else None

        return _poll(
            check,
            timeout=timeout,
            node=_node(target),
            what=lambda: f"still streaming from {last[0].upstream if last else '?'}",
        )

    def promote(self, target: PostgresTarget, *, timeout: float) -> NodeState:
        """Clear any fence (a rejoined old primary may carry one), resume replay, pg_promote,
        and return the state once the node is a writable primary. A primary is only unfenced."""
        deadline = time.monotonic() + timeout
        self._reset_fence(target, timeout)
        with _connect(target, _remaining(deadline)) as conn:
            if _scalar(conn, "SELECT pg_is_in_recovery()"):
                if _scalar(conn, "SELECT pg_get_wal_replay_pause_state()") != "not paused":
                    conn.execute("SELECT pg_wal_replay_resume()")
                seconds = max(1, int(_remaining(deadline)))
                if not _scalar(conn, "SELECT pg_promote(true, %s)", (seconds,)):
                    raise FailoverError(
                        f"pg_promote did not finish within {seconds} s", node=_node(target)
                    )
        last: list[NodeState] = []

        def check() -> NodeState | None:
            state = self.inspect(target, timeout=_remaining(deadline))
            last[:] = [state]
            return state if state.role == "primary" and state.writable else None

        return _poll(
            check,
            timeout=max(0.0, deadline - time.monotonic()),
            node=_node(target),
            what=lambda: f"not a writable primary (role {last[0].role if last else '?'})",
        )

    # --- following a new primary ----------------------------------------------------------

    def repoint(self, target: PostgresTarget, primary: Endpoint, *, timeout: float) -> None:
        """Point the standby's primary_conninfo at ``primary`` (host and port replaced, the
        credentials kept), create its slot there if it uses one, and reload (PostgreSQL 13+
        restarts the WAL receiver; the latest timeline is followed by default)."""
        deadline = time.monotonic() + timeout
        with _connect(target, timeout) as conn:
            if not _scalar(conn, "SELECT pg_is_in_recovery()"):
                raise FailoverError(
                    "is a primary, not a standby: cannot repoint it", node=_node(target)
                )
            current = str(_scalar(conn, "SHOW primary_conninfo") or "")
            slot = str(_scalar(conn, "SHOW primary_slot_name") or "")
        conninfo = _replace_conninfo(current, host=primary.host, port=primary.port)
        if slot:
            self.ensure_slot(self._target_at(target, primary), slot, timeout=_remaining(deadline))
        self._set_upstream(target, conninfo, slot or None, timeout=_remaining(deadline))

    def wait_streaming(
        self, target: PostgresTarget, primary: Endpoint, *, timeout: float
    ) -> NodeState:
        """Wait until the standby's WAL receiver streams from ``primary``."""
        last: list[NodeState] = []

        def check() -> NodeState | None:
            state = self.inspect(target, timeout=timeout)
            last[:] = [state]
            return state if state.streaming and state.upstream == primary else None

        def what() -> str:
            if not last:
                return "no state read"
            s = last[0]
            return (
                f"not streaming from {primary} (receiver {s.facts.get('receiver_status')},"
                f" upstream {s.upstream})"
            )

        return _poll(check, timeout=timeout, node=_node(target), what=what)

    def ensure_slot(self, primary_target: PostgresTarget, slot: str, *, timeout: float) -> None:
        """Create the physical replication slot ``slot`` (reserving WAL now) unless it exists."""
        with _connect(primary_target, timeout) as conn:
            exists = _scalar(
                conn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            )
            if not exists:
                conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))

    def drop_slots(
        self, target: PostgresTarget, names: Iterable[str], *, timeout: float
    ) -> list[str]:
        """Drop those of the named replication slots that exist and are inactive; return the
        names dropped. After a switchover the old primary (now a standby) still holds the slots
        of its former standbys, which would retain its WAL for ever."""
        with _connect(target, timeout) as conn:
            rows = conn.execute(
                "SELECT slot_name FROM pg_replication_slots"
                " WHERE slot_name = ANY(%s) AND NOT active ORDER BY slot_name",
                (list(names),),
            ).fetchall()
            for (name,) in rows:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        return [str(name) for (name,) in rows]

    # --- planned switchover: the old primary becomes a standby -----------------------------

    def conninfo_for(
        self, replica_target: PostgresTarget, primary: Endpoint, application_name: str
    ) -> str:
        """A standby's primary_conninfo re-aimed at ``primary`` as ``application_name``: the
        conninfo the old primary will use once it rejoins. Contains a password: a secret."""
        with _connect(replica_target, 10.0) as conn:
            current = str(_scalar(conn, "SHOW primary_conninfo") or "")
        if not current:
            raise FailoverError("has no primary_conninfo to copy", node=_node(replica_target))
        return _replace_conninfo(
            current, host=primary.host, port=primary.port, application_name=application_name
        )

    def prepare_rejoin(
        self,
        old_primary_target: PostgresTarget,
        conninfo: str,
        slot: str | None,
        *,
        timeout: float = 10.0,
    ) -> None:
        """Store primary_conninfo (and primary_slot_name) on the still running old primary: a
        primary ignores them, the standby it restarts as uses them."""
        self._set_upstream(old_primary_target, conninfo, slot, timeout=timeout)

    def final_position(self, target: PostgresTarget, *, timeout: float = 30.0) -> Position:
        """CHECKPOINT, then the WAL position of the (fenced) old primary: what the candidate
        must have applied before it is promoted."""
        with _connect(target, timeout) as conn:
            if _scalar(conn, "SELECT pg_is_in_recovery()"):
                raise FailoverError("is a standby: it has no final position", node=_node(target))
            conn.execute("CHECKPOINT")
            return lsn_position(_scalar(conn, "SELECT pg_current_wal_lsn()::text"))

    @staticmethod
    def rejoin_commands(data_directory: str, unit: str, systemctl: str = "systemctl") -> list[str]:
        """Shell steps (as root on the old primary's host) that restart it as a standby: stop
        the service, create standby.signal owned by the data directory's owner, start it."""
        data = shlex.quote(data_directory)
        signal_file = shlex.quote(f"{data_directory.rstrip('/')}/standby.signal")
        ctl, name = shlex.quote(systemctl), shlex.quote(unit)
        return [
            f"{ctl} stop {name}",
            f"touch {signal_file} && chown --reference={data} {signal_file}"
            f" && chmod 600 {signal_file}",
            f"{ctl} start {name}",
        ]

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _target_at(target: PostgresTarget, endpoint: Endpoint) -> PostgresTarget:
        """The same admin credentials at another node."""
        return dataclasses.replace(target, host=endpoint.host, port=endpoint.port)

    @staticmethod
    def _set_upstream(
        target: PostgresTarget, conninfo: str, slot: str | None, *, timeout: float
    ) -> None:
        secrets = _conninfo_secrets(conninfo)
        with _connect(target, timeout, secrets=secrets) as conn:
            # Keep the statement (it holds the password) out of the server log, even on error.
            conn.execute("SET log_statement = 'none'")
            conn.execute("SET log_min_error_statement = 'panic'")
            if slot:  # first: an invalid slot name fails before anything changed
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET primary_slot_name = {}").format(sql.Literal(slot))
                )
            else:
                conn.execute("ALTER SYSTEM RESET primary_slot_name")
            conn.execute(
                sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(conninfo))
            )
            conn.execute("SELECT pg_reload_conf()")


OPS = PostgresOps()
