"""PostgreSQL replication facts: pg_stat_replication and slots on a primary, recovery, replay
and WAL receiver state on a standby.

Byte lag of a standby: measured on the primary when it can be (``pg_wal_lsn_diff(
pg_current_wal_lsn(), replay_lsn)`` of the pg_stat_replication row whose application_name is
the standby's), since only the primary knows the WAL the standby has not received yet;
:func:`merge_primary_view` applies it. On its own a standby reports the gap between received
and replayed WAL (a lower bound). Seconds: the primary's ``replay_lag`` when it is set (it is
NULL when the standby is idle and caught up, so it is never relied on alone); 0 when both byte
measures say caught up; else, while WAL waits for replay, the age of the last replayed commit.

The monitoring role needs ``pg_monitor`` (or superuser) to see positions of other sessions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import psycopg
from psycopg.rows import dict_row

from siprec_backup.replication.health import Observation
from siprec_backup.sources.postgres import PostgresTarget

_PRIMARY_SQL = """
SELECT application_name, client_addr::text AS client_addr, state, sync_state,
       sent_lsn::text AS sent_lsn, write_lsn::text AS write_lsn, flush_lsn::text AS flush_lsn,
       replay_lsn::text AS replay_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)::bigint AS sent_lag_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes,
       extract(epoch FROM write_lag)::float8 AS write_lag_seconds,
       extract(epoch FROM flush_lag)::float8 AS flush_lag_seconds,
       extract(epoch FROM replay_lag)::float8 AS replay_lag_seconds
FROM pg_stat_replication ORDER BY application_name
"""

_SLOTS_SQL = """
SELECT slot_name, slot_type, active, wal_status,
       restart_lsn::text AS restart_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
FROM pg_replication_slots ORDER BY slot_name
"""

_STANDBY_SQL = """
SELECT pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint
           AS receive_replay_gap_bytes,
       pg_is_wal_replay_paused() AS replay_paused,
       pg_last_xact_replay_timestamp() AS last_replay_time,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
           AS last_replay_age_seconds
"""

_RECEIVER_SQL = """
SELECT status, sender_host, sender_port, slot_name,
       written_lsn::text AS written_lsn, flushed_lsn::text AS flushed_lsn,
       latest_end_lsn::text AS latest_end_lsn, last_msg_receipt_time
FROM pg_stat_wal_receiver
"""


def _rows(conn: psycopg.Connection, query: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)
        return list(cur.fetchall())


def observe(target: PostgresTarget, *, timeout: float) -> Observation:
    """Connect (within ``timeout``), read the replication facts, and describe them.
    Raises SourceUnavailableError when the server cannot be reached."""
    bounded = dataclasses.replace(target, connect_timeout=max(1, math.ceil(timeout)))
    with bounded.connect(autocommit=True) as conn:
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)", (str(max(1, int(timeout * 1000))),)
        )
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
        in_recovery = bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])  # type: ignore[index]
        if in_recovery:
            return _standby(conn, version)
        return _primary(conn, version)


def _primary(conn: psycopg.Connection, version: int) -> Observation:
    current = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    replicas = _rows(conn, _PRIMARY_SQL)
    slots = _rows(conn, _SLOTS_SQL)
    attached = sum(1 for r in replicas if r["state"] == "streaming")
    inactive = [s for s in slots if not s["active"] and s["retained_bytes"] is not None]
    retained = max((int(s["retained_bytes"]) for s in inactive), default=None)
    warnings = tuple(
        f"replica {r['application_name']} is {r['state']}"
        for r in replicas
        if r["state"] not in ("streaming", None)
    ) + tuple(
        f"slot {s['slot_name']} is lost (wal_status lost)"
        for s in slots
        if s["wal_status"] == "lost"
    )
    facts = {
        "server_version_num": version,
        "in_recovery": False,
        "current_lsn": current[0] if current else None,
        "replicas": replicas,
        "slots": slots,
    }
    return Observation(
        observed_role="primary",
        attached_replicas=attached,
        retained_bytes=retained,
        warnings=warnings,
        facts=facts,
    )


def _standby(conn: psycopg.Connection, version: int) -> Observation:
    standby = _rows(conn, _STANDBY_SQL)[0]
    if version >= 140000:
        row = conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()
        standby["replay_pause_state"] = row[0] if row else None
    receivers = _rows(conn, _RECEIVER_SQL)
    receiver = receivers[0] if receivers else None
    broken: list[str] = []
    pause_state = standby.get("replay_pause_state")
    if standby["replay_paused"] or pause_state in ("pause requested", "paused"):
        broken.append(f"replay paused (pause state: {pause_state or 'paused'})")
    status = receiver["status"] if receiver else None
    if status != "streaming":
        broken.append(f"WAL receiver not streaming (status: {status or 'no receiver'})")
    gap = standby["receive_replay_gap_bytes"]
    lag_bytes = int(gap) if gap is not None else None
    lag_seconds: float | None = None
    if lag_bytes == 0:
        lag_seconds = 0.0
    elif lag_bytes is not None and standby["last_replay_age_seconds"] is not None:
        lag_seconds = max(0.0, float(standby["last_replay_age_seconds"]))
    facts = {
        "server_version_num": version,
        "in_recovery": True,
        **standby,
        "wal_receiver": receiver,
        "lag_source": "standby receive/replay gap",
    }
    return Observation(
        observed_role="replica",
        lag_bytes=lag_bytes,
        lag_seconds=lag_seconds,
        broken=tuple(broken),
        facts=facts,
    )


def primary_row(primary: Observation, application_name: str) -> dict[str, Any] | None:
    """The primary's pg_stat_replication row of the standby named ``application_name``."""
    for row in primary.facts.get("replicas", ()):
        if row.get("application_name") == application_name:
            return dict(row)
    return None


def merge_primary_view(
    standby: Observation, primary: Observation, application_name: str
) -> Observation:
    """The standby's observation with the primary's view of it (module docstring): byte lag
    from the primary, seconds from ``replay_lag`` when set. A standby the primary does not
    see streaming is broken."""
    if standby.observed_role != "replica" or primary.observed_role != "primary":
        return standby
    row = primary_row(primary, application_name)
    facts = dict(standby.facts)
    if row is None:
        facts["primary_view"] = None
        problem = f"primary sees no standby named {application_name!r}"
        return dataclasses.replace(standby, broken=(*standby.broken, problem), facts=facts)
    facts["primary_view"] = row
    facts["lag_source"] = "primary pg_stat_replication"
    lag_bytes = row["replay_lag_bytes"]
    lag_bytes = int(lag_bytes) if lag_bytes is not None else standby.lag_bytes
    lag_seconds = row["replay_lag_seconds"]
    if lag_seconds is None:
        lag_seconds = 0.0 if lag_bytes == 0 else standby.lag_seconds
    broken = standby.broken
    if row["state"] != "streaming":
        broken = (*broken, f"primary sees the standby in state {row['state']}")
    return dataclasses.replace(
        standby,
        lag_bytes=lag_bytes,
        lag_seconds=float(lag_seconds) if lag_seconds is not None else None,
        broken=broken,
        facts=facts,
    )
