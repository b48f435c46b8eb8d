"""Prometheus exposition: golden text, escaping, the siprec families, textfile, and GET /metrics."""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from siprec_backup.catalog import CatalogEntry
from siprec_backup.errors import ConfigurationError
from siprec_backup.manifest import Manifest, StoredObject
from siprec_backup.metrics import (
    Registry,
    add_backup_metrics,
    add_replication_metrics,
    add_verification_metrics,
    format_value,
    serve,
    write_textfile,
)
from siprec_backup.verify.report import BackupVerification

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def test_gauge_and_counter_golden_text_with_escaping() -> None:
    registry = Registry()
    gauge = registry.gauge("demo_size_bytes", 'Size with "quotes", a \\ and\na newline.', ["path"])
    gauge.set(1024, path='C:\\dir\\"x"\nnext')
    gauge.set(0.5, path="plain")
    counter = registry.counter("demo_runs_total", "Runs.")
    counter.inc()
    counter.inc(2)
    assert registry.render() == (
        '# HELP demo_size_bytes Size with "quotes", a \\\\ and\\na newline.\n'
        "# TYPE demo_size_bytes gauge\n"
        'demo_size_bytes{path="C:\\\\dir\\\\\\"x\\"\\nnext"} 1024\n'
        'demo_size_bytes{path="plain"} 0.5\n'
        "# HELP demo_runs_total Runs.\n"
        "# TYPE demo_runs_total counter\n"
        "demo_runs_total 3\n"
    )


def test_values_are_formatted_as_prometheus_reads_them() -> None:
    assert [format_value(v) for v in (3, 2.0, 0.25, float("nan"), float("inf"), -float("inf"))] == [
        "3",
        "2",
        "0.25",
        "NaN",
        "+Inf",
        "-Inf",
    ]
    assert format_value(True) == "1"
    assert format_value(1.7e18) == "1.7e+18"


def test_bad_names_and_labels_are_refused() -> None:
    registry = Registry()
    with pytest.raises(ConfigurationError, match="must end in _total"):
        registry.counter("demo_runs", "x")
    with pytest.raises(ConfigurationError, match="invalid metric name"):
        registry.gauge("demo-size", "x")
    with pytest.raises(ConfigurationError, match="invalid label name"):
        registry.gauge("demo", "x", ["__reserved"])
    gauge = registry.gauge("demo", "x", ["a"])
    with pytest.raises(ConfigurationError, match=r"takes labels \['a'\], got \['b'\]"):
        gauge.set(1, b="x")
    with pytest.raises(ConfigurationError, match="cannot decrease"):
        registry.counter("demo_total", "x").inc(-1)


