"""DNS tasks: plan, apply, verify propagation, set a TTL.

Updates are not retried: a ``create`` that reached the server but whose answer was lost would
fail its own prerequisite on a retry. Verification polls every nameserver itself until its
deadline.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.dns import load_dns_zone as load_zone
from siprec_backup.dns import Change, PropagationResult, TtlChange, UpdateResult


@task(name="dns-plan", cache_policy=NO_CACHE)
def plan_dns_changes(block: str, changes: list[Change]) -> list[str]:
    """One line per change, against what the primary serves now; sends nothing."""
    return load_zone(block).plan(changes)


@task(name="dns-apply", cache_policy=NO_CACHE)
def apply_dns_changes(block: str, changes: list[Change]) -> UpdateResult:
    """Send the changes (one atomic update where the provider allows); the serial after it."""
    return load_zone(block).apply(changes)


@task(name="dns-set-ttl", cache_policy=NO_CACHE)
def set_dns_ttl(block: str, name: str, rtype: str, ttl: int, restore: bool) -> TtlChange:
    """Lower a record set's TTL ahead of a cutover (or, with `restore`, set it back)."""
    zone = load_zone(block)
    if restore:
        return zone.restore_ttl(name, rtype, ttl)
    return zone.lower_ttl(name, rtype, ttl)


@task(name="dns-verify", cache_policy=NO_CACHE)
def verify_propagation(
    block: str, update: UpdateResult, deadline_seconds: float
) -> PropagationResult:
    """Wait until every authoritative nameserver serves `update`; PropagationError naming the
    ones that still disagree at the deadline."""
    return load_zone(block).wait_propagated(update, deadline=deadline_seconds)
