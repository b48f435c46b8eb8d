"""What the scratch servers share: the instance protocol, a private directory, a port, a password,
and a started server's life cycle (spawn, readiness, one-line start errors, stop and removal).

The process plumbing is the lab's (:mod:`siprec_backup.lab._process`); this module only turns its
multi-line lab errors into one-line :class:`ScratchStartError` and guarantees that a failed start
leaves no process and no file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from siprec_backup.errors import LabError, ScratchStartError
from siprec_backup.lab import _process
from siprec_backup.lab.postgres import _check_reachable
from siprec_backup.manifest import Manifest
from siprec_backup.sources.base import RestoreTarget

log = logging.getLogger("siprec_backup.scratch")

LOOPBACK = "127.0.0.1"
#: How many log lines a start error quotes.
LOG_LINES = 2


class ScratchInstance(Protocol):
    """A server a backup is restored into to prove it, then thrown away."""

    kind: str

    def describe(self) -> str:
        """Where it is, for messages (never the password)."""
        ...

    def restore_target(self, manifest: Manifest) -> RestoreTarget:
        """An empty target for ``manifest``'s backup on this server."""
        ...

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Every row of one read-only query on the database restored last."""
        ...

    def iter_query(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The rows of one read-only query, streamed in bounded memory."""
        ...

    def close(self) -> None:
        """Stop and remove everything this instance made; idempotent, never raises."""
        ...


def new_password() -> str:
    """A fresh random password (URL-safe: no quoting needed in config files or SQL)."""
    return secrets.token_urlsafe(24)


def pick_port() -> int:
    """A free TCP port on 127.0.0.1 for a new server."""
    return _process.free_ports(1)[0]


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (or its type name)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def redact(text: str, password: str) -> str:
    """``text`` with every occurrence of ``password`` masked."""
    return text.replace(password, "***") if password else text


def find_tool(kind: str, bin_dir: Path, name: str) -> Path:
    """``bin_dir/name`` if executable; ScratchStartError naming the kind and the directory."""
    path = bin_dir / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ScratchStartError(
            f"cannot start a scratch {kind} server: {name} not found in {bin_dir}"
        )
    return path


def lab_lookup(kind: str, find: Callable[[], Any]) -> Any:
    """Call one of the lab's binary lookups; its LabError becomes a ScratchStartError."""
    try:
        return find()
    except LabError as exc:
        raise ScratchStartError(
            f"cannot start a scratch {kind} server: {first_line(exc)}"
        ) from None


def chown_to(path: Path, account: str | None) -> None:
    """Give ``path`` to the server account (when we are root and the server drops to it)."""
    if account is not None:
        pw = pwd.getpwnam(account)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def private_dir(kind: str, work_dir: Path, account: str | None) -> Path:
    """A new 0700 directory ``work_dir/scratch-<kind>-XXXX`` owned by the server account."""
    if account is not None:
        try:
            _check_reachable(work_dir.resolve(), account)
        except LabError:
            raise ScratchStartError(
                f"cannot start a scratch {kind} server: {work_dir} is not reachable by the "
                f"{account!r} account that runs it; choose a work directory under /tmp"
            ) from None
        except OSError as exc:
            raise ScratchStartError(f"cannot start a scratch {kind} server: {exc}") from None
    try:
        path = Path(tempfile.mkdtemp(prefix=f"scratch-{kind}-", dir=work_dir))
    except OSError as exc:
        raise ScratchStartError(f"cannot start a scratch {kind} server: {exc}") from None
    chown_to(path, account)
    return path


