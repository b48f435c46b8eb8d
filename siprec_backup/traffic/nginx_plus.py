"""NGINX Plus: the REST API (``/api/<version>/http/upstreams``) lists upstream peers with their
current connections and PATCHes a server to drain, down or back up, without a reload.

A server is named by its address as configured (the ``server`` field), or by its numeric id.
Errors come back as ``{"error": {"status", "text", "code"}, "request_id", "href"}``; each turns
into one LoadBalancerError line with the status, code and text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from siprec_backup.errors import LoadBalancerError
from siprec_backup.traffic.base import (
    DOWN,
    DOWN_TRANSITIONAL,
    DRAIN,
    MAINT,
    UNKNOWN,
    UP,
    LoadBalancer,
    ServerState,
    ServerStatus,
)

#: A peer's ``state`` in the API -> our normalised state.
PEER_STATES = {
    "up": UP,
    "draining": DRAIN,
    "down": MAINT,
    "unavail": DOWN,
    "unhealthy": DOWN,
    "checking": DOWN_TRANSITIONAL,
}

#: The PATCH body for each requested state.
PATCHES: dict[ServerState, dict[str, bool]] = {
    ServerState.READY: {"down": False, "drain": False},
    ServerState.DRAIN: {"drain": True},
    ServerState.MAINT: {"down": True},
}


def api_error(method: str, path: str, response: httpx.Response) -> LoadBalancerError:
    """One line for a failed API call: ``<METHOD> <path>: <status> <code>: <text>``."""
    try:
        error = response.json()["error"]
        detail = f"{error.get('code', '?')}: {error.get('text', '')}"
    except (ValueError, KeyError, TypeError, AttributeError):
        detail = "not an NGINX Plus API error" if response.status_code != 401 else "unauthorized"
    return LoadBalancerError(f"NGINX Plus {method} {path}: {response.status_code} {detail}")


@dataclass(frozen=True)
class NginxPlus(LoadBalancer):
    """NGINX Plus reached at ``url`` (the location with ``api write=on``, e.g.
    ``https://lb:8080/api``), API ``version`` (9 for R30+). ``username``/``password``: basic
    auth in front of the API, if any."""

    url: str
    version: int = 9
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 5.0
    verify: bool = True

    def describe(self) -> str:
        """``NGINX Plus <url>``."""
        return f"NGINX Plus {self.url}"

    def servers(self) -> list[ServerStatus]:
        """Every peer of every http upstream, with its ``active`` connections."""
        upstreams = self.request("GET", "/http/upstreams")
        if not isinstance(upstreams, dict):
            raise LoadBalancerError(f"{self.describe()}: /http/upstreams is not an object")
        found: list[ServerStatus] = []
        for name, upstream in upstreams.items():
            for peer in upstream.get("peers", []):
                state = str(peer.get("state", ""))
                found.append(
                    ServerStatus(
                        backend=name,
                        server=str(peer.get("server", "")),
                        address=str(peer.get("server", "")),
                        status=state,
                        state=PEER_STATES.get(state, UNKNOWN),
                        current_sessions=int(peer.get("active", 0)),
                        weight=int(peer.get("weight", 1)),
                    )
                )
        return found

    def set_state(self, backend: str, server: str, state: ServerState) -> None:
        """PATCH the server's ``drain``/``down`` flags."""
        server_id = self._server_id(backend, server)
        self.request(
            "PATCH",
            f"/http/upstreams/{quote(backend, safe='')}/servers/{server_id}",
            json=PATCHES[ServerState(state)],
        )

    def check(self) -> str:
        """``GET /api/<version>/nginx``: version, build and the upstreams count."""
        info = self.request("GET", "/nginx")
        found = self.servers()
        return (
            f"NGINX Plus {info.get('version', '?')} ({info.get('build', '?')}) at {self.url}, "
            f"{len(found)} server(s) in {len({s.backend for s in found})} upstream(s)"
        )

    def _server_id(self, backend: str, server: str) -> int:
        configured = self.request("GET", f"/http/upstreams/{quote(backend, safe='')}/servers")
        for entry in configured:
            if entry.get("server") == server or str(entry.get("id")) == server:
                return int(entry["id"])
        known = ", ".join(str(e.get("server")) for e in configured)
        raise LoadBalancerError(
            f"{self.describe()}: upstream {backend!r} has no server {server!r} (servers: {known})"
        )

    def request(self, method: str, path: str, json: dict[str, Any] | None = None) -> Any:
        """One API call on ``/api/<version><path>``: the JSON answer, or LoadBalancerError with
        NGINX Plus's status, code and text."""
        url = f"{self.url.rstrip('/')}/{self.version}{path}"
        auth = (self.username, self.password or "") if self.username else None
        try:
            resp = httpx.request(
                method, url, json=json, auth=auth, timeout=self.timeout, verify=self.verify
            )
        except httpx.HTTPError as exc:
            raise LoadBalancerError(f"cannot reach {self.describe()}: {exc}") from None
        if resp.status_code >= 400:
            raise api_error(method, path, resp)
        try:
            return resp.json()
        except ValueError:
            raise LoadBalancerError(
                f"{self.describe()}: {method} {path} answered {resp.status_code} without JSON"
            ) from None
