"""``siprec-backup failover``, ``switchover`` and ``cutover``: the runbooks from the command line.

``--dry-run`` runs the flow's planning here (one flow run on the Prefect server, nothing
changed) and prints the plan. Without it, the command creates a run of the deployment, exactly
as the Prefect UI's "Custom run" does, waits for it and prints its audit report: the work
happens on the deployment's worker, under its concurrency limit, with its run history.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer

from siprec_backup.errors import ConfigurationError, FailoverError

Reason = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")]
Candidate = Annotated[
    str | None, typer.Option("--candidate", help="Node to promote (default: automatic).")
]
DryRun = Annotated[bool, typer.Option("--dry-run/--run", help="Only print the plan.")]
Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for the deployment run.")
]
Acknowledge = Annotated[
    bool,
    typer.Option(
        "--acknowledge-incomplete",
        help="Go ahead although an earlier run stopped half-way (finishes its work).",
    ),
]


def _run(mode: str, request: dict[str, Any], dry_run: bool, timeout: float) -> None:
    if dry_run:
        typer.echo(_dry_run(mode, request), nl=False)
        return
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    run = cast(
        FlowRun,
        run_deployment(f"{mode}/on-demand", parameters={"request": request}, timeout=timeout),
    )
    state = run.state
    typer.echo(f"{mode} run {run.name} ({run.id}): {state.name if state else 'unknown'}")
    report = _report(mode, request["cluster"])
    if report:
        typer.echo(report, nl=False)
    if state is None or not state.is_completed():
        message = state.message if state and state.message else "see the run in the Prefect UI"
        raise FailoverError(f"{mode} of {request['cluster']} did not complete: {message}")


def _dry_run(mode: str, request: dict[str, Any]) -> str:
    """The plan, read here without a flow run (so no run log lands on the terminal)."""
    from blocks.failover import load_failover_cluster
    from flows.failover import FailoverRequest, dry_run

    request.pop("dry_run", None)
    loaded = load_failover_cluster(request["cluster"])
    _, markdown = dry_run(loaded, FailoverRequest(**request), mode, in_flow=False)  # type: ignore[arg-type]
    return markdown


def _report(mode: str, block: str) -> str | None:
    """The markdown of the run's audit artifact (the cluster name comes from the block)."""
    from prefect.artifacts import Artifact

    from blocks.failover import load_failover_cluster
    from flows.failover import artifact_key

    artifact = Artifact.get(artifact_key(mode, load_failover_cluster(block).name))
    data = getattr(artifact, "data", None)
    if not isinstance(data, str):
        return None
    return data.split("\n```json\n", 1)[0]


def failover_command(
    cluster: Annotated[str, typer.Argument(help="The failover cluster block.")],
    reason: Reason,
    candidate: Candidate = None,
    dry_run: DryRun = True,
    max_data_loss: Annotated[
        int | None,
        typer.Option(help="Lag gate for this run (bytes; transactions for MySQL)."),
    ] = None,
    acknowledge_incomplete: Acknowledge = False,
    timeout: Timeout = 900.0,
) -> None:
    """Fail over a cluster: plan (``--dry-run``, the default) or run the deployment."""
    if max_data_loss is not None and max_data_loss < 0:
        raise ConfigurationError("--max-data-loss must be >= 0")
    request = {
        "cluster": cluster,
        "reason": reason,
        "candidate": candidate,
        "dry_run": dry_run,
        "max_data_loss": max_data_loss,
        "acknowledge_incomplete": acknowledge_incomplete,
    }
    _run("failover", request, dry_run, timeout)


def switchover_command(
    cluster: Annotated[str, typer.Argument(help="The failover cluster block.")],
    reason: Reason,
    candidate: Candidate = None,
    dry_run: DryRun = True,
    acknowledge_incomplete: Acknowledge = False,
    timeout: Timeout = 900.0,
) -> None:
    """Planned switchover with no data loss: plan (``--dry-run``) or run the deployment."""
    request = {
        "cluster": cluster,
        "reason": reason,
        "candidate": candidate,
        "dry_run": dry_run,
        "acknowledge_incomplete": acknowledge_incomplete,
    }
    _run("switchover", request, dry_run, timeout)


def _cutover_report(block: str) -> str | None:
    """The markdown of a cutover's audit artifact (named by the block's ``name``)."""
    from prefect.artifacts import Artifact

    from blocks.blue_green import load_cutover
    from flows.failover import artifact_key

    artifact = Artifact.get(artifact_key("blue-green", load_cutover(block).name))
    data = getattr(artifact, "data", None)
    if not isinstance(data, str):
        return None
    return data.split("\n```json\n", 1)[0]


def cutover_command(
    cutover: Annotated[str, typer.Argument(help="The blue-green cutover block.")],
    reason: Reason,
    target: Annotated[
        str, typer.Option("--target", help="The colour that takes the traffic: green or blue.")
    ] = "green",
    dry_run: DryRun = True,
    watch_seconds: Annotated[
        float | None,
        typer.Option("--watch-seconds", help="Watch window after the cutover (default: block's)."),
    ] = None,
    timeout: Timeout = 900.0,
) -> None:
    """Blue-green cutover: plan (``--dry-run``, the default) or run the deployment."""
    if target not in ("green", "blue"):
        raise ConfigurationError("--target must be green or blue")
    request: dict[str, Any] = {
        "cutover": cutover,
        "reason": reason,
        "target": target,
        "dry_run": dry_run,
        "watch_seconds": watch_seconds,
    }
    if dry_run:
        from flows.blue_green import CutoverRequest, blue_green

        typer.echo(blue_green(CutoverRequest(**request))["markdown"], nl=False)
        return
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    run = cast(
        FlowRun,
        run_deployment("blue-green/on-demand", parameters={"request": request}, timeout=timeout),
    )
    state = run.state
    typer.echo(f"blue-green run {run.name} ({run.id}): {state.name if state else 'unknown'}")
    report = _cutover_report(cutover)
    if report:
        typer.echo(report, nl=False)
    if state is None or not state.is_completed():
        message = state.message if state and state.message else "see the run in the Prefect UI"
        raise FailoverError(f"cutover {cutover} did not complete: {message}")
