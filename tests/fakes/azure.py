"""A fake of the Azure endpoints the Azure levers use: the Microsoft Entra ID token endpoint and
the Azure Resource Manager paths of Load Balancer backend pools and DNS record sets, answering
with ARM's shapes, status codes and error body (``{"error": {"code", "message"}}``).

Endpoints: ``POST /{tenant}/oauth2/v2.0/token`` (client-credentials grant);
``GET .../Microsoft.Network/loadBalancers/{lb}``, ``GET|PUT .../backendAddressPools/{pool}``
(PUT: ``If-Match`` etag checked, 201 with ``Azure-AsyncOperation`` and ``Retry-After``),
``GET .../providers/Microsoft.Network/locations/{loc}/operations/{id}`` (InProgress for
``operation_polls`` polls, then Succeeded or the injected failure); ``GET|PUT|DELETE
.../dnsZones/{zone}/{type}/{name}`` (``If-Match`` / ``If-None-Match: *`` checked). Every ARM
request needs a bearer token the fake issued and the right ``api-version`` (else 400
``MissingApiVersionParameter`` / ``NoRegisteredProviderFound`` as ARM answers).
:meth:`FakeAzure.throttle` makes the next N ARM requests answer 429 with ``Retry-After``.

Documentation followed: https://learn.microsoft.com/en-us/rest/api/load-balancer/loadbalancerbackendaddresspools/createorupdate,
https://learn.microsoft.com/en-us/rest/api/dns/record-sets/create-or-update,
https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/async-operations,
https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow.
"""

from __future__ import annotations

import copy
import functools
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.fakes import http

NETWORK_API_VERSIONS = ("2023-09-01", "2024-01-01", "2024-03-01", "2024-05-01")
DNS_API_VERSIONS = ("2018-05-01", "2023-07-01-preview")
SCOPE = "https://management.azure.com/.default"
DNS_PROPERTIES = ("ARecords", "AAAARecords", "CNAMERecord", "MXRecords", "TXTRecords", "SRVRecords")


