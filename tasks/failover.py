"""Failover tasks: each step of the runbook, with its retry policy and, where the step can be
undone, an ``on_rollback`` compensation.

The flow runs the steps inside one Prefect transaction holding the run's audit trail
(:data:`AUDIT`). When a later step fails, Prefect calls the completed steps' hooks in reverse
order. A hook undoes its step only while nothing has been promoted (:data:`PROMOTED` is set on
the transaction by the promote step): once a replica accepts writes, un-fencing the old primary
or pointing traffic back at it would make two primaries, so the hooks leave things as they are
and the flow reports the manual next step instead. A hook that fails records what is left to do
by hand; it never hides the original error.

Database steps retry once (a dropped connection); a step that found the node in the wrong state
does not. Load balancer changes retry on LoadBalancerError (unreachable). DNS updates are not
retried here (the server answered; a refusal does not change by asking again).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import BaseTransaction, Transaction, get_transaction

from blocks.dns import load_dns_zone as load_zone
from blocks.failover import FailoverCluster
from blocks.load_balancers import load_load_balancer
from blocks.loading import load_block
from blocks.ssh import SshHost
from siprec_backup.dns import Change, RecordSet
from siprec_backup.errors import ConfigurationError, SiprecBackupError
from siprec_backup.failover import (
    Endpoint,
    FailoverAudit,
    FailoverNode,
    NodeView,
    Position,
    ops_for,
)
from siprec_backup.failover.mysql import OPS as MYSQL
from siprec_backup.failover.plan import DnsRecord, LbServer
from siprec_backup.failover.postgres import OPS as POSTGRES
from siprec_backup.failover.redis import OPS as REDIS
from siprec_backup.remote import ServiceManager, SshClient
from siprec_backup.replication.health import one_line
from siprec_backup.traffic import DRAIN, MAINT, ServerState
from tasks.traffic import _retry_unreachable

#: Transaction keys shared by the flow and the rollback hooks.
AUDIT = "audit"
PROMOTED = "promoted"

LB_RETRY_DELAYS: list[float] = [0.5, 2.0]


def _txn() -> BaseTransaction:
    txn = get_transaction()
    if txn is None:  # only the flow's transaction gives a step its undo
        raise RuntimeError("failover steps run inside the flow's transaction")
    return txn


def _kept(txn: Transaction, what: str) -> bool:
    """Record that ``what`` is not undone because a node was promoted; True if so."""
    promoted = txn.get(PROMOTED, None)
    if promoted:
        _audit(txn).rollbacks.append(f"kept {what}: {promoted} was promoted")
    return bool(promoted)


class SharedAudit:
    """Holds the run's audit trail in the transaction. Prefect hands out deep copies of what a
    transaction stores; the rollback hooks must append to the flow's own trail."""

    def __init__(self, audit: FailoverAudit) -> None:
        self.audit = audit

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedAudit:
        return self


def _audit(txn: Transaction) -> FailoverAudit:
    shared: SharedAudit = txn.get(AUDIT)
    return shared.audit


def _undo(txn: Transaction, what: str, manual: str, action: Any) -> None:
    """Run one compensation and record it; a failure is recorded with the manual fix."""
    audit = _audit(txn)
    try:
        action()
    except Exception as exc:
        audit.rollbacks.append(f"FAILED to undo {what} ({one_line(str(exc))}): {manual}")
        get_run_logger().error("rollback of %s failed: %s", what, exc)
        return
    audit.rollbacks.append(f"undone: {what}")


# -- reading the cluster ------------------------------------------------------------------------


def _view(kind: str, node: FailoverNode, timeout: float) -> NodeView:
    try:
        return NodeView(node, ops_for(kind).inspect(node.target, timeout=timeout))
    except SiprecBackupError as exc:
        return NodeView(node, None, one_line(str(exc), 200))


@task(name="failover-inspect", cache_policy=NO_CACHE)
def inspect_nodes(kind: str, nodes: list[FailoverNode], timeout: float) -> list[NodeView]:
    """Every node's state, read concurrently; a node that does not answer is a view with its
    error, never a failure of the task."""
    with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
        return list(pool.map(lambda n: _view(kind, n, timeout), nodes))


# -- fence ------------------------------------------------------------------------------------


