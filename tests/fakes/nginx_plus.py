"""A fake NGINX Plus REST API: exactly the endpoints the lever uses, answering errors the way
NGINX Plus does. NGINX Plus is commercial and cannot run here; everything else is a real server.

Endpoints (``<v>`` = 1..9): ``GET /api/``, ``GET /api/<v>/nginx``,
``GET /api/<v>/http/upstreams``, ``GET /api/<v>/http/upstreams/<name>/servers`` and
``PATCH /api/<v>/http/upstreams/<name>/servers/<id>``.
Errors: ``{"error": {"status", "text", "code"}, "request_id", "href"}``. A test sets a peer's
``active`` count with :meth:`FakeNginxPlus.set_active`; optional basic auth answers 401 like
nginx's ``auth_basic`` (an HTML page, not the API's JSON).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from tests.fakes.http import Reply, Request, serving

API_VERSIONS = list(range(1, 10))
HREF = "https://nginx.org/en/docs/http/ngx_http_api_module.html"
#: Parameters a PATCH of an http upstream server accepts, and the type of each.
PATCHABLE: dict[str, type] = {
    "server": str,
    "service": str,
    "weight": int,
    "max_conns": int,
    "max_fails": int,
    "fail_timeout": str,
    "slow_start": str,
    "route": str,
    "backup": bool,
    "down": bool,
    "drain": bool,
}


@dataclass
class FakeServer:
    """One configured server of an upstream and its live counters."""

    id: int
    server: str
    weight: int = 1
    down: bool = False
    drain: bool = False
    active: int = 0

    def conf(self) -> dict[str, Any]:
        """The ``/servers`` form (configuration)."""
        data: dict[str, Any] = {
            "id": self.id,
            "server": self.server,
            "weight": self.weight,
            "max_conns": 0,
            "max_fails": 1,
            "fail_timeout": "10s",
            "slow_start": "0s",
            "route": "",
            "backup": False,
            "down": self.down,
        }
        if self.drain:
            data["drain"] = True
        return data

    def peer(self) -> dict[str, Any]:
        """The ``/upstreams`` peer form (state and counters)."""
        state = "down" if self.down else "draining" if self.drain else "up"
        return {
            "id": self.id,
            "server": self.server,
            "name": self.server,
            "backup": False,
            "weight": self.weight,
            "state": state,
            "active": self.active,
            "requests": 0,
            "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "total": 0},
            "sent": 0,
            "received": 0,
            "fails": 0,
            "unavail": 0,
            "health_checks": {"checks": 0, "fails": 0, "unhealthy": 0},
            "downtime": 0,
        }


class ApiError(Exception):
    """An error answer: HTTP status, text and NGINX Plus error code."""

    def __init__(self, status: int, text: str, code: str) -> None:
        super().__init__(text)
        self.status, self.text, self.code = status, text, code


class FakeNginxPlus:
    """The fake server; use as a context manager. ``upstreams``: name -> server addresses."""

    def __init__(
        self,
        upstreams: dict[str, list[str]],
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.upstreams = {
            name: [FakeServer(i, addr) for i, addr in enumerate(addrs)]
            for name, addrs in upstreams.items()
        }
        self.credentials = (username, password) if username else None
        self.lock = threading.Lock()
        self.patches: list[tuple[str, dict[str, Any]]] = []
        #: The API location, ``http://127.0.0.1:<port>/api`` (set when started).
        self.url = ""
        self._stack = ExitStack()

    def set_active(self, upstream: str, server: str, active: int) -> None:
        """Set the current connections of ``upstream``'s server ``server`` (an address)."""
        with self.lock:
            self._find(upstream, server).active = active

    def _find(self, upstream: str, server: str) -> FakeServer:
        return next(s for s in self.upstreams[upstream] if s.server == server)

    def __enter__(self) -> FakeNginxPlus:
        self.url = self._stack.enter_context(serving(self._serve, server_version="nginx")) + "/api"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # --- the API -----------------------------------------------------------------------------

    def _serve(self, request: Request) -> Reply:
        if self.credentials and not self._authorized(request.headers.get("authorization", "")):
            page = b"<html><head><title>401 Authorization Required</title></head></html>\n"
            return Reply(401, page, "text/html", {"WWW-Authenticate": 'Basic realm="api"'})
        try:
            return Reply(*self.answer(request.method, request.path, request.body))
        except ApiError as err:
            error = {"status": err.status, "text": err.text, "code": err.code}
            return Reply(
                err.status, {"error": error, "request_id": secrets.token_hex(16), "href": HREF}
            )

    def _authorized(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return (user, password) == self.credentials

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """Route one request; ``(status, JSON value)`` or ApiError."""
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts == ["api"]:
            return 200, API_VERSIONS
        if len(parts) < 2 or parts[0] != "api":
            raise ApiError(404, "path not found", "PathNotFound")
        if not parts[1].isdigit() or int(parts[1]) not in API_VERSIONS:
            raise ApiError(404, "unknown version", "UnknownVersion")
        rest = parts[2:]
        if rest == ["nginx"]:
            self._method(method, "GET")
            return 200, {"version": "1.25.5", "build": "nginx-plus-r32", "pid": 1, "ppid": 0}
        if rest[:2] != ["http", "upstreams"]:
            raise ApiError(404, "path not found", "PathNotFound")
        with self.lock:
            if len(rest) == 2:
                self._method(method, "GET")
                return 200, {
                    name: {
                        "peers": [s.peer() for s in servers],
                        "keepalive": 0,
                        "zombies": 0,
                        "zone": name,
                    }
                    for name, servers in self.upstreams.items()
                }
            servers = self.upstreams.get(rest[2])
            if servers is None:
                raise ApiError(404, "upstream not found", "UpstreamNotFound")
            if len(rest) == 4 and rest[3] == "servers":
                self._method(method, "GET")
                return 200, [s.conf() for s in servers]
            if len(rest) == 5 and rest[3] == "servers":
                self._method(method, "GET", "PATCH")
                if not rest[4].isdigit():
                    raise ApiError(400, "invalid server id", "UpstreamBadServerId")
                server = next((s for s in servers if s.id == int(rest[4])), None)
                if server is None:
                    raise ApiError(404, "server not found", "UpstreamServerNotFound")
                if method == "PATCH":
                    self._patch(rest[2], server, body)
                return 200, server.conf()
        raise ApiError(404, "path not found", "PathNotFound")

    @staticmethod
    def _method(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise ApiError(405, "method not supported", "MethodNotSupported")

    def _patch(self, upstream: str, server: FakeServer, body: bytes) -> None:
        try:
            changes = json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "invalid JSON body", "UpstreamConfFormatError") from None
        if not isinstance(changes, dict):
            raise ApiError(400, "invalid JSON body", "UpstreamConfFormatError")
        for key, value in changes.items():
            kind = PATCHABLE.get(key)
            if kind is None:
                raise ApiError(400, f'unknown parameter "{key}"', "UpstreamConfFormatError")
            if type(value) is not kind:
                raise ApiError(400, f'invalid "{key}" value', "UpstreamConfFormatError")
        self.patches.append((upstream, changes))
        server.down = changes.get("down", server.down)
        server.drain = changes.get("drain", server.drain)
        server.weight = changes.get("weight", server.weight)
