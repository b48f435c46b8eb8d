"""HAProxy: the Runtime API (TCP or unix socket) to read and set server states, and the stats
page's CSV over HTTP (basic auth) for read-only monitoring.

The Runtime API takes one command per connection: we send ``show stat`` or
``set server <backend>/<server> state ready|drain|maint`` and read until HAProxy closes. A ``set``
succeeds only if HAProxy answers with an empty line; anything else is its refusal.
"""

from __future__ import annotations

import csv
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import httpx

from siprec_backup.errors import LoadBalancerError
from siprec_backup.traffic.base import (
    DOWN,
    DOWN_TRANSITIONAL,
    DRAIN,
    MAINT,
    NOLB,
    UNKNOWN,
    UP,
    UP_TRANSITIONAL,
    LoadBalancer,
    ServerState,
    ServerStatus,
)

#: Longest answer kept from a ``set`` or ``show info`` command, in characters.
MAX_ANSWER = 4096
_NAME = re.compile(r"^[^\s/;#]+$")
_SERVER_TYPE = "2"  # the CSV ``type`` column: 0 frontend, 1 backend, 2 server, 3 listener


def normalise_status(status: str) -> str:
    """HAProxy's status word ("UP 1/3", "MAINT (via be/s1)", "no check"...) as a base state."""
    word = status.strip()
    upper = word.upper()
    transitional = re.search(r"\s\d+/\d+$", word) is not None
    if upper.startswith("MAINT"):
        return MAINT
    if upper.startswith("DRAIN"):
        return DRAIN
    if upper.startswith("NOLB"):
        return NOLB
    if upper.startswith("UP"):
        return UP_TRANSITIONAL if transitional else UP
    if upper.startswith("DOWN"):
        return DOWN_TRANSITIONAL if transitional else DOWN
    if upper == "NO CHECK":
        return UP
    return UNKNOWN


def parse_stat_csv(lines: Iterable[str]) -> list[ServerStatus]:
    """The server rows of ``show stat`` / the stats page's CSV (header ``# pxname,svname,...``).

    Frontend, backend and listener rows are left out. LoadBalancerError if the header is not
    HAProxy's.
    """
    it = iter(lines)
    header = next((line for line in it if line.strip()), "")
    if not header.startswith("# pxname,svname,"):
        raise LoadBalancerError(f"not HAProxy stats CSV: first line {header[:80]!r}")
    names = header[2:].rstrip("\r\n").split(",")
    servers: list[ServerStatus] = []
    for row in csv.DictReader((line for line in it if line.strip()), fieldnames=names):
        if row.get("type") != _SERVER_TYPE:
            continue
        status = row.get("status") or ""
        servers.append(
            ServerStatus(
                backend=row["pxname"],
                server=row["svname"],
                address=row.get("addr") or "",
                status=status,
                state=normalise_status(status),
                current_sessions=_int(row.get("scur")),
                weight=_int(row.get("weight")),
            )
        )
    return servers


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def check_name(kind: str, name: str) -> str:
    """A backend or server name safe to put in a runtime command (no spaces, '/', ';', '#')."""
    if not _NAME.match(name):
        raise LoadBalancerError(f"invalid HAProxy {kind} name {name!r}")
    return name


