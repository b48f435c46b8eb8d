"""SSH to the platform's hosts (paramiko): key-only login, pinned host keys, commands with a
timeout whose output streams line by line, and an audit record for every change.

Nothing is read from the machine running the flow: the private key and the known_hosts lines
come from :class:`SshConfig` (a block), never from ``~/.ssh``, files or an agent. A host whose key
is unknown or changed is refused, never added.
"""

from __future__ import annotations

import contextlib
import select
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import paramiko

from siprec_backup.errors import (
    CommandFailedError,
    CommandTimeoutError,
    ConfigurationError,
    HostKeyError,
    RemoteAuthError,
    RemoteError,
)
from siprec_backup.remote.audit import AuditRecord, AuditSink
from siprec_backup.remote.auth import known_hosts_name, load_private_key, parse_known_hosts
from siprec_backup.remote.output import LineCallback, LineSplitter
from siprec_backup.remote.runner import TAIL_CHARS, RunResult
from siprec_backup.remote.transfer import read_text, write_text

#: Bytes read from a channel at a time.
RECV_BYTES = 32_768
#: Longest wait between two looks at a running command (its deadline is checked as often).
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class SshConfig:
    """Where and how to log in. ``private_key`` and ``passphrase`` never appear in repr().

    ``known_hosts`` is known_hosts-format text (public data): one or more lines, hashed
    entries and ``[host]:port`` entries included. It must hold the server's key.
    """

    host: str
    username: str
    private_key: str = field(repr=False)
    known_hosts: str
    port: int = 22
    passphrase: str | None = field(default=None, repr=False)
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise ConfigurationError(f"SSH host {self.host!r} is not a valid host name")
        if not self.username or any(c.isspace() for c in self.username):
            raise ConfigurationError(f"SSH username {self.username!r} is not valid")
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"SSH port {self.port} is out of range (1-65535)")
        if self.connect_timeout <= 0:
            raise ConfigurationError("SSH connect_timeout must be positive")

    @property
    def target(self) -> str:
        """``user@host:port`` for messages."""
        return f"{self.username}@{self.host}:{self.port}"

    def pkey(self) -> paramiko.PKey:
        """The client key (ConfigurationError if it cannot be loaded)."""
        return load_private_key(self.private_key, self.passphrase)


@dataclass(frozen=True)
class CommandResult:
    """How a remote command ended. The tails hold the last lines of each stream (bounded)."""

    host: str
    command: str
    exit_status: int
    stdout_tail: str
    stderr_tail: str
    duration: float
    started_at: datetime

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.exit_status == 0


def command_text(command: str | Sequence[str]) -> str:
    """The shell text of a command: a string as is, a sequence with each word quoted."""
    if isinstance(command, str):
        text = command
    else:
        words = list(command)
        if not all(isinstance(w, str) for w in words):
            raise ConfigurationError("a command's words must all be strings")
        text = shlex.join(words)
    if not text.strip():
        raise ConfigurationError("the remote command is empty")
    return text


class _RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
    """Refuse a server whose name is not in known_hosts (never add it)."""

    def __init__(self, host: str) -> None:
        self.host = host

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise HostKeyError(
            f"ssh {hostname}: the server's {key.get_name()} host key is not in known_hosts: "
            "refused",
            host=self.host,
        )


