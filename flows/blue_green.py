"""The ``blue-green`` flow: move traffic from one set of servers (blue) to another (green), on
the load balancer and in DNS, after health checks on the new set, and roll everything back by
itself if the new set fails its checks while it is watched.

The operator triggers it from the Prefect UI ("Custom run": the :class:`CutoverRequest` form)
or with ``siprec-backup cutover``. ``dry_run`` (the default) publishes the plan and stops. A
real run, with the failover's audit trail, journal, notifications and events
(:mod:`flows.failover`):

1. plan: the load balancer state of every server of both colours and the DNS records, now and
   after;
2. lock: a global concurrency limit per cutover (``cutover-<name>``, ``name`` from the block,
   which also names the artifacts and the journal): a second cutover of the same sets is
   refused (FailoverLockedError);
3. pre-flight: the load balancer knows every server, the records exist, and every health check
   of the target colour passes; otherwise the run is refused with nothing changed;
4. in one transaction: the records' TTL lowered, the target's servers ready (and the run waits
   until they take traffic), the other colour's servers drained (for up to ``drain_seconds``)
   then put in maintenance, the records switched and verified on every nameserver, then the
   watch: the target's checks every ``check_interval_seconds`` for ``watch_seconds``;
   ``failures_to_roll_back`` consecutive failed rounds fail the run; after the watch the normal
   TTL is put back;
5. any failure rolls every completed step back in reverse order (DNS back, servers back, TTL
   back): nothing is promoted in a cutover, so every undo is safe. The artifact
   ``blue-green-<name>`` lists what was undone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.transactions import transaction
from pydantic import BaseModel, ConfigDict, Field

from blocks.alerting import load_channels
from blocks.blue_green import BlueGreenCutover, Colour, load_cutover
from flows._journal import read_journal, slug, write_journal
from flows.failover import actor, artifact_key, cluster_lock, notify, publish, run_step
from siprec_backup.alerting.channels import Channel
from siprec_backup.dns import RecordSet
from siprec_backup.errors import SafetyRefusalError, SiprecBackupError
from siprec_backup.failover import FailoverAudit
from siprec_backup.failover.audit import HALF_DONE
from siprec_backup.failover.health import HealthCheckFailedError
from siprec_backup.failover.plan import DnsRecord, LbServer
from siprec_backup.replication.health import one_line
from siprec_backup.traffic import ServerState
from tasks.blue_green import (
    check_round,
    dns_read,
    dns_restore_ttl,
    dns_switch_to,
    lb_drained,
    lb_read,
    lb_wait_serving,
)
from tasks.failover import AUDIT, SharedAudit, dns_prepare, lb_set

MODE = "blue-green"


class CutoverRequest(BaseModel):
    """What the operator asks for (the form of the Prefect UI's "Custom run")."""

    model_config = ConfigDict(extra="forbid")

    cutover: str = Field(description="The blue-green cutover block to act on.", min_length=1)
    reason: str = Field(
        description="Why (kept in the audit trail and the notifications).", min_length=3
    )
    target: Literal["green", "blue"] = Field(
        default="green", description="The colour that takes the traffic."
    )
    dry_run: bool = Field(default=True, description="Only print the plan; change nothing.")
    watch_seconds: float | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="How long the target is watched after the cutover; empty: the block's.",
    )


# -- names ----------------------------------------------------------------------------------


def lock_name(cutover: str) -> str:
    return f"cutover-{slug(cutover)}"


def plan_key(cutover: str) -> str:
    return f"{MODE}-plan-{slug(cutover)}"


def _other(colour: Colour) -> Colour:
    return "blue" if colour == "green" else "green"


# -- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerChange:
    """One load balancer server: its colour, its status now and the state it gets."""

    server: LbServer
    colour: Colour
    now: str
    after: ServerState


@dataclass(frozen=True)
class RecordChange:
    """One DNS record: what the primary serves now and the addresses it gets."""

    now: RecordSet
    after: tuple[str, ...]


