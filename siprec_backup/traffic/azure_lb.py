"""An Azure Load Balancer (Standard SKU) as a load balancer lever, over the ARM REST API.

A backend is one of the load balancer's backend address pools; a server is a backend address
of an IP-based pool, by its name (``loadBalancerBackendAddresses[].name``). States go through
the address's administrative state (``adminState``): READY sets ``None`` (the health probe
decides; an address already ``Up`` is left so), DRAIN and MAINT set ``Down``. Azure has no
separate drain: with ``Down`` the load balancer sends the address no new flows, established TCP
connections stay until they end, and UDP flows move to another healthy address. So ``Down``
reads back as MAINT, and admin state works only on load-balancing rules that have a probe.

A change is a GET of the pool, a PUT of the whole pool with ``If-Match`` its etag (someone else
changing the pool in between is a CONFLICT), then the wait for the long-running operation
(``Azure-AsyncOperation``) to succeed. ARM reports no health and no connection count per
backend address: :class:`ServerStatus` reflects the ``adminState`` and the pool's
``provisioningState`` only, ``current_sessions`` is always 0, and :meth:`wait_drained` waits
for ``Down`` to be in effect, not for the last flow to end.

References: https://learn.microsoft.com/en-us/rest/api/load-balancer/loadbalancerbackendaddresspools/createorupdate,
https://learn.microsoft.com/en-us/azure/load-balancer/admin-state-overview.
"""

from __future__ import annotations

import time
from typing import Any

from siprec_backup.cloud.azure import NETWORK_API_VERSION, AzureCredentials, AzureSession
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.errors import CONFIGURATION, CloudLoadBalancerError, DrainTimeoutError
from siprec_backup.traffic.base import (
    DRAIN,
    MAINT,
    UNKNOWN,
    UP,
    UP_TRANSITIONAL,
    LoadBalancer,
    ServerState,
    ServerStatus,
)

SERVICE = "network"

#: The adminState each requested state writes.
ADMIN_STATES = {ServerState.READY: "None", ServerState.DRAIN: "Down", ServerState.MAINT: "Down"}
#: Properties of a pool that ARM computes; they are not sent back in the PUT.
READ_ONLY = (
    "provisioningState",
    "backendIPConfigurations",
    "loadBalancingRules",
    "outboundRule",
    "outboundRules",
    "inboundNatRules",
)