class SshClient:
    """One SSH connection. Use as a context manager, or call :meth:`connect` and :meth:`close`.

    ``actor`` names who acts in audit records; ``audit`` receives one :class:`AuditRecord` per
    mutating command or transfer. The client may be shared by threads (paramiko opens one
    channel per command).
    """

    def __init__(
        self, config: SshConfig, *, actor: str = "siprec-backup", audit: AuditSink | None = None
    ) -> None:
        self.config = config
        self.actor = actor
        self._audit = audit
        self._client: paramiko.SSHClient | None = None

    @property
    def host(self) -> str:
        """The configured host name."""
        return self.config.host

    @property
    def connected(self) -> bool:
        """Whether the connection is up."""
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    @property
    def transport(self) -> paramiko.Transport:
        """The live transport (RemoteError if not connected)."""
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            raise RemoteError(f"ssh {self.config.target}: not connected", host=self.host)
        return transport

    def connect(self) -> SshClient:
        """Connect and authenticate; HostKeyError, RemoteAuthError or RemoteError on failure."""
        if self.connected:
            return self
        cfg = self.config
        pkey = cfg.pkey()
        client = paramiko.SSHClient()
        parse_known_hosts(cfg.known_hosts, into=client.get_host_keys())
        client.set_missing_host_key_policy(_RefuseUnknownHost(cfg.host))
        name = known_hosts_name(cfg.host, cfg.port)
        try:
            client.connect(
                cfg.host,
                port=cfg.port,
                username=cfg.username,
                pkey=pkey,
                timeout=cfg.connect_timeout,
                banner_timeout=cfg.connect_timeout,
                auth_timeout=cfg.connect_timeout,
                channel_timeout=cfg.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"ssh {name}: host key changed: the server offered a {exc.key.get_name()} key "
                f"(SHA256:{exc.key.fingerprint.removeprefix('SHA256:')}) that differs from "
                "known_hosts: refused",
                host=cfg.host,
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise RemoteAuthError(
                f"ssh {cfg.target}: the server refused our key for user {cfg.username!r}",
                host=cfg.host,
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise RemoteError(
                f"ssh {cfg.target}: cannot connect: {_describe(exc)}", host=cfg.host
            ) from exc
        self._client = client
        return self

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> SshClient:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------------------

    def run(
        self,
        command: str | Sequence[str],
        *,
        timeout: float,
        on_line: LineCallback | None = None,
        check: bool = True,
        mutating: bool = True,
    ) -> CommandResult:
        """Run ``command`` (a shell string, or a sequence of words each quoted with shlex) and
        wait at most ``timeout`` seconds.

        ``on_line("stdout" | "stderr", line)`` is called for each line as it arrives. With
        ``check``, a non-zero exit raises CommandFailedError (host, command, status, stderr
        tail). A command past its timeout is signalled, its channel closed, and
        CommandTimeoutError raised. Mutating commands are audited (also when they fail).
        """
        if timeout <= 0:
            raise ConfigurationError("a remote command's timeout must be positive")
        text = command_text(command)
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        status: int | None = None
        try:
            status, out, err = self._exec(text, timeout, on_line)
        finally:
            if mutating:
                self.audit_action(text, status, started_at, time.monotonic() - t0)
        result = CommandResult(
            host=self.host,
            command=text,
            exit_status=status,
            stdout_tail=out.tail,
            stderr_tail=err.tail,
            duration=time.monotonic() - t0,
            started_at=started_at,
        )
        if check and status != 0:
            raise failed_error(result)
        return result

    def run_steps(
        self,
        commands: Sequence[str | Sequence[str]],
        *,
        timeout: float,
        on_line: LineCallback | None = None,
        mutating: bool = True,
    ) -> list[CommandResult]:
        """Run commands in order (``timeout`` applies to each) and stop at the first failure,
        raising CommandFailedError or CommandTimeoutError whose message starts with
        ``step i of n``."""
        results: list[CommandResult] = []
        total = len(commands)
        for index, command in enumerate(commands, start=1):
            try:
                results.append(
                    self.run(command, timeout=timeout, on_line=on_line, mutating=mutating)
                )
            except CommandFailedError as exc:
                raise CommandFailedError(
                    f"step {index} of {total}: {exc}",
                    host=exc.host,
                    command=exc.command,
                    exit_status=exc.exit_status,
                    stderr_tail=exc.stderr_tail,
                ) from exc
            except CommandTimeoutError as exc:
                raise CommandTimeoutError(f"step {index} of {total}: {exc}", host=exc.host) from exc
        return results

    def open_sftp(self) -> paramiko.SFTPClient:
        """A new SFTP session on this connection (close it after use)."""
        try:
            return paramiko.SFTPClient.from_transport(self.transport)  # type: ignore[return-value]
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise RemoteError(
                f"ssh {self.config.target}: cannot open SFTP: {_describe(exc)}", host=self.host
            ) from exc

    def audit_action(
        self, command: str, exit_status: int | None, started_at: datetime, duration: float
    ) -> None:
        """Deliver one audit record (if an audit callback was given)."""
        if self._audit is not None:
            self._audit(
                AuditRecord(
                    actor=self.actor,
                    host=self.host,
                    command=command,
                    exit_status=exit_status,
                    started_at=started_at,
                    duration=duration,
                )
            )

    def _exec(
        self, text: str, timeout: float, on_line: LineCallback | None
    ) -> tuple[int, LineSplitter, LineSplitter]:
        deadline = time.monotonic() + timeout
        transport = self.transport
        try:
            channel = transport.open_session(timeout=self.config.connect_timeout)
            channel.exec_command(with_pid_line(text))
            channel.shutdown_write()  # no stdin: a command reading it sees EOF, not a hang
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise RemoteError(
                f"ssh {self.config.target}: cannot start {text!r}: {_describe(exc)}",
                host=self.host,
            ) from exc
        out = LineSplitter("stdout", on_line)
        err = LineSplitter("stderr", on_line)
        pid = _PidLine()
        with contextlib.closing(channel):
            while True:
                busy = False
                if channel.recv_ready():
                    out.feed(channel.recv(RECV_BYTES))
                    busy = True
                if channel.recv_stderr_ready():
                    err.feed(pid.strip(channel.recv_stderr(RECV_BYTES)))
                    busy = True
                if not busy and _finished(channel):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    _interrupt(channel)
                    self._kill_group(pid.pid)
                    raise CommandTimeoutError(
                        f"ssh {self.config.target}: {text!r} did not finish within "
                        f"{timeout:g} s: stopped (SIGTERM, then SIGKILL) and its channel closed",
                        host=self.host,
                    )
                if busy:
                    continue
                if channel.eof_received:  # all output is in; only the exit status is awaited
                    channel.status_event.wait(min(remaining, POLL_SECONDS))
                else:
                    select.select([channel], [], [], min(remaining, POLL_SECONDS))
            err.feed(pid.flush())
            out.close()
            err.close()
            status = channel.recv_exit_status()
        if status == -1 and not transport.is_active():
            raise RemoteError(
                f"ssh {self.config.target}: connection lost while running {text!r}",
                host=self.host,
            )
        return status, out, err

    def _kill_group(self, pid: int | None) -> None:
        """Stop a timed-out command's whole process group on the host, over a new channel:
        sshd ignores "signal" requests for root logins, and a closed channel alone does not
        stop a command that prints nothing."""
        if pid is None:
            return
        with contextlib.suppress(RemoteError, paramiko.SSHException, OSError, EOFError):
            self._exec_plain(
                f"kill -TERM -- -{pid} 2>/dev/null || exit 0; sleep {KILL_GRACE_SECONDS}; "
                f"kill -KILL -- -{pid} 2>/dev/null; exit 0"
            )

    def _exec_plain(self, text: str) -> None:
        channel = self.transport.open_session(timeout=self.config.connect_timeout)
        with contextlib.closing(channel):
            channel.exec_command(text)
            channel.status_event.wait(KILL_GRACE_SECONDS + self.config.connect_timeout)


#: The first stderr line of every command: the shell's PID, which sshd made a session (and
#: process group) leader, so that a command past its timeout can be stopped with its children.
PID_MARKER = "siprec-backup-pid:"
#: Seconds between SIGTERM and SIGKILL for a timed-out command.
KILL_GRACE_SECONDS = 2


def with_pid_line(text: str) -> str:
    """``text`` preceded by a line on stderr giving the shell's PID (a POSIX login shell)."""
    return f"printf '{PID_MARKER}%s\\n' \"$$\" >&2; {text}"


class _PidLine:
    """Takes the PID line off the front of stderr; passes every other byte through."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self._head = b""
        self._done = False

    def strip(self, data: bytes) -> bytes:
        if self._done:
            return data
        self._head += data
        if b"\n" not in self._head and len(self._head) < 64:
            return b""  # the line is not complete yet
        return self.flush()

    def flush(self) -> bytes:
        """Whatever is held back (at the end of the stream, or once the line is complete)."""
        if self._done:
            return b""
        self._done = True
        first, newline, rest = self._head.partition(b"\n")
        marker = PID_MARKER.encode()
        if newline and first.startswith(marker) and first[len(marker) :].isdigit():
            self.pid = int(first[len(marker) :])
            return rest
        return self._head


def _finished(channel: paramiko.Channel) -> bool:
    """The command exited and all of its output was read."""
    return (
        channel.exit_status_ready()
        and (bool(channel.eof_received) or channel.closed)
        and not channel.recv_ready()
        and not channel.recv_stderr_ready()
    )


def _interrupt(channel: paramiko.Channel) -> None:
    """Ask sshd to send SIGTERM to a command past its deadline (RFC 4254 6.9 "signal"), then
    close the channel. paramiko has no public call for the request, hence the raw message.

    OpenSSH honours the request only for non-root logins (a root session runs without
    privilege separation and sshd logs "session signalling requires privilege separation"),
    hence also :meth:`SshClient._kill_group`.
    """
    with contextlib.suppress(Exception):
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
        message.add_int(channel.remote_chanid)
        message.add_string("signal")
        message.add_boolean(False)
        message.add_string("TERM")
        channel.transport._send_user_message(message)  # type: ignore[union-attr]
    channel.close()


def failed_error(result: CommandResult) -> CommandFailedError:
    """The CommandFailedError for a finished command with a non-zero status; the message ends
    with the last stderr line."""
    last = result.stderr_tail.rsplit("\n", 1)[-1].strip()[:200]
    detail = f": {last}" if last else ""
    return CommandFailedError(
        f"ssh {result.host}: {result.command!r} exited with status {result.exit_status}{detail}",
        host=result.host,
        command=result.command,
        exit_status=result.exit_status,
        stderr_tail=result.stderr_tail,
    )


def _describe(exc: BaseException) -> str:
    """One line for an exception (its type when it has no message)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class SshRunner:
    """:class:`~siprec_backup.remote.runner.CommandRunner` over an :class:`SshClient`.

    ``mutating`` says whether :meth:`run` commands are audited (file writes always are).
    """

    def __init__(self, client: SshClient, *, mutating: bool = True) -> None:
        self.client = client
        self.mutating = mutating

    @property
    def host(self) -> str:
        """The remote host's configured name."""
        return self.client.host

    def run(self, argv: Sequence[str], *, timeout: float) -> RunResult:
        """Run ``argv`` (each word quoted: no shell expansion) and return status and tails."""
        result = self.client.run(list(argv), timeout=timeout, check=False, mutating=self.mutating)
        return RunResult(
            result.exit_status, result.stdout_tail[-TAIL_CHARS:], result.stderr_tail[-TAIL_CHARS:]
        )

    def read_text(self, path: str) -> str:
        """A small remote text file over SFTP, or "" if it does not exist."""
        return read_text(self.client, path)

    def write_text(self, path: str, text: str) -> None:
        """Replace a small remote text file atomically (temporary name, then rename)."""
        write_text(self.client, path, text)
