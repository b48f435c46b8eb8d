"""Google Cloud backend services (global or regional) as a load balancer lever.

A backend is a backend service name; a server is one of its backends, named by the short name
of its group (the instance group or NEG: the last part of ``backends[].group``). Two drain modes:

- ``capacity`` (default): READY sets the backend's ``capacityScaler`` to 1.0, DRAIN and MAINT set
  it to 0.0, so the load balancer sends it no new connections while it stays attached.
- ``removal``: DRAIN and MAINT detach the backend (Google then drains its connections for the
  service's ``connectionDraining.drainingTimeoutSec``); READY attaches it again with the settings
  it had (remembered by this lever) or, after a restart, with ``groups[server]`` and
  ``balancing_mode``.

Every change is a PATCH of the backend service carrying the fingerprint it was read with (a
concurrent change makes Google answer 412: a CONFLICT error), then the returned Operation is
polled (operations.get) until DONE; an Operation with ``error.errors`` raises.

States come from ``backends`` and ``getHealth``: a group with a HEALTHY member is UP, one with
none DOWN. A backend at capacity 0 (or detached by this lever) is DRAIN for the service's
draining timeout after this lever changed it, and MAINT after that (or when we did not change
it): Google reports no session counts, so :attr:`ServerStatus.current_sessions` is 1 while DRAIN
and 0 otherwise, and :meth:`LoadBalancer.wait_drained` waits out the draining timeout.

REST: https://cloud.google.com/compute/docs/reference/rest/v1/backendServices (get, patch,
getHealth), .../regionBackendServices, .../globalOperations/get, .../regionOperations/get.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

from siprec_backup.cloud.errors import code_for_status
from siprec_backup.cloud.gcp import GcpCredentials, GoogleToken, gcp_api
from siprec_backup.cloud.http import RestApi
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.errors import (
    CONFIGURATION,
    PROVIDER,
    UNAVAILABLE,
    CloudLoadBalancerError,
)
from siprec_backup.traffic.base import (
    DOWN,
    DRAIN,
    MAINT,
    UNKNOWN,
    UP,
    LoadBalancer,
    ServerState,
    ServerStatus,
)

SERVICE = "compute"
DRAIN_MODES = ("capacity", "removal")
BALANCING_MODES = ("UTILIZATION", "RATE", "CONNECTION", "CUSTOM_METRICS")


def _config(message: str) -> CloudLoadBalancerError:
    return CloudLoadBalancerError(message, provider="gcp", service=SERVICE, code=CONFIGURATION)


def short_name(group: str) -> str:
    """``ig-a`` for ``.../zones/us-central1-a/instanceGroups/ig-a``."""
    return group.rstrip("/").rsplit("/", 1)[-1]


class GcpBackendServices(LoadBalancer):
    """Backend services of one project as one lever.

    >>> lb = GcpBackendServices(["sip-edge"], credentials=GcpCredentials(project="voice"))
    >>> lb.set_state("sip-edge", "ig-sip-a", ServerState.MAINT)
    """

    def __init__(
        self,
        backend_services: Sequence[str],
        *,
        credentials: GcpCredentials | None = None,
        region: str = "",
        drain_mode: str = "capacity",
        groups: Mapping[str, str] | None = None,
        balancing_mode: str = "UTILIZATION",
        retry: RetryPolicy | None = None,
        operation_timeout: float = 300.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.credentials = credentials or GcpCredentials()
        self.backend_services = tuple(backend_services)
        self.region = region
        self.drain_mode = drain_mode
        self.groups = dict(groups or {})
        self.balancing_mode = balancing_mode
        self.operation_timeout = operation_timeout
        self.poll_interval = poll_interval
        if not self.backend_services:
            raise _config("name at least one backend service")
        if drain_mode not in DRAIN_MODES:
            raise _config(f"unknown drain mode {drain_mode!r}: use one of {', '.join(DRAIN_MODES)}")
        if balancing_mode not in BALANCING_MODES:
            raise _config(f"unknown balancing mode {balancing_mode!r}")
        if operation_timeout <= 0 or poll_interval <= 0:
            raise _config("the operation timeout and poll interval must be positive")
        self._token = GoogleToken(self.credentials, SERVICE, CloudLoadBalancerError)
        self.api: RestApi = gcp_api(
            SERVICE,
            self.credentials.compute_url,
            self._token,
            family=CloudLoadBalancerError,
            retry=retry,
            timeout=self.credentials.timeout,
        )
        #: Backends this lever detached: (service, server) -> the backend as it was.
        self._removed: dict[tuple[str, str], dict[str, Any]] = {}
        #: When this lever last took a backend out: (service, server) -> monotonic time.
        self._drained_at: dict[tuple[str, str], float] = {}

    def __repr__(self) -> str:
        return f"GcpBackendServices({list(self.backend_services)!r}, {self.describe()})"

    def describe(self) -> str:
        """``GCP backend services sip-edge (global, capacity drain)``."""
        where = f"region {self.region}" if self.region else "global"
        names = ", ".join(self.backend_services)
        return f"GCP backend services {names} ({where}, {self.drain_mode} drain)"

    # --- paths -----------------------------------------------------------------------------

    def _scope(self) -> str:
        project = self._token.project()
        if self.region:
            return f"projects/{project}/regions/{self.region}"
        return f"projects/{project}/global"

    def _service_path(self, backend: str) -> str:
        if backend not in self.backend_services:
            known = ", ".join(self.backend_services)
            raise _config(f"{self.describe()}: no backend {backend!r} (backends: {known})")
        return f"{self._scope()}/backendServices/{backend}"

    def _group_url(self, group: str) -> str:
        if group.startswith(("http://", "https://")):
            return group
        path = group.lstrip("/")
        if not path.startswith("projects/"):
            path = f"projects/{self._token.project()}/{path}"
        return self.api.url(path)

    # --- reading ---------------------------------------------------------------------------

    def _service(self, backend: str) -> dict[str, Any]:
        return dict(self.api.json("GET", self._service_path(backend)))

    def check(self) -> str:
        """Read every backend service and its health: what answered and how many backends."""
        found = self.servers()
        return (
            f"Compute at {self.credentials.compute_url} ({self._scope()}):"
            f" {len(self.backend_services)} backend service(s), {len(found)} backend(s)"
        )

    def servers(self) -> list[ServerStatus]:
        """Every backend of every configured backend service (and those this lever detached)."""
        found: list[ServerStatus] = []
        for backend in self.backend_services:
            found += self._statuses(backend)
        return found

    def _statuses(self, backend: str) -> list[ServerStatus]:
        service = self._service(backend)
        timeout = _draining_timeout(service)
        statuses = []
        attached = set()
        for entry in service.get("backends") or []:
            group = str(entry.get("group", ""))
            server = short_name(group)
            attached.add(server)
            scaler = float(entry.get("capacityScaler", 1.0))
            if scaler <= 0:
                statuses.append(self._out(backend, server, group, "capacityScaler 0", timeout))
                continue
            health = self.api.json(
                "POST", f"{self._service_path(backend)}/getHealth", json={"group": group}
            )
            statuses.append(_health_status(backend, server, group, scaler, health))
        for (name, server), entry in self._removed.items():
            if name == backend and server not in attached:
                group = str(entry.get("group", ""))
                statuses.append(self._out(backend, server, group, "not attached", timeout))
        return statuses

    def _out(self, backend: str, server: str, group: str, why: str, timeout: int) -> ServerStatus:
        """A backend taking no new connections: DRAIN within the draining timeout after this
        lever took it out, MAINT otherwise."""
        since = self._drained_at.get((backend, server))
        draining = since is not None and time.monotonic() - since < timeout
        return ServerStatus(
            backend=backend,
            server=server,
            address=_address(group),
            status=f"{why}, draining ({timeout} s)" if draining else why,
            state=DRAIN if draining else MAINT,
            current_sessions=1 if draining else 0,
            weight=0,
        )

    def server(self, backend: str, server: str) -> ServerStatus:
        """One backend by its group's short name; a group of ``groups`` that is not attached
        reads as MAINT, an unknown one is a CONFIGURATION error."""
        statuses = self._statuses(backend)
        for status in statuses:
            if status.server == server:
                return status
        if server in self.groups:
            return ServerStatus(
                backend, server, _address(self.groups[server]), "not attached", MAINT, 0, 0
            )
        known = ", ".join(s.server for s in statuses) or "none"
        raise _config(
            f"{self.describe()}: backend {backend!r} has no server {server!r} (servers: {known})"
        )

    # --- levers ----------------------------------------------------------------------------

    def set_state(self, backend: str, server: str, state: ServerState) -> None:
        """PATCH the backend service (with its fingerprint) and wait for the operation."""
        service = self._service(backend)
        backends = [dict(b) for b in service.get("backends") or []]
        index = next(
            (i for i, b in enumerate(backends) if short_name(str(b.get("group", ""))) == server),
            None,
        )
        key = (backend, server)
        if self.drain_mode == "capacity":
            if index is None:
                raise self._unknown(backend, server, backends)
            backends[index]["capacityScaler"] = 1.0 if state == ServerState.READY else 0.0
        elif state == ServerState.READY:
            if index is not None:
                if float(backends[index].get("capacityScaler", 1.0)) > 0:
                    self._drained_at.pop(key, None)
                    return
                backends[index]["capacityScaler"] = 1.0
            else:
                backends.append(self._reattach(backend, server, backends))
        else:
            if index is None:
                if key not in self._removed:
                    raise self._unknown(backend, server, backends)
                return  # already detached by this lever
            self._removed[key] = copy.deepcopy(backends.pop(index))
        self._patch(backend, service, backends)
        if state == ServerState.READY:
            self._drained_at.pop(key, None)
            self._removed.pop(key, None)
        else:
            self._drained_at.setdefault(key, time.monotonic())

    def _reattach(
        self, backend: str, server: str, backends: list[dict[str, Any]]
    ) -> dict[str, Any]:
        remembered = self._removed.get((backend, server))
        if remembered is not None:
            entry = copy.deepcopy(remembered)
            entry["capacityScaler"] = 1.0
            return entry
        if server in self.groups:
            return {
                "group": self._group_url(self.groups[server]),
                "balancingMode": self.balancing_mode,
                "capacityScaler": 1.0,
            }
        raise _config(
            f"{self.describe()}: {backend}/{server} is not attached and its group is unknown:"
            f" set groups[{server!r}] to its instance group or NEG"
        )

    def _unknown(
        self, backend: str, server: str, backends: list[dict[str, Any]]
    ) -> CloudLoadBalancerError:
        known = ", ".join(short_name(str(b.get("group", ""))) for b in backends) or "none"
        return _config(
            f"{self.describe()}: backend {backend!r} has no server {server!r} (servers: {known})"
        )

    def _patch(self, backend: str, service: dict[str, Any], backends: list[dict[str, Any]]) -> None:
        body = {"backends": backends, "fingerprint": service.get("fingerprint", "")}
        operation = self.api.json("PATCH", self._service_path(backend), json=body)
        self._wait(dict(operation))

    def _wait(self, operation: dict[str, Any]) -> None:
        """Poll the operation (operations.get) until DONE; raise its error if it has one."""
        start = time.monotonic()
        name = str(operation.get("name", ""))
        while operation.get("status") != "DONE":
            elapsed = time.monotonic() - start
            if elapsed >= self.operation_timeout:
                raise CloudLoadBalancerError(
                    f"operation {name} still {operation.get('status')} after"
                    f" {self.operation_timeout:g} s",
                    provider="gcp",
                    service=SERVICE,
                    code=UNAVAILABLE,
                )
            time.sleep(min(self.poll_interval, self.operation_timeout - elapsed))
            operation = dict(self.api.json("GET", f"{self._scope()}/operations/{name}"))
        errors = (operation.get("error") or {}).get("errors") or []
        if errors:
            first = errors[0]
            status = int(operation.get("httpErrorStatusCode") or 0)
            messages = "; ".join(str(e.get("message", e.get("code", ""))) for e in errors)
            raise CloudLoadBalancerError(
                f"operation {name} failed: {messages}",
                provider="gcp",
                service=SERVICE,
                code=code_for_status(status) if status else PROVIDER,
                provider_code=str(first.get("code", "")),
            )


def _draining_timeout(service: dict[str, Any]) -> int:
    return int((service.get("connectionDraining") or {}).get("drainingTimeoutSec", 0) or 0)


def _address(group: str) -> str:
    """The group's path from the zone or region on: ``zones/z/instanceGroups/ig-a``."""
    parts = group.rstrip("/").split("/")
    for anchor in ("zones", "regions", "global"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) :])
    return group


def _health_status(
    backend: str, server: str, group: str, scaler: float, health: dict[str, Any]
) -> ServerStatus:
    states = [str(h.get("healthState", "UNKNOWN")) for h in health.get("healthStatus") or []]
    healthy = states.count("HEALTHY")
    if healthy:
        state = UP
    elif states and all(s == "UNKNOWN" for s in states):
        state = UNKNOWN
    elif "DRAINING" in states:
        state = DRAIN
    else:
        state = DOWN
    status = f"{healthy}/{len(states)} HEALTHY" if states else "no members"
    if scaler < 1.0:
        status += f", capacityScaler {scaler:g}"
    return ServerStatus(
        backend=backend,
        server=server,
        address=_address(group),
        status=status,
        state=state,
        current_sessions=0,
        weight=round(scaler * 100),
    )


__all__ = ["DRAIN_MODES", "GcpBackendServices", "short_name"]
