"""The ``failover`` flow: promote a replica when the primary has failed or must be abandoned, and
move the load balancer and DNS with it, in one audited, reversible run.

The operator triggers it from the Prefect UI ("Custom run": the :class:`FailoverRequest` form)
or with ``siprec-backup failover``. ``dry_run`` (the default) prints the plan and stops. A real
run:

1. plan: every node read; the old primary, the candidate (most advanced healthy replica, then
   priority), the replicas to repoint, the load balancer and DNS changes, the data loss;
2. lock: a global concurrency limit per cluster (``failover-<cluster>``): a second failover or
   switchover of the same cluster is refused (within 10 s), naming the run that holds it;
3. an earlier run that stopped half-way (its journal, a Prefect variable, says so) is reported
   and the run refuses until the operator acknowledges it;
4. pre-flight: the load balancer servers and DNS records are read; a data loss beyond the gate
   pauses the run for an operator's approval (a form showing the measured loss);
5. in one transaction: fence the old primary (read-only), its load balancer server to maint,
   optionally its service stopped over SSH, DNS TTLs lowered (the first signed update), promote,
   the new primary's server ready (traffic moves first), the other replicas repointed, DNS
   switched and verified on every authoritative nameserver;
6. the new roles are written into the replication cluster block (monitoring follows), the audit
   trail is published (artifact ``failover-<cluster>``), events are emitted and the alert
   channels told at start, at each outcome and at the end.

A failure before promotion rolls back every completed step in reverse order. After promotion
nothing is undone (un-fencing the old primary would make two primaries): the run fails as
``stopped-after-promotion`` with the exact manual next step in the artifact and the journal.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.transactions import transaction
from pydantic import BaseModel, ConfigDict, Field

from blocks.alerting import load_channels
from blocks.failover import LoadedCluster, load_failover_cluster
from blocks.load_balancers import load_load_balancer
from blocks.loading import load_block
from blocks.replication import ReplicationCluster
from flows._journal import read_journal, slug, write_journal
from siprec_backup.alerting.channels import AlertDeliveryError, Channel, deliver
from siprec_backup.errors import (
    ConfigurationError,
    FailoverError,
    FailoverLockedError,
    IncompleteFailoverError,
    SafetyRefusalError,
    SiprecBackupError,
)
from siprec_backup.failover import FailoverAudit, FailoverPlan, make_plan
from siprec_backup.failover.audit import HALF_DONE
from siprec_backup.failover.plan import DnsRecord, Mode
from siprec_backup.replication.health import one_line
from siprec_backup.traffic import ServerState
from tasks.failover import (
    AUDIT,
    PROMOTED,
    SharedAudit,
    catch_up,
    demote,
    dns_current,
    dns_prepare,
    dns_switch,
    fence_primary,
    final_position,
    inspect_nodes,
    lb_set,
    prepare_rejoin,
    promote,
    repoint,
    stop_service,
)

MAINT, READY = ServerState.MAINT, ServerState.READY

#: A crashed run's lock is freed when its lease expires (Prefect's minimum is 60 s).
LOCK_LEASE_SECONDS = 60.0
#: How long a run waits for the lock before refusing (a busy server can take seconds to grant
#: even a free slot: 2 s gave false refusals under load).
LOCK_WAIT_SECONDS = 10.0


class FailoverRequest(BaseModel):
    """What the operator asks for (the form of the Prefect UI's "Custom run")."""

    model_config = ConfigDict(extra="forbid")

    cluster: str = Field(description="The failover cluster block to act on.", min_length=1)
    reason: str = Field(
        description="Why (kept in the audit trail and the notifications).", min_length=3
    )
    candidate: str | None = Field(
        default=None, description="Node to promote; empty: the most advanced healthy replica."
    )
    dry_run: bool = Field(default=True, description="Only print the plan; change nothing.")
    max_data_loss: int | None = Field(
        default=None,
        ge=0,
        description="Lag gate for this run (bytes for postgres/redis, transactions for mysql); "
        "empty: the cluster block's. Beyond it the run waits for an operator's approval.",
    )
    acknowledge_incomplete: bool = Field(
        default=False,
        description="Proceed although an earlier run of this cluster stopped half-way (after "
        "reading its report).",
    )


class DataLossApproval(RunInput):
    """The form an operator fills in to let a failover lose data beyond the gate."""

    approve: bool = Field(description="Promote despite the data loss shown above.")
    operator: str = Field(description="Who decides (kept in the audit trail).", min_length=1)
    comment: str = Field(default="", description="Why.")


# -- names and the lock ---------------------------------------------------------------------


def artifact_key(mode: str, cluster: str) -> str:
    """The key of a run's audit artifact (its history is the cluster's failover history)."""
    return f"{mode}-{slug(cluster)}"


def lock_name(cluster: str) -> str:
    return f"failover-{slug(cluster)}"


def ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


@contextlib.contextmanager
def cluster_lock(name: str, holder: Callable[[], str]) -> Iterator[None]:
    """Hold global concurrency limit ``name`` (created with one slot if missing) for the
    block's duration; FailoverLockedError with ``holder()``'s message if another run holds it.
    Only taking the lock is guarded: a timeout inside the block is not "locked"."""
    ensure_limit(name)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=LOCK_WAIT_SECONDS,
                    lease_duration=LOCK_LEASE_SECONDS,
                    strict=True,
                    raise_on_lease_renewal_failure=False,
                )
            )
        except TimeoutError:
            with get_client(sync_client=True) as client:
                held = client.read_global_concurrency_limit_by_name(name).active_slots
            if not held:
                raise FailoverError(
                    f"could not take the lock {name} within {LOCK_WAIT_SECONDS:.0f} s although "
                    "no run holds it (the Prefect server is slow); nothing was changed: run again"
                ) from None
            raise FailoverLockedError(holder()) from None
        yield


