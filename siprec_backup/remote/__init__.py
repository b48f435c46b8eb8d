"""Remote hosts: SSH commands, systemd services and file transfer, and the CommandRunner
protocol levers use to act on this machine or over SSH."""

from siprec_backup.remote.audit import AuditRecord, AuditSink
from siprec_backup.remote.auth import load_private_key, parse_known_hosts
from siprec_backup.remote.output import LineCallback
from siprec_backup.remote.pool import SshPool
from siprec_backup.remote.runner import CommandRunner, LocalRunner, RunResult
from siprec_backup.remote.services import ServiceManager, systemctl_argv, validate_unit
from siprec_backup.remote.ssh import CommandResult, SshClient, SshConfig, SshRunner
from siprec_backup.remote.transfer import Transfer, download, read_text, upload, write_text

__all__ = [
    "AuditRecord",
    "AuditSink",
    "CommandResult",
    "CommandRunner",
    "LineCallback",
    "LocalRunner",
    "RunResult",
    "ServiceManager",
    "SshClient",
    "SshConfig",
    "SshPool",
    "SshRunner",
    "Transfer",
    "download",
    "load_private_key",
    "parse_known_hosts",
    "read_text",
    "systemctl_argv",
    "upload",
    "validate_unit",
    "write_text",
]