def write_secret_file(path: Path, text: str, account: str | None) -> None:
    """Write a 0600 file (a password, a config with one) readable by the server account."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    chown_to(path, account)


class StartedServer:
    """A server process this package started in its own directory, removed by :meth:`close`.

    Subclasses set ``kind``, ``label`` and ``stop_signal`` and implement ``describe``,
    ``restore_target``, ``query`` and ``iter_query``.
    """

    kind: str
    label: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.host = LOOPBACK
        self.port = pick_port()
        self.log = directory / "server.log"
        self.version = ""
        self._password = new_password()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ticks: int | None = None
        self._closed = False
        self._started = time.monotonic()

    def describe(self) -> str:
        """``scratch PostgreSQL 15 on 127.0.0.1:54321``."""
        version = f" {self.version}" if self.version else ""
        return f"scratch {self.label}{version} on {self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    @property
    def pid(self) -> int | None:
        """The server's process id once spawned."""
        return self._proc.pid if self._proc is not None else None

    def run(self, argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> None:
        """Run a setup tool (initdb, install-db) to completion; output to the log."""
        _process.run(argv, server=f"scratch {self.kind}", log=self.log, **kwargs)

    def spawn(
        self,
        argv: Sequence[str | os.PathLike[str]],
        ready: Callable[[], bool],
        *,
        timeout: float,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start the server and wait until ``ready()``."""
        self._proc = _process.spawn(argv, log=self.log, cwd=self.directory, user=user, env=env)
        self._ticks = _process.start_ticks(self._proc.pid)
        _write_pid(self.directory / PID_FILE, self._proc.pid)  # for sweep_abandoned
        _process.wait_ready(
            f"scratch {self.kind}", ready, proc=self._proc, log=self.log, timeout=timeout
        )
        log.info("%s started in %.2f s", self.describe(), time.monotonic() - self._started)

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Wrap the start: any failure closes the instance (no process, no directory left) and
        becomes a one-line ScratchStartError naming the kind, the reason and the log's end."""
        try:
            yield
        except (LabError, OSError) as exc:
            message = self._start_error(exc)
            self.close()
            raise ScratchStartError(message) from None
        except BaseException:
            self.close()
            raise

    def _start_error(self, exc: BaseException) -> str:
        lines = [ln.strip() for ln in _process.tail(self.log, 40).splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("$ ")][-LOG_LINES:]
        where = f" (log: {' | '.join(lines)})" if lines else ""
        reason = first_line(exc).removeprefix(f"scratch {self.kind}: ")
        text = f"cannot start a scratch {self.kind} server: {reason}{where}"
        return redact(text, self._password)

    def disconnect(self) -> None:
        """Close client connections the subclass keeps (none by default)."""

    def close(self) -> None:
        """Stop the server and delete its directory; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            self.disconnect()
        except Exception as exc:
            log.warning("%s: closing connections failed: %s", self.describe(), first_line(exc))
        if self._proc is not None:
            try:
                _process.stop_process(self._proc.pid, self._ticks, sig=self.stop_signal)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5)
            except Exception as exc:
                log.warning("%s: stopping the server failed: %s", self.describe(), first_line(exc))
        shutil.rmtree(self.directory, onerror=self._removal_failed)

    def _removal_failed(self, func: Any, path: str, exc_info: Any) -> None:
        if isinstance(exc_info[1], FileNotFoundError) and path == str(self.directory):
            return  # already gone
        log.warning("cannot remove %s of %s: %s", path, self.describe(), first_line(exc_info[1]))


OWNER_FILE = "owner"
PID_FILE = "server.pid"


def _read_pid(path: Path) -> tuple[int, int | None]:
    """``<pid> <start ticks>`` as written by :func:`_write_pid`; OSError/ValueError if not."""
    pid, ticks = path.read_text().split()
    return int(pid), None if ticks == "None" else int(ticks)


def _write_pid(path: Path, pid: int) -> None:
    path.write_text(f"{pid} {_process.start_ticks(pid)}\n")


def claim(directory: Path) -> None:
    """Record this process as the owner of a work directory (see :func:`sweep_abandoned`)."""
    _write_pid(directory / OWNER_FILE, os.getpid())


def sweep_abandoned(base: Path, pattern: str) -> list[Path]:
    """Remove the work directories matching ``pattern`` in ``base`` whose owner process is gone
    (a verification killed mid-run): kill the scratch servers still running from them, then
    delete them. Directories without an owner file (being created) are left alone."""
    swept = []
    for directory in base.glob(pattern):
        try:
            owner = _read_pid(directory / OWNER_FILE)
        except (OSError, ValueError):
            continue
        if _process.is_alive(*owner):
            continue
        for pid_file in directory.rglob(PID_FILE):
            with contextlib.suppress(OSError, ValueError):
                _process.stop_process(*_read_pid(pid_file), sig=signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
        log.warning("removed %s, left by a verification that did not finish", directory)
        swept.append(directory)
    return swept