def _locked_message(cluster: str) -> str:
    journal = read_journal(cluster) or {}
    holder = journal.get("actor") or "another run"
    step = journal.get("last_step") or "its start"
    return (
        f"a failover or switchover of cluster {cluster} is already running ({holder}, "
        f"started {journal.get('started', '?')}, last completed step: {step}); this run "
        "changed nothing"
    )


def check_journal(cluster: str, acknowledged: bool) -> dict[str, Any] | None:
    """The previous run's journal; IncompleteFailoverError if it stopped half-way and the
    operator has not acknowledged it."""
    journal = read_journal(cluster)
    if not journal or journal.get("outcome") not in HALF_DONE or acknowledged:
        return journal
    state = (
        "never finished (its process died: the lock it held has expired)"
        if journal.get("outcome") == "running"
        else "stopped after promotion"
    )
    detail = (
        f"the previous {journal.get('mode', 'failover')} of {cluster} ({journal.get('actor')}, "
        f"started {journal.get('started')}) {state}; last completed step: "
        f"{journal.get('last_step') or 'none'}; promoted: {journal.get('promoted') or 'nothing'}"
    )
    if journal.get("next_step"):
        detail += f"; its manual next step: {journal['next_step']}"
    raise IncompleteFailoverError(
        f"{detail}. Check the cluster (siprec-backup failover --dry-run shows it), then run "
        "again with acknowledge_incomplete: the run finishes that one's work"
    )


# -- reporting ----------------------------------------------------------------------------------


def actor() -> tuple[str, str]:
    ctx = get_run_context()
    run = getattr(ctx, "flow_run", None)
    if run is None:
        return "prefect flow run", ""
    return f"prefect flow run {run.name} ({run.id})", str(run.id)


def notify(
    channels: list[Channel],
    audit: FailoverAudit,
    severity: str,
    summary: str,
    state: str | None = None,
) -> None:
    """Tell every channel of a state change (default: the run's outcome so far); a channel
    that fails is logged, never fatal."""
    if not channels:
        return
    alert = {
        "event": f"{audit.mode}.{state or audit.outcome}",
        "resource": f"{audit.mode}/{audit.cluster}",
        "severity": severity,
        "summary": summary,
        "fields": {"run": audit.actor, "reason": audit.reason, "promoted": audit.promoted},
        "resolved": False,
    }
    try:
        deliver([alert], channels)
    except AlertDeliveryError as exc:
        get_run_logger().warning("notification failed: %s", exc)


def publish(audit: FailoverAudit) -> None:
    """The audit trail as an artifact, an event and the journal."""
    create_markdown_artifact(
        key=artifact_key(audit.mode, audit.cluster),
        markdown=audit.to_markdown() + "\n```json\n" + _json(audit.to_dict()) + "\n```\n",
        description=f"{audit.mode} of {audit.cluster}: {audit.outcome}",
    )
    emit_event(
        event=f"siprec.{audit.mode}.{audit.outcome}",
        resource={"prefect.resource.id": f"siprec.cluster.{audit.cluster}"},
        payload={
            "promoted": audit.promoted,
            "seconds": audit.seconds,
            "error": audit.error,
            "next_step": audit.next_step,
        },
    )
    write_journal(audit)


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=str)


