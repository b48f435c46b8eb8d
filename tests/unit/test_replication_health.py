"""The pure classification: thresholds, topology errors, unknown lag, JSON records, and the
Redis INFO and PostgreSQL / MySQL primary-view merges."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pytest

from siprec_backup.errors import ConfigurationError
from siprec_backup.replication import Observation, Thresholds, classify, unreachable, verdict
from siprec_backup.replication import mysql as rmysql
from siprec_backup.replication import postgres as rpg
from siprec_backup.replication import redis as rredis
from siprec_backup.replication.check import unreachable_reason

T = Thresholds(max_lag_bytes=1000, max_lag_seconds=10, broken_lag_bytes=5000, broken_lag_seconds=60)


def replica(**kw: object) -> Observation:
    return Observation(observed_role="replica", **kw)  # type: ignore[arg-type]


def test_healthy_replica_reports_its_lag() -> None:
    assert verdict(replica(lag_bytes=10, lag_seconds=0.5), "replica", T) == (
        "healthy",
        "replicating, lag 10 B / 0.5 s",
    )


def test_unknown_lag_is_not_zero_and_not_invented() -> None:
    status, reason = verdict(replica(), "replica", T)
    assert status == "healthy" and reason == "replicating, lag unknown"
    record = classify(
        replica(), cluster="c", node="n", kind="mysql", expected_role="replica", thresholds=T
    )
    assert record.lag_bytes is None and record.lag_seconds is None


@pytest.mark.parametrize(
    ("lag_bytes", "lag_seconds", "status"),
    [
        (1000, 10.0, "healthy"),  # at the limit is still healthy
        (1001, None, "lagging"),
        (None, 10.5, "lagging"),
        (5001, None, "broken"),
        (None, 61.0, "broken"),
    ],
)
def test_lag_thresholds(lag_bytes: int | None, lag_seconds: float | None, status: str) -> None:
    assert verdict(replica(lag_bytes=lag_bytes, lag_seconds=lag_seconds), "replica", T)[0] == status


def test_broken_facts_win_over_small_lag() -> None:
    obs = replica(lag_bytes=0, broken=("replay paused (pause state: paused)",))
    assert verdict(obs, "replica", T) == ("broken", "replay paused (pause state: paused)")


@pytest.mark.parametrize(
    ("observed", "expected", "reason"),
    [
        ("replica", "primary", "topology: configured primary is a replica"),
        ("primary", "replica", "topology: configured replica is a primary"),
    ],
)
def test_topology_error_is_broken_even_when_otherwise_fine(
    observed: str, expected: str, reason: str
) -> None:
    obs = Observation(observed_role=observed, lag_bytes=0)  # type: ignore[arg-type]
    assert verdict(obs, expected, T) == ("broken", reason)  # type: ignore[arg-type]


def test_primary_min_replicas_and_retained_wal() -> None:
    primary = Observation(observed_role="primary", attached_replicas=0, retained_bytes=10)
    assert verdict(primary, "primary", Thresholds())[0] == "healthy"
    status, reason = verdict(primary, "primary", Thresholds(min_replicas=1))
    assert status == "broken" and "0 replica(s) attached" in reason
    status, reason = verdict(primary, "primary", Thresholds(max_retained_bytes=5))
    assert status == "lagging" and "retained" in reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_lag_bytes": -1},
        {"max_lag_seconds": float("nan")},
        {"min_replicas": -1},
        {"max_lag_bytes": 10, "broken_lag_bytes": 5},
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="threshold"):
        Thresholds(**kwargs)  # type: ignore[arg-type]


def test_record_is_json_serialisable() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    facts = {"t": when, "d": decimal.Decimal("12"), "i": dt.timedelta(seconds=2), "b": b"x"}
    record = classify(
        replica(lag_bytes=1, facts=facts),
        cluster="c",
        node="n",
        kind="postgres",
        expected_role="replica",
        thresholds=T,
        checked_at=when,
    )
    data = json.loads(json.dumps(record.to_dict()))
    assert data["facts"] == {"t": "2026-01-02T03:04:05+00:00", "d": 12, "i": 2.0, "b": "x"}
    assert data["checked_at"] == "2026-01-02T03:04:05+00:00" and data["status"] == "healthy"


def test_unreachable_record_and_bad_names() -> None:
    record = unreachable(
        cluster="c", node="n", kind="redis", expected_role="primary", reason="a\nb"
    )
    assert record.status == "unreachable" and not record.reachable and record.reason == "a b"
    with pytest.raises(ConfigurationError, match="unknown node kind"):
        unreachable(cluster="c", node="n", kind="oracle", expected_role="primary", reason="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("Error 111 connecting to 127.0.0.1:1. Connection refused.", "connection refused"),
        (
            "Is the server running on that host and accepting TCP/IP connections?",
            "connection refused",
        ),
        ("timed out", "timeout"),
        ("(1045, \"Access denied for user 'x'@'localhost'\")", "authentication failed"),
        ("password authentication failed for user x", "authentication failed"),
        ("something else", "error"),
    ],
)
def test_unreachable_reason_names_the_cause(message: str, cause: str) -> None:
    assert unreachable_reason(RuntimeError(message)).startswith(cause + ": ")


def test_redis_info_of_a_replica_with_link_down() -> None:
    obs = rredis.describe(
        {
            "role": "slave",
            "master_host": "127.0.0.1",
            "master_port": 7000,
            "master_link_status": "down",
            "master_link_down_since_seconds": 12,
            "slave_repl_offset": 5,
            "master_sync_in_progress": 0,
        }
    )
    assert obs.observed_role == "replica"
    assert obs.broken == ("master link down (primary 127.0.0.1:7000, down for 12 s)",)
    assert obs.lag_bytes is None  # a replica alone does not know the primary's offset


def test_redis_primary_view_gives_replica_lag() -> None:
    primary = rredis.describe(
        {
            "role": "master",
            "connected_slaves": 1,
            "master_repl_offset": 1500,
            "master_replid": "abc",
            "slave0": {
                "ip": "127.0.0.1",
                "port": 7001,
                "state": "online",
                "offset": 1000,
                "lag": 2,
            },
        }
    )
    assert primary.attached_replicas == 1
    own = rredis.describe(
        {
            "role": "slave",
            "master_link_status": "up",
            "slave_repl_offset": 1000,
            "master_replid": "abc",
        }
    )
    merged = rredis.merge_primary_view(own, primary, "127.0.0.1", 7001)
    assert (merged.lag_bytes, merged.lag_seconds) == (500, 2.0)


def test_postgres_primary_view_and_missing_standby() -> None:
    standby = replica(lag_bytes=0, lag_seconds=0.0, facts={})
    row = {
        "application_name": "r1",
        "state": "streaming",
        "replay_lag_bytes": 4096,
        "replay_lag_seconds": None,
    }
    primary = Observation(observed_role="primary", facts={"replicas": [row]})
    merged = rpg.merge_primary_view(standby, primary, "r1")
    assert merged.lag_bytes == 4096 and merged.lag_seconds == 0.0 and not merged.broken
    missing = rpg.merge_primary_view(standby, primary, "r2")
    assert missing.broken == ("primary sees no standby named 'r2'",)


def test_mysql_primary_view_only_in_the_same_binlog_file() -> None:
    own = replica(
        lag_bytes=0, facts={"relay_source_log_file": "bin.000002", "exec_source_log_pos": 100}
    )
    same = Observation(
        observed_role="primary", facts={"binlog": {"file": "bin.000002", "position": 350}}
    )
    other = Observation(
        observed_role="primary", facts={"binlog": {"file": "bin.000003", "position": 4}}
    )
    assert rmysql.merge_primary_view(own, same).lag_bytes == 250
    assert rmysql.merge_primary_view(own, other).lag_bytes == 0
