"""What every load balancer lever offers: list servers, set one ready / drain / maint, and wait
until a drained server has no current sessions left.

A failover flow pulls these levers without knowing which load balancer sits in front of the
platform, so HAProxy, nginx and NGINX Plus all implement :class:`LoadBalancer`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum

from siprec_backup.errors import DrainTimeoutError, LoadBalancerError


class ServerState(StrEnum):
    """The administrative state a lever asks for."""

    READY = "ready"  # takes new sessions
    DRAIN = "drain"  # keeps its current sessions, takes no new ones
    MAINT = "maint"  # out of rotation entirely


#: Normalised states of :attr:`ServerStatus.state`. The transitional ones are HAProxy's
#: "UP 1/3" (up and taking traffic, health checks not at full count: recovering or failing) and
#: "DOWN 1/2" (down, taking no traffic, checks passing on the way up).
UP = "up"
DOWN = "down"
DRAIN = "drain"
MAINT = "maint"
UP_TRANSITIONAL = "up-transitional"
DOWN_TRANSITIONAL = "down-transitional"
NOLB = "nolb"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ServerStatus:
    """One server of one backend (an HAProxy backend, an nginx upstream) as seen right now.

    ``status`` is the load balancer's own word ("UP 1/3", "MAINT (via be/s1)", "draining");
    ``state`` is its normalised form (:data:`UP`, :data:`DRAIN`, :data:`MAINT`...).
    """

    backend: str
    server: str
    address: str
    status: str
    state: str
    current_sessions: int
    weight: int

    @property
    def name(self) -> str:
        """``backend/server``, as messages name it."""
        return f"{self.backend}/{self.server}"


class LoadBalancer(ABC):
    """One load balancer: its servers, their states, and the levers to change them."""

    @abstractmethod
    def describe(self) -> str:
        """A short, secret-free description for logs and audit records."""

    @abstractmethod
    def check(self) -> str:
        """Reach the load balancer and return a one-line description of what answered;
        LoadBalancerError with a clear message if it cannot be reached or refuses us."""

    @abstractmethod
    def servers(self) -> list[ServerStatus]:
        """Every server of every backend, with its status and current sessions."""

    @abstractmethod
    def set_state(self, backend: str, server: str, state: ServerState) -> None:
        """Set one server ready, draining or in maintenance (LoadBalancerError if refused)."""

    def server(self, backend: str, server: str) -> ServerStatus:
        """The status of one server; LoadBalancerError naming the unknown backend or server."""
        found = self.servers()
        in_backend = [s for s in found if s.backend == backend]
        if not in_backend:
            known = ", ".join(sorted({s.backend for s in found})) or "none"
            raise LoadBalancerError(
                f"{self.describe()}: no backend {backend!r} (backends: {known})"
            )
        for status in in_backend:
            if status.server == server:
                return status
        known = ", ".join(s.server for s in in_backend)
        raise LoadBalancerError(
            f"{self.describe()}: backend {backend!r} has no server {server!r} (servers: {known})"
        )

    def wait_drained(
        self, backend: str, server: str, *, deadline_s: float, poll_s: float = 0.2
    ) -> float:
        """Poll until ``backend/server`` has no current sessions; return the seconds waited.

        DrainTimeoutError naming the server and its remaining sessions once ``deadline_s``
        seconds have passed.
        """
        start = time.monotonic()
        while True:
            status = self.server(backend, server)
            elapsed = time.monotonic() - start
            if status.current_sessions <= 0:
                return elapsed
            if elapsed >= deadline_s:
                raise DrainTimeoutError(
                    f"{self.describe()}: {status.name} still has {status.current_sessions} "
                    f"current session(s) after {deadline_s:g} s"
                )
            time.sleep(max(0.0, min(poll_s, deadline_s - elapsed)))
