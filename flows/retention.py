"""The retention flow: plan which backups a policy keeps, publish the plan, delete the rest."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows._logging import set_log_level
from siprec_backup.retention import RetentionPlan, RetentionPolicy, plan_retention
from tasks.catalog import delete_backups, list_catalog


def _artifact_key(*parts: str) -> str:
    raw = "-".join(p or "all" for p in parts).lower()
    return "".join(c if c.isalnum() else "-" for c in raw)


def plan_markdown(plan: RetentionPlan, dry_run: bool, deleted: list[str]) -> str:
    """A readable summary of one retention run for the run's markdown artifact."""
    outcome = "**Dry run**: nothing was deleted." if dry_run else f"Deleted {len(deleted)} backups."
    warnings = "".join(f"\n- warning: {w}" for w in plan.warnings)
    deletes = "\n".join(
        f"| {d.cluster}/{d.source} | `{d.backup_id}` | {d.size:,} | {'; '.join(d.reasons)} |"
        for d in plan.to_delete
    )
    table = (
        f"\n\n| Source | Backup | Bytes | Why |\n|---|---|---|---|\n{deletes}" if deletes else ""
    )
    return (
        f"# Retention\n\nPolicy: `{plan.policy.describe()}`\n\n{plan.summary()}. {outcome}"
        f"{warnings}{table}\n"
    )


@flow(name="apply-retention")
def apply_retention_policy(
    storage: str = "siprec-storage",
    cluster: str = "",
    source: str = "",
    keep_last: int = 7,
    keep_daily: int = 14,
    keep_weekly: int = 8,
    keep_monthly: int = 12,
    max_age_days: float | None = None,
    incomplete_after_hours: float = 24,
    dry_run: bool = True,
    log_level: str = "INFO",
) -> RetentionPlan:
    """Apply a retention policy to a store's backups; by default a dry run that deletes nothing.

    A backup is kept if any keep rule selects it; max_age_days then bounds what the rules keep.
    The newest complete backup of each source and every base of a kept backup are always kept.

    Args:
        storage: Name of the storage block holding the backups.
        cluster: Only this cluster (default: all).
        source: Only this source (default: all).
        keep_last: Keep the N newest complete backups of each source.
        keep_daily: Keep the newest backup of each of the last N days that have backups.
        keep_weekly: Keep the newest backup of each of the last N ISO weeks that have backups.
        keep_monthly: Keep the newest backup of each of the last N months that have backups.
        max_age_days: Delete backups finished longer ago than this even if a rule keeps them.
        incomplete_after_hours: Delete interrupted backups (no manifest) idle this long.
        dry_run: Only publish the plan; set to false to delete.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    logger = get_run_logger()
    policy = RetentionPolicy.build(
        keep_last=keep_last,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        max_age_days=max_age_days,
        incomplete_after_hours=incomplete_after_hours,
    )
    entries = list_catalog(storage, cluster, source)
    plan = plan_retention(entries, policy, datetime.now(UTC))
    for decision in plan.decisions:
        logger.info(
            "[%s %s/%s] %s: %s",
            decision.backup_id,
            decision.cluster,
            decision.source,
            decision.action,
            "; ".join(decision.reasons),
        )
    for warning in plan.warnings:
        logger.warning(warning)
    if plan.decisions:
        create_table_artifact(
            plan.rows(),
            key=_artifact_key("retention-plan", cluster, source),
            description=f"Retention plan ({'dry run' if dry_run else 'applied'}): {plan.summary()}",
        )
    deleted: list[str] = [] if dry_run else delete_backups(storage, plan)
    create_markdown_artifact(
        plan_markdown(plan, dry_run, deleted),
        key=_artifact_key("retention", cluster, source),
        description=plan.summary(),
    )
    logger.info("%s%s", "dry run: " if dry_run else "", plan.summary())
    return plan
