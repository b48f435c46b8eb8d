"""Google Cloud credentials and REST clients for the GCP levers (Compute backend services and
Cloud DNS), over httpx through :class:`~siprec_backup.cloud.http.RestApi`.

Access tokens come from google-auth: a service account JSON key (google-auth posts a signed JWT
to the key's own ``token_uri``) or, without a key, Application Default Credentials. google-auth
is an optional extra imported only when a token is needed: without it the lever raises
``missing-sdk`` naming ``pip install 'siprec-backup[gcp]'``.

Google API errors are ``{"error": {"code", "message", "status", "errors": [{"reason"}]}}``
(https://cloud.google.com/apis/design/errors, https://cloud.google.com/compute/docs/api/
handling-api-responses); :func:`google_error` maps their reason / status onto our codes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from siprec_backup.cloud.errors import code_for_status, missing_sdk
from siprec_backup.cloud.http import ErrorParts, RestApi
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.errors import (
    AUTH,
    CONFIGURATION,
    CONFLICT,
    THROTTLING,
    UNAVAILABLE,
    CloudProviderError,
)

PROVIDER = "gcp"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
COMPUTE_URL = "https://compute.googleapis.com/compute/v1"
DNS_URL = "https://dns.googleapis.com/dns/v1"

#: ``errors[].reason`` values and ``status`` values by our code.
GOOGLE_CODES: dict[str, str] = {
    **dict.fromkeys(
        ("rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "RESOURCE_EXHAUSTED"),
        THROTTLING,
    ),
    **dict.fromkeys(
        (
            "alreadyExists",
            "conditionNotMet",
            "ALREADY_EXISTS",
            "ABORTED",
            "resourceInUseByAnotherResource",
        ),
        CONFLICT,
    ),
    **dict.fromkeys(
        ("notFound", "NOT_FOUND", "invalid", "required", "INVALID_ARGUMENT"), CONFIGURATION
    ),
    **dict.fromkeys(
        (
            "forbidden",
            "authError",
            "PERMISSION_DENIED",
            "UNAUTHENTICATED",
            "insufficientPermissions",
        ),
        AUTH,
    ),
}


def google_error(response: httpx.Response) -> ErrorParts:
    """(our code, Google's reason or status, message) of a Google API error answer."""
    status = response.status_code
    message, reason, state = response.reason_phrase, "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        state = str(error.get("status") or "")
        details = error.get("errors") or []
        if details and isinstance(details[0], dict):
            reason = str(details[0].get("reason") or "")
    code = GOOGLE_CODES.get(reason) or GOOGLE_CODES.get(state)
    if status == 429 or code == THROTTLING:
        code = THROTTLING
    elif status in (401, 403) and code != CONFLICT:
        code = AUTH
    elif code is None:
        code = code_for_status(status)
    return code, reason or state, message


@dataclass(frozen=True)
class GcpCredentials:
    """A service account key (JSON text; empty: Application Default Credentials), the project
    (empty: the key's ``project_id``) and the API endpoints (emulators, tests)."""

    service_account_info: str = field(default="", repr=False)
    project: str = ""
    compute_url: str = COMPUTE_URL
    dns_url: str = DNS_URL
    #: Connect and read timeout of every request, in seconds.
    timeout: float = 10.0

    def key(self) -> dict[str, Any]:
        """The parsed service account key ({} for ADC); ValueError naming what is wrong."""
        if not self.service_account_info.strip():
            return {}
        try:
            info = json.loads(self.service_account_info)
        except ValueError:
            raise ValueError("the service account key is not valid JSON") from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise ValueError(
                'the service account key is not a JSON key of "type": "service_account"'
            )
        missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
        if missing:
            raise ValueError(f"the service account key has no {', '.join(missing)}")
        return info

    def describe(self) -> str:
        """Secret-free: ``project p, service account sa@p.iam.gserviceaccount.com``."""
        try:
            info = self.key()
        except ValueError:
            info = {}
        who = (
            f"service account {info['client_email']}" if info else "application default credentials"
        )
        project = self.project or str(info.get("project_id", "")) or "(default project)"
        return f"project {project}, {who}"


class GoogleToken:
    """Bearer tokens for one set of credentials, refreshed by google-auth when not valid."""

    def __init__(
        self, credentials: GcpCredentials, service: str, family: type[CloudProviderError]
    ) -> None:
        self.credentials = credentials
        self.service = service
        self.family = family
        self._google: Any = None
        self._project = credentials.project

    def _error(self, code: str, message: str, provider_code: str = "") -> CloudProviderError:
        return self.family(
            message, provider=PROVIDER, service=self.service, code=code, provider_code=provider_code
        )

    def _load(self) -> Any:
        if self._google is not None:
            return self._google
        try:
            import google.auth
            import google.auth.exceptions
            from google.oauth2 import service_account
        except ImportError:
            raise missing_sdk(PROVIDER, self.service, "google-auth", self.family) from None
        try:
            info = self.credentials.key()
        except ValueError as exc:
            raise self._error(CONFIGURATION, str(exc)) from None
        try:
            if info:
                factory: Any = service_account.Credentials.from_service_account_info
                self._google = factory(info, scopes=SCOPES)
                self._project = self._project or str(info.get("project_id", ""))
            else:
                self._google, found = google.auth.default(scopes=SCOPES)
                self._project = self._project or (found or "")
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise self._error(
                CONFIGURATION,
                f"no usable Google credentials: {type(exc).__name__}",
                "DefaultCredentialsError",
            ) from None
        except ValueError:  # a malformed private key
            raise self._error(CONFIGURATION, "the service account key cannot be loaded") from None
        return self._google

    def project(self) -> str:
        """The project: configured, else the key's or ADC's; CONFIGURATION error if none."""
        self._load()
        if not self._project:
            raise self._error(CONFIGURATION, "no Google Cloud project: set project")
        return self._project

    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer ...``, refreshing the token through google-auth if needed."""
        held = self._load()
        if not held.valid:
            import google.auth.exceptions
            from google.auth.transport.requests import Request

            request = Request()
            timeout = self.credentials.timeout

            def timed(*args: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", timeout)
                return request(*args, **kwargs)

            try:
                held.refresh(timed)
            except google.auth.exceptions.RefreshError as exc:
                grant = _grant_error(exc)
                if getattr(exc, "retryable", False):  # 5xx / 429 after google-auth's retries
                    raise self._error(
                        UNAVAILABLE, f"the Google token endpoint failed ({grant})", grant
                    ) from None
                raise self._error(
                    AUTH, f"the Google token request was refused ({grant})", grant
                ) from None
            except google.auth.exceptions.TransportError as exc:
                raise self._error(
                    UNAVAILABLE, f"cannot reach the Google token endpoint: {type(exc).__name__}"
                ) from None
        return {"Authorization": f"Bearer {held.token}"}


def _grant_error(exc: Exception) -> str:
    """The OAuth ``error`` of a refused token request (``invalid_grant``), never the body."""
    first = str(exc.args[0]) if exc.args else ""
    word = first.split(":", 1)[0].strip()
    return word if word.replace("_", "").isalnum() and len(word) < 40 else "refused"


def gcp_api(
    service: str,
    base_url: str,
    token: GoogleToken,
    *,
    family: type[CloudProviderError],
    retry: RetryPolicy | None = None,
    timeout: float = 10.0,
) -> RestApi:
    """A :class:`RestApi` for one Google API, authenticated by ``token``."""
    auth: Callable[[], dict[str, str]] = token.headers
    return RestApi(
        PROVIDER,
        service,
        base_url,
        auth=auth,
        family=family,
        errors=google_error,
        retry=retry or RetryPolicy(),
        timeout=timeout,
    )


def next_page_token(body: Any, request: tuple[str, Any]) -> tuple[str, Any] | None:
    """The next request of a Google listing (``pageToken`` = the answer's ``nextPageToken``)."""
    token = body.get("nextPageToken") if isinstance(body, dict) else None
    if not token:
        return None
    path, params = request
    return path, {**(params or {}), "pageToken": token}


__all__ = [
    "COMPUTE_URL",
    "DNS_URL",
    "GcpCredentials",
    "GoogleToken",
    "gcp_api",
    "google_error",
    "next_page_token",
]
