"""nginx open source: re-point an upstream by rewriting the file it includes, ``nginx -t``,
reload, and poll until the new workers serve it, on this machine or over SSH.

nginx open source has no API to change a server's state, so the include file is the lever::

    upstream app { include /etc/nginx/siprec/app.conf; }

We own that file and render it (:func:`render_upstream`): one ``server`` line per server, with
``down`` for a server taken out of rotation and a trailing ``# siprec-backup: drain|maint``
marker so the state reads back. A reload is graceful: new workers use the new file at once, and
the old ones ("worker process is shutting down") finish their current connections, then exit.
Having no per-server counters, a server out of rotation reports as current sessions the number of
old workers still shutting down: 0 means every connection that could still reach it has ended.

Every command and file goes through a :class:`~siprec_backup.remote.runner.CommandRunner`, so
the same code runs locally and on the nginx host over SSH.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from siprec_backup.errors import LoadBalancerError
from siprec_backup.remote.runner import CommandRunner
from siprec_backup.traffic.base import (
    DRAIN,
    MAINT,
    UP,
    LoadBalancer,
    ServerState,
    ServerStatus,
)

HEADER = "# Managed by siprec-backup: rewritten on every switch."
_MARKER = "# siprec-backup:"
_SERVER = re.compile(r"^\s*server\s+(?P<addr>[^\s;]+)(?P<params>[^;]*);\s*(?P<comment>#.*)?$")
_ADDRESS = re.compile(r"^[A-Za-z0-9._\-\[\]:]+$")


@dataclass(frozen=True)
class UpstreamEntry:
    """One ``server`` line of an upstream include file."""

    address: str
    weight: int = 1
    state: ServerState = ServerState.READY


def render_upstream(entries: Sequence[UpstreamEntry]) -> str:
    """The include file for ``entries`` (LoadBalancerError on an unsafe address or weight)."""
    if not entries:
        raise LoadBalancerError("an nginx upstream needs at least one server")
    lines = [HEADER]
    for e in entries:
        if not _ADDRESS.match(e.address):
            raise LoadBalancerError(f"invalid nginx upstream server address {e.address!r}")
        if e.weight < 1:
            raise LoadBalancerError(f"invalid weight {e.weight} for {e.address}")
        line = f"server {e.address} weight={e.weight}"
        if e.state is not ServerState.READY:
            line += f" down;  {_MARKER} {e.state.value}"
        else:
            line += ";"
        lines.append(line)
    return "\n".join(lines) + "\n"


def parse_upstream(text: str) -> list[UpstreamEntry]:
    """The servers of an include file (ours, or a hand-written one of plain ``server`` lines)."""
    entries: list[UpstreamEntry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _SERVER.match(line)
        if m is None:
            raise LoadBalancerError(f"line {number} of the upstream include is not a server line")
        params = m["params"].split()
        weight = 1
        for p in params:
            if p.startswith("weight="):
                weight = int(p.removeprefix("weight=") or 1)
        state = ServerState.READY
        if "down" in params:
            comment = (m["comment"] or "").removeprefix(_MARKER).strip()
            state = ServerState.DRAIN if comment == "drain" else ServerState.MAINT
        entries.append(UpstreamEntry(m["addr"], weight, state))
    return entries


@dataclass(frozen=True)
class Nginx(LoadBalancer):
    """nginx whose upstreams each include a file we rewrite.

    Args:
        runner: where nginx runs (:class:`~siprec_backup.remote.runner.LocalRunner` or SSH).
        includes: upstream name -> path of the file its ``upstream`` block includes.
        pid_file: the master's pid file (``pid`` directive), to find its workers.
        nginx: the nginx binary on that host.
        nginx_args: arguments naming this instance (``-p``, ``-c``, ``-e``), passed to
            ``nginx -t`` and ``nginx -s reload``.
        probe_url, probe_expect: optional: after a reload, poll until a GET of ``probe_url``
            (from this machine) answers with a body containing ``probe_expect``.
        timeout: seconds for each command, and for the reload to take effect.
    """

    runner: CommandRunner
    includes: Mapping[str, str]
    pid_file: str
    nginx: str = "nginx"
    nginx_args: tuple[str, ...] = ()
    probe_url: str | None = None
    probe_expect: str | None = field(default=None)
    timeout: float = 10.0

    def describe(self) -> str:
        """``nginx on <host>``."""
        return f"nginx on {self.runner.host}"

    # --- levers ----------------------------------------------------------------------------

    def servers(self) -> list[ServerStatus]:
        """The servers of every managed upstream, read from the include files."""
        shutting_down = self._workers_shutting_down()
        found: list[ServerStatus] = []
        for upstream in self.includes:
            for e in self.entries(upstream):
                ready = e.state is ServerState.READY
                found.append(
                    ServerStatus(
                        backend=upstream,
                        server=e.address,
                        address=e.address,
                        status=e.state.value,
                        state=UP if ready else (DRAIN if e.state is ServerState.DRAIN else MAINT),
                        current_sessions=0 if ready else shutting_down,
                        weight=e.weight,
                    )
                )
        return found

    def set_state(self, backend: str, server: str, state: ServerState) -> None:
        """Rewrite ``server``'s line in ``backend``'s include with the new state and apply."""
        entries = self.entries(backend)
        if server not in {e.address for e in entries}:
            known = ", ".join(e.address for e in entries)
            raise LoadBalancerError(
                f"{self.describe()}: upstream {backend!r} has no server {server!r} "
                f"(servers: {known})"
            )
        new = [
            UpstreamEntry(e.address, e.weight, ServerState(state)) if e.address == server else e
            for e in entries
        ]
        self.apply(backend, new)

    def repoint(self, backend: str, addresses: Sequence[str]) -> float:
        """Make ``addresses`` the only servers of upstream ``backend``; seconds until the new
        workers serve it (and the probe, if any, agrees)."""
        return self.apply(backend, [UpstreamEntry(a) for a in addresses])

    def entries(self, backend: str) -> list[UpstreamEntry]:
        """The current servers of upstream ``backend``."""
        return parse_upstream(self.runner.read_text(self._include(backend)))

    def apply(self, backend: str, entries: Sequence[UpstreamEntry]) -> float:
        """Write the include, ``nginx -t`` (restoring the old file if it fails), reload, and
        wait until the reload took effect; return the seconds from writing to verified."""
        path = self._include(backend)
        text = render_upstream(entries)
        start = time.monotonic()
        previous = self.runner.read_text(path)
        old_workers = self._workers(active_only=True)
        self.runner.write_text(path, text)
        test = self.runner.run([self.nginx, *self.nginx_args, "-t", "-q"], timeout=self.timeout)
        if test.exit_status != 0:
            self.runner.write_text(path, previous)
            raise LoadBalancerError(
                f"{self.describe()}: nginx -t rejected the new {path}, restored the previous "
                f"file, nothing reloaded: {_one_line(test.stderr_tail or test.stdout_tail)}"
            )
        self._run("-s", "reload")
        self._wait_reloaded(old_workers, start)
        return time.monotonic() - start

    def check(self) -> str:
        """``nginx -v``, ``nginx -t`` and the master's pid; every include file parses."""
        version = _one_line(self._run("-v")).removeprefix("nginx version: ")
        self._run("-t", "-q")
        master = self._master()
        count = sum(len(self.entries(u)) for u in self.includes)
        return (
            f"{version} on {self.runner.host}, master pid {master}, "
            f"{len(self.includes)} upstream(s) with {count} server(s)"
        )

    # --- processes -------------------------------------------------------------------------

    def _include(self, backend: str) -> str:
        try:
            return self.includes[backend]
        except KeyError:
            known = ", ".join(self.includes) or "none"
            raise LoadBalancerError(
                f"{self.describe()}: no managed upstream {backend!r} (upstreams: {known})"
            ) from None

    def _run(self, *args: str) -> str:
        result = self.runner.run([self.nginx, *self.nginx_args, *args], timeout=self.timeout)
        if result.exit_status != 0:
            raise LoadBalancerError(
                f"{self.describe()}: nginx {' '.join(args)} exited with {result.exit_status}: "
                f"{_one_line(result.stderr_tail or result.stdout_tail)}"
            )
        return result.stderr_tail + result.stdout_tail

    def _master(self) -> int:
        text = self.runner.read_text(self.pid_file).strip()
        if not text.isdigit():
            raise LoadBalancerError(
                f"{self.describe()}: no master pid in {self.pid_file}: is nginx running?"
            )
        return int(text)

    def _processes(self) -> list[tuple[int, str]]:
        master = self._master()
        result = self.runner.run(
            ["ps", "-o", "pid=,args=", "--ppid", str(master)], timeout=self.timeout
        )
        if result.exit_status not in (0, 1):  # 1: no children (yet)
            raise LoadBalancerError(
                f"{self.describe()}: ps exited with {result.exit_status}: "
                f"{_one_line(result.stderr_tail)}"
            )
        procs = []
        for line in result.stdout_tail.splitlines():
            pid, _, args = line.strip().partition(" ")
            if pid.isdigit() and "worker process" in args:
                procs.append((int(pid), args.strip()))
        return procs

    def _workers(self, *, active_only: bool) -> set[int]:
        return {
            pid for pid, args in self._processes() if not (active_only and "shutting down" in args)
        }

    def _workers_shutting_down(self) -> int:
        return sum(1 for _, args in self._processes() if "shutting down" in args)

    def _wait_reloaded(self, old_workers: set[int], start: float) -> None:
        """Poll until every active worker is new (and the probe answers as expected)."""
        deadline = start + self.timeout
        while True:
            active = self._workers(active_only=True)
            if active and not active & old_workers and self._probe_ok():
                return
            if time.monotonic() > deadline:
                raise LoadBalancerError(
                    f"{self.describe()}: the reload did not take effect within {self.timeout:g} s"
                )
            time.sleep(0.02)

    def _probe_ok(self) -> bool:
        if not self.probe_url:
            return True
        try:
            body = httpx.get(self.probe_url, timeout=2.0).text
        except httpx.HTTPError:
            return False
        return self.probe_expect is None or self.probe_expect in body


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-3:]) if lines else "(no output)"
