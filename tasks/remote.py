"""SSH tasks: commands and service actions on a host, their output streamed into the run log.

Remote commands are never retried: a command that changed something and then lost its
connection must not run twice. The flow passes one :class:`SshPool` to every task, so a run
reuses one connection per host.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.loading import load_block
from blocks.ssh import SshHost
from siprec_backup.remote import CommandResult, ServiceManager, SshClient, SshPool


def pooled_client(pool: SshPool, host: str) -> SshClient:
    """The pool's connected client for SSH host block `host`."""
    return pool.get(load_block(SshHost, host).config())


def _log_line(stream: str, line: str) -> None:
    logger = get_run_logger()
    if stream == "stderr":
        logger.warning("%s", line)
    else:
        logger.info("%s", line)


@task(name="ssh-run", cache_policy=NO_CACHE)
def run_commands(
    pool: SshPool, host: str, commands: list[str], timeout_seconds: float
) -> list[CommandResult]:
    """Run `commands` in order on `host`, each line of output logged as it arrives; stops at
    the first failure (CommandFailedError naming the step)."""
    client = pooled_client(pool, host)
    return client.run_steps(commands, timeout=timeout_seconds, on_line=_log_line)


@task(name="ssh-service", cache_policy=NO_CACHE)
def service_action(
    pool: SshPool, host: str, action: str, unit: str, sudo: bool, systemctl: str
) -> CommandResult | bool:
    """systemctl `action` of `unit` on `host`: is-active answers a bool, the others the result."""
    services = ServiceManager(pooled_client(pool, host), sudo=sudo, systemctl=systemctl)
    if action == "is-active":
        return services.is_active(unit)
    if action == "status":
        return services.status(unit)
    act = {"start": services.start, "stop": services.stop, "restart": services.restart}
    return act[action](unit, on_line=_log_line)
