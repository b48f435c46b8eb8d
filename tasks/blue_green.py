"""Blue-green cutover tasks besides the failover's own (``lb_set``, ``dns_prepare``, reused from
:mod:`tasks.failover` with their rollbacks): read the servers and records for the plan, wait
until the new colour's servers take traffic, let the old colour drain, switch the records to a
colour's addresses (undone by putting the previous record sets back), put the normal TTL back
once the watch has passed, and run one round of health checks.

Every rollback of a cutover is safe (nothing is promoted), so the hooks always undo; a hook
that fails records the manual fix in the audit trail (``tasks.failover._undo``).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction

from blocks.dns import load_dns_zone as load_zone
from blocks.load_balancers import load_load_balancer
from siprec_backup.dns import Change, RecordSet
from siprec_backup.errors import DrainTimeoutError, LoadBalancerError
from siprec_backup.failover.health import HealthCheck, run_checks
from siprec_backup.failover.plan import LbServer
from siprec_backup.traffic import UP, UP_TRANSITIONAL, ServerStatus
from tasks.failover import _txn, _undo

#: States in which a server takes new connections.
SERVING = (UP, UP_TRANSITIONAL)


# -- reading (plan, pre-flight) --------------------------------------------------------------


@task(name="blue-green-lb-read", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def lb_read(load_balancer: str, servers: list[LbServer]) -> dict[str, ServerStatus]:
    """The status of each server (LoadBalancerError naming an unknown backend or server)."""
    lb = load_load_balancer(load_balancer)
    found = {(s.backend, s.server): s for s in lb.servers()}
    statuses = {}
    for server in servers:
        status = found.get((server.backend, server.server))
        if status is None:  # the lever's own message names what it knows
            status = lb.server(server.backend, server.server)
        statuses[str(server)] = status
    return statuses


def dns_read(zone: str, names: list[str], rtype: str) -> list[RecordSet]:
    """The record sets as the zone's primary serves them now."""
    dns = load_zone(zone)
    return [dns.lookup(name, rtype) for name in names]


# -- load balancer ----------------------------------------------------------------------------


@task(name="blue-green-lb-serving", cache_policy=NO_CACHE)
def lb_wait_serving(
    load_balancer: str, servers: list[LbServer], deadline_seconds: float
) -> dict[str, Any]:
    """Wait until every server takes traffic (its health checks passed since it was set
    ready); LoadBalancerError naming those that do not by the deadline."""
    lb = load_load_balancer(load_balancer)
    t0 = time.monotonic()
    while True:
        statuses = lb_read.fn(load_balancer, servers)
        waiting = {name: s.status for name, s in statuses.items() if s.state not in SERVING}
        if not waiting:
            return {"seconds": round(time.monotonic() - t0, 3)}
        if time.monotonic() - t0 >= deadline_seconds:
            listed = ", ".join(f"{name} is {status!r}" for name, status in waiting.items())
            raise LoadBalancerError(
                f"{lb.describe()}: not taking traffic after {deadline_seconds:g} s: {listed}"
            )
        time.sleep(0.2)


@task(name="blue-green-lb-drained", cache_policy=NO_CACHE)
def lb_drained(load_balancer: str, servers: list[LbServer], seconds: float) -> dict[str, Any]:
    """Give draining servers up to ``seconds`` to end their sessions; sessions still open then
    are reported, not an error (the servers go to maintenance anyway)."""
    lb = load_load_balancer(load_balancer)
    deadline = time.monotonic() + seconds
    left = {}
    for server in servers:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            lb.wait_drained(server.backend, server.server, deadline_s=remaining)
        except DrainTimeoutError:
            left[str(server)] = lb.server(server.backend, server.server).current_sessions
    return {"sessions_left": left}


# -- DNS --------------------------------------------------------------------------------------


def _replace_all(records: list[RecordSet]) -> list[Change]:
    changes = []
    for record in records:
        if record.present:
            changes.append(Change.replace(record.name, record.rtype, record.ttl, *record.values))
        else:
            changes.append(Change.delete(record.name, record.rtype))
    return changes


def _apply_verified(zone: str, changes: list[Change], deadline_seconds: float) -> dict[str, Any]:
    dns = load_zone(zone)
    t0 = time.monotonic()
    result = dns.apply(changes)
    propagated = dns.wait_propagated(result, deadline=deadline_seconds)
    return {
        "serial": result.serial,
        "serials": propagated.serials,
        "verified_seconds": round(time.monotonic() - t0, 3),
    }


@task(name="blue-green-dns-switch", cache_policy=NO_CACHE)
def dns_switch_to(
    zone: str,
    names: list[str],
    rtype: str,
    ttl: int,
    addresses: list[str],
    deadline_seconds: float,
) -> dict[str, Any]:
    """Point the records at ``addresses`` (TTL ``ttl``) in one update and wait until every
    authoritative nameserver serves them. Its rollback puts the previous record sets back."""
    previous = dns_read(zone, names, rtype)
    txn = _txn()
    txn.set("zone", zone)
    txn.set("previous", previous)
    txn.set("deadline", deadline_seconds)
    changes = [Change.replace(name, rtype, ttl, *addresses) for name in names]
    result = _apply_verified(zone, changes, deadline_seconds)
    result["previous"] = {r.name: list(r.values) for r in previous}
    return result


@dns_switch_to.on_rollback
def _dns_back(txn: Transaction) -> None:
    zone: str = txn.get("zone")
    previous: list[RecordSet] = txn.get("previous")
    described = "; ".join(r.describe() for r in previous)
    _undo(
        txn,
        f"DNS switch (back to {described})",
        f"put the records back by hand on zone block {zone}: {described} "
        f"(siprec-backup dns change --block {zone} ...)",
        lambda: _apply_verified(zone, _replace_all(previous), txn.get("deadline")),
    )


@task(name="blue-green-dns-ttl", cache_policy=NO_CACHE)
def dns_restore_ttl(
    zone: str, names: list[str], rtype: str, ttl: int, deadline_seconds: float
) -> dict[str, Any]:
    """Set the records' TTL to ``ttl`` (keeping their values) and verify it everywhere."""
    dns = load_zone(zone)
    changed = {}
    for name in names:
        change = dns.restore_ttl(name, rtype, ttl)
        changed[name] = change.previous_ttl
        if change.update is not None:
            dns.wait_propagated(change.update, deadline=deadline_seconds)
    return {"ttl": ttl, "previous": changed}


# -- health -----------------------------------------------------------------------------------


@task(name="blue-green-checks", cache_policy=NO_CACHE)
def check_round(checks: list[HealthCheck], timeout: float) -> list[dict[str, Any]]:
    """One round of health checks, run concurrently; one result per check (never raises for
    an unhealthy server)."""
    return [r.to_dict() for r in run_checks(checks, timeout)]
