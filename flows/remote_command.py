"""The ``remote-command`` and ``remote-service`` flows: act on a host over SSH, audited.

Output streams into the run log line by line as the host prints it. Every mutating command
(not the read-only ``status`` / ``is-active``) leaves an audit record: who (the flow run), host,
command, exit status, start and duration. The records are published as the ``ssh-audit-<host>``
table artifact and as ``siprec.ssh.command`` events (resource ``siprec.host.<host>``), also when
a command fails or times out, and counted in the lever metrics textfile
(:mod:`siprec_backup.lever_metrics`) when ``$SIPREC_METRICS_TEXTFILE_DIR`` is set.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run

from flows._logging import set_log_level
from siprec_backup.lever_metrics import record_ssh_commands
from siprec_backup.remote import AuditRecord, CommandResult, SshPool
from tasks.remote import run_commands, service_action

ServiceAction = Literal["start", "stop", "restart", "status", "is-active"]


def _actor() -> str:
    return f"prefect flow run {flow_run.get_name()} ({flow_run.get_id()})"


def _publish_audit(host: str, records: list[AuditRecord]) -> None:
    if not records:
        return
    record_ssh_commands(records)
    create_table_artifact(
        [r.to_dict() for r in records],
        key=f"ssh-audit-{host}",
        description=f"Commands run on {host}",
    )
    for record in records:
        emit_event(
            event="siprec.ssh.command",
            resource={"prefect.resource.id": f"siprec.host.{record.host}"},
            payload=record.to_dict(),
        )


def _result(result: CommandResult) -> dict[str, Any]:
    return {
        "command": result.command,
        "exit_status": result.exit_status,
        "seconds": round(result.duration, 3),
        "stdout_tail": result.stdout_tail,
        "stderr_tail": result.stderr_tail,
    }


@flow(name="remote-command")
def remote_command(
    host: str, commands: list[str], timeout_seconds: float = 300, log_level: str = "INFO"
) -> list[dict[str, Any]]:
    """Run commands in order on a host over SSH; stop at the first that fails.

    Args:
        host: Name of the SSH host block.
        commands: Shell command lines, run one after the other.
        timeout_seconds: Per command; a command running longer fails the run.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    records: list[AuditRecord] = []
    try:
        with SshPool(actor=_actor(), audit=records.append) as pool:
            results = run_commands(pool, host, commands, timeout_seconds)
    finally:
        _publish_audit(host, records)
    return [_result(r) for r in results]


@flow(name="remote-service")
def remote_service(
    host: str,
    action: ServiceAction,
    unit: str,
    sudo: bool = False,
    systemctl: str = "systemctl",
    log_level: str = "INFO",
) -> dict[str, Any]:
    """Start, stop, restart, or ask the status of a systemd unit on a host over SSH.

    Args:
        host: Name of the SSH host block.
        action: start, stop, restart, status or is-active.
        unit: The unit, e.g. postgresql@15-main.service (checked against systemd's name rules).
        sudo: Run systemctl through `sudo -n`.
        systemctl: The systemctl binary on the host.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    records: list[AuditRecord] = []
    try:
        with SshPool(actor=_actor(), audit=records.append) as pool:
            outcome = service_action(pool, host, action, unit, sudo, systemctl)
    finally:
        _publish_audit(host, records)
    if isinstance(outcome, bool):
        return {"unit": unit, "action": action, "active": outcome}
    return {"unit": unit, "action": action, **_result(outcome)}
