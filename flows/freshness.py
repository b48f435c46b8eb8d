"""The freshness flow: is every source's newest complete backup recent enough?

It publishes a table of every source, emits one Prefect event per source
(``siprec.backup.fresh`` / ``siprec.backup.stale`` / ``siprec.backup.missing``, resource
``siprec.source.<cluster>.<source>``) for automations to react to, and fails the run when any
source is stale or missing, so that the problem is red in the UI.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from flows._logging import set_log_level
from siprec_backup.errors import StaleBackupsError
from siprec_backup.freshness import OK, FreshnessResult, check_freshness
from tasks.catalog import list_catalog


def emit_freshness_event(result: FreshnessResult) -> None:
    """One event per source, carrying the alert payload (severity, summary, fields)."""
    alert = result.to_alert()
    emit_event(
        event=alert["event"],
        resource={
            "prefect.resource.id": result.resource_id,
            "prefect.resource.name": result.name,
            "siprec.cluster": result.cluster,
            "siprec.source": result.source,
        },
        payload=alert,
    )


@flow(name="check-backup-freshness")
def check_backup_freshness(
    storage: str = "siprec-storage",
    max_age_hours: float = 26,
    expected_sources: list[str] | None = None,
    cluster: str = "",
    log_level: str = "INFO",
) -> list[FreshnessResult]:
    """Check that every source has a complete backup younger than `max_age_hours`.

    Args:
        storage: Name of the storage block holding the backups.
        max_age_hours: The newest complete backup of each source must be at most this old.
        expected_sources: Sources that must have backups, as "cluster/source" or "source";
            a source never backed up is otherwise invisible.
        cluster: Only this cluster (default: all).
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    logger = get_run_logger()
    entries = list_catalog(storage, cluster)
    results = check_freshness(
        entries, timedelta(hours=max_age_hours), datetime.now(UTC), expected_sources
    )
    for result in results:
        if result.status == OK:
            logger.info(result.summary())
        else:
            logger.error(result.summary())
        emit_freshness_event(result)
    if results:
        create_table_artifact(
            [r.row() for r in results],
            key="backup-freshness",
            description=f"Backup freshness (threshold {max_age_hours:g} h)",
        )
    bad = [r for r in results if r.status != OK]
    if bad:
        raise StaleBackupsError(
            f"{len(bad)} of {len(results)} sources have no backup within {max_age_hours:g} h: "
            + ", ".join(f"{r.name} ({r.status})" for r in bad)
        )
    logger.info("all %d sources have a backup within %g h", len(results), max_age_hours)
    return results
