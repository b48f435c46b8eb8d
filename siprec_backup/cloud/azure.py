"""Azure Resource Manager (ARM) over REST for the Azure levers: a Microsoft Entra ID token from
the OAuth2 client-credentials grant, ARM calls carrying their api-version, ARM's error body
classified onto the error contract, and the wait for a long-running operation.

No azure-mgmt or azure-identity package is needed: every call goes through
:class:`~siprec_backup.cloud.http.RestApi` (httpx). The token is cached until shortly before
``expires_in`` and dropped when ARM answers 401, so the next call asks for a fresh one.

References: https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow,
https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/async-operations,
https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/request-limits-and-throttling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from siprec_backup.cloud.errors import code_for_status
from siprec_backup.cloud.http import ErrorParts, RestApi, generic_error, retry_after
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.errors import (
    AUTH,
    CONFIGURATION,
    CONFLICT,
    PROVIDER,
    THROTTLING,
    UNAVAILABLE,
    CloudProviderError,
)

PROVIDER_NAME = "azure"
#: The documented api-versions this project sends (Microsoft.Network and its DNS zones).
NETWORK_API_VERSION = "2024-05-01"
DNS_API_VERSION = "2018-05-01"
#: The token scope of Azure Resource Manager (public cloud).
ARM_SCOPE = "https://management.azure.com/.default"

#: ARM ``error.code`` values by our code (anything else: by HTTP status).
ARM_CODES: dict[str, str] = {
    **dict.fromkeys(
        (
            "TooManyRequests",
            "SubscriptionRequestsThrottled",
            "ResourceGroupRequestsThrottled",
            "TenantRequestsThrottled",
        ),
        THROTTLING,
    ),
    **dict.fromkeys(
        (
            "AuthenticationFailed",
            "AuthorizationFailed",
            "InvalidAuthenticationToken",
            "InvalidAuthenticationTokenTenant",
            "ExpiredAuthenticationToken",
            "LinkedAuthorizationFailed",
        ),
        AUTH,
    ),
    **dict.fromkeys(
        (
            "ResourceNotFound",
            "NotFound",
            "ParentResourceNotFound",
            "ResourceGroupNotFound",
            "SubscriptionNotFound",
            "InvalidRequestFormat",
            "InvalidResourceReference",
            "MissingApiVersionParameter",
            "InvalidApiVersionParameter",
            "NoRegisteredProviderFound",
            "BadRequest",
        ),
        CONFIGURATION,
    ),
    **dict.fromkeys(
        ("PreconditionFailed", "Conflict", "AnotherOperationInProgress", "Canceled"), CONFLICT
    ),
}

#: OAuth2 ``error`` values of the token endpoint that mean "these credentials are refused".
TOKEN_AUTH_ERRORS = ("invalid_client", "unauthorized_client", "invalid_grant", "access_denied")


@dataclass(frozen=True)
class AzureCredentials:
    """A service principal (client id and secret) of a tenant, and the subscription it works
    in; the secret stays out of repr. The URLs are overridden only for tests or other clouds."""

    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    subscription_id: str
    authority_url: str = "https://login.microsoftonline.com"
    management_url: str = "https://management.azure.com"
    #: Connect and read timeout of every request, in seconds.
    timeout: float = 10.0

    def describe(self) -> str:
        """Secret-free: ``tenant T, client C, subscription S`` for logs."""
        text = (
            f"tenant {self.tenant_id}, client {self.client_id}, subscription {self.subscription_id}"
        )
        if self.management_url.rstrip("/") != "https://management.azure.com":
            text += f", endpoint {self.management_url}"
        return text

    def check(self, service: str, family: type[CloudProviderError]) -> None:
        """CONFIGURATION error naming the first missing or bad setting."""
        for name in ("tenant_id", "client_id", "client_secret", "subscription_id"):
            if not str(getattr(self, name)).strip():
                raise family(
                    f"no Azure {name.replace('_', ' ')} configured",
                    provider=PROVIDER_NAME,
                    service=service,
                    code=CONFIGURATION,
                )
        if self.timeout <= 0:
            raise family(
                "the Azure request timeout must be positive",
                provider=PROVIDER_NAME,
                service=service,
                code=CONFIGURATION,
            )


def arm_error(response: httpx.Response) -> ErrorParts:
    """(our code, ARM's ``error.code``, ``error.message``) of a failed ARM response."""
    _, provider_code, message = generic_error(response)
    if response.status_code == 429:
        return THROTTLING, provider_code, message
    return (
        ARM_CODES.get(provider_code) or code_for_status(response.status_code),
        provider_code,
        message,
    )


def token_error(response: httpx.Response) -> ErrorParts:
    """A refused token request: ``{"error": "invalid_client", "error_description": ...}``.

    Refused credentials are AUTH; the description names the AADSTS code and never the secret.
    """
    error, description = "", response.reason_phrase
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = str(body.get("error") or "")
        description = str(body.get("error_description") or error or description)
        description = description.splitlines()[0] if description else description
    if response.status_code == 429:
        return THROTTLING, error, description
    if error in TOKEN_AUTH_ERRORS or response.status_code in (401, 403):
        return AUTH, error, description
    if error == "temporarily_unavailable":
        return UNAVAILABLE, error, description
    return code_for_status(response.status_code), error, description


def _no_auth() -> Mapping[str, str]:
    return {}


class AzureSession:
    """One service principal's token (cached) and its ARM API for one lever's ``service``.

    >>> arm = AzureSession(credentials, service="network", family=CloudLoadBalancerError)
    >>> arm.json("GET", f"{arm.subscription}/resourceGroups/rg/providers/...", api_version=...)
    """

    def __init__(
        self,
        credentials: AzureCredentials,
        *,
        service: str,
        family: type[CloudProviderError] = CloudProviderError,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.credentials = credentials
        self.service = service
        self.family = family
        self.retry = retry or RetryPolicy()
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()
        self.login = RestApi(
            PROVIDER_NAME,
            service,
            credentials.authority_url,
            auth=_no_auth,
            family=family,
            errors=token_error,
            retry=self.retry,
            timeout=credentials.timeout,
        )
        self.api = RestApi(
            PROVIDER_NAME,
            service,
            credentials.management_url,
            auth=self.headers,
            family=family,
            errors=self._errors,
            retry=self.retry,
            timeout=credentials.timeout,
        )

    def __repr__(self) -> str:
        return f"AzureSession({self.service}, {self.credentials.describe()})"

    @property
    def subscription(self) -> str:
        """``/subscriptions/<id>``, the root of every ARM path."""
        return f"/subscriptions/{self.credentials.subscription_id}"

    def error(self, code: str, message: str, provider_code: str = "") -> CloudProviderError:
        """An error of this lever's family and service."""
        return self.api.error(code, message, provider_code)

    # --- token -----------------------------------------------------------------------------

    def token(self) -> str:
        """A bearer token for ARM, fetched with the client-credentials grant and cached until
        shortly before it expires."""
        with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            self.credentials.check(self.service, self.family)
            body = self.login.json(
                "POST",
                f"/{self.credentials.tenant_id}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.credentials.client_id,
                    "client_secret": self.credentials.client_secret,
                    "scope": ARM_SCOPE,
                },
            )
            token = body.get("access_token") if isinstance(body, dict) else None
            if not token:
                raise self.error(PROVIDER, "the token endpoint answered without an access token")
            lifetime = float(body.get("expires_in") or 0)
            self._token = str(token)
            self._expires = time.monotonic() + lifetime - min(300.0, lifetime / 2)
            return self._token

    def headers(self) -> Mapping[str, str]:
        """The ``Authorization`` header of every ARM request."""
        return {"Authorization": f"Bearer {self.token()}"}

    def _errors(self, response: httpx.Response) -> ErrorParts:
        if response.status_code == 401:  # expired or revoked: fetch a new one next time
            with self._lock:
                self._token = ""
        return arm_error(response)

    # --- ARM calls -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        api_version: str,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One ARM call with ``api-version`` (retried while throttled)."""
        return self.api.request(
            method, path, params={"api-version": api_version}, json=json, headers=headers
        )

    def json(self, method: str, path: str, *, api_version: str, **kwargs: Any) -> Any:
        """:meth:`request`'s JSON body ({} when it has none)."""
        return self.api.json(method, path, params={"api-version": api_version}, **kwargs)

    def wait_operation(
        self,
        url: str,
        *,
        what: str,
        deadline: float,
        poll_interval: float,
        first_wait: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """Poll a long-running operation's ``Azure-AsyncOperation`` URL until its status is
        Succeeded (the status body); Failed or Canceled raise the operation's error, and an
        operation still running after ``deadline`` seconds is UNAVAILABLE. Each wait is the
        answer's ``Retry-After`` when it gives one, else ``poll_interval``."""
        start = time.monotonic()
        wait = poll_interval if first_wait is None else first_wait
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= deadline:
                raise self.error(UNAVAILABLE, f"{what}: still in progress after {deadline:g} s")
            sleep(max(0.0, min(wait, deadline - elapsed)))
            response = self.api.request("GET", url)
            try:
                body = response.json()
            except ValueError:
                body = {}
            status = str(body.get("status", "")) if isinstance(body, dict) else ""
            if status == "Succeeded":
                return dict(body)
            if status in ("Failed", "Canceled"):
                error = body.get("error") or {}
                provider_code = str(error.get("code") or status)
                message = str(error.get("message") or f"the operation ended {status}")
                code = ARM_CODES.get(provider_code, CONFLICT if status == "Canceled" else PROVIDER)
                raise self.error(code, f"{what}: {status}: {message}", provider_code)
            suggested = retry_after(response)
            wait = suggested if suggested is not None else poll_interval

    def close(self) -> None:
        """Close both HTTP connection pools."""
        self.login.close()
        self.api.close()


__all__ = [
    "ARM_SCOPE",
    "DNS_API_VERSION",
    "NETWORK_API_VERSION",
    "AzureCredentials",
    "AzureSession",
    "arm_error",
    "token_error",
]