@dataclass(frozen=True)
class HAProxy(LoadBalancer):
    """One HAProxy instance.

    Args:
        runtime: the Runtime API: ``host:port`` (``stats socket ipv4@...``) or the path of a
            unix socket. Needed to change states; without it the lever is read-only.
        stats_url: the stats page (e.g. ``http://lb:8404/stats``); its CSV is read when no
            runtime API is given (it leaves server addresses empty).
        stats_user, stats_password: the page's basic auth (``stats auth``), if any.
        timeout: seconds for connecting and for each read.
    """

    runtime: str | None = None
    stats_url: str | None = None
    stats_user: str | None = None
    stats_password: str | None = field(default=None, repr=False)
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.runtime and not self.stats_url:
            raise LoadBalancerError("HAProxy needs a runtime API address or a stats URL")

    def describe(self) -> str:
        """``HAProxy runtime <address>`` or ``HAProxy stats <url>`` (never the password)."""
        if self.runtime:
            return f"HAProxy runtime {self.runtime}"
        return f"HAProxy stats {self.stats_url}"

    # --- levers ----------------------------------------------------------------------------

    def servers(self) -> list[ServerStatus]:
        """Every server row of ``show stat`` (runtime API) or of the stats CSV."""
        if self.runtime:
            with self._command("show stat") as lines:
                return parse_stat_csv(lines)
        return self._stats_csv()

    def set_state(self, backend: str, server: str, state: ServerState) -> None:
        """``set server <backend>/<server> state <state>``; any non-empty answer is an error."""
        if not self.runtime:
            raise LoadBalancerError(f"{self.describe()}: changing a state needs the runtime API")
        command = (
            f"set server {check_name('backend', backend)}/{check_name('server', server)} "
            f"state {ServerState(state).value}"
        )
        answer = self.ask(command).strip()
        if answer.startswith("No such backend"):
            raise LoadBalancerError(f"{self.describe()}: no backend {backend!r} ({answer})")
        if answer.startswith("No such server"):
            raise LoadBalancerError(
                f"{self.describe()}: backend {backend!r} has no server {server!r} ({answer})"
            )
        if answer:
            raise LoadBalancerError(f"{self.describe()}: {command!r} answered {answer!r}")

    def check(self) -> str:
        """``show info`` over the runtime API, or one read of the stats CSV."""
        if not self.runtime:
            found = self._stats_csv()
            return f"{self.describe()}: {_count(found)}"
        info: dict[str, str] = {}
        for line in self.ask("show info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        if "Version" not in info:
            raise LoadBalancerError(f"{self.describe()}: 'show info' did not answer like HAProxy")
        found = self.servers()
        return (
            f"HAProxy {info['Version']} at {self.runtime}, up {info.get('Uptime', '?')}, "
            f"{_count(found)}"
        )

    # --- runtime API -----------------------------------------------------------------------

    def ask(self, command: str) -> str:
        """Send one runtime command; its answer (at most :data:`MAX_ANSWER` characters)."""
        with self._command(command) as lines:
            kept: list[str] = []
            size = 0
            for line in lines:
                if size < MAX_ANSWER:
                    kept.append(line[: MAX_ANSWER - size])
                    size += len(kept[-1])
            return "".join(kept)

    def _command(self, command: str) -> _RuntimeAnswer:
        if "\n" in command or not self.runtime:
            raise LoadBalancerError(f"invalid HAProxy runtime command {command!r}")
        try:
            if self.runtime.startswith("/"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self.runtime)
                except BaseException:
                    sock.close()
                    raise
            else:
                host, _, port = self.runtime.rpartition(":")
                sock = socket.create_connection((host, int(port)), timeout=self.timeout)
            sock.sendall(command.encode() + b"\n")
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise LoadBalancerError(f"cannot reach {self.describe()}: {reason}") from None
        return _RuntimeAnswer(sock, self.describe())

    # --- stats page ------------------------------------------------------------------------

    def _stats_csv(self) -> list[ServerStatus]:
        url = f"{self.stats_url};csv"
        auth = (self.stats_user or "", self.stats_password or "") if self.stats_user else None
        try:
            with httpx.stream("GET", url, auth=auth, timeout=self.timeout) as resp:
                if resp.status_code == 401:
                    raise LoadBalancerError(
                        f"{self.describe()}: user {self.stats_user!r} was refused (HTTP 401)"
                    )
                if resp.status_code != 200:
                    raise LoadBalancerError(f"{self.describe()}: HTTP {resp.status_code}")
                return parse_stat_csv(resp.iter_lines())
        except httpx.HTTPError as exc:
            raise LoadBalancerError(f"cannot reach {self.describe()}: {exc}") from None


class _RuntimeAnswer:
    """The lines HAProxy answers on one runtime connection (closed on exit)."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self._sock, self._where = sock, where

    def __enter__(self) -> Iterator[str]:
        return self._lines()

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def _lines(self) -> Iterator[str]:
        try:
            with self._sock.makefile("r", encoding="utf-8", errors="replace", newline="") as f:
                yield from f
        except OSError as exc:
            raise LoadBalancerError(f"{self._where}: reading the answer failed: {exc}") from None


def _count(servers: list[ServerStatus]) -> str:
    backends = {s.backend for s in servers}
    return f"{len(servers)} server(s) in {len(backends)} backend(s)"