@dataclass
class CutoverPlan:
    """What a cutover will do, as the dry run shows it."""

    cutover: str
    source: Colour
    target: Colour
    servers: list[ServerChange] = field(default_factory=list)
    records: list[RecordChange] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    watch_seconds: float = 0.0
    preflight: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def steps(self, config: BlueGreenCutover) -> list[str]:
        """The runbook, one line per step."""
        names = ", ".join(r.now.name for r in self.records)
        target = [str(c.server) for c in self.servers if c.colour == self.target]
        source = [str(c.server) for c in self.servers if c.colour == self.source]
        steps = [f"check {self.target}: {len(self.checks)} health check(s) must pass"]
        if self.records:
            steps.append(f"lower the TTL of {names} to {config.prepare_ttl} s")
        if self.servers:
            steps.append(f"set {', '.join(target)} ready and wait until they take traffic")
            drain = f" (up to {config.drain_seconds:g} s)" if config.drain_seconds else ""
            steps.append(f"drain {', '.join(source)}{drain}, then maint")
        if self.records:
            after = ", ".join(self.records[0].after)
            steps.append(f"point {names} at {after}, verified on every nameserver")
        if self.watch_seconds:
            steps.append(
                f"watch {self.target} for {self.watch_seconds:g} s (checks every "
                f"{config.check_interval_seconds:g} s; {config.failures_to_roll_back} failed "
                "rounds in a row roll everything back)"
            )
        if self.records:
            steps.append(f"put the TTL of {names} back to {config.dns_ttl} s")
        return steps

    def to_markdown(self, config: BlueGreenCutover) -> str:
        lines = [
            f"# Blue-green plan for `{self.cutover}`: {self.source} -> **{self.target}**",
            "",
        ]
        lines += [f"**Warning:** {w}" for w in self.warnings]
        if self.servers:
            lines += ["", "| server | colour | now | after |", "|---|---|---|---|"]
            lines += [
                f"| {c.server} | {c.colour} | {c.now} | {c.after.value} |" for c in self.servers
            ]
        if self.records:
            lines += ["", "| record | now | after |", "|---|---|---|"]
            lines += [
                f"| {r.now.name} {r.now.rtype} | {', '.join(r.now.values) or '(absent)'} "
                f"(TTL {r.now.ttl}) | {', '.join(r.after)} |"
                for r in self.records
            ]
        if self.preflight:
            lines += ["", f"## Health checks of {self.target} now", ""]
            lines += [
                f"- {c['url']}: {'ok' if c['ok'] else 'FAILED'} ({c['detail']})"
                for c in self.preflight
            ]
        lines += ["", "## Steps", ""]
        lines += [f"{i}. {s}" for i, s in enumerate(self.steps(config), 1)]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutover": self.cutover,
            "source": self.source,
            "target": self.target,
            "servers": [
                {
                    "server": str(c.server),
                    "colour": c.colour,
                    "now": c.now,
                    "after": c.after.value,
                }
                for c in self.servers
            ],
            "records": [
                {
                    "name": r.now.name,
                    "rtype": r.now.rtype,
                    "ttl": r.now.ttl,
                    "now": list(r.now.values),
                    "after": list(r.after),
                }
                for r in self.records
            ],
            "checks": self.checks,
            "watch_seconds": self.watch_seconds,
            "warnings": self.warnings,
        }


def make_plan(
    config: BlueGreenCutover, block: str, target: Colour, watch_seconds: float
) -> CutoverPlan:
    """Read the servers and the records and say what the cutover to ``target`` changes."""
    source = _other(target)
    plan = CutoverPlan(
        block,
        source,
        target,
        checks=[c.name for c in config.checks(target)],
        watch_seconds=watch_seconds,
    )
    if config.load_balancer:
        wanted = {target: ServerState.READY, source: ServerState.MAINT}
        colours: list[Colour] = [target, source]
        servers = [(s, colour) for colour in colours for s in config.servers(colour)]
        statuses = lb_read(config.load_balancer, [s for s, _ in servers])
        plan.servers = [
            ServerChange(s, colour, statuses[str(s)].status, wanted[colour])
            for s, colour in servers
        ]
    if config.dns_records and config.dns_zone:
        found = dns_read(config.dns_zone, config.dns_records, config.rtype())
        after = tuple(config.addresses(target))
        plan.records = [RecordChange(r, after) for r in found]
        absent = [r.name for r in found if not r.present]
        if absent:
            plan.warnings.append(f"records {', '.join(absent)} do not exist: create them first")
    journal = read_journal(block, MODE)
    if journal and journal.get("mode") == MODE and journal.get("outcome") in HALF_DONE:
        plan.warnings.append(
            f"the previous cutover ({journal.get('actor')}, started {journal.get('started')}) "
            f"never finished; last completed step {journal.get('last_step') or 'none'}. This "
            "plan sets every server and record explicitly, so running it repairs that."
        )
    return plan


# -- pre-flight and the watch ---------------------------------------------------------------


def _check(config: BlueGreenCutover, colour: Colour) -> list[dict[str, Any]]:
    return check_round(config.checks(colour), config.check_timeout_seconds)


