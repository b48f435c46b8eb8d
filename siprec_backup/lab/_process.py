"""Process plumbing shared by the lab's services: free ports, spawning, liveness, stopping.

Servers are spawned detached (own session, output to a log file, never a pipe) so they outlive the
CLI that started them, and are later found again by PID. A PID alone can be reused by an unrelated
process after a crash or reboot, so each record also keeps the process start time read from
``/proc/<pid>/stat``: a process is "ours" only if both match.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from siprec_backup.errors import LabError

#: Ports a developer machine often already uses; the lab never takes them.
RESERVED_PORTS = frozenset({5432, 3306, 6379, 8080, 4200})


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1.

    All sockets stay bound until every port is chosen, so the ports are distinct; they are closed
    before returning, which leaves a tiny race that the servers' own bind errors would report.
    """
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port not in RESERVED_PORTS:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])  # field 22 overall


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int, ticks: int | None) -> bool:
    """Whether ``pid`` runs and is the same process that was recorded (same start time)."""
    if pid <= 0:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists but belongs to another user
    if _is_zombie(pid):
        return False
    if ticks is not None:
        current = start_ticks(pid)
        if current is not None and current != ticks:
            return False
    return True


def wait_gone(pid: int, ticks: int | None, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process to exit; True if it did."""
    deadline = time.monotonic() + timeout
    while is_alive(pid, ticks):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_process(
    pid: int,
    ticks: int | None,
    *,
    sig: signal.Signals = signal.SIGTERM,
    group: bool = False,
    timeout: float = 20.0,
) -> None:
    """Send ``sig`` to a recorded process (or its process group), wait, SIGKILL after ``timeout``.

    Does nothing if the process already exited or the PID now belongs to another process.
    """
    if not is_alive(pid, ticks):
        return

    def send(s: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(pid, s)
            else:
                os.kill(pid, s)

    send(sig)
    if wait_gone(pid, ticks, timeout):
        return
    send(signal.SIGKILL)
    if not wait_gone(pid, ticks, 5.0):
        raise LabError(f"process {pid} did not exit after SIGKILL")


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file (empty if unreadable), for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def failure(server: str, what: str, log: Path) -> LabError:
    """A LabError naming the server, what went wrong, the log file and its last lines."""
    last = tail(log)
    detail = f"\n--- last lines of {log} ---\n{last}" if last else f" (log: {log}, empty)"
    return LabError(f"{server}: {what}{detail}")


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a detached server: own session, stdin from /dev/null, stdout+stderr appended to
    ``log``. ``user`` (root only) drops privileges to that account and its primary group."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            return subprocess.Popen(
                [os.fspath(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
            )
        except OSError as exc:
            raise LabError(f"cannot start {argv[0]}: {exc}") from exc


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    server: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    timeout: float = 120.0,
) -> None:
    """Run a setup command (initdb, pg_basebackup) to completion, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(os.fspath(a) for a in argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                [os.fspath(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise failure(
                server, f"{os.fspath(argv[0])} timed out after {timeout:.0f} s", log
            ) from exc
        except OSError as exc:
            raise LabError(f"{server}: cannot run {os.fspath(argv[0])}: {exc}") from exc
    if proc.returncode != 0:
        raise failure(server, f"{os.fspath(argv[0])} exited with {proc.returncode}", log)


class Pollable(Protocol):
    """Anything with ``Popen.poll()``: None while running, else an exit status."""

    def poll(self) -> int | None: ...


class Recorded:
    """A process known only by PID and start time (not our child), pollable like a Popen."""

    def __init__(self, pid: int, ticks: int | None) -> None:
        self.pid, self.ticks = pid, ticks

    def poll(self) -> int | None:
        """None while the process runs, -1 once it is gone (its status is unknown)."""
        return None if is_alive(self.pid, self.ticks) else -1


def wait_ready(
    server: str,
    check: Callable[[], bool],
    *,
    proc: Pollable,
    log: Path,
    timeout: float,
    cancel: threading.Event | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``check`` until it returns True; raise a LabError with the log's tail if the server
    exits, the deadline passes or ``cancel`` is set (another server of the lab failed)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        code = proc.poll()
        if code is not None:
            raise failure(server, f"exited with status {code} while starting", log)
        if cancel is not None and cancel.is_set():
            raise LabError(f"{server}: start cancelled because another lab server failed")
        if time.monotonic() > deadline:
            raise failure(server, f"not ready after {timeout:.0f} s", log)
        time.sleep(interval)