def next_step_after(plan: FailoverPlan, audit: FailoverAudit) -> str:
    """What the operator must still do by hand once a run stopped after promotion."""
    done = {(s.key, s.target) for s in audit.steps if s.status == "done"}
    remaining = [
        s.action
        for s in plan.steps
        if s.key not in ("unfenced", "record") and (s.key, s.target) not in done
    ]
    todo = "; ".join(remaining) or "nothing"
    return (
        f"{plan.candidate.name} is the primary now and accepts writes; do NOT un-fence "
        f"{plan.old_primary.name if plan.old_primary else 'the old primary'}. Remaining steps: "
        f"{todo}. Fix what failed, then run the {plan.mode} again with acknowledge_incomplete: "
        "it finishes these steps (or do them by hand)."
    )


# -- the runbook --------------------------------------------------------------------------------


def run_step(audit: FailoverAudit, key: str, target: str, call: Any, **inputs: Any) -> Any:
    """Run one task with its audit record and the journal kept current."""
    record = audit.begin(key, target, **inputs)
    try:
        result = call()
    except BaseException as exc:
        record.finish("failed", error=one_line(str(exc), 400))
        raise
    record.finish("done", result if isinstance(result, dict) else {})
    write_journal(audit, wait=False)
    return result


def plan_for(
    loaded: LoadedCluster,
    request: FailoverRequest,
    mode: Mode,
    journal: dict[str, Any] | None = None,
    *,
    in_flow: bool = True,
) -> FailoverPlan:
    """Read every node (and the DNS records) and make the plan; with the ``journal`` of an
    acknowledged half-done run that promoted a node, the plan finishes that run instead.
    ``in_flow=False`` (the CLI's dry run) reads the nodes without a Prefect task run."""
    resume = None
    if journal and journal.get("outcome") in HALF_DONE and journal.get("promoted"):
        resume = (str(journal["promoted"]), journal.get("old_primary"))
    config = loaded.config
    inspect = inspect_nodes if in_flow else inspect_nodes.fn
    views = inspect(loaded.kind, loaded.nodes, config.step_timeout_seconds)
    dns: list[DnsRecord] = []
    if config.dns_zone and config.dns_records:
        address = loaded.nodes[0].address
        dns = dns_current(config.dns_zone, config.dns_records, config.dns_ttl, address)
    return make_plan(
        cluster=loaded.name,
        kind=loaded.kind,
        mode=mode,
        views=views,
        configured_primary=loaded.configured_primary,
        requested=request.candidate or None,
        max_loss=loaded.max_loss if request.max_data_loss is None else request.max_data_loss,
        dns=dns,
        load_balancer=config.load_balancer,
        stop_service=config.stop_service_on_fence,
        prepare_ttl=config.prepare_ttl,
        resume=resume,
    )


def dry_run(
    loaded: LoadedCluster, request: FailoverRequest, mode: Mode, *, in_flow: bool = True
) -> tuple[FailoverPlan, str]:
    """The plan and its report, with a warning when the previous run stopped half-way."""
    journal = read_journal(loaded.name)
    resume = journal if request.acknowledge_incomplete else None
    plan = plan_for(loaded, request, mode, resume, in_flow=in_flow)
    markdown = plan.to_markdown()
    if journal and journal.get("outcome") in HALF_DONE:
        markdown += (
            f"\n**Warning:** the previous {journal.get('mode')} ({journal.get('actor')}) "
            f"did not finish: last step {journal.get('last_step')}, promoted "
            f"{journal.get('promoted') or 'nothing'}. A run needs acknowledge_incomplete "
            "(with it, this plan finishes that run).\n"
        )
    return plan, markdown


def _check_rejoin(loaded: LoadedCluster, plan: FailoverPlan) -> None:
    """What turning the old primary into a replica (switchover) needs."""
    old = plan.old_primary
    if plan.mode != "switchover" or old is None:
        return
    if loaded.kind == "postgres" and not (old.ssh_host and old.service and old.data_directory):
        raise SafetyRefusalError(
            f"a PostgreSQL switchover restarts {old.name} as a standby over SSH: set its "
            "ssh_host, service and data_directory in the failover cluster block"
        )
    if loaded.kind == "mysql" and not (
        loaded.config.replication_user and loaded.config.replication_password
    ):
        raise SafetyRefusalError(
            "a MySQL switchover makes the old primary a replica: set replication_user and "
            "replication_password in the failover cluster block"
        )