def _failures(results: list[dict[str, Any]]) -> list[str]:
    return [f"{r['url']}: {r['detail']}" for r in results if not r["ok"]]


def preflight(config: BlueGreenCutover, plan: CutoverPlan, audit: FailoverAudit) -> None:
    """Refuse (SafetyRefusalError, nothing changed) unless the records exist and every check
    of the target passes."""
    absent = [r.now.name for r in plan.records if not r.now.present]
    if absent:
        raise SafetyRefusalError(
            f"pre-flight: records {', '.join(absent)} do not exist on {config.dns_zone}"
        )
    record = audit.begin("preflight-checks", plan.target, checks=plan.checks)
    results = _check(config, plan.target)
    failed = _failures(results)
    if failed:
        record.finish("failed", {"checks": results}, error="; ".join(failed))
        raise SafetyRefusalError(
            f"pre-flight: {plan.target} is not healthy, nothing changed: " + "; ".join(failed)
        )
    record.finish("done", {"checks": len(results)})


def watch(config: BlueGreenCutover, colour: Colour, seconds: float, audit: FailoverAudit) -> None:
    """Run ``colour``'s checks every interval for ``seconds``; HealthCheckFailedError after
    ``failures_to_roll_back`` failed rounds in a row. Each failed round is an audit record."""
    interval = config.check_interval_seconds
    limit = config.failures_to_roll_back
    record = audit.begin(
        "watch", colour, seconds=seconds, interval=interval, failures_to_roll_back=limit
    )
    logger = get_run_logger()
    t0 = time.monotonic()
    rounds = failed = in_a_row = 0
    while True:
        results = _check(config, colour)
        rounds += 1
        problems = _failures(results)
        if problems:
            failed += 1
            in_a_row += 1
            audit.begin("watch-round", colour, round=rounds).finish(
                "failed",
                {"round": rounds, "at_second": round(time.monotonic() - t0, 3)},
                error="; ".join(problems),
            )
            logger.warning("watch round %d: %s unhealthy: %s", rounds, colour, problems)
        else:
            in_a_row = 0
        summary = {"rounds": rounds, "failed_rounds": failed}
        if in_a_row >= limit:
            message = (
                f"{colour} failed its health checks in {in_a_row} rounds in a row during the "
                f"watch (round {rounds}, {time.monotonic() - t0:.1f} s after the cutover): "
                + "; ".join(problems)
            )
            record.finish("failed", summary, error=message)
            raise HealthCheckFailedError(message)
        next_round = t0 + rounds * interval
        if next_round - t0 > seconds:
            break
        time.sleep(max(0.0, next_round - time.monotonic()))
    record.finish("done", summary)
    write_journal(audit, wait=False)


# -- the runbook ----------------------------------------------------------------------------


def _records(config: BlueGreenCutover, plan: CutoverPlan) -> list[DnsRecord]:
    return [
        DnsRecord(r.now.name, r.now.rtype, config.dns_ttl, tuple(r.now.values))
        for r in plan.records
    ]


def _switch_servers(config: BlueGreenCutover, plan: CutoverPlan, audit: FailoverAudit) -> None:
    lb = config.load_balancer
    assert lb is not None
    target, source = config.servers(plan.target), config.servers(plan.source)
    for server in target:
        run_step(audit, "lb-ready", str(server), lambda s=server: lb_set(lb, s, ServerState.READY))
    run_step(
        audit,
        "lb-serving",
        ", ".join(map(str, target)),
        lambda: lb_wait_serving(lb, target, config.step_timeout_seconds),
    )
    for server in source:
        run_step(audit, "lb-drain", str(server), lambda s=server: lb_set(lb, s, ServerState.DRAIN))
    if config.drain_seconds:
        run_step(
            audit,
            "lb-drained",
            ", ".join(map(str, source)),
            lambda: lb_drained(lb, source, config.drain_seconds),
        )
    for server in source:
        run_step(audit, "lb-maint", str(server), lambda s=server: lb_set(lb, s, ServerState.MAINT))


