"""A fake Google Cloud: the OAuth token endpoint, the Compute backend service endpoints and the
Cloud DNS endpoints the GCP levers use, answering the way Google documents them.

Endpoints (``{scope}`` = ``global`` or ``regions/{region}``):

- ``POST /token``: the JWT bearer grant of a service account (RS256 signature checked against the
  key this fake issued); a refusal is ``400 {"error": "invalid_grant", ...}``.
- ``GET|PATCH /compute/v1/projects/{p}/{scope}/backendServices/{name}`` (PATCH needs the current
  ``fingerprint``: else 412 conditionNotMet), ``POST .../{name}/getHealth`` with ``{"group"}``,
  ``GET /compute/v1/projects/{p}/{scope}/operations/{op}`` and ``POST .../{op}/wait``.
- ``GET /dns/v1/projects/{p}/managedZones`` (``dnsName``, ``maxResults``, ``pageToken``),
  ``GET .../managedZones/{zone}``, ``GET .../{zone}/rrsets`` (``name``, ``type``, paginated),
  ``POST .../{zone}/changes`` and ``GET .../{zone}/changes/{id}``.

Errors are Google's ``{"error": {"code", "message", "status", "errors": [{"reason", ...}]}}``.
Every API call needs a bearer token this fake issued. Pages hold ``page_size`` items and carry
``nextPageToken``. Sources: https://cloud.google.com/compute/docs/reference/rest/v1/backendServices
(get, patch, getHealth), .../globalOperations, .../regionOperations,
https://cloud.google.com/dns/docs/reference/rest/v1/changes, .../resourceRecordSets/list,
.../managedZones/list, https://developers.google.com/identity/protocols/oauth2/service-account
(the JWT grant), https://cloud.google.com/apis/design/errors (the error body).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.http import Reply, Request, serving

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The ``aud`` of a service account's JWT (google-auth sends it whatever the ``token_uri``).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
STATUS_WORDS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
}


class GoogleError(Exception):
    """An error answer: HTTP status, reason (``errors[0].reason``) and message."""

    def __init__(self, status: int, reason: str, message: str, state: str = "") -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.state = state or STATUS_WORDS.get(status, "UNKNOWN")

    def body(self) -> dict[str, Any]:
        """Google's JSON error body."""
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
                "status": self.state,
            }
        }


@dataclass
class Operation:
    """A Compute Operation and how many more polls it stays RUNNING."""

    resource: dict[str, Any]
    polls_left: int
    error: dict[str, Any] | None = None


@dataclass
class Zone:
    """A managed zone, its record sets by (name, type) and its changes by id."""

    resource: dict[str, Any]
    rrsets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls_left: dict[str, int] = field(default_factory=dict)


