"""Backup freshness per source: ok, stale, missing, and the alert payload."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from siprec_backup.catalog import CatalogEntry
from siprec_backup.errors import ConfigurationError
from siprec_backup.freshness import MISSING, OK, STALE, check_freshness

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _entry(
    cluster: str, source: str, hours_ago: float, status: str = "complete", n: int = 0
) -> CatalogEntry:
    moment = NOW - timedelta(hours=hours_ago)
    backup_id = f"{moment:%Y%m%dT%H%M%SZ}-{n:06x}"
    finished = moment if status == "complete" else None
    return CatalogEntry(cluster, source, backup_id, status, 10, finished, None)


def test_newest_complete_backup_decides() -> None:
    entries = [
        _entry("a", "pg", 50),
        _entry("a", "pg", 3, n=1),
        _entry("a", "redis", 30),
        _entry("a", "redis", 1, status="incomplete", n=2),  # an interrupted one does not count
        _entry("b", "mysql", 2, status="incomplete"),
    ]
    results = check_freshness(entries, timedelta(hours=26), NOW)
    assert [(r.cluster, r.source, r.status) for r in results] == [
        ("a", "pg", OK),
        ("a", "redis", STALE),
        ("b", "mysql", MISSING),
    ]
    pg, redis, mysql = results
    assert pg.newest_backup_id == entries[1].backup_id
    assert pg.age == timedelta(hours=3)
    assert redis.summary() == (
        f"a/redis: newest backup {entries[2].backup_id} is 30.0 h old, older than 26.0 h"
    )
    assert mysql.summary() == "b/mysql: no complete backup (expected one every 26.0 h)"
    assert mysql.age is None and mysql.newest_at is None


def test_expected_sources_without_backups_are_missing() -> None:
    entries = [_entry("a", "pg", 1)]
    results = check_freshness(entries, timedelta(hours=26), NOW, ["a/pg", "redis", "b/pg"])
    assert [(r.name, r.status) for r in results] == [
        ("redis", MISSING),
        ("a/pg", OK),
        ("b/pg", MISSING),
    ]
    # a bare source name is satisfied by that source in any cluster
    assert [r.status for r in check_freshness(entries, timedelta(hours=1), NOW, ["pg"])] == [OK]
    with pytest.raises(ConfigurationError, match="has no source name"):
        check_freshness(entries, timedelta(hours=1), NOW, ["a/"])


def test_thresholds_per_source() -> None:
    entries = [_entry("a", "pg", 10), _entry("a", "redis", 10), _entry("b", "pg", 10)]
    thresholds = {"a/pg": timedelta(hours=12), "pg": timedelta(hours=6)}
    results = check_freshness(entries, thresholds, NOW, default=timedelta(hours=48))
    assert [(r.name, r.status, r.threshold.total_seconds() / 3600) for r in results] == [
        ("a/pg", OK, 12),
        ("a/redis", OK, 48),
        ("b/pg", STALE, 6),
    ]
    with pytest.raises(ConfigurationError, match="must be positive"):
        check_freshness(entries, timedelta(0), NOW)
    with pytest.raises(ConfigurationError, match="aware"):
        check_freshness(entries, timedelta(hours=1), NOW.replace(tzinfo=None))


def test_alert_payload_is_ready_to_send() -> None:
    stale, missing, ok = (
        check_freshness([_entry("a", "pg", 30)], timedelta(hours=26), NOW)[0],
        check_freshness([], timedelta(hours=26), NOW, ["a/redis"])[0],
        check_freshness([_entry("a", "pg", 1)], timedelta(hours=26), NOW)[0],
    )
    alert = stale.to_alert()
    assert alert["event"] == "siprec.backup.stale"
    assert alert["resource"] == "siprec.source.a.pg"
    assert alert["severity"] == "warning"
    assert alert["summary"] == stale.summary() and "\n" not in alert["summary"]
    assert alert["fields"]["age_seconds"] == 30 * 3600
    assert alert["fields"]["threshold_seconds"] == 26 * 3600
    json.dumps(alert)  # plain JSON types only
    assert missing.to_alert()["severity"] == "critical"
    assert missing.to_alert()["event"] == "siprec.backup.missing"
    assert missing.to_alert()["fields"]["newest_backup_id"] is None
    assert ok.to_alert()["severity"] == "info"
    assert ok.to_alert()["event"] == "siprec.backup.fresh"
    assert ok.row()["status"] == "OK" and ok.row()["age_hours"] == "1.0"


def test_clock_skew_gives_age_zero_not_negative() -> None:
    result = check_freshness([_entry("a", "pg", -2)], timedelta(hours=1), NOW)[0]
    assert result.status == OK and result.age == timedelta(0)
    assert result.row()["age_hours"] == "0.0"
    assert result.to_alert()["fields"]["age_seconds"] == 0