def _get(url: str, timeout: float) -> Any:
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (our http:// loopback URL)


@dataclass(frozen=True)
class _Node:
    cluster: str
    node: str
    kind: str
    status: str
    lag_bytes: int | None
    lag_seconds: float | None


def _status_lines(node: str, kind: str, current: str) -> str:
    prefix = f'siprec_replication_node_status{{cluster="c1",node="{node}",kind="{kind}",status='
    return "".join(
        f'{prefix}"{status}"}} {int(status == current)}\n'
        for status in ("healthy", "lagging", "broken", "unreachable")
    )


def test_replication_metrics_golden() -> None:
    nodes = [
        _Node("c1", "pg-2", "postgres", "lagging", 4096, 12.5),
        _Node("c1", "redis-2", "redis", "unreachable", None, None),
    ]
    text = add_replication_metrics(Registry(), nodes).render()
    assert text == (
        "# HELP siprec_replication_lag_bytes Replication lag of a replica behind its primary.\n"
        "# TYPE siprec_replication_lag_bytes gauge\n"
        'siprec_replication_lag_bytes{cluster="c1",node="pg-2",kind="postgres"} 4096\n'
        "# HELP siprec_replication_lag_seconds Replication delay of a replica in seconds.\n"
        "# TYPE siprec_replication_lag_seconds gauge\n"
        'siprec_replication_lag_seconds{cluster="c1",node="pg-2",kind="postgres"} 12.5\n'
        "# HELP siprec_replication_node_status 1 for the node's current health status, 0 for "
        "the others (healthy, lagging, broken, unreachable).\n"
        "# TYPE siprec_replication_node_status gauge\n"
        + _status_lines("pg-2", "postgres", "lagging")
        + _status_lines("redis-2", "redis", "unreachable")
    )
    assert (
        'siprec_replication_node_status{cluster="c1",node="pg-2",kind="postgres",'
        'status="lagging"} 1\n'
    ) in text


def _manifest(source: str, backup_id: str, started: datetime, seconds: int) -> Manifest:
    obj = StoredObject(
        key=f"c1/{source}/{backup_id}/data.sbk",
        plaintext_bytes=5000,
        plaintext_sha256="0" * 64,
        ciphertext_bytes=1200,
        ciphertext_sha256="1" * 64,
        compression="zstd",
        chunk_size=65536,
        key_id="k1",
    )
    return Manifest(
        backup_id=backup_id,
        cluster="c1",
        source=source,
        source_kind="postgres",
        started_at=started,
        finished_at=started + timedelta(seconds=seconds),
        object=obj,
        tool_version="test",
    )


def _complete(source: str, day: int, seconds: int) -> CatalogEntry:
    started = T0 + timedelta(days=day)
    backup_id = f"{started:%Y%m%dT%H%M%SZ}-000001"
    manifest = _manifest(source, backup_id, started, seconds)
    return CatalogEntry(
        "c1",
        source,
        backup_id,
        "complete",
        manifest.stored_bytes,
        manifest.finished_at,
        manifest,
    )


def test_backup_metrics_from_catalog_entries() -> None:
    incomplete = CatalogEntry("c1", "pg", "20261129T020000Z-000009", "incomplete", 7, None, None)
    entries = [_complete("pg", 0, 60), _complete("pg", 1, 90), incomplete, _complete("redis", 0, 5)]
    text = add_backup_metrics(Registry(), entries).render()
    stored = entries[1].size
    finished_pg = int((T0 + timedelta(days=1, seconds=90)).timestamp())
    finished_redis = int((T0 + timedelta(seconds=5)).timestamp())
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == [
        'siprec_backup_duration_seconds{cluster="c1",source="pg"} 90',
        'siprec_backup_duration_seconds{cluster="c1",source="redis"} 5',
        f'siprec_backup_bytes{{cluster="c1",source="pg"}} {stored}',
        f'siprec_backup_bytes{{cluster="c1",source="redis"}} {entries[3].size}',
        'siprec_backup_plaintext_bytes{cluster="c1",source="pg"} 5000',
        'siprec_backup_plaintext_bytes{cluster="c1",source="redis"} 5000',
        'siprec_backup_success{cluster="c1",source="pg"} 0',
        'siprec_backup_success{cluster="c1",source="redis"} 1',
        f'siprec_backup_last_success_timestamp_seconds{{cluster="c1",source="pg"}} {finished_pg}',
        f'siprec_backup_last_success_timestamp_seconds{{cluster="c1",source="redis"}} '
        f"{finished_redis}",
    ]
    assert "# TYPE siprec_backup_last_success_timestamp_seconds gauge\n" in text


def _verified(entry: CatalogEntry, day: int, passed: bool, seconds: float) -> CatalogEntry:
    mark = BackupVerification(
        set_id=f"set-{day}",
        verified_at=T0 + timedelta(days=day, hours=6),
        passed=passed,
        restore_seconds=seconds,
    )
    return dataclasses.replace(entry, verification=mark)


def test_verification_metrics_from_catalog_marks() -> None:
    entries = [
        _verified(_complete("pg", 0, 60), 0, True, 12.5),
        _verified(_complete("pg", 1, 60), 2, False, 14.0),
        _verified(_complete("redis", 0, 5), 1, True, 3.0),
        _complete("redis", 1, 5),  # never verified: the older mark still counts
        _complete("recs", 0, 5),  # no verification at all: no samples
    ]
    text = add_verification_metrics(Registry(), entries).render()
    pg_ok = int((T0 + timedelta(hours=6)).timestamp())
    redis_ok = int((T0 + timedelta(days=1, hours=6)).timestamp())
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        'siprec_verify_success{cluster="c1",source="pg"} 0',
        'siprec_verify_success{cluster="c1",source="redis"} 1',
        f'siprec_verify_last_success_timestamp_seconds{{cluster="c1",source="pg"}} {pg_ok}',
        f'siprec_verify_last_success_timestamp_seconds{{cluster="c1",source="redis"}} {redis_ok}',
        'siprec_verify_restore_duration_seconds{cluster="c1",source="pg"} 14',
        'siprec_verify_restore_duration_seconds{cluster="c1",source="redis"} 3',
    ]
    assert "# TYPE siprec_verify_restore_duration_seconds gauge\n" in text
    assert add_verification_metrics(Registry()).render().count("# TYPE") == 3


def test_write_textfile_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    registry = Registry()
    registry.gauge("demo_up", "Up.").set(1)
    target = tmp_path / "siprec.prom"
    target.write_text("old\n")
    write_textfile(registry, target)
    assert target.read_text() == "# HELP demo_up Up.\n# TYPE demo_up gauge\ndemo_up 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["siprec.prom"]
    with pytest.raises(FileNotFoundError):
        write_textfile(registry, tmp_path / "missing-dir" / "x.prom")


def test_serve_answers_get_metrics() -> None:
    registry = Registry()
    up = registry.gauge("demo_up", "Up.")
    calls = []

    def collect() -> str:
        calls.append(1)
        up.set(len(calls))
        return registry.render()

    with serve("127.0.0.1", 0, collect) as server:
        with _get(server.url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert (
                response.read().decode() == "# HELP demo_up Up.\n# TYPE demo_up gauge\ndemo_up 1\n"
            )
        with _get(server.url, timeout=5) as response:
            assert response.read().decode().endswith("demo_up 2\n")
        with pytest.raises(urllib.error.HTTPError) as missing:
            _get(server.url.replace("/metrics", "/other"), timeout=5)
        assert missing.value.code == 404
        missing.value.close()


def test_serve_reports_a_failing_collector_as_500() -> None:
    def collect() -> str:
        raise RuntimeError("password=hunter2")

    with serve("127.0.0.1", 0, collect) as server:
        with pytest.raises(urllib.error.HTTPError) as failed:
            _get(server.url, timeout=5)
        assert failed.value.code == 500
        assert failed.value.read() == b"RuntimeError\n"
        failed.value.close()
