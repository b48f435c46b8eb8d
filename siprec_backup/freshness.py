"""Backup freshness: is the newest complete backup of every source recent enough?

A source is ``ok`` when its newest complete backup finished within its threshold, ``stale`` when
it is older, and ``missing`` when the source is expected (or seen in the store) but has no
complete backup at all. Incomplete backups never make a source fresh. Each result turns into an
alert-ready dict (:meth:`FreshnessResult.to_alert`) that alerting can send as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from siprec_backup.catalog import CatalogEntry
from siprec_backup.errors import ConfigurationError

OK = "ok"
STALE = "stale"
MISSING = "missing"

#: Nightly backups plus two hours of slack.
DEFAULT_MAX_AGE = timedelta(hours=26)

_SEVERITY = {OK: "info", STALE: "warning", MISSING: "critical"}


@dataclass(frozen=True)
class FreshnessResult:
    """The freshness of one (cluster, source)."""

    cluster: str
    source: str
    status: str  # "ok" | "stale" | "missing"
    threshold: timedelta
    newest_backup_id: str | None = None
    newest_at: datetime | None = None
    age: timedelta | None = None

    @property
    def name(self) -> str:
        return f"{self.cluster}/{self.source}" if self.cluster else self.source

    @property
    def resource_id(self) -> str:
        """The id events and alerts name this source by: ``siprec.source.<cluster>.<source>``."""
        return f"siprec.source.{self.cluster or '-'}.{self.source}"

    def summary(self) -> str:
        """One line for logs, alerts and the CLI."""
        limit = _span(self.threshold)
        if self.status == MISSING:
            return f"{self.name}: no complete backup (expected one every {limit})"
        assert self.age is not None
        verdict = "within" if self.status == OK else "older than"
        return (
            f"{self.name}: newest backup {self.newest_backup_id} is {_span(self.age)} old, "
            f"{verdict} {limit}"
        )

    def row(self) -> dict[str, str]:
        """A flat row for tables (CLI, Prefect table artifact)."""
        return {
            "status": self.status.upper(),
            "cluster": self.cluster,
            "source": self.source,
            "newest_backup": self.newest_backup_id or "-",
            "finished_at": self.newest_at.isoformat(timespec="seconds") if self.newest_at else "-",
            "age_hours": f"{self.age.total_seconds() / 3600:.1f}" if self.age is not None else "-",
            "threshold_hours": f"{self.threshold.total_seconds() / 3600:g}",
        }

    def to_alert(self) -> dict[str, Any]:
        """An alert payload: severity (info/warning/critical), one-line summary, flat fields."""
        return {
            "event": f"siprec.backup.{'fresh' if self.status == OK else self.status}",
            "resource": self.resource_id,
            "severity": _SEVERITY[self.status],
            "summary": self.summary(),
            "fields": {
                "cluster": self.cluster,
                "source": self.source,
                "status": self.status,
                "newest_backup_id": self.newest_backup_id,
                "newest_at": self.newest_at.isoformat() if self.newest_at else None,
                "age_seconds": round(self.age.total_seconds()) if self.age is not None else None,
                "threshold_seconds": round(self.threshold.total_seconds()),
            },
        }


def check_freshness(
    entries: Iterable[CatalogEntry],
    thresholds: Mapping[str, timedelta] | timedelta = DEFAULT_MAX_AGE,
    now: datetime | None = None,
    sources: Iterable[str] | None = None,
    *,
    default: timedelta = DEFAULT_MAX_AGE,
) -> list[FreshnessResult]:
    """The freshness of every source in `entries` and every expected one in `sources`.

    `thresholds` is one age for all, or ages by ``"cluster/source"`` or ``"source"`` (the more
    precise name wins; others get `default`). `sources` names expected sources the same way; a
    bare source name is satisfied by that source in any cluster. Sorted by cluster, source.
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ConfigurationError("freshness needs an aware 'now' (UTC)")
    for limit in [thresholds] if isinstance(thresholds, timedelta) else thresholds.values():
        if limit <= timedelta(0):
            raise ConfigurationError(f"a freshness threshold must be positive, got {limit}")
    newest: dict[tuple[str, str], CatalogEntry | None] = {}
    for entry in entries:
        key = (entry.cluster, entry.source)
        current = newest.get(key)
        if entry.status != "complete" or entry.finished_at is None:
            newest.setdefault(key, None)
        elif current is None or _later(entry, current):
            newest[key] = entry
    for expected in sources or ():
        cluster, _, source = expected.rpartition("/")
        if not source:
            raise ConfigurationError(f"expected source {expected!r} has no source name")
        if not any(s == source and (not cluster or c == cluster) for c, s in newest):
            newest[(cluster, source)] = None
    results = []
    for (cluster, source), found in sorted(newest.items(), key=lambda item: item[0]):
        threshold = _threshold(thresholds, cluster, source, default)
        if found is None or found.finished_at is None:
            results.append(FreshnessResult(cluster, source, MISSING, threshold))
            continue
        age = max(now - found.finished_at, timedelta(0))
        results.append(
            FreshnessResult(
                cluster,
                source,
                OK if age <= threshold else STALE,
                threshold,
                found.backup_id,
                found.finished_at,
                age,
            )
        )
    return results


def _later(entry: CatalogEntry, current: CatalogEntry) -> bool:
    assert entry.finished_at is not None and current.finished_at is not None
    return (entry.finished_at, entry.backup_id) > (current.finished_at, current.backup_id)


def _threshold(
    thresholds: Mapping[str, timedelta] | timedelta, cluster: str, source: str, default: timedelta
) -> timedelta:
    if isinstance(thresholds, timedelta):
        return thresholds
    return thresholds.get(f"{cluster}/{source}", thresholds.get(source, default))


def _span(span: timedelta) -> str:
    seconds = span.total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