class AzureLoadBalancer(LoadBalancer):
    """One Azure load balancer (resource group + name); backends are its backend pools.

    >>> lb = AzureLoadBalancer("rg-sip", "lb-sip", credentials=AzureCredentials(...))
    >>> lb.set_state("sip-edge", "sbc-a", ServerState.MAINT)
    """

    def __init__(
        self,
        resource_group: str,
        load_balancer: str,
        *,
        credentials: AzureCredentials,
        retry: RetryPolicy | None = None,
        operation_timeout: float = 300.0,
        poll_interval: float = 5.0,
    ) -> None:
        self.resource_group = resource_group
        self.load_balancer = load_balancer
        self.credentials = credentials
        self.operation_timeout = operation_timeout
        self.poll_interval = poll_interval
        self.arm = AzureSession(
            credentials, service=SERVICE, family=CloudLoadBalancerError, retry=retry
        )
        if not resource_group.strip() or not load_balancer.strip():
            raise self._config("give both the resource group and the load balancer name")
        if operation_timeout <= 0 or poll_interval <= 0:
            raise self._config("the operation timeout and poll interval must be positive")

    def __repr__(self) -> str:
        return (
            f"AzureLoadBalancer({self.resource_group!r}, {self.load_balancer!r},"
            f" {self.credentials.describe()})"
        )

    def _config(self, message: str) -> CloudLoadBalancerError:
        return CloudLoadBalancerError(
            message, provider="azure", service=SERVICE, code=CONFIGURATION
        )

    @property
    def path(self) -> str:
        """The load balancer's ARM resource path."""
        return (
            f"{self.arm.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Network/loadBalancers/{self.load_balancer}"
        )

    def describe(self) -> str:
        """``Azure load balancer rg-sip/lb-sip (subscription ...)``: secret-free."""
        return (
            f"Azure load balancer {self.resource_group}/{self.load_balancer}"
            f" (subscription {self.credentials.subscription_id})"
        )

    # --- reading ---------------------------------------------------------------------------

    def _get(self) -> dict[str, Any]:
        return dict(self.arm.json("GET", self.path, api_version=NETWORK_API_VERSION))

    def check(self) -> str:
        """GET the load balancer: what answered, its pools and addresses."""
        body = self._get()
        pools = (body.get("properties") or {}).get("backendAddressPools") or []
        addresses = sum(len(_addresses(p)) for p in pools)
        sku = (body.get("sku") or {}).get("name", "?")
        return (
            f"Azure load balancer {body.get('name', self.load_balancer)} ({sku},"
            f" {body.get('location', '?')}): {len(pools)} backend pool(s),"
            f" {addresses} backend address(es)"
        )

    def servers(self) -> list[ServerStatus]:
        """Every named backend address of every pool, from one GET of the load balancer."""
        found: list[ServerStatus] = []
        for pool in (self._get().get("properties") or {}).get("backendAddressPools") or []:
            found += [_status(pool, address) for address in _addresses(pool)]
        return found

    def _pool_path(self, backend: str) -> str:
        return f"{self.path}/backendAddressPools/{backend}"

    def _pool(self, backend: str) -> dict[str, Any]:
        return dict(self.arm.json("GET", self._pool_path(backend), api_version=NETWORK_API_VERSION))

    def server(self, backend: str, server: str) -> ServerStatus:
        """One backend address, read from its pool; CONFIGURATION error naming an unknown one."""
        pool = self._pool(backend)
        return _status(pool, self._address(pool, backend, server))

    def _address(self, pool: dict[str, Any], backend: str, server: str) -> dict[str, Any]:
        addresses = _addresses(pool)
        for address in addresses:
            if address.get("name") == server:
                return address
        known = ", ".join(str(a.get("name")) for a in addresses) or "none"
        raise self._config(
            f"{self.describe()}: backend pool {backend!r} has no backend address {server!r}"
            f" (addresses: {known})"
        )

    # --- levers ----------------------------------------------------------------------------

    def set_state(self, backend: str, server: str, state: ServerState) -> None:
        """Set the address's adminState (READY: None, DRAIN/MAINT: Down): GET the pool, PUT it
        back with If-Match its etag, and wait for the operation to succeed."""
        pool = self._pool(backend)
        address = self._address(pool, backend, server)
        props = address.setdefault("properties", {})
        current = str(props.get("adminState") or "None")
        wanted = ADMIN_STATES[ServerState(state)]
        if current == wanted or (wanted == "None" and current == "Up"):
            return
        props["adminState"] = wanted
        body = {
            "name": pool.get("name", backend),
            "properties": {
                k: v for k, v in (pool.get("properties") or {}).items() if k not in READ_ONLY
            },
        }
        etag = str(pool.get("etag") or "")
        response = self.arm.request(
            "PUT",
            self._pool_path(backend),
            api_version=NETWORK_API_VERSION,
            json=body,
            headers={"If-Match": etag} if etag else None,
        )
        operation = response.headers.get("azure-asyncoperation")
        if operation:
            first = response.headers.get("retry-after", "")
            self.arm.wait_operation(
                operation,
                what=f"{self.describe()}: set {backend}/{server} adminState {wanted}",
                deadline=self.operation_timeout,
                poll_interval=self.poll_interval,
                first_wait=float(first) if first.isdigit() else None,
            )

    def wait_drained(
        self, backend: str, server: str, *, deadline_s: float, poll_s: float = 0.2
    ) -> float:
        """Poll until the address is Down and its pool's update has succeeded; the seconds
        waited (DrainTimeoutError after ``deadline_s``). Azure gives no flow count, so this
        does not wait for established connections to end."""
        start = time.monotonic()
        while True:
            status = self.server(backend, server)
            elapsed = time.monotonic() - start
            if status.state == MAINT:
                return elapsed
            if elapsed >= deadline_s:
                raise DrainTimeoutError(
                    f"{self.describe()}: {status.name} is still {status.status} after"
                    f" {deadline_s:g} s"
                )
            time.sleep(max(0.0, min(poll_s, deadline_s - elapsed)))

    def close(self) -> None:
        """Close the HTTP connections."""
        self.arm.close()


def _addresses(pool: dict[str, Any]) -> list[dict[str, Any]]:
    """The pool's named backend addresses (IP-based pools)."""
    found = (pool.get("properties") or {}).get("loadBalancerBackendAddresses") or []
    return [a for a in found if isinstance(a, dict) and a.get("name")]


def _status(pool: dict[str, Any], address: dict[str, Any]) -> ServerStatus:
    """The normalised status of one address: adminState and the pool's provisioningState."""
    props = address.get("properties") or {}
    admin = str(props.get("adminState") or "None")
    provisioning = str((pool.get("properties") or {}).get("provisioningState") or "Succeeded")
    if provisioning == "Failed":
        state = UNKNOWN
    elif admin == "Down":  # out of rotation once the pool's update has gone through
        state = MAINT if provisioning == "Succeeded" else DRAIN
    elif provisioning == "Succeeded":
        state = UP
    else:  # Updating: the change is not in effect yet
        state = UP_TRANSITIONAL
    ip = str(props.get("ipAddress") or "")
    if not ip:
        nic = (props.get("networkInterfaceIPConfiguration") or {}).get("id", "")
        ip = str(nic).rsplit("/ipConfigurations/", 1)[0].rsplit("/", 1)[-1] if nic else ""
    return ServerStatus(
        backend=str(pool.get("name", "")),
        server=str(address["name"]),
        address=ip,
        status=f"adminState {admin}, pool {provisioning}",
        state=state,
        current_sessions=0,
        weight=1,
    )


__all__ = ["AzureLoadBalancer"]
