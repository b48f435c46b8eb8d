"""The ``dns-change`` and ``dns-ttl`` flows: change records and prove every nameserver has them.

``dns-change`` prints the plan (the exact changes, against what the primary serves now) as an
artifact and stops there with ``dry_run``; otherwise it sends the changes as one TSIG-signed
update, waits until every authoritative nameserver serves them at the new serial, and publishes
each nameserver's serial and time. ``dns-ttl`` lowers a record's TTL ahead of a planned cutover
(the artifact keeps the previous TTL) or restores it afterwards. Both emit ``siprec.dns.changed``
(resource ``siprec.dns-zone.<zone>``) with the propagation time, also counted in the lever
metrics textfile (:mod:`siprec_backup.lever_metrics`) when ``$SIPREC_METRICS_TEXTFILE_DIR`` is set.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from flows._logging import set_log_level
from siprec_backup.dns import Change, PropagationResult, RecordSet, UpdateResult
from siprec_backup.lever_metrics import record_dns_update
from tasks.dns import apply_dns_changes, plan_dns_changes, set_dns_ttl, verify_propagation

RecordType = Literal["A", "AAAA", "CNAME", "MX", "TXT", "SRV"]


class DnsChange(BaseModel):
    """One record set change, as the Prefect UI's form shows it."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["create", "replace", "delete"] = Field(
        description="create (must not exist), replace (the whole set) or delete."
    )
    name: str = Field(description="Record name, relative to the zone (db) or absolute.")
    type: RecordType = Field(description="A, AAAA, CNAME, MX, TXT or SRV.")
    ttl: int = Field(default=300, ge=0, description="TTL in seconds (not used by delete).")
    values: list[str] = Field(
        default_factory=list,
        description="Values in zone-file syntax, e.g. 10.0.0.2, '10 mail', '10 5 5060 sip1'.",
    )

    def change(self) -> Change:
        """The engine's change."""
        values = () if self.action == "delete" else tuple(self.values)
        return Change(self.action, RecordSet(self.name, self.type, self.ttl, values))


def propagation_rows(result: PropagationResult) -> list[dict[str, Any]]:
    """One row per nameserver: its serial and how long it took to serve the change."""
    return [
        {
            "nameserver": state.nameserver.label,
            "serial": state.serial,
            "seconds": None if state.seconds is None else round(state.seconds, 3),
        }
        for state in result.nameservers
    ]


def _publish(zone_block: str, update: UpdateResult, result: PropagationResult | None) -> None:
    payload: dict[str, Any] = {
        "zone": update.zone,
        "serial": update.serial,
        "changes": [c.expected.describe() for c in update.changes],
        "update_seconds": round(update.seconds, 3),
    }
    if result is not None:
        payload["propagation_seconds"] = round(result.seconds, 3)
        payload["nameservers"] = result.serials
        create_table_artifact(
            propagation_rows(result),
            key=f"dns-propagation-{zone_block}",
            description=f"{update.zone} serial {update.serial} on every nameserver in "
            f"{result.seconds:.2f} s",
        )
    record_dns_update(update.zone, None if result is None else result.seconds)
    emit_event(
        event="siprec.dns.changed",
        resource={"prefect.resource.id": f"siprec.dns-zone.{update.zone.rstrip('.')}"},
        payload=payload,
    )


@flow(name="dns-change")
def dns_change(
    zone_block: str,
    changes: list[DnsChange],
    dry_run: bool = False,
    verify: bool = True,
    deadline_seconds: float = 60,
    log_level: str = "INFO",
) -> dict[str, Any]:
    """Change DNS records in one atomic update and verify them on every nameserver.

    Args:
        zone_block: Name of the BIND zone block.
        changes: The record set changes, all sent in one update.
        dry_run: Only print the plan; send nothing.
        verify: Wait until every authoritative nameserver serves the change.
        deadline_seconds: Fail if a nameserver still disagrees after this long.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    logger = get_run_logger()
    engine_changes = [c.change() for c in changes]
    plan = plan_dns_changes(zone_block, engine_changes)
    for line in plan:
        logger.info("plan: %s", line)
    title = "DNS plan (dry run: nothing sent)" if dry_run else "DNS plan"
    create_markdown_artifact(
        f"### {title}\n\n```\n" + "\n".join(plan) + "\n```\n",
        key=f"dns-plan-{zone_block}",
        description=title,
    )
    if dry_run:
        return {"plan": plan, "applied": False}
    update = apply_dns_changes(zone_block, engine_changes)
    logger.info("%s updated: serial %d (%.3f s)", update.zone, update.serial, update.seconds)
    result = verify_propagation(zone_block, update, deadline_seconds) if verify else None
    if result is not None:
        logger.info(
            "every nameserver serves serial >= %d after %.2f s", update.serial, result.seconds
        )
    _publish(zone_block, update, result)
    return {
        "plan": plan,
        "applied": True,
        "serial": update.serial,
        "propagation_seconds": None if result is None else round(result.seconds, 3),
    }


@flow(name="dns-ttl")
def dns_ttl(
    zone_block: str,
    name: str,
    type: RecordType,
    ttl: int,
    restore: bool = False,
    verify: bool = True,
    deadline_seconds: float = 60,
    log_level: str = "INFO",
) -> dict[str, Any]:
    """Lower a record set's TTL ahead of a planned cutover, or restore it afterwards.

    Args:
        zone_block: Name of the BIND zone block.
        name: Record name, relative to the zone or absolute.
        type: Record type.
        ttl: The TTL to set (lowering leaves a TTL already at or below it alone).
        restore: Set the TTL back to `ttl` (after the cutover) rather than lowering it.
        verify: Wait until every authoritative nameserver serves the new TTL.
        deadline_seconds: Fail if a nameserver still disagrees after this long.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    logger = get_run_logger()
    change = set_dns_ttl(zone_block, name, type, ttl, restore)
    record = change.record
    logger.info("%s %s: TTL %d -> %d", record.name, record.rtype, change.previous_ttl, record.ttl)
    create_markdown_artifact(
        f"### TTL of {record.name} {record.rtype}\n\n"
        f"| previous TTL | TTL now |\n|---|---|\n| {change.previous_ttl} | {record.ttl} |\n\n"
        f"Restore with `ttl={change.previous_ttl}, restore=true` after the cutover.\n",
        key=f"dns-ttl-{zone_block}",
        description=f"{record.name} {record.rtype} TTL {change.previous_ttl} -> {record.ttl}",
    )
    result = None
    if change.update is not None:
        if verify:
            result = verify_propagation(zone_block, change.update, deadline_seconds)
        _publish(zone_block, change.update, result)
    return {
        "record": record.describe(),
        "previous_ttl": change.previous_ttl,
        "ttl": record.ttl,
        "changed": change.update is not None,
        "propagation_seconds": None if result is None else round(result.seconds, 3),
    }
