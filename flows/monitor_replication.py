"""The monitor-replication flow: every replication cluster of every platform, checked in one
concurrent pass, alerts on transitions only, a status table per platform.

Run it every minute (deployment ``monitor-replication/every-minute``) or, for faster detection,
serve it from one long-running process that polls every few seconds::

    python -m flows.monitor_replication --serve --interval 5 --channel ops-webhook
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from blocks.alerting import load_channels
from blocks.replication import MonitoredCluster, MonitoredPlatform, load_monitored
from flows._logging import set_log_level
from flows.freshness import emit_freshness_event
from siprec_backup.alerting import Alert, AlertDeliveryError, AlertTracker, Observation
from siprec_backup.alerting.transitions import FLAPPING
from siprec_backup.errors import StorageError
from siprec_backup.freshness import MISSING, OK, FreshnessResult, check_freshness
from siprec_backup.metrics import Registry, add_replication_metrics
from siprec_backup.replication import NodeHealth
from tasks.catalog import list_catalog
from tasks.monitor import check_replication, deliver_alerts, load_trackers, save_trackers

#: Tracker of the backup freshness alerts (nodes "backup:<cluster>/<source>").
BACKUP_TRACKER = "backup"
#: Freshness status -> the tracker's status scale.
_FRESHNESS_STATUS = {OK: "healthy", "stale": "lagging", MISSING: "broken"}


@dataclass
class MonitorReport:
    """What one pass found: every node's health, the alerts sent, every source's freshness."""

    nodes: list[NodeHealth] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    freshness: list[FreshnessResult] = field(default_factory=list)

    def metrics(self) -> Registry:
        """The replication lag and status metric families of this pass."""
        return add_replication_metrics(Registry(), self.nodes)


def status_rows(records: Sequence[NodeHealth]) -> list[dict[str, Any]]:
    """The status table: one row per node."""
    return [
        {
            "cluster": r.cluster,
            "node": r.node,
            "role": r.expected_role
            if r.observed_role in (None, r.expected_role)
            else f"{r.expected_role} (is {r.observed_role})",
            "status": r.status.upper(),
            "lag_bytes": "-" if r.lag_bytes is None else r.lag_bytes,
            "lag_seconds": "-" if r.lag_seconds is None else round(r.lag_seconds, 1),
            "reason": r.reason,
        }
        for r in records
    ]


def artifact_key(platform: str) -> str:
    """``replication-status-<platform>`` in the characters artifact keys allow."""
    return "replication-status-" + re.sub(r"[^a-z0-9-]+", "-", platform.lower()).strip("-")


def _tracker_key(cluster: str) -> str:
    return f"replication:{cluster}"


def _unique_clusters(platforms: Sequence[MonitoredPlatform]) -> list[MonitoredCluster]:
    clusters: dict[str, MonitoredCluster] = {}
    for platform in platforms:
        for cluster in platform.clusters:
            clusters.setdefault(cluster.block, cluster)
    return list(clusters.values())


def _freshness(
    platforms: Sequence[MonitoredPlatform], storage: str | None, max_age: timedelta
) -> tuple[list[FreshnessResult], list[str]]:
    """Every platform's source freshness, and the catalogs that could not be read."""
    results: list[FreshnessResult] = []
    errors: list[str] = []
    for monitored in platforms:
        platform = monitored.platform
        try:
            entries = list_catalog(storage or platform.storage, platform.cluster)
        except StorageError as exc:
            errors.append(f"{monitored.name}: {exc}")
            continue
        expected = [f"{platform.cluster}/{s.name}" for s in platform.sources]
        results += check_freshness(entries, max_age, datetime.now(UTC), expected)
    return results, errors


def _observe_nodes(
    trackers: dict[str, AlertTracker], records: Sequence[NodeHealth]
) -> list[tuple[Alert, NodeHealth]]:
    found = []
    for r in records:
        observation = Observation(
            f"{r.cluster}/{r.node}", r.status, r.reason, r.checked_at, r.lag_bytes, r.lag_seconds
        )
        found += [(a, r) for a in trackers[_tracker_key(r.cluster)].observe(observation)]
    return found


def _observe_freshness(
    tracker: AlertTracker, results: Sequence[FreshnessResult]
) -> list[tuple[Alert, FreshnessResult]]:
    now = datetime.now(UTC)
    found = []
    for result in results:
        observation = Observation(
            f"backup:{result.name}", _FRESHNESS_STATUS[result.status], result.summary(), now
        )
        found += [(a, result) for a in tracker.observe(observation)]
    return found


def _node_payload(alert: Alert, record: NodeHealth) -> dict[str, Any]:
    payload = alert.to_alert()
    payload["fields"].update(cluster=record.cluster, role=record.expected_role)
    emit_event(
        event=f"siprec.replication.{alert.status}",
        resource={
            "prefect.resource.id": alert.resource_id,
            "prefect.resource.name": alert.key,
            "siprec.cluster": record.cluster,
            "siprec.node": record.node,
        },
        payload=payload,
    )
    return payload


def _backup_payload(alert: Alert, result: FreshnessResult) -> dict[str, Any]:
    emit_freshness_event(result)
    if alert.status == FLAPPING:
        return alert.to_alert()
    payload = result.to_alert()
    payload["fields"]["alert"] = alert.kind
    return payload