def execute(
    config: BlueGreenCutover, plan: CutoverPlan, audit: FailoverAudit, watch_seconds: float
) -> None:
    """Every step of the cutover in one transaction (see the module docstring)."""
    zone = config.dns_zone
    names = ", ".join(r.now.name for r in plan.records)
    record_names = [r.now.name for r in plan.records]
    rtype = config.rtype()
    deadline = config.step_timeout_seconds
    with transaction() as txn:
        txn.set(AUDIT, SharedAudit(audit))
        if plan.records and zone:
            records = _records(config, plan)
            run_step(
                audit, "dns-prepare", names, lambda: dns_prepare(zone, records, config.prepare_ttl)
            )
        if plan.servers:
            _switch_servers(config, plan, audit)
        if plan.records and zone:
            addresses = config.addresses(plan.target)
            run_step(
                audit,
                "dns-switch",
                names,
                lambda: dns_switch_to(
                    zone, record_names, rtype, config.prepare_ttl, addresses, deadline
                ),
            )
        if watch_seconds > 0:
            watch(config, plan.target, watch_seconds, audit)
        if plan.records and zone:
            run_step(
                audit,
                "dns-ttl",
                names,
                lambda: dns_restore_ttl(zone, record_names, rtype, config.dns_ttl, deadline),
            )


def _locked_message(cutover: str) -> str:
    journal = read_journal(cutover, MODE) or {}
    return (
        f"a cutover of {cutover} is already running ({journal.get('actor') or 'another run'}, "
        f"started {journal.get('started', '?')}, last completed step: "
        f"{journal.get('last_step') or 'its start'}); this run changed nothing"
    )


def _dry_run(config: BlueGreenCutover, plan: CutoverPlan) -> dict[str, Any]:
    try:
        plan.preflight = _check(config, plan.target)
    except SiprecBackupError as exc:
        plan.warnings.append(f"health checks could not run: {exc}")
    markdown = plan.to_markdown(config)
    create_markdown_artifact(
        key=plan_key(plan.cutover),
        markdown=markdown,
        description=f"{MODE} plan (dry run) for {plan.cutover}: {plan.source} -> {plan.target}",
    )
    get_run_logger().info("dry run:\n%s", markdown)
    return {"outcome": "dry-run", "plan": plan.to_dict(), "markdown": markdown}


def _refuse(audit: FailoverAudit, channels: list[Channel], exc: Exception) -> None:
    audit.end("refused", error=str(exc))
    publish(audit)
    notify(channels, audit, "warning", f"cutover of {audit.cluster} refused: {exc}")


def _locked_run(
    config: BlueGreenCutover,
    request: CutoverRequest,
    audit: FailoverAudit,
    channels: list[Channel],
    watch_seconds: float,
) -> dict[str, Any]:
    target: Colour = request.target
    try:
        try:
            plan = make_plan(config, config.name, target, watch_seconds)
        except SiprecBackupError as exc:
            raise SafetyRefusalError(f"pre-flight: {exc}") from exc
        audit.plan = plan.to_dict()
        preflight(config, plan, audit)
    except SafetyRefusalError as exc:
        _refuse(audit, channels, exc)
        raise
    write_journal(audit)
    notify(
        channels,
        audit,
        "warning",
        f"cutover of {config.name} to {target} started ({request.reason})",
    )
    try:
        execute(config, plan, audit, watch_seconds)
    except BaseException as exc:
        failed = [r for r in audit.rollbacks if r.startswith("FAILED")]
        audit.end(
            "rolled-back",
            error=one_line(str(exc), 400),
            next_step="; ".join(failed) if failed else "",
        )
        publish(audit)
        summary = f"cutover of {config.name} to {target} failed and was rolled back to "
        summary += f"{plan.source}: {audit.error}"
        if failed:
            summary += f" (NOT undone: {audit.next_step})"
        notify(channels, audit, "critical", summary)
        raise
    audit.end("completed")
    publish(audit)
    notify(
        channels,
        audit,
        "info",
        f"cutover of {config.name} completed: {target} is live ({audit.seconds} s)",
    )
    return {"outcome": audit.outcome, "target": target, "audit": audit.to_dict()}


@flow(name="blue-green", log_prints=False)
def blue_green(request: CutoverRequest) -> dict[str, Any]:
    """Cut traffic over from one colour to the other (load balancer and DNS), after health
    checks, rolled back by itself if the new colour fails them during the watch."""
    config = load_cutover(request.cutover)
    watch_seconds = config.watch_seconds if request.watch_seconds is None else request.watch_seconds
    if request.dry_run:
        plan = make_plan(config, config.name, request.target, watch_seconds)
        return _dry_run(config, plan)
    who, run_id = actor()
    audit = FailoverAudit(config.name, MODE, who, request.reason, run_id=run_id)
    channels = load_channels(config.notify)
    with cluster_lock(lock_name(config.name), lambda: _locked_message(config.name)):
        return _locked_run(config, request, audit, channels, watch_seconds)


__all__ = ["CutoverRequest", "artifact_key", "blue_green", "lock_name", "plan_key"]
