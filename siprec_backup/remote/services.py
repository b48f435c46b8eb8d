"""systemd services on a remote host: start, stop, restart, status and is-active via systemctl.

Unit names come from blocks and flow parameters, so they are validated against systemd's unit
name rules before they get anywhere near a shell, and every word of the command is quoted
anyway; a name such as ``x; touch /tmp/pwned`` is a ConfigurationError, never a command.
"""

from __future__ import annotations

import re
from typing import Literal

from siprec_backup.errors import ConfigurationError
from siprec_backup.remote.output import LineCallback
from siprec_backup.remote.ssh import CommandResult, SshClient, failed_error

Action = Literal["start", "stop", "restart", "status", "is-active"]
ACTIONS: tuple[Action, ...] = ("start", "stop", "restart", "status", "is-active")
#: Actions that change nothing and are therefore not audited.
READ_ONLY: frozenset[str] = frozenset({"status", "is-active"})

#: systemd unit names: ASCII letters, digits and ``:_.\-``, an optional ``@instance`` part;
#: they must not start with ``-`` (an option) or ``.``; at most 255 characters.
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_\\][A-Za-z0-9:_.\\-]*(@[A-Za-z0-9:_.\\-]*)?")
MAX_UNIT_NAME = 255
#: The systemctl program: an absolute path or a plain command name, nothing a shell interprets.
_PROGRAM = re.compile(r"/?[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*")
#: systemctl's exit status for "unit not active" (is-active, status).
NOT_ACTIVE_STATUS = 3


def validate_unit(unit: str) -> str:
    """``unit`` if it is a valid systemd unit name, else ConfigurationError naming it."""
    if (
        not isinstance(unit, str)
        or len(unit) > MAX_UNIT_NAME
        or _UNIT_NAME.fullmatch(unit) is None
        or ".." in unit
    ):
        raise ConfigurationError(
            f"invalid systemd unit name {unit!r}: use letters, digits and ':_.-\\' "
            "(plus one '@instance'), not starting with '-' or '.'"
        )
    return unit


def systemctl_argv(
    action: str, unit: str, *, sudo: bool = False, systemctl: str = "systemctl"
) -> list[str]:
    """The argument vector for ``systemctl <action> -- <unit>`` (``sudo -n`` first if asked)."""
    if action not in ACTIONS:
        raise ConfigurationError(f"unknown systemctl action {action!r}: use {', '.join(ACTIONS)}")
    if _PROGRAM.fullmatch(systemctl) is None or ".." in systemctl.split("/"):
        raise ConfigurationError(f"invalid systemctl program {systemctl!r}")
    prefix = ["sudo", "-n"] if sudo else []
    return [*prefix, systemctl, action, "--no-pager", "--", validate_unit(unit)]


class ServiceManager:
    """systemctl on one host. ``systemctl`` is the program (tests point it at the lab's
    stand-in); ``sudo`` runs it through ``sudo -n`` (never prompting for a password)."""

    def __init__(
        self,
        client: SshClient,
        *,
        sudo: bool = False,
        systemctl: str = "systemctl",
        timeout: float = 90.0,
    ) -> None:
        systemctl_argv("status", "probe.service", sudo=sudo, systemctl=systemctl)  # validate
        self.client = client
        self.sudo = sudo
        self.systemctl = systemctl
        self.timeout = timeout

    def start(self, unit: str, *, on_line: LineCallback | None = None) -> CommandResult:
        """Start ``unit``; CommandFailedError if systemctl fails (audited)."""
        return self._run("start", unit, on_line=on_line)

    def stop(self, unit: str, *, on_line: LineCallback | None = None) -> CommandResult:
        """Stop ``unit``; CommandFailedError if systemctl fails (audited)."""
        return self._run("stop", unit, on_line=on_line)

    def restart(self, unit: str, *, on_line: LineCallback | None = None) -> CommandResult:
        """Restart ``unit``; CommandFailedError if systemctl fails (audited)."""
        return self._run("restart", unit, on_line=on_line)

    def status(self, unit: str) -> CommandResult:
        """``systemctl status``: the result, whose output is the status text. Exit statuses 0-3
        (running, dead, not running) are answers; 4 and above (no such unit) raise."""
        result = self._run("status", unit, check=False)
        if result.exit_status > NOT_ACTIVE_STATUS:
            raise failed_error(result)
        return result

    def active_state(self, unit: str) -> str:
        """The unit's state word (``active``, ``inactive``, ``failed``, ``activating``...)."""
        result = self._run("is-active", unit, check=False)
        lines = [line.strip() for line in result.stdout_tail.splitlines() if line.strip()]
        if not lines or (result.exit_status != 0 and result.exit_status < NOT_ACTIVE_STATUS):
            raise failed_error(result)
        return lines[-1]

    def is_active(self, unit: str) -> bool:
        """Whether ``unit`` is active (an inactive or failed unit is an answer, not an error)."""
        return self.active_state(unit) == "active"

    def _run(
        self,
        action: Action,
        unit: str,
        *,
        check: bool = True,
        on_line: LineCallback | None = None,
    ) -> CommandResult:
        argv = systemctl_argv(action, unit, sudo=self.sudo, systemctl=self.systemctl)
        return self.client.run(
            argv,
            timeout=self.timeout,
            check=check,
            on_line=on_line,
            mutating=action not in READ_ONLY,
        )
