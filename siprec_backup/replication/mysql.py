"""MySQL / MariaDB replication facts: SHOW REPLICA (or SLAVE) STATUS, chosen by server version,
read by field name across both servers' naming (siprec_backup.sources.mysql).

A server with a replica status row is a replica, one without is a primary. A replica is broken
when its IO or SQL thread does not run (the reason names the raw thread state and last error).
Seconds: ``Seconds_Behind_*`` (NULL, so unknown, when a thread stops; it reads 0 on a slow link,
so it is not trusted alone): when ``heartbeat_table`` is set, the age of the row the check
writes on the primary just before it reads the replicas (:func:`beat`), as the replica sees
it, is used when larger: it keeps growing while a thread is stopped.
Bytes: the primary's binlog position minus the replica's executed position when both are in
the same binlog file (:func:`merge_primary_view`); alone, the read-minus-executed gap of the
relay log (a lower bound).

The monitoring user needs REPLICATION CLIENT (MariaDB 10.5+: SLAVE MONITOR / REPLICA MONITOR).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pymysql

from siprec_backup.errors import ConfigurationError
from siprec_backup.replication.health import Observation
from siprec_backup.sources.mysql import (
    MySQLTarget,
    binlog_position,
    normalise_replica_status,
    quote_identifier,
    server_version,
)

_TABLE = re.compile(r"^([A-Za-z0-9_$]{1,64})\.([A-Za-z0-9_$]{1,64})$")


def _table(name: str) -> str:
    match = _TABLE.match(name)
    if not match:
        raise ConfigurationError(f"invalid heartbeat table {name!r}: use database.table")
    return f"{quote_identifier(match.group(1))}.{quote_identifier(match.group(2))}"


def write_heartbeat(conn: pymysql.connections.Connection[Any], table: str) -> None:
    """On the primary: create ``table`` (``database.table``) if needed and store the current
    UTC time in its single row; the replica's copy ages when replication falls behind."""
    quoted = _table(table)
    database = quote_identifier(table.split(".", 1)[0])
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {quoted} "
            "(id TINYINT PRIMARY KEY, ts DATETIME(6) NOT NULL) ENGINE=InnoDB"
        )
        cur.execute(f"REPLACE INTO {quoted} (id, ts) VALUES (1, UTC_TIMESTAMP(6))")


def beat(target: MySQLTarget, table: str, *, timeout: float) -> None:
    """Connect to the primary (within ``timeout``) and write its heartbeat row."""
    bounded = dataclasses.replace(target, connect_timeout=max(1, math.ceil(timeout)))
    conn = bounded.connect()
    try:
        write_heartbeat(conn, table)
    finally:
        conn.close()


def read_heartbeat_age(conn: pymysql.connections.Connection[Any], table: str) -> float | None:
    """Seconds since the heartbeat row was written, as this server sees it (None: no row)."""
    with conn.cursor() as cur:
        try:
            cur.execute(
                f"SELECT TIMESTAMPDIFF(MICROSECOND, ts, UTC_TIMESTAMP(6)) FROM {_table(table)} "
                "WHERE id = 1"
            )
        except pymysql.err.ProgrammingError:  # the table is not there (yet)
            return None
        row = cur.fetchone()
    return None if not row or row[0] is None else max(0.0, int(row[0]) / 1e6)


def _raw_status(conn: pymysql.connections.Connection[Any], sql: str) -> dict[str, Any] | None:
    with conn.cursor() as cur:
        cur.execute(sql)
        names = [d[0] for d in cur.description or ()]
        row = cur.fetchone()
    return dict(zip(names, row, strict=True)) if row else None


def _thread(raw: dict[str, Any], names: tuple[str, ...]) -> tuple[str, str]:
    for name in names:
        if name in raw:
            return name, str(raw[name])
    return names[0], "unknown"


