"""Retention: which backups to keep, which to delete, and deleting them safely.

Semantics (restic's ``forget``, per cluster/source, times in UTC):

* ``keep_last`` N keeps the N newest complete backups.
* ``keep_daily`` / ``keep_weekly`` / ``keep_monthly`` N keep the newest complete backup of each of
  the N most recent days / ISO weeks / months that have a complete backup (periods without one
  do not count).
* A complete backup is kept if ANY of these rules selects it.
* ``max_age_days`` is then a hard upper bound: a selected backup finished more than that many
  days ago is deleted after all, unless one of the two guarantees below keeps it.
* Guarantees that no setting overrides: the newest complete backup of every source is kept, and
  every backup in the transitive ``depends_on`` of a kept backup (an incremental's bases) is
  kept, whatever its age or status.
* Incomplete backups (no manifest: interrupted, or still being written) never count as keepers;
  one whose newest object is older than ``incomplete_after_hours`` is deleted, a younger one is
  left alone because it may still be running.

A policy whose keep counts are all zero is refused: it would keep only the newest backup, which
is never what an operator meant. Planning is a pure function (:func:`plan_retention`); a dry run
is the plan alone. :func:`apply_retention` deletes each backup's manifest first, so a backup that
is half deleted shows as incomplete, never as complete with missing data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from siprec_backup.catalog import CatalogEntry
from siprec_backup.errors import ConfigurationError
from siprec_backup.manifest import MANIFEST_NAME, backup_prefix
from siprec_backup.storage import ObjectStore

log = logging.getLogger(__name__)

KEEP = "KEEP"
DELETE = "DELETE"

_ID_TIME = re.compile(r"^(\d{8}T\d{6}Z)")


class RetentionPolicy(BaseModel):
    """How many backups of each source to keep (restic/borg ``forget`` counts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_last: int = Field(default=0, ge=0, description="Keep the N newest complete backups.")
    keep_daily: int = Field(default=0, ge=0, description="Newest backup of each of N days.")
    keep_weekly: int = Field(default=0, ge=0, description="Newest backup of each of N weeks.")
    keep_monthly: int = Field(default=0, ge=0, description="Newest backup of each of N months.")
    max_age_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete backups finished longer ago than this even if a rule keeps them "
        "(never the newest one, never a base of a kept backup).",
    )
    incomplete_after_hours: float = Field(
        default=24,
        gt=0,
        description="Delete an incomplete backup once its newest object is this old.",
    )

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionPolicy:
        if not (self.keep_last or self.keep_daily or self.keep_weekly or self.keep_monthly):
            raise ValueError(
                "the policy keeps nothing: set at least one of keep_last, keep_daily, "
                "keep_weekly, keep_monthly above 0"
            )
        return self

    @classmethod
    def build(cls, **values: object) -> RetentionPolicy:
        """Validate `values`; ConfigurationError with the first problem in one line."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigurationError(
                f"invalid retention policy: {where + ': ' if where else ''}{message}"
            ) from None

    def describe(self) -> str:
        """One line, e.g. ``keep_last=3 keep_daily=7 max_age_days=90``."""
        parts = [f"{name}={value}" for name, value in self.model_dump().items() if value]
        return " ".join(parts)


@dataclass(frozen=True)
class Decision:
    """What retention does with one backup and why."""

    cluster: str
    source: str
    backup_id: str
    status: str
    finished_at: datetime | None
    size: int
    keep: bool
    reasons: tuple[str, ...]

    @property
    def action(self) -> str:
        return KEEP if self.keep else DELETE

    def row(self) -> dict[str, str]:
        """A flat row for tables (CLI, Prefect table artifact)."""
        when = self.finished_at.isoformat(timespec="seconds") if self.finished_at else "-"
        return {
            "action": self.action,
            "cluster": self.cluster,
            "source": self.source,
            "backup_id": self.backup_id,
            "status": self.status,
            "finished_at": when,
            "size_bytes": str(self.size),
            "reasons": "; ".join(self.reasons),
        }


@dataclass(frozen=True)
class RetentionPlan:
    """Every backup with its decision, oldest first per cluster/source."""

    policy: RetentionPolicy
    now: datetime
    decisions: tuple[Decision, ...]
    warnings: tuple[str, ...] = ()

    @property
    def to_delete(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    @property
    def to_keep(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]

    def rows(self) -> list[dict[str, str]]:
        return [d.row() for d in self.decisions]

    def summary(self) -> str:
        """One line: how many backups are kept and deleted, and the bytes freed."""
        freed = sum(d.size for d in self.to_delete)
        return (
            f"{len(self.to_keep)} kept, {len(self.to_delete)} to delete "
            f"({freed:,} bytes) under {self.policy.describe()}"
        )


def plan_retention(
    entries: Iterable[CatalogEntry], policy: RetentionPolicy, now: datetime
) -> RetentionPlan:
    """Decide, per (cluster, source), which backups to keep and which to delete. Pure."""
    if now.tzinfo is None:
        raise ConfigurationError("retention needs an aware 'now' (UTC)")
    groups: dict[tuple[str, str], list[CatalogEntry]] = {}
    for entry in entries:
        groups.setdefault((entry.cluster, entry.source), []).append(entry)
    decisions: list[Decision] = []
    warnings: list[str] = []
    for key in sorted(groups):
        group_decisions, group_warnings = _plan_source(groups[key], policy, now)
        decisions.extend(group_decisions)
        warnings.extend(group_warnings)
    return RetentionPlan(policy, now, tuple(decisions), tuple(warnings))


def _plan_source(
    entries: list[CatalogEntry], policy: RetentionPolicy, now: datetime
) -> tuple[list[Decision], list[str]]:
    complete = sorted(
        (e for e in entries if e.status == "complete" and e.finished_at is not None),
        key=lambda e: (_utc(e.finished_at), e.backup_id),
    )
    reasons: dict[str, list[str]] = {e.backup_id: [] for e in entries}
    newest_first = list(reversed(complete))
    for rank, entry in enumerate(newest_first[: policy.keep_last], start=1):
        reasons[entry.backup_id].append(f"last {rank}")
    for label, count, period in (
        ("daily", policy.keep_daily, _day),
        ("weekly", policy.keep_weekly, _week),
        ("monthly", policy.keep_monthly, _month),
    ):
        seen: set[str] = set()
        for entry in newest_first:
            bucket = period(_utc(entry.finished_at))
            if len(seen) >= count:
                break
            if bucket not in seen:
                seen.add(bucket)
                reasons[entry.backup_id].append(f"{label} {bucket}")

    kept = {bid for bid, why in reasons.items() if why}
    if policy.max_age_days is not None:
        limit = timedelta(days=policy.max_age_days)
        for entry in complete:
            if entry.backup_id in kept and now - _utc(entry.finished_at) > limit:
                kept.discard(entry.backup_id)
                reasons[entry.backup_id] = [f"older than {policy.max_age_days:g} days"]
    if complete:
        newest = complete[-1].backup_id
        if newest in kept:
            reasons[newest].insert(0, "newest complete")
        else:
            reasons[newest] = ["newest complete (always kept)"]
        kept.add(newest)

    warnings = _keep_bases(entries, kept, reasons)

    incomplete_limit = timedelta(hours=policy.incomplete_after_hours)
    decisions = []
    for entry in sorted(entries, key=lambda e: e.backup_id):
        keep = entry.backup_id in kept
        why = reasons[entry.backup_id]
        if entry.status != "complete" and not keep:
            idle = now - _last_activity(entry)
            if idle <= incomplete_limit:
                keep = True
                why = [f"incomplete for {_hours(idle)}: may still be running"]
            else:
                why = [
                    f"incomplete (interrupted) for {_hours(idle)}, more than "
                    f"{policy.incomplete_after_hours:g}h"
                ]
        elif not keep and not why:
            why = ["no keep rule selects it"]
        decisions.append(
            Decision(
                entry.cluster,
                entry.source,
                entry.backup_id,
                entry.status,
                entry.finished_at,
                entry.size,
                keep,
                tuple(why),
            )
        )
    return decisions, warnings


def _keep_bases(
    entries: list[CatalogEntry], kept: set[str], reasons: dict[str, list[str]]
) -> list[str]:
    """Add every (transitive) base of a kept backup to `kept`; warn about missing bases."""
    by_id = {e.backup_id: e for e in entries}
    warnings: list[str] = []
    pending = sorted(kept)
    while pending:
        backup_id = pending.pop()
        entry = by_id[backup_id]
        for base in entry.manifest.depends_on if entry.manifest else ():
            if base not in by_id:
                warnings.append(
                    f"{entry.cluster}/{entry.source} backup {backup_id} depends on {base}, "
                    "which is not in the store"
                )
                continue
            if base in kept:
                if f"base of kept {backup_id}" not in reasons[base]:
                    reasons[base].append(f"base of kept {backup_id}")
                continue
            kept.add(base)
            reasons[base] = [f"base of kept {backup_id}"]
            pending.append(base)
    return warnings


def apply_retention(store: ObjectStore, prefix: str, plan: RetentionPlan) -> list[str]:
    """Delete every backup the plan marks DELETE; returns their ids in the order deleted.

    The manifest goes first, so an interruption leaves an incomplete backup (which the next run
    deletes), never a complete-looking one with objects missing.
    """
    deleted: list[str] = []
    for decision in plan.to_delete:
        base = backup_prefix(prefix, decision.cluster, decision.source, decision.backup_id)
        store.delete(base + MANIFEST_NAME)
        for info in list(store.list(base)):
            store.delete(info.key)
        log.info(
            "deleted backup %s of %s/%s (%s)",
            decision.backup_id,
            decision.cluster,
            decision.source,
            "; ".join(decision.reasons),
        )
        deleted.append(decision.backup_id)
    return deleted


def _utc(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _day(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d}"


def _week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _month(moment: datetime) -> str:
    return f"{moment:%Y-%m}"


def _last_activity(entry: CatalogEntry) -> datetime:
    """When an incomplete backup last wrote: its newest object, else the time in its id."""
    if entry.modified is not None:
        return _utc(entry.modified)
    match = _ID_TIME.match(entry.backup_id)
    if match:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def _hours(span: timedelta) -> str:
    return f"{max(span.total_seconds(), 0) / 3600:.1f}h"