@task(name="failover-fence", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def fence_primary(kind: str, node: FailoverNode, timeout: float) -> dict[str, Any]:
    """Stop the old primary accepting writes; its position once fenced."""
    ops = ops_for(kind)
    ops.fence(node.target, timeout=timeout)
    state = ops.inspect(node.target, timeout=timeout)
    txn = _txn()
    txn.set("node", node)
    txn.set("kind", kind)
    txn.set("timeout", timeout)
    return {"writable": state.writable, "position": state.received.text}


@fence_primary.on_rollback
def _unfence(txn: Transaction) -> None:
    node: FailoverNode = txn.get("node")
    if _kept(txn, f"{node.name} fenced"):
        return
    ops = ops_for(txn.get("kind"))
    _undo(
        txn,
        f"fence of {node.name}",
        f"un-fence {node.name} by hand (it is read-only)",
        lambda: ops.unfence(node.target, timeout=txn.get("timeout")),
    )


# -- load balancer ------------------------------------------------------------------------------


def _state_of(status: str) -> ServerState:
    if status == MAINT:
        return ServerState.MAINT
    if status == DRAIN:
        return ServerState.DRAIN
    return ServerState.READY


@task(
    name="failover-lb",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=LB_RETRY_DELAYS,
    retry_condition_fn=_retry_unreachable,
)
def lb_set(load_balancer: str, server: LbServer, state: ServerState) -> dict[str, Any]:
    """Set one load balancer server's state; what it was before (for the rollback)."""
    lb = load_load_balancer(load_balancer)
    before = lb.server(server.backend, server.server).state
    lb.set_state(server.backend, server.server, state)
    txn = _txn()
    txn.set("load_balancer", load_balancer)
    txn.set("server", server)
    txn.set("before", before)
    return {"before": before, "after": state.value}


@lb_set.on_rollback
def _lb_back(txn: Transaction) -> None:
    server: LbServer = txn.get("server")
    before = _state_of(txn.get("before"))
    if _kept(txn, f"load balancer server {server}"):
        return
    name = txn.get("load_balancer")
    _undo(
        txn,
        f"load balancer {server} (back to {before.value})",
        f"set {server} to {before.value} on {name} by hand "
        f"(siprec-backup lb set --block {name} {server.backend} {server.server} {before.value})",
        lambda: load_load_balancer(name).set_state(server.backend, server.server, before),
    )


# -- service over SSH -------------------------------------------------------------------------


def _services(node: FailoverNode) -> tuple[SshClient, ServiceManager]:
    assert node.ssh_host is not None
    client = SshClient(load_block(SshHost, node.ssh_host).config())
    client.connect()
    return client, ServiceManager(client, sudo=node.sudo, systemctl=node.systemctl)


@task(name="failover-stop-service", cache_policy=NO_CACHE)
def stop_service(node: FailoverNode) -> dict[str, Any]:
    """Stop the old primary's service over SSH (never retried: a command ran or it did not)."""
    assert node.service is not None
    client, services = _services(node)
    with client:
        result = services.stop(node.service)
    _txn().set("node", node)
    return {"unit": node.service, "exit_status": result.exit_status}


@stop_service.on_rollback
def _start_service(txn: Transaction) -> None:
    node: FailoverNode = txn.get("node")
    if _kept(txn, f"{node.service} stopped on {node.name}"):
        return

    def start() -> None:
        client, services = _services(node)
        with client:
            services.start(node.service or "")

    _undo(txn, f"stop of {node.service}", f"start {node.service} on {node.name} by hand", start)


# -- DNS --------------------------------------------------------------------------------------


@task(name="failover-dns-prepare", cache_policy=NO_CACHE)
def dns_prepare(zone: str, records: list[DnsRecord], ttl: int) -> dict[str, Any]:
    """Lower the records' TTL before promotion: the first signed update, so a refused key is
    found while everything can still be rolled back."""
    dns = load_zone(zone)
    changed = {}
    for record in records:
        change = dns.lower_ttl(record.name, record.rtype, ttl)
        changed[record.name] = change.previous_ttl
    txn = _txn()
    txn.set("zone", zone)
    txn.set("ttls", changed)
    txn.set("records", records)
    return {"ttl": ttl, "previous": changed}


@dns_prepare.on_rollback
def _dns_ttl_back(txn: Transaction) -> None:
    zone: str = txn.get("zone")
    records: list[DnsRecord] = txn.get("records")
    ttls: dict[str, int] = txn.get("ttls")
    for record in records:
        _undo(
            txn,
            f"TTL of {record.name} (back to {ttls[record.name]} s)",
            f"siprec-backup dns ttl --block {zone} {record.name} {record.rtype} "
            f"{ttls[record.name]} --restore",
            lambda r=record: load_zone(zone).restore_ttl(r.name, r.rtype, ttls[r.name]),
        )


@task(name="failover-dns-switch", cache_policy=NO_CACHE)
def dns_switch(
    zone: str, records: list[DnsRecord], address: str, deadline_seconds: float
) -> dict[str, Any]:
    """Point the records at ``address`` (with their normal TTL) and wait until every
    authoritative nameserver answers it."""
    dns = load_zone(zone)
    t0 = time.monotonic()
    result = dns.apply([Change.replace(r.name, r.rtype, r.ttl, address) for r in records])
    propagated = dns.wait_propagated(result, deadline=deadline_seconds)
    done = {
        "zone": dns.describe(),
        "serial": result.serial,
        "serials": propagated.serials,
        "verified_seconds": round(time.monotonic() - t0, 3),
    }
    if result.change_id:  # a cloud provider's change (Route53, Cloud DNS)
        done["change"] = result.change_id
    return done


def dns_current(zone: str, records: list[str], ttl: int, address: str) -> list[DnsRecord]:
    """The records as they are now (for the plan), typed A or AAAA by the address."""
    dns = load_zone(zone)
    rtype = "AAAA" if ":" in address else "A"
    found = []
    for name in records:
        current: RecordSet = dns.lookup(name, rtype)
        found.append(DnsRecord(name, rtype, ttl, tuple(current.values)))
    return found


# -- promote, repoint, demote -------------------------------------------------------------------


@task(name="failover-promote", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def promote(kind: str, node: FailoverNode, timeout: float) -> dict[str, Any]:
    """Apply what the candidate received, then make it a writable primary. (The flow marks its
    transaction :data:`PROMOTED` before calling this: from here on nothing is rolled back.)"""
    ops = ops_for(kind)
    ops.wait_applied(node.target, timeout=timeout)
    state = ops.promote(node.target, timeout=timeout)
    return {"position": state.received.text, "writable": state.writable}


@task(name="failover-repoint", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def repoint(kind: str, node: FailoverNode, primary: Endpoint, timeout: float) -> dict[str, Any]:
    """Make a replica follow the new primary and wait until it streams from it."""
    ops = ops_for(kind)
    ops.repoint(node.target, primary, timeout=timeout)
    state = ops.wait_streaming(node.target, primary, timeout=timeout)
    return {"upstream": str(primary), "received": state.received.text}


# -- switchover ---------------------------------------------------------------------------------


@task(name="switchover-final-position", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def final_position(kind: str, node: FailoverNode, timeout: float) -> Position:
    """What the fenced old primary has written last: the candidate must apply all of it."""
    if kind == "postgres":
        return POSTGRES.final_position(node.target, timeout=timeout)
    return ops_for(kind).inspect(node.target, timeout=timeout).received


@task(name="switchover-prepare-rejoin", cache_policy=NO_CACHE)
def prepare_rejoin(old: FailoverNode, candidate: FailoverNode, timeout: float) -> dict[str, Any]:
    """PostgreSQL: give the still running old primary the conninfo it will follow the new
    primary with once restarted as a standby (copied from the candidate's own, re-aimed)."""
    conninfo = POSTGRES.conninfo_for(candidate.target, candidate.endpoint, old.name)
    POSTGRES.prepare_rejoin(old.target, conninfo, old.name, timeout=timeout)
    return {"upstream": str(candidate.endpoint), "slot": old.name}


@task(name="switchover-catch-up", cache_policy=NO_CACHE)
def catch_up(kind: str, node: FailoverNode, until: Position, timeout: float) -> dict[str, Any]:
    """Wait until the candidate has applied everything the old primary wrote (PostgreSQL: and
    its receiver has stopped, so the old primary's shutdown checkpoint has arrived)."""
    state = ops_for(kind).wait_applied(node.target, timeout=timeout, until=until)
    if kind == "postgres":
        state = POSTGRES.wait_disconnected(node.target, timeout=timeout)
    return {"applied": state.applied.text, "until": until.text}


def _run_ssh(node: FailoverNode, commands: list[str], timeout: float) -> None:
    assert node.ssh_host is not None
    with SshClient(load_block(SshHost, node.ssh_host).config()) as client:
        client.run_steps(commands, timeout=timeout)


@task(name="switchover-demote", cache_policy=NO_CACHE)
def demote(
    kind: str,
    old: FailoverNode,
    new: FailoverNode,
    cluster_block: str,
    others: list[str],
    timeout: float,
) -> dict[str, Any]:
    """Turn the old primary into a replica of the new one and wait until it streams.
    PostgreSQL: its slot on the new primary first, then restarted as a standby over SSH, then
    the slots it kept for its former standbys (``others``) dropped (they would hold WAL)."""
    if kind == "postgres":
        assert old.data_directory and old.service
        POSTGRES.ensure_slot(new.target, old.name, timeout=timeout)
        commands = POSTGRES.rejoin_commands(old.data_directory, old.service, old.systemctl)
        _run_ssh(old, commands, timeout)
        POSTGRES.wait_streaming(old.target, new.endpoint, timeout=timeout)
        POSTGRES.drop_slots(old.target, others, timeout=timeout)
    elif kind == "mysql":
        config = load_block(FailoverCluster, cluster_block)
        if not config.replication_user or not config.replication_password:
            raise ConfigurationError(
                f"failover cluster {cluster_block}: a MySQL switchover needs replication_user "
                "and replication_password"
            )
        MYSQL.demote(
            old.target,
            new.endpoint,
            timeout=timeout,
            user=config.replication_user,
            password=config.replication_password.get_secret_value(),
        )
    else:
        REDIS.demote(old.target, new.endpoint, timeout=timeout)
    state = ops_for(kind).wait_streaming(old.target, new.endpoint, timeout=timeout)
    return {"upstream": str(new.endpoint), "received": state.received.text}