def observe(
    target: MySQLTarget, *, timeout: float, heartbeat_table: str | None = None
) -> Observation:
    """Connect (within ``timeout``), read the replication facts, and describe them.
    Raises SourceUnavailableError when the server cannot be reached."""
    bounded = dataclasses.replace(target, connect_timeout=max(1, math.ceil(timeout)))
    conn = bounded.connect()
    try:
        version = server_version(conn)
        if version.flavor == "mariadb":
            with conn.cursor() as cur:
                cur.execute(f"SET SESSION max_statement_time = {max(1.0, timeout)}")
        raw = _raw_status(conn, version.replica_status_sql)
        with conn.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.read_only, @@GLOBAL.server_id")
            flags = cur.fetchone() or (None, None)
        base = {
            "flavor": version.flavor,
            "server_version": version.text,
            "read_only": bool(flags[0]) if flags[0] is not None else None,
            "server_id": flags[1],
        }
        if raw is None:
            return Observation(
                observed_role="primary",
                facts={**base, "binlog": binlog_position(conn)},
            )
        heartbeat_age = read_heartbeat_age(conn, heartbeat_table) if heartbeat_table else None
    finally:
        conn.close()
    return _replica(raw, base, heartbeat_age)


def _replica(raw: dict[str, Any], base: dict[str, Any], heartbeat_age: float | None) -> Observation:
    status = normalise_replica_status(raw)
    broken: list[str] = []
    io_name, io_value = _thread(raw, ("Replica_IO_Running", "Slave_IO_Running"))
    sql_name, sql_value = _thread(raw, ("Replica_SQL_Running", "Slave_SQL_Running"))
    if not status["io_running"]:
        state = status["io_state"] or "none"
        error = status["last_io_error"] or "none"
        broken.append(
            f"IO thread not running ({io_name}: {io_value}, state: {state}, last IO error: {error})"
        )
    if not status["sql_running"]:
        error = status["last_sql_error"] or "none"
        broken.append(f"SQL thread not running ({sql_name}: {sql_value}, last SQL error: {error})")
    lag_seconds: float | None = (
        float(status["seconds_behind"]) if status["seconds_behind"] is not None else None
    )
    if heartbeat_age is not None and (lag_seconds is None or heartbeat_age > lag_seconds):
        lag_seconds = heartbeat_age
    lag_bytes: int | None = None
    read_pos, exec_pos = status["read_source_log_pos"], status["exec_source_log_pos"]
    if (
        status["source_log_file"]
        and status["source_log_file"] == status["relay_source_log_file"]
        and isinstance(read_pos, int)
        and isinstance(exec_pos, int)
    ):
        lag_bytes = max(0, read_pos - exec_pos)
    facts = {
        **base,
        **status,
        "io_running_raw": io_value,
        "sql_running_raw": sql_value,
        "heartbeat_age_seconds": heartbeat_age,
        "lag_source": "replica relay log",
    }
    return Observation(
        observed_role="replica",
        lag_bytes=lag_bytes,
        lag_seconds=lag_seconds,
        broken=tuple(broken),
        facts=facts,
    )


def merge_primary_view(replica: Observation, primary: Observation) -> Observation:
    """Byte lag as the primary's binlog position minus the replica's executed position, when
    the replica executes the binlog file the primary writes now (else the replica's own)."""
    if replica.observed_role != "replica" or primary.observed_role != "primary":
        return replica
    binlog = primary.facts.get("binlog")
    facts = dict(replica.facts)
    exec_pos = facts.get("exec_source_log_pos")
    if (
        not binlog
        or facts.get("relay_source_log_file") != binlog.get("file")
        or not isinstance(exec_pos, int)
    ):
        return replica
    facts["primary_binlog"] = binlog
    facts["lag_source"] = "primary binlog position"
    lag_bytes = max(0, int(binlog["position"]) - exec_pos)
    return dataclasses.replace(replica, lag_bytes=lag_bytes, facts=facts)