class FakeGcp:
    """The fake server; use :func:`running_fake_gcp`. Seed with :meth:`add_backend_service`
    and :meth:`add_zone`; control with :meth:`throttle`, ``refuse_tokens``, :meth:`revoke_tokens`,
    ``operation_polls``, ``change_polls`` and :meth:`fail_operations`."""

    def __init__(self, project: str = "siprec-test", page_size: int = 2) -> None:
        self.project = project
        self.page_size = page_size
        self.lock = threading.Lock()
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        #: Health of each group URL's members: [(instance URL, healthState)].
        self.health: dict[str, list[tuple[str, str]]] = {}
        self.operations: dict[tuple[str, str], Operation] = {}
        self.zones: dict[str, Zone] = {}
        self.public_keys: dict[str, Any] = {}
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.token_requests = 0
        #: Polls each new operation / change stays RUNNING / pending.
        self.operation_polls = 0
        self.change_polls = 0
        self.refuse_tokens = False
        #: Called (under the lock) before a PATCH or changes.create is processed: a test uses
        #: it to play another writer changing the resource between our read and our write.
        self.before_write: Callable[[], None] | None = None
        self._throttled: list[int] = []
        self._failing: list[tuple[str, str, int]] = []
        self._counter = 0
        #: ``http://127.0.0.1:<port>`` (set when started).
        self.url = ""
        self._stack = ExitStack()

    # --- addresses -----------------------------------------------------------------------------

    @property
    def compute_url(self) -> str:
        return f"{self.url}/compute/v1"

    @property
    def dns_url(self) -> str:
        return f"{self.url}/dns/v1"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    # --- seeding and control -------------------------------------------------------------------

    def service_account_key(
        self, email: str = "failover@siprec-test.iam.gserviceaccount.com"
    ) -> str:
        """A new service account JSON key whose ``token_uri`` is this fake."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.public_keys[email] = key.public_key()
        return json.dumps(
            {
                "type": "service_account",
                "project_id": self.project,
                "private_key_id": secrets.token_hex(20),
                "private_key": pem,
                "client_email": email,
                "client_id": str(secrets.randbelow(10**20)),
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": self.token_uri,
            }
        )

    def group_url(self, name: str, zone: str = "us-central1-a") -> str:
        """The selfLink of instance group ``name`` in ``zone``."""
        return f"{self.compute_url}/projects/{self.project}/zones/{zone}/instanceGroups/{name}"

    def add_backend_service(
        self,
        name: str,
        groups: dict[str, list[str]],
        *,
        region: str = "",
        draining_timeout: int = 0,
        balancing_mode: str = "UTILIZATION",
    ) -> dict[str, Any]:
        """A backend service with one backend per group (group name -> member health states)."""
        scope = _scope(region)
        backends = []
        for group, states in groups.items():
            url = self.group_url(group)
            backends.append(
                {"group": url, "balancingMode": balancing_mode, "capacityScaler": 1.0}
                | ({"maxUtilization": 0.8} if balancing_mode == "UTILIZATION" else {})
            )
            self.set_health(group, states)
        link = f"{self.compute_url}/projects/{self.project}/{scope}/backendServices/{name}"
        resource = {
            "kind": "compute#backendService",
            "id": str(secrets.randbelow(10**18)),
            "name": name,
            "selfLink": link,
            "backends": backends,
            "connectionDraining": {"drainingTimeoutSec": draining_timeout},
            "loadBalancingScheme": "EXTERNAL_MANAGED",
            "protocol": "TCP",
            "fingerprint": _fingerprint(),
        } | ({"region": region} if region else {})
        self.services[(scope, name)] = resource
        return resource

    def set_health(self, group: str, states: list[str], zone: str = "us-central1-a") -> None:
        """Set the health states of instance group ``group``'s members."""
        url = self.group_url(group, zone)
        self.health[url] = [
            (f"{self.compute_url}/projects/{self.project}/zones/{zone}/instances/{group}-{i}", s)
            for i, s in enumerate(states)
        ]

    def service(self, name: str, region: str = "") -> dict[str, Any]:
        """The backend service as the fake holds it."""
        return self.services[(_scope(region), name)]

    def add_zone(
        self, name: str, dns_name: str, records: dict[tuple[str, str], tuple[int, list[str]]]
    ) -> Zone:
        """A managed zone with SOA and NS sets and ``records``: (name, type) -> (ttl, rrdatas)."""
        dns_name = dns_name.rstrip(".") + "."
        zone = Zone(
            {
                "kind": "dns#managedZone",
                "name": name,
                "dnsName": dns_name,
                "id": str(secrets.randbelow(10**18)),
                "nameServers": ["ns-cloud-a1.googledomains.com."],
                "visibility": "public",
            }
        )
        soa = (
            "ns-cloud-a1.googledomains.com. cloud-dns-hostmaster.google.com."
            " 1 21600 3600 259200 300"
        )
        zone.rrsets[(dns_name, "SOA")] = _rrset(dns_name, "SOA", 21600, [soa])
        zone.rrsets[(dns_name, "NS")] = _rrset(
            dns_name, "NS", 21600, ["ns-cloud-a1.googledomains.com."]
        )
        for (rname, rtype), (ttl, datas) in records.items():
            zone.rrsets[(rname, rtype)] = _rrset(rname, rtype, ttl, datas)
        self.zones[name] = zone
        return zone

    def rrset(self, zone: str, name: str, rtype: str) -> dict[str, Any] | None:
        """A record set as the fake holds it, or None."""
        return self.zones[zone].rrsets.get((name, rtype))

    def throttle(self, count: int, status: int = 429) -> None:
        """Answer the next ``count`` API calls with a rate limit error (429 or 403)."""
        with self.lock:
            self._throttled += [status] * count

    def fail_operations(self, count: int, code: str = "INVALID_USAGE", http: int = 400) -> None:
        """Make the next ``count`` PATCH operations end DONE with an error (nothing applied)."""
        with self.lock:
            self._failing += [(code, f"the operation failed: {code}", http)] * count

    def revoke_tokens(self) -> None:
        """Forget every issued token: API calls with them get 401 until a new token is issued."""
        with self.lock:
            self.tokens.clear()

    def __enter__(self) -> FakeGcp:
        self.url = self._stack.enter_context(serving(self._serve, server_version="ESF"))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _serve(self, request: Request) -> Reply:
        if request.path == "/token" and request.method == "POST":
            status, value = self.grant(request.body)
        else:
            auth = request.headers.get("authorization", "")
            try:
                status, value = self.answer(
                    request.method, request.path, request.query, request.body, auth
                )
            except GoogleError as err:
                status, value = err.status, err.body()
        return Reply(status, value, "application/json; charset=UTF-8")

    # --- OAuth -------------------------------------------------------------------------------

    def grant(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """The token endpoint: check the signed JWT, issue a bearer token."""
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != JWT_GRANT or "assertion" not in form:
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "Invalid grant_type",
            }
        if self.refuse_tokens or not self._valid_jwt(form["assertion"]):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def _valid_jwt(self, assertion: str) -> bool:
        try:
            header, payload, signature = assertion.split(".")
            claims = json.loads(_unb64(payload))
            key = self.public_keys[claims["iss"]]
            key.verify(
                _unb64(signature),
                f"{header}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except Exception:
            return False
        return bool(
            json.loads(_unb64(header)).get("alg") == "RS256"
            and claims.get("aud") == GOOGLE_TOKEN_AUDIENCE
            and "cloud-platform" in str(claims.get("scope", ""))
            and claims.get("exp", 0) > time.time()
        )

    # --- the APIs ----------------------------------------------------------------------------

    def answer(
        self, method: str, path: str, query: dict[str, str], body: bytes, auth: str
    ) -> tuple[int, Any]:
        """Route one API request: ``(status, JSON)`` or GoogleError."""
        with self.lock:
            self.requests.append((method, path))
            if auth.removeprefix("Bearer ") not in self.tokens:
                raise GoogleError(
                    401,
                    "authError",
                    "Request had invalid authentication credentials. Expected OAuth 2 access"
                    " token, login cookie or other valid authentication credential.",
                )
            if self._throttled:
                status = self._throttled.pop(0)
                raise GoogleError(
                    status,
                    "rateLimitExceeded",
                    "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute'.",
                    "RESOURCE_EXHAUSTED" if status == 429 else "PERMISSION_DENIED",
                )
            data = json.loads(body) if body else None
            writes = method == "PATCH" or (method == "POST" and path.endswith("/changes"))
            if writes and self.before_write is not None:
                self.before_write()
            parts = [p for p in path.split("/") if p]
            if parts[:2] == ["compute", "v1"]:
                return self._compute(method, parts[2:], data)
            if parts[:2] == ["dns", "v1"]:
                return self._dns(method, parts[2:], query, data)
        raise GoogleError(404, "notFound", f"The requested URL {path} was not found.")

    # Compute ---------------------------------------------------------------------------------

    def _compute(self, method: str, parts: list[str], data: Any) -> tuple[int, Any]:
        if len(parts) < 4 or parts[0] != "projects":
            raise GoogleError(404, "notFound", "not found")
        project, rest = parts[1], parts[2:]
        if project != self.project:
            raise GoogleError(
                403,
                "forbidden",
                f"Required 'compute.backendServices.get' permission for '{project}'",
            )
        scope_len = 1 if rest[0] == "global" else 2 if rest[0] == "regions" else 0
        if not scope_len:
            raise GoogleError(404, "notFound", "not found")
        scope, rest = "/".join(rest[:scope_len]), rest[scope_len:]
        if rest[:1] == ["operations"] and len(rest) in (2, 3):
            return 200, self._operation(method, scope, rest)
        if rest[:1] != ["backendServices"] or len(rest) not in (2, 3):
            raise GoogleError(404, "notFound", "not found")
        service = self.services.get((scope, rest[1]))
        if service is None:
            raise GoogleError(
                404,
                "notFound",
                f"The resource 'projects/{project}/{scope}/backendServices/{rest[1]}'"
                " was not found",
            )
        if len(rest) == 3:
            if rest[2] != "getHealth" or method != "POST":
                raise GoogleError(404, "notFound", "not found")
            return 200, self._get_health(service, data)
        if method == "GET":
            return 200, service
        if method == "PATCH":
            return 200, self._patch(scope, service, data)
        raise GoogleError(405, "httpMethodNotAllowed", f"{method} is not allowed")

    def _get_health(self, service: dict[str, Any], data: Any) -> dict[str, Any]:
        group = data.get("group") if isinstance(data, dict) else None
        if not group:
            raise GoogleError(400, "required", "Required field 'group' not specified")
        if group not in [b["group"] for b in service.get("backends", [])]:
            raise GoogleError(
                400, "invalid", f"Resource '{group}' is not a backend of '{service['name']}'."
            )
        members = self.health.get(group, [])
        answer: dict[str, Any] = {"kind": "compute#backendServiceGroupHealth"}
        if members:
            answer["healthStatus"] = [
                {"instance": inst, "ipAddress": f"10.0.0.{i + 2}", "port": 5060, "healthState": s}
                for i, (inst, s) in enumerate(members)
            ]
        return answer

    def _patch(self, scope: str, service: dict[str, Any], data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise GoogleError(400, "parseError", "Parse Error")
        if data.get("fingerprint") != service["fingerprint"]:  # missing or stale
            raise GoogleError(412, "conditionNotMet", "Invalid fingerprint.", "FAILED_PRECONDITION")
        for i, backend in enumerate(data.get("backends", service["backends"])):
            scaler = backend.get("capacityScaler", 1.0)
            if not backend.get("group"):
                raise GoogleError(
                    400, "required", f"Required field 'backends[{i}].group' not specified"
                )
            if not (scaler == 0 or 0.1 <= scaler <= 1.0):
                raise GoogleError(
                    400,
                    "invalid",
                    f"Invalid value for field 'resource.backends[{i}].capacityScaler'",
                )
            if backend.get("balancingMode", "UTILIZATION") not in (
                "UTILIZATION",
                "RATE",
                "CONNECTION",
                "CUSTOM_METRICS",
            ):
                raise GoogleError(
                    400,
                    "invalid",
                    f"Invalid value for field 'resource.backends[{i}].balancingMode'",
                )
        self._counter += 1
        name = f"operation-{int(time.time() * 1000)}-{self._counter:04d}-{secrets.token_hex(4)}"
        link = f"{self.compute_url}/projects/{self.project}/{scope}/operations/{name}"
        failing = self._failing.pop(0) if self._failing else None
        resource: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(secrets.randbelow(10**18)),
            "name": name,
            "operationType": "patch",
            "targetLink": service["selfLink"],
            "targetId": service["id"],
            "status": "RUNNING" if self.operation_polls else "DONE",
            "progress": 0 if self.operation_polls else 100,
            "insertTime": time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime()),
            "selfLink": link,
        }
        operation = Operation(resource, self.operation_polls)
        if failing:
            code, message, http = failing
            operation.error = {"errors": [{"code": code, "message": message}]}
            resource["httpErrorStatusCode"] = http
            resource["httpErrorMessage"] = STATUS_WORDS.get(http, "BAD REQUEST")
        else:
            for key, value in data.items():
                if key not in ("fingerprint", "kind", "id", "selfLink", "name"):
                    service[key] = value
            service["fingerprint"] = _fingerprint()
        if not self.operation_polls and operation.error:
            resource["error"] = operation.error
        self.operations[(scope, name)] = operation
        return resource

    def _operation(self, method: str, scope: str, rest: list[str]) -> dict[str, Any]:
        operation = self.operations.get((scope, rest[1]))
        if operation is None:
            raise GoogleError(404, "notFound", f"The resource 'operations/{rest[1]}' was not found")
        if (len(rest) == 3 and (rest[2] != "wait" or method != "POST")) or (
            len(rest) == 2 and method != "GET"
        ):
            raise GoogleError(404, "notFound", "not found")
        if operation.polls_left > 0:
            operation.polls_left -= 1
        if operation.polls_left == 0:
            operation.resource.update(status="DONE", progress=100)
            if operation.error:
                operation.resource["error"] = operation.error
        return operation.resource

    # Cloud DNS -------------------------------------------------------------------------------

    def _dns(
        self, method: str, parts: list[str], query: dict[str, str], data: Any
    ) -> tuple[int, Any]:
        if len(parts) < 3 or parts[0] != "projects" or parts[2] != "managedZones":
            raise GoogleError(404, "notFound", "not found")
        if parts[1] != self.project:
            raise GoogleError(403, "forbidden", f"Forbidden: project {parts[1]}")
        rest = parts[3:]
        if not rest:
            zones = [z.resource for z in self.zones.values()]
            if "dnsName" in query:
                zones = [z for z in zones if z["dnsName"] == query["dnsName"]]
            return 200, self._page("managedZones", "dns#managedZonesListResponse", zones, query)
        zone = self.zones.get(rest[0])
        if zone is None:
            raise GoogleError(
                404,
                "notFound",
                f"The 'parameters.managedZone' resource named '{rest[0]}' does not exist.",
            )
        if len(rest) == 1 and method == "GET":
            return 200, zone.resource
        if rest[1:] == ["rrsets"] and method == "GET":
            if "type" in query and "name" not in query:
                raise GoogleError(
                    400,
                    "invalid",
                    "Invalid value for 'parameters.name': name is required with type",
                )
            sets = [
                s
                for (name, rtype), s in sorted(zone.rrsets.items())
                if query.get("name", name) == name and query.get("type", rtype) == rtype
            ]
            return 200, self._page("rrsets", "dns#resourceRecordSetsListResponse", sets, query)
        if rest[1:] == ["changes"] and method == "POST":
            return 200, self._change(zone, data)
        if len(rest) == 3 and rest[1] == "changes" and method == "GET":
            change = zone.changes.get(rest[2])
            if change is None:
                raise GoogleError(
                    404,
                    "notFound",
                    f"The 'parameters.changeId' resource named '{rest[2]}' does not exist.",
                )
            left = zone.polls_left.get(rest[2], 0)
            if left > 0:
                zone.polls_left[rest[2]] = left - 1
            if zone.polls_left.get(rest[2], 0) == 0:
                change["status"] = "done"
            return 200, change
        raise GoogleError(404, "notFound", "not found")

    def _page(
        self, items: str, kind: str, values: list[dict[str, Any]], query: dict[str, str]
    ) -> dict[str, Any]:
        size = min(self.page_size, int(query.get("maxResults") or self.page_size))
        start = int(_unb64(query["pageToken"]).decode()) if query.get("pageToken") else 0
        answer: dict[str, Any] = {"kind": kind, items: values[start : start + size]}
        if start + size < len(values):
            answer["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return answer

    def _change(self, zone: Zone, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise GoogleError(400, "parseError", "Parse Error")
        deletions, additions = data.get("deletions") or [], data.get("additions") or []
        if not deletions and not additions:
            raise GoogleError(
                400, "required", "The 'entity.change' resource has no additions or deletions."
            )
        removed = set()
        for i, rrset in enumerate(deletions):
            key = (rrset.get("name"), rrset.get("type"))
            held = zone.rrsets.get(key)
            if held is None:
                raise GoogleError(
                    404,
                    "notFound",
                    f"The 'entity.change.deletions[{i}]' resource named"
                    f" '{key[0]} ({key[1]})' does not exist.",
                )
            if held["ttl"] != rrset.get("ttl") or sorted(held["rrdatas"]) != sorted(
                rrset.get("rrdatas") or []
            ):
                raise GoogleError(
                    412,
                    "conditionNotMet",
                    f"Precondition not met for 'entity.change.deletions[{i}]'",
                    "FAILED_PRECONDITION",
                )
            removed.add(key)
        suffix = zone.resource["dnsName"]
        for i, rrset in enumerate(additions):
            name, rtype = str(rrset.get("name", "")), str(rrset.get("type", ""))
            if (
                not name.endswith(suffix)
                or not rrset.get("rrdatas")
                or not isinstance(rrset.get("ttl"), int)
            ):
                raise GoogleError(
                    400, "invalid", f"Invalid value for 'entity.change.additions[{i}]': '{name}'"
                )
            if (name, rtype) in zone.rrsets and (name, rtype) not in removed:
                raise GoogleError(
                    409,
                    "alreadyExists",
                    f"The resource 'entity.change.additions[{i}]' named"
                    f" '{name} ({rtype})' already exists",
                )
        for key in removed:
            del zone.rrsets[key]
        for rrset in additions:
            zone.rrsets[(rrset["name"], rrset["type"])] = _rrset(
                rrset["name"], rrset["type"], rrset["ttl"], list(rrset["rrdatas"])
            )
        self._counter += 1
        change_id = str(len(zone.changes) + 1)
        change = {
            "kind": "dns#change",
            "id": change_id,
            "startTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "status": "pending" if self.change_polls else "done",
            "additions": additions,
            "deletions": deletions,
        }
        zone.changes[change_id] = change
        zone.polls_left[change_id] = self.change_polls
        return change


def _scope(region: str) -> str:
    return f"regions/{region}" if region else "global"


def _fingerprint() -> str:
    return base64.b64encode(secrets.token_bytes(8)).decode()


def _rrset(name: str, rtype: str, ttl: int, rrdatas: list[str]) -> dict[str, Any]:
    return {
        "kind": "dns#resourceRecordSet",
        "name": name,
        "type": rtype,
        "ttl": ttl,
        "rrdatas": rrdatas,
    }


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@contextmanager
def running_fake_gcp(project: str = "siprec-test", page_size: int = 2) -> Iterator[FakeGcp]:
    """A started :class:`FakeGcp` on a free loopback port, stopped on exit."""
    with FakeGcp(project, page_size) as fake:
        yield fake