def preflight(loaded: LoadedCluster, plan: FailoverPlan) -> None:
    """A switchover can rejoin the old primary; the load balancer answers and knows the servers
    the run will change."""
    _check_rejoin(loaded, plan)
    name = loaded.config.load_balancer
    if not name:
        return
    lb = load_load_balancer(name)
    for node in (plan.old_primary, plan.candidate):
        if node is not None and node.lb_server is not None:
            try:
                lb.server(node.lb_server.backend, node.lb_server.server)
            except SiprecBackupError as exc:
                raise SafetyRefusalError(f"pre-flight: load balancer {name}: {exc}") from exc


def approve_loss(
    plan: FailoverPlan, audit: FailoverAudit, timeout_minutes: float, channels: list[Channel]
) -> None:
    """Pause for an operator when the loss exceeds the gate; SafetyRefusalError on a refusal."""
    description = (
        f"## Failover of `{plan.cluster}` would lose data\n\n"
        f"Promoting **{plan.candidate.name}** loses **{plan.loss.describe()}**; the gate is "
        f"{plan.max_loss} {plan.loss.unit}.\n\nApprove to promote anyway, or reject to stop "
        "(nothing has been changed)."
    )
    get_run_logger().warning(
        "data loss %s beyond the gate %s: waiting for an operator",
        plan.loss.describe(),
        plan.max_loss,
    )
    notify(
        channels,
        audit,
        "critical",
        f"{plan.mode} of {plan.cluster} waits for an operator: promoting {plan.candidate.name} "
        f"would lose {plan.loss.describe()} (gate {plan.max_loss}); approve or reject in the "
        "Prefect UI",
        state="awaiting-approval",
    )
    answer = pause_flow_run(
        wait_for_input=DataLossApproval.with_initial_data(description=description, approve=False),
        timeout=int(timeout_minutes * 60),
    )
    audit.approval = {
        "approve": answer.approve,
        "operator": answer.operator,
        "comment": answer.comment,
    }
    if not answer.approve:
        raise SafetyRefusalError(
            f"operator {answer.operator} rejected a data loss of {plan.loss.describe()}"
        )


def execute(loaded: LoadedCluster, plan: FailoverPlan, audit: FailoverAudit) -> None:
    """Every step of the plan in one transaction, in the order of :func:`runbook`."""
    config = loaded.config
    timeout = config.step_timeout_seconds
    kind = loaded.kind
    old, new = plan.old_primary, plan.candidate
    switchover = plan.mode == "switchover"
    names = ", ".join(r.name for r in plan.dns)
    zone, records = config.dns_zone, list(plan.dns)
    lb = config.load_balancer

    def lower_ttls() -> None:
        if records and zone:
            run_step(
                audit, "dns-prepare", names, lambda: dns_prepare(zone, records, config.prepare_ttl)
            )

    with transaction() as txn:
        txn.set(AUDIT, SharedAudit(audit))
        if switchover:
            lower_ttls()
        until = None
        if old is not None:
            if plan.old_primary_reachable:
                run_step(audit, "fence", old.name, lambda: fence_primary(kind, old, timeout))
            if lb and old.lb_server:
                server = old.lb_server
                run_step(audit, "lb-fence", str(server), lambda: lb_set(lb, server, MAINT))
            if switchover and kind == "postgres":
                run_step(
                    audit, "prepare-rejoin", old.name, lambda: prepare_rejoin(old, new, timeout)
                )
            if switchover:
                until = final_position(kind, old, timeout)
            clean_stop = switchover and kind == "postgres"  # sends the last WAL to the standbys
            if (config.stop_service_on_fence or clean_stop) and old.service and old.ssh_host:
                run_step(audit, "stop-service", old.name, lambda: stop_service(old))
        if not switchover:
            lower_ttls()
        if until is not None:
            position = until
            run_step(
                audit,
                "catch-up",
                new.name,
                lambda: catch_up(kind, new, position, timeout),
                until=position.text,
            )
        # Marked before promoting: a promotion that fails half-way is not undone either.
        txn.set(PROMOTED, new.name)
        audit.promoted = new.name
        if not plan.resumed:
            result = run_step(audit, "promote", new.name, lambda: promote(kind, new, timeout))
            get_run_logger().info("promoted %s at %s", new.name, result.get("position"))
        if lb and new.lb_server:
            server = new.lb_server
            run_step(audit, "lb-switch", str(server), lambda: lb_set(lb, server, READY))
        for node in plan.repoint:
            run_step(
                audit,
                "repoint",
                node.name,
                lambda n=node: repoint(kind, n, new.endpoint, timeout),
            )
        if records and zone:
            run_step(
                audit,
                "dns-switch",
                names,
                lambda: dns_switch(zone, records, new.address, config.dns_verify_seconds),
            )
        if switchover and old is not None and not plan.resumed:
            others = [n.name for n in loaded.nodes if n.name != old.name]
            run_step(
                audit,
                "demote",
                old.name,
                lambda: demote(kind, old, new, loaded.block, others, timeout),
            )