class ArmError(Exception):
    """An ARM error answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Operation:
    """A long-running operation: InProgress for ``polls`` more polls, then its outcome."""

    polls: int
    error: tuple[str, str] | None = None
    status: str = "Failed"
    on_done: Any = None
    polled: int = 0


@dataclass
class Request:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class FakeAzure:
    """The fake's state; seed it with :meth:`add_load_balancer` and :meth:`add_record_set`."""

    tenant_id: str = "00000000-0000-0000-0000-00000000aaaa"
    client_id: str = "11111111-1111-1111-1111-11111111bbbb"
    client_secret: str = "fake-client-secret"
    subscription_id: str = "22222222-2222-2222-2222-22222222cccc"
    location: str = "westeurope"
    token_lifetime: int = 3599
    #: Polls for which each new operation stays InProgress.
    operation_polls: int = 0
    #: The Retry-After (seconds) sent with a PUT's and an InProgress poll's answer.
    operation_retry_after: str = "0"
    url: str = ""
    tokens: set[str] = field(default_factory=set)
    tokens_issued: int = 0
    #: (rg, lb) -> load balancer JSON (its pools are held in ``pools``).
    load_balancers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: (rg, lb, pool) -> pool JSON.
    pools: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    #: (rg, zone, type, relative name) -> record set JSON.
    record_sets: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    zones: set[tuple[str, str]] = field(default_factory=set)
    operations: dict[str, Operation] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _throttled: int = 0
    _throttle_after: str = "0"
    _fail_next: tuple[str, str, str] | None = None
    _forbidden: bool = False
    _race: str | None = None

    # --- seeding and control -------------------------------------------------------------

    def add_load_balancer(
        self, resource_group: str, name: str, pools: dict[str, dict[str, str]]
    ) -> None:
        """A Standard load balancer with IP-based pools: pool -> {address name: IP}."""
        lb_id = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.Network/loadBalancers/{name}"
        )
        vnet = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}"
            "/providers/Microsoft.Network/virtualNetworks/vnet-sip"
        )
        self.load_balancers[(resource_group, name)] = {
            "name": name,
            "id": lb_id,
            "etag": _etag(),
            "type": "Microsoft.Network/loadBalancers",
            "location": self.location,
            "sku": {"name": "Standard", "tier": "Regional"},
            "properties": {"provisioningState": "Succeeded", "frontendIPConfigurations": []},
        }
        for pool, addresses in pools.items():
            self.pools[(resource_group, name, pool)] = {
                "name": pool,
                "id": f"{lb_id}/backendAddressPools/{pool}",
                "etag": _etag(),
                "type": "Microsoft.Network/loadBalancers/backendAddressPools",
                "properties": {
                    "provisioningState": "Succeeded",
                    "loadBalancerBackendAddresses": [
                        {
                            "name": address,
                            "properties": {
                                "ipAddress": ip,
                                "virtualNetwork": {"id": vnet},
                                "adminState": "None",
                            },
                        }
                        for address, ip in addresses.items()
                    ],
                    "loadBalancingRules": [{"id": f"{lb_id}/loadBalancingRules/sip"}],
                },
            }

    def admin_state(self, resource_group: str, lb: str, pool: str, address: str) -> str:
        """The adminState the fake holds for one backend address."""
        with self.lock:
            for entry in self.pools[(resource_group, lb, pool)]["properties"][
                "loadBalancerBackendAddresses"
            ]:
                if entry["name"] == address:
                    return str(entry["properties"].get("adminState") or "None")
        raise KeyError(address)

    def touch_pool(self, resource_group: str, lb: str, pool: str) -> None:
        """Someone else changed the pool: a new etag."""
        with self.lock:
            self.pools[(resource_group, lb, pool)]["etag"] = _etag()

    def race_write(self, path_part: str) -> None:
        """Someone else changes the resource right before our next PUT or DELETE whose path
        contains ``path_part`` (the etag we read is then stale)."""
        with self.lock:
            self._race = path_part

    def _raced(self, method: str, path: str) -> bool:
        if method in ("PUT", "DELETE") and self._race is not None and self._race in path:
            self._race = None
            return True
        return False

    def add_zone(self, resource_group: str, zone: str) -> None:
        """An empty zone (ARM zone names have no final dot)."""
        self.zones.add((resource_group, zone.rstrip(".").lower()))

    def add_record_set(
        self, resource_group: str, zone: str, rtype: str, name: str, ttl: int, records: Any
    ) -> None:
        """A record set with ARM's record property (``[{"ipv4Address": "10.0.0.1"}]`` for A)."""
        zone = zone.rstrip(".").lower()
        self.add_zone(resource_group, zone)
        prop = "CNAMERecord" if rtype == "CNAME" else f"{rtype}Records"
        with self.lock:
            self.record_sets[(resource_group, zone, rtype, name)] = self._record_set(
                resource_group, zone, rtype, name, {"TTL": ttl, prop: records}
            )

    def record_set(self, resource_group: str, zone: str, rtype: str, name: str) -> Any:
        """The record set JSON the fake holds (None if absent)."""
        with self.lock:
            return copy.deepcopy(
                self.record_sets.get((resource_group, zone.rstrip(".").lower(), rtype, name))
            )

    def throttle(self, count: int, retry_after: str = "0") -> None:
        """Answer the next ``count`` ARM requests with 429 SubscriptionRequestsThrottled."""
        with self.lock:
            self._throttled, self._throttle_after = count, retry_after

    def fail_next_operation(self, code: str, message: str, status: str = "Failed") -> None:
        """The next long-running operation ends ``status`` (Failed/Canceled) with this error."""
        with self.lock:
            self._fail_next = (code, message, status)

    def forbid(self, forbidden: bool = True) -> None:
        """Answer every ARM request 403 AuthorizationFailed (the role lacks the action)."""
        self._forbidden = forbidden

    def revoke_tokens(self) -> None:
        """Forget every issued token (ARM then answers 401 InvalidAuthenticationToken)."""
        with self.lock:
            self.tokens.clear()

    def arm_requests(self, method: str = "") -> list[Request]:
        """The ARM requests seen (token requests left out), optionally of one method."""
        return [
            r
            for r in self.requests
            if "/oauth2/" not in r.path and (not method or r.method == method)
        ]

    # --- token endpoint ------------------------------------------------------------------

    def token(self, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        tenant = path.split("/")[1]
        if tenant != self.tenant_id:
            return 400, _aad("invalid_request", f"AADSTS90002: Tenant '{tenant}' not found."), {}
        if form.get("grant_type") != "client_credentials":
            return 400, _aad("unsupported_grant_type", "AADSTS70003: unsupported grant"), {}
        if form.get("scope") != SCOPE:
            return 400, _aad("invalid_scope", "AADSTS70011: The provided scope is invalid."), {}
        if form.get("client_id") != self.client_id:
            return (
                400,
                _aad(
                    "unauthorized_client",
                    f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not"
                    f" found in the directory '{tenant}'.",
                ),
                {},
            )
        if form.get("client_secret") != self.client_secret:
            return (
                401,
                _aad(
                    "invalid_client",
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in"
                    " the request is the client secret value, not the client secret ID.",
                ),
                {},
            )
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens.add(token)
            self.tokens_issued += 1
        answer = {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": token,
        }
        return 200, answer, {}

    # --- ARM -----------------------------------------------------------------------------

    def arm(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        auth = headers.get("authorization", "")
        if not auth:
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            raise ArmError(
                401, "InvalidAuthenticationToken", "The access token is invalid or has expired."
            )
        with self.lock:
            if self._throttled > 0:
                self._throttled -= 1
                raise _ThrottledError(self._throttle_after)
        if self._forbidden:
            raise ArmError(
                403,
                "AuthorizationFailed",
                f"The client '{self.client_id}' does not have authorization to perform action"
                f" over scope '{path}' or the scope is invalid.",
            )
        parts = path.strip("/").split("/")
        if len(parts) < 6 or parts[0] != "subscriptions" or parts[1] != self.subscription_id:
            raise ArmError(
                404, "SubscriptionNotFound", f"The subscription '{parts[1:2]}' could not be found."
            )
        if parts[2:5] == ["providers", "Microsoft.Network", "locations"]:
            self._api_version(query, NETWORK_API_VERSIONS, "locations/operations")
            return self._operation(parts[-1])
        if parts[2] != "resourceGroups" or parts[4:6] != ["providers", "Microsoft.Network"]:
            raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request.")
        group, kind, rest = parts[3], parts[6].lower() if len(parts) > 6 else "", parts[7:]
        with self.lock:
            raced = self._raced(method, path)
            if kind == "loadbalancers":
                self._api_version(query, NETWORK_API_VERSIONS, "loadBalancers")
                return self._network(method, group, rest, headers, body, raced)
            if kind == "dnszones":
                self._api_version(query, DNS_API_VERSIONS, "dnszones")
                return self._dns(method, group, rest, headers, body, raced)
        raise ArmError(400, "InvalidResourceType", f"The resource type '{kind}' is not known.")

    def _api_version(self, query: dict[str, str], allowed: tuple[str, ...], kind: str) -> None:
        version = query.get("api-version")
        if not version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version not in allowed:
            raise ArmError(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location '{self.location}' and API"
                f" version '{version}' for type '{kind}'. The supported api-versions are"
                f" '{', '.join(allowed)}'.",
            )

    def _network(
        self,
        method: str,
        group: str,
        rest: list[str],
        headers: dict[str, str],
        body: Any,
        raced: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:
        lb = self.load_balancers.get((group, rest[0])) if rest else None
        if lb is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Network/loadBalancers/{rest[0] if rest else ''}' under"
                f" resource group '{group}' was not found.",
            )
        if len(rest) == 1:
            _method(method, "GET")
            answer = copy.deepcopy(lb)
            answer["properties"]["backendAddressPools"] = [
                copy.deepcopy(p) for k, p in self.pools.items() if k[:2] == (group, rest[0])
            ]
            return 200, answer, {}
        if len(rest) != 3 or rest[1] != "backendAddressPools":
            raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request.")
        key = (group, rest[0], rest[2])
        pool = self.pools.get(key)
        if pool is None:
            raise ArmError(
                404, "NotFound", f"Resource {lb['id']}/backendAddressPools/{rest[2]} not found."
            )
        if method == "GET":
            return 200, copy.deepcopy(pool), {}
        _method(method, "PUT")
        if raced:
            pool["etag"] = _etag()
        if "if-match" in headers and headers["if-match"] not in (pool["etag"], "*"):
            raise ArmError(412, "PreconditionFailed", "Precondition failed.")
        addresses = ((body or {}).get("properties") or {}).get("loadBalancerBackendAddresses")
        if not isinstance(addresses, list) or any(
            not isinstance(a, dict) or not a.get("name") for a in addresses
        ):
            raise ArmError(400, "InvalidRequestFormat", "loadBalancerBackendAddresses is bad.")
        for address in addresses:
            state = (address.get("properties") or {}).get("adminState", "None")
            if state not in ("None", "Up", "Down"):
                raise ArmError(400, "InvalidRequestFormat", f"bad adminState {state!r}")
        before = copy.deepcopy(pool["properties"]["loadBalancerBackendAddresses"])
        pool["properties"]["loadBalancerBackendAddresses"] = copy.deepcopy(addresses)
        pool["properties"]["provisioningState"] = "Updating"
        pool["etag"] = _etag()

        def done(ok: bool) -> None:
            pool["properties"]["provisioningState"] = "Succeeded" if ok else "Failed"
            if not ok:
                pool["properties"]["loadBalancerBackendAddresses"] = before
            pool["etag"] = _etag()

        op_id = str(uuid.uuid4())
        failure = self._fail_next
        self._fail_next = None
        self.operations[op_id] = Operation(
            self.operation_polls,
            error=failure[:2] if failure else None,
            status=failure[2] if failure else "Failed",
            on_done=done,
        )
        operation_url = (
            f"{self.url}/subscriptions/{self.subscription_id}/providers/Microsoft.Network"
            f"/locations/{self.location}/operations/{op_id}?api-version=2024-05-01"
        )
        extra = {"Azure-AsyncOperation": operation_url, "Retry-After": self.operation_retry_after}
        return 201, copy.deepcopy(pool), extra

    def _operation(self, op_id: str) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            operation = self.operations.get(op_id)
            if operation is None:
                raise ArmError(404, "NotFound", f"Operation {op_id} not found.")
            operation.polled += 1
            if operation.polled <= operation.polls:
                return 200, {"status": "InProgress"}, {"Retry-After": self.operation_retry_after}
            if operation.on_done is not None:
                operation.on_done(operation.error is None)
                operation.on_done = None
            if operation.error is None:
                return 200, {"status": "Succeeded"}, {}
            code, message = operation.error
            return (
                200,
                {"status": operation.status, "error": {"code": code, "message": message}},
                {},
            )

    def _record_set(
        self, group: str, zone: str, rtype: str, name: str, props: dict[str, Any]
    ) -> dict[str, Any]:
        fqdn = f"{zone}." if name == "@" else f"{name}.{zone}."
        return {
            "id": (
                f"/subscriptions/{self.subscription_id}/resourceGroups/{group}/providers"
                f"/Microsoft.Network/dnszones/{zone}/{rtype}/{name}"
            ),
            "name": name,
            "type": f"Microsoft.Network/dnszones/{rtype}",
            "etag": str(uuid.uuid4()),
            "properties": {
                "metadata": {},
                "fqdn": fqdn,
                "provisioningState": "Succeeded",
                **props,
            },
        }

    def _dns(
        self,
        method: str,
        group: str,
        rest: list[str],
        headers: dict[str, str],
        body: Any,
        raced: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:
        zone = rest[0].lower() if rest else ""
        if (group, zone) not in self.zones:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Network/dnszones/{zone}' under resource group"
                f" '{group}' was not found.",
            )
        if len(rest) != 3:
            raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request.")
        rtype, name = rest[1].upper(), rest[2].lower()
        key = (group, zone, rtype, name)
        held = self.record_sets.get(key)
        if raced and held is not None:
            held["etag"] = str(uuid.uuid4())
        elif raced and rtype == "A":  # someone else created it
            self.record_sets[key] = held = self._record_set(
                group, zone, rtype, name, {"TTL": 60, "ARecords": [{"ipv4Address": "192.0.2.99"}]}
            )
        match = headers.get("if-match")
        if match is not None and (held is None or match not in (held["etag"], "*")):
            raise ArmError(412, "PreconditionFailed", "The Record set has been modified.")
        if method == "GET":
            if held is None:
                raise ArmError(
                    404,
                    "NotFound",
                    f"The resource record '{name}' does not exist in resource group '{group}'"
                    f" of subscription '{self.subscription_id}'.",
                )
            return 200, copy.deepcopy(held), {}
        if method == "DELETE":
            if held is None:
                return 204, None, {}
            del self.record_sets[key]
            return 200, None, {}
        _method(method, "PUT")
        if headers.get("if-none-match") == "*" and held is not None:
            raise ArmError(
                412,
                "PreconditionFailed",
                f"The Record set {name} exists already and hence cannot be created again.",
            )
        props = (body or {}).get("properties") or {}
        ttl = props.get("TTL")
        present = [p for p in DNS_PROPERTIES if props.get(p)]
        wanted = "CNAMERecord" if rtype == "CNAME" else f"{rtype}Records"
        if not isinstance(ttl, int) or present != [wanted]:
            raise ArmError(
                400, "BadRequest", f"A {rtype} record set needs a TTL and {wanted} only."
            )
        self.record_sets[key] = self._record_set(
            group, zone, rtype, name, {"TTL": ttl, wanted: copy.deepcopy(props[wanted])}
        )
        return (201 if held is None else 200), copy.deepcopy(self.record_sets[key]), {}


class _ThrottledError(Exception):
    def __init__(self, retry_after: str) -> None:
        super().__init__("throttled")
        self.retry_after = retry_after


def _method(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise ArmError(405, "MethodNotAllowed", f"The method {method} is not allowed.")


def _etag() -> str:
    return f'W/"{uuid.uuid4()}"'


def _aad(error: str, description: str) -> dict[str, Any]:
    return {
        "error": error,
        "error_description": f"{description}\r\nTrace ID: {uuid.uuid4()}\r\nTimestamp: now",
        "error_codes": [int(description[6:].split(":")[0])],
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }


def _serve(fake: FakeAzure, request: http.Request) -> http.Reply:
    body = request.json() if "json" in request.headers.get("content-type", "") else None
    fake.requests.append(
        Request(request.method, request.path, request.query, request.headers, body)
    )
    extra: dict[str, str] = {}
    try:
        if request.path.endswith("/oauth2/v2.0/token") and request.method == "POST":
            status, value, extra = fake.token(request.path, request.body)
        else:
            status, value, extra = fake.arm(
                request.method, request.path, request.query, request.headers, body
            )
    except _ThrottledError as throttled:
        status, extra = 429, {"Retry-After": throttled.retry_after}
        value = {
            "error": {
                "code": "SubscriptionRequestsThrottled",
                "message": f"Number of requests for subscription '{fake.subscription_id}'"
                f" exceeded. Please try again after '{throttled.retry_after}' seconds.",
            }
        }
    except ArmError as err:
        status, value = err.status, {"error": {"code": err.code, "message": err.message}}
    headers = {"x-ms-request-id": str(uuid.uuid4()), **extra}
    return http.Reply(status, value, "application/json; charset=utf-8", headers)


@contextmanager
def running_fake_azure(**settings: Any) -> Iterator[FakeAzure]:
    """A started fake on 127.0.0.1 (``.url`` serves both the token endpoint and ARM),
    stopped on exit; ``settings`` are :class:`FakeAzure` fields."""
    fake = FakeAzure(**settings)
    with http.serving(functools.partial(_serve, fake)) as url:
        fake.url = url
        yield fake