def _publish_tables(platforms: Sequence[MonitoredPlatform], records: Sequence[NodeHealth]) -> None:
    for monitored in platforms:
        names = {c.config.cluster for c in monitored.clusters}
        rows = status_rows([r for r in records if r.cluster in names])
        if not rows:
            continue
        bad = sum(row["status"] != "HEALTHY" for row in rows)
        create_table_artifact(
            rows,
            key=artifact_key(monitored.name),
            description=f"Replication status of {monitored.name}: "
            f"{len(rows) - bad} of {len(rows)} nodes healthy",
        )


def _deliver(channels: Sequence[str], payloads: list[dict[str, Any]]) -> list[str]:
    """Send to every channel (each its own task with retries); the channels that failed."""
    failed = []
    for channel in channels:
        state = deliver_alerts(channel, payloads, return_state=True)
        if not state.is_completed():
            failed.append(f"{channel}: {state.message}")
    return failed


@flow(name="monitor-replication")
def monitor_replication(
    platforms: list[str] | None = None,
    channels: list[str] | None = None,
    freshness_max_age_hours: float | None = 26,
    freshness_storage: str | None = None,
    state_variable: str = "siprec-alert-tracker",
    log_level: str = "INFO",
) -> MonitorReport:
    """Check every replication cluster of every platform; alert on transitions only.

    Each node is healthy, lagging, broken (a stopped thread or link, paused replay, lag beyond
    the cluster's broken limits, a primary that is a replica or the reverse) or unreachable. An
    alert goes out when a node's status changes (and its recovery), as a reminder while it
    stays bad, and once when it flaps; a broken replica pages once, not every minute. The same
    applies to backups: a source whose newest complete backup is older than
    ``freshness_max_age_hours`` is ``backup:<cluster>/<source>``. Each platform gets a
    ``replication-status-<platform>`` table artifact, each alert a Prefect event
    (``siprec.replication.<status>``, ``siprec.backup.<status>``).

    The run fails on configuration errors (a missing or invalid block, an unknown channel), when
    a channel cannot deliver after its retries, and when a catalog cannot be read; never
    because a replica is broken or unreachable: that is what the alerts and the table show.

    Args:
        platforms: Platform block names (default: every Platform block on the server).
        channels: Alert channel block names ("name" or "type-slug/name"); empty: events only.
        freshness_max_age_hours: Newest complete backup at most this old; empty: no check.
        freshness_storage: Read the catalog from this storage block instead of each platform's.
        state_variable: Prefect variable keeping the alert state between runs; use one per
            deployment when several deployments monitor different platforms.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    logger = get_run_logger()
    monitored = load_monitored(platforms)
    channel_names = list(channels or [])
    load_channels(channel_names)  # a wrong channel name fails the run before any check
    clusters = _unique_clusters(monitored)
    report = MonitorReport()
    if clusters:
        report.nodes = check_replication(clusters)
    catalog_errors: list[str] = []
    if freshness_max_age_hours:
        max_age = timedelta(hours=freshness_max_age_hours)
        report.freshness, catalog_errors = _freshness(monitored, freshness_storage, max_age)

    settings = {_tracker_key(c.config.cluster): c.config.tracker_settings() for c in clusters}
    trackers = load_trackers(state_variable, {**settings, BACKUP_TRACKER: {}})
    node_alerts = _observe_nodes(trackers, report.nodes)
    backup_alerts = _observe_freshness(trackers[BACKUP_TRACKER], report.freshness)
    save_trackers(state_variable, trackers)

    report.alerts = [_node_payload(a, r) for a, r in node_alerts]
    report.alerts += [_backup_payload(a, r) for a, r in backup_alerts]
    for record in report.nodes:
        line = f"{record.cluster}/{record.node}: {record.status}: {record.reason}"
        (logger.info if record.healthy else logger.warning)(line)
    for payload in report.alerts:
        logger.warning("alert: %s", payload["summary"])
    _publish_tables(monitored, report.nodes)
    failed = _deliver(channel_names, report.alerts) if report.alerts else []
    if catalog_errors:
        raise StorageError("backup freshness unknown: " + "; ".join(catalog_errors))
    if failed:
        raise AlertDeliveryError("alerts not delivered: " + "; ".join(failed))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m flows.monitor_replication --serve --interval 5``: poll every few seconds
    from this process (no worker; one run at a time)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--serve", action="store_true", help="serve the flow on an interval")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between passes")
    parser.add_argument("--platform", action="append", help="platform block (repeatable)")
    parser.add_argument("--channel", action="append", help="alert channel block (repeatable)")
    parser.add_argument("--state-variable", default="siprec-alert-tracker-fast")
    args = parser.parse_args(argv)
    parameters = {
        "platforms": args.platform,
        "channels": args.channel or [],
        "state_variable": args.state_variable,
    }
    if not args.serve:
        monitor_replication(**parameters)
        return
    monitor_replication.serve(
        name="fast-poll", interval=args.interval, parameters=parameters, limit=1
    )


if __name__ == "__main__":
    main()
