"""The small abstraction every lab server implements, and the records kept in ``lab.json``.

Adding a server to the lab means one module with one :class:`Service` subclass (a name, what it
waits for, ``start`` that blocks until the server answers, ``is_ready``, ``stop``) and one line in
the registry of :mod:`siprec_backup.lab.lab`.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from siprec_backup.errors import LabError
from siprec_backup.lab import _process

#: A connection fact stored in lab.json (JSON scalars only).
Fact = str | int | float | bool | None


@dataclass
class ServiceRecord:
    """One running server as recorded in ``lab.json``: where it runs and how to reach it.

    ``facts`` holds connection details (URLs, a DSN without password, data directories); secrets
    live only in the state file's ``secrets`` section and are referred to by name.
    """

    name: str
    pid: int
    host: str | None
    port: int | None
    log: Path
    started_ticks: int | None = None
    facts: dict[str, Fact] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """``host:port``, or ``-`` for a server that does not listen (a worker)."""
        return f"{self.host}:{self.port}" if self.host and self.port else "-"

    def alive(self) -> bool:
        """Whether the recorded process still runs (same PID and start time)."""
        return _process.is_alive(self.pid, self.started_ticks)

    def fact(self, key: str) -> str:
        """A fact as a string; LabError if the record lacks it (an older or damaged lab.json)."""
        value = self.facts.get(key)
        if value is None:
            raise LabError(f"lab.json: service {self.name!r} has no {key!r}")
        return str(value)

    def to_json(self) -> dict[str, Any]:
        """The JSON form written to lab.json."""
        return {
            "name": self.name,
            "pid": self.pid,
            "host": self.host,
            "port": self.port,
            "log": str(self.log),
            "started_ticks": self.started_ticks,
            "facts": dict(self.facts),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceRecord:
        """Parse one entry of lab.json's ``services``."""
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            host=data.get("host"),
            port=data.get("port"),
            log=Path(data["log"]),
            started_ticks=data.get("started_ticks"),
            facts=dict(data.get("facts") or {}),
        )


@dataclass
class LabContext:
    """What a service needs to start: the lab directory, ports, secrets, and its peers' records.

    Ports for every service of a run are chosen before any server starts, so a service may start
    before the servers it talks to are ready (the Prefect worker imports while the server boots).
    """

    root: Path
    ports: dict[str, int]
    secrets: dict[str, str]
    records: dict[str, ServiceRecord]
    cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def port(self, service: str) -> int:
        """The TCP port assigned to ``service`` in this lab."""
        try:
            return self.ports[service]
        except KeyError:
            raise LabError(f"no port assigned to {service!r}") from None

    def log(self, service: str) -> Path:
        """The log file of ``service``: ``<lab>/logs/<service>.log``."""
        return self.root / "logs" / f"{service}.log"

    def record(self, service: str) -> ServiceRecord:
        """The record of an already started peer (from this run or the existing lab.json)."""
        with self._lock:
            try:
                return self.records[service]
            except KeyError:
                raise LabError(f"{service!r} is not running in this lab") from None

    def add(self, record: ServiceRecord) -> None:
        """Publish a started server's record to its peers."""
        with self._lock:
            self.records[record.name] = record


class Service(ABC):
    """One server of the lab.

    Class attributes:
        name: unique key in lab.json and the log file name.
        group: lets callers leave out a family of servers (``prefect=False`` drops "prefect").
        after: services that must be *ready* before ``start`` is called.
        uses: services this one talks to at run time; they are stopped after it (defaults to
            ``after``).
        listens: whether the server gets a TCP port.
    """

    name: ClassVar[str]
    group: ClassVar[str]
    after: ClassVar[tuple[str, ...]] = ()
    uses: ClassVar[tuple[str, ...] | None] = None
    listens: ClassVar[bool] = True
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    stop_group: ClassVar[bool] = True
    stop_timeout: ClassVar[float] = 20.0

    def dependencies(self) -> tuple[str, ...]:
        """Services this one needs while it runs (stop order is the reverse)."""
        return self.after if self.uses is None else self.uses

    @abstractmethod
    def start(self, ctx: LabContext) -> ServiceRecord:
        """Start the server (initialising its data on first start), wait until it answers, and
        return its record. Must not leave a process behind when it raises."""

    @abstractmethod
    def is_ready(self, record: ServiceRecord) -> bool:
        """Whether the running server answers requests now."""

    def stop(self, record: ServiceRecord) -> None:
        """Stop the server by its own PID: ``stop_signal``, wait, SIGKILL after a deadline."""
        _process.stop_process(
            record.pid,
            record.started_ticks,
            sig=self.stop_signal,
            group=self.stop_group,
            timeout=self.stop_timeout,
        )

    def pid_file(self, root: Path) -> Path:
        """``<lab>/run/<name>.pid``: PID and start time, written as soon as the server is
        spawned, so that an ``up`` killed before it recorded the server can be cleaned up."""
        return root / "run" / f"{self.name}.pid"

    def stop_orphans(self, root: Path) -> None:
        """Stop this server if its PID file names a live process that ``lab.json`` may not
        list (an ``up`` killed while the server was starting)."""
        try:
            pid_text, ticks_text = self.pid_file(root).read_text().split()
            pid, ticks = int(pid_text), int(ticks_text) if ticks_text != "-" else None
        except (OSError, ValueError):
            return
        _process.stop_process(
            pid, ticks, sig=self.stop_signal, group=self.stop_group, timeout=self.stop_timeout
        )

    def reset(self, root: Path) -> None:
        """Delete this server's data before a first start, so that a start interrupted earlier
        (data half initialised, never recorded in lab.json) begins again from scratch."""
        return None

    def launch(
        self,
        ctx: LabContext,
        proc: subprocess.Popen[bytes],
        ready: Callable[[], bool],
        *,
        timeout: float,
    ) -> int | None:
        """Wait for a freshly spawned server; on any failure kill it and re-raise.

        Returns the process start time to store in the record.
        """
        log = ctx.log(self.name)
        ticks = _process.start_ticks(proc.pid)
        try:
            pid_file = self.pid_file(ctx.root)
            pid_file.parent.mkdir(exist_ok=True)
            pid_file.write_text(f"{proc.pid} {'-' if ticks is None else ticks}\n")
            _process.wait_ready(
                self.name, ready, proc=proc, log=log, timeout=timeout, cancel=ctx.cancel
            )
        except BaseException:
            self.kill(proc, ticks)
            raise
        return ticks

    def kill(self, proc: subprocess.Popen[bytes], ticks: int | None) -> None:
        """Stop a server that failed to start (best effort, never raises)."""
        with contextlib.suppress(LabError):
            _process.stop_process(
                proc.pid, ticks, sig=self.stop_signal, group=self.stop_group, timeout=10.0
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