def record_roles(loaded: LoadedCluster, primary: str) -> None:
    """Write the new roles into the replication cluster block, so monitoring follows."""
    block = loaded.config.replication
    cluster = load_block(ReplicationCluster, block)
    for node in cluster.nodes:
        node.role = "primary" if node.name == primary else "replica"
    cluster.save(block, overwrite=True)


def run_runbook(request: FailoverRequest, mode: Mode) -> dict[str, Any]:
    """Plan, lock, check, approve, execute and report: what failover and switchover share."""
    logger = get_run_logger()
    loaded = load_failover_cluster(request.cluster)
    who, run_id = actor()
    audit = FailoverAudit(loaded.name, mode, who, request.reason, run_id=run_id)
    channels = load_channels(loaded.config.notify)
    if request.dry_run:
        plan, markdown = dry_run(loaded, request, mode)
        create_markdown_artifact(
            key=f"{mode}-plan-{slug(loaded.name)}",
            markdown=markdown,
            description=f"{mode} plan (dry run) for {loaded.name}",
        )
        logger.info("dry run:\n%s", markdown)
        return {"outcome": "dry-run", "plan": plan.to_dict(), "markdown": markdown}

    with cluster_lock(lock_name(loaded.name), lambda: _locked_message(loaded.name)):
        return _locked_run(request, mode, loaded, audit, channels)


def _locked_run(
    request: FailoverRequest,
    mode: Mode,
    loaded: LoadedCluster,
    audit: FailoverAudit,
    channels: list[Channel],
) -> dict[str, Any]:
    journal = check_journal(loaded.name, request.acknowledge_incomplete)
    try:
        plan = plan_for(loaded, request, mode, journal)
        audit.plan = plan.to_dict()
        preflight(loaded, plan)
        if plan.loss_exceeds_gate:
            approve_loss(plan, audit, loaded.config.approval_timeout_minutes, channels)
    except SafetyRefusalError as exc:
        audit.end("refused", error=str(exc))
        publish(audit)
        notify(channels, audit, "warning", f"{mode} of {loaded.name} refused: {exc}")
        raise
    write_journal(audit)
    notify(
        channels,
        audit,
        "critical",
        f"{mode} of {loaded.name} started: promoting {plan.candidate.name} ({request.reason})",
    )
    try:
        execute(loaded, plan, audit)
    except BaseException as exc:
        if audit.step("promote") is not None or plan.resumed:
            audit.promoted = plan.candidate.name
            audit.end(
                "stopped-after-promotion",
                error=one_line(str(exc), 400),
                next_step=next_step_after(plan, audit),
            )
            summary = f"{mode} of {loaded.name} STOPPED after promotion: {audit.next_step}"
        else:
            audit.end("rolled-back", error=one_line(str(exc), 400))
            summary = f"{mode} of {loaded.name} failed and was rolled back: {audit.error}"
        publish(audit)
        notify(channels, audit, "critical", summary)
        raise
    record_roles(loaded, plan.candidate.name)
    audit.end("completed")
    publish(audit)
    notify(
        channels,
        audit,
        "info",
        f"{mode} of {loaded.name} completed: {plan.candidate.name} is the primary "
        f"({audit.seconds} s)",
    )
    return {"outcome": audit.outcome, "promoted": audit.promoted, "audit": audit.to_dict()}


@flow(name="failover", log_prints=False)
def failover(request: FailoverRequest) -> dict[str, Any]:
    """Promote the best replica of a cluster and move its load balancer and DNS with it."""
    if not request.cluster:
        raise ConfigurationError("name the failover cluster block")
    return run_runbook(request, "failover")
