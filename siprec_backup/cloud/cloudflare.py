"""Cloudflare API v4 over httpx (no cloudflare package): credentials, the error classification
of Cloudflare's envelope, and paginated listings.

Every answer is ``{"success", "errors": [{"code", "message", "error_chain"?}], "messages",
"result", "result_info"?}``. Errors are classified by Cloudflare's own codes first, then by HTTP
status (:func:`~siprec_backup.cloud.errors.code_for_status`): 429 and code 971 ("Please wait and
consider throttling your request speed") are throttling, retried honouring ``Retry-After``;
401/403 and codes 10000 ("Authentication error"), 9109 ("Unauthorized to access requested
resource" / "Invalid access token"), 9103, 1000 ("Invalid API Token") and 6111 ("Invalid format
for Authorization header", chained under 6003) are auth; 81053 / 81057 / 81058 (a record that
already exists) and 81044 ("Record does not exist": changed under us) are conflicts; other 400 /
404 validation codes are configuration.

Docs: https://developers.cloudflare.com/fundamentals/api/ (envelope, Bearer tokens),
https://developers.cloudflare.com/api/limits and
https://developers.cloudflare.com/support/troubleshooting/http-status-codes/4xx-client-error/error-429
(1200 requests / 5 min, HTTP 429).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from siprec_backup.cloud.errors import code_for_status
from siprec_backup.cloud.http import ErrorParts, PageRequest, RestApi
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.errors import (
    AUTH,
    CONFIGURATION,
    CONFLICT,
    PROVIDER,
    THROTTLING,
    CloudProviderError,
)

PROVIDER_NAME = "cloudflare"
API_URL = "https://api.cloudflare.com/client/v4"

#: Cloudflare error codes by our code (checked in this order; anything else: by HTTP status).
CODES: tuple[tuple[str, frozenset[int]], ...] = (
    (THROTTLING, frozenset({971})),
    (AUTH, frozenset({1000, 6111, 9103, 9106, 9109, 10000})),
    (CONFLICT, frozenset({81044, 81053, 81057, 81058})),
    (CONFIGURATION, frozenset({1001, 1004, 7000, 7003, 9005, 9021, 81062})),
)


@dataclass(frozen=True)
class CloudflareCredentials:
    """An API token (sent as ``Authorization: Bearer``) and the API's location; the token
    stays out of repr."""

    api_token: str = field(default="", repr=False)
    #: Cloudflare's API; a test points it at the fake.
    api_url: str = API_URL
    #: Connect and read timeout of every request, in seconds.
    timeout: float = 10.0

    def describe(self) -> str:
        """Secret-free: ``Cloudflare API https://api.cloudflare.com/client/v4 (token)``."""
        token = "token" if self.api_token else "no token"
        return f"Cloudflare API {self.api_url} ({token})"


def _codes(errors: Any) -> list[int]:
    """Every error code of an ``errors`` list, chained ones included."""
    found: list[int] = []
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            if isinstance(error.get("code"), int):
                found.append(error["code"])
            found.extend(_codes(error.get("error_chain")))
    return found


def _messages(errors: Any) -> list[str]:
    parts = []
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            chain = "; ".join(_messages(error.get("error_chain")))
            text = f"{error.get('message', '')} [{error.get('code', '')}]"
            parts.append(f"{text} ({chain})" if chain else text)
    return parts


def code_for(codes: list[int], status: int) -> str:
    """Our code for Cloudflare error ``codes`` answered with HTTP ``status``."""
    if status == 429:
        return THROTTLING
    for ours, theirs in CODES:
        if any(c in theirs for c in codes):
            return ours
    return code_for_status(status) if status >= 400 else PROVIDER


def cloudflare_error(response: httpx.Response) -> ErrorParts:
    """(our code, Cloudflare's first error code, its messages) of a failed answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    codes = _codes(errors)
    message = "; ".join(_messages(errors)) or response.reason_phrase or str(response.status_code)
    return code_for(codes, response.status_code), str(codes[0]) if codes else "", message


def cloudflare_api(
    credentials: CloudflareCredentials,
    *,
    service: str,
    family: type[CloudProviderError] = CloudProviderError,
    retry: RetryPolicy | None = None,
) -> RestApi:
    """A :class:`RestApi` on Cloudflare with the token as a Bearer header; CONFIGURATION error
    for a missing token, a bad URL or timeout."""

    def bad(message: str) -> CloudProviderError:
        return family(message, provider=PROVIDER_NAME, service=service, code=CONFIGURATION)

    if not credentials.api_token.strip():
        raise bad("no Cloudflare API token configured")
    if not credentials.api_url.startswith(("http://", "https://")):
        raise bad(f"the Cloudflare API URL must start with https://, not {credentials.api_url!r}")
    if credentials.timeout <= 0:
        raise bad("the Cloudflare request timeout must be positive")
    token = credentials.api_token.strip()
    return RestApi(
        PROVIDER_NAME,
        service,
        credentials.api_url,
        auth=lambda: {"Authorization": f"Bearer {token}"},
        family=family,
        errors=cloudflare_error,
        retry=retry or RetryPolicy(),
        timeout=credentials.timeout,
    )


def result(api: RestApi, method: str, path: str, **kwargs: Any) -> Any:
    """The ``result`` of one call; a 2xx answer with ``success: false`` is an error too."""
    body = api.json(method, path, **kwargs)
    if not isinstance(body, dict) or body.get("success") is False:
        errors = body.get("errors") if isinstance(body, dict) else None
        codes = _codes(errors)
        raise api.error(
            code_for(codes, 200),
            f"{method} {path}: {'; '.join(_messages(errors)) or 'unsuccessful answer'}",
            str(codes[0]) if codes else "",
        )
    return body.get("result")


def _next_page(body: Any, request: PageRequest) -> PageRequest | None:
    info = (body.get("result_info") or {}) if isinstance(body, dict) else {}
    page, total = int(info.get("page") or 1), int(info.get("total_pages") or 1)
    if page >= total:
        return None
    return request[0], {**(request[1] or {}), "page": page + 1}


def listing(api: RestApi, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every item of a paginated listing (``page`` / ``per_page``, ``result_info.total_pages``)."""
    return api.pages(path, items="result", next_page=_next_page, params=dict(params))


__all__ = [
    "API_URL",
    "CloudflareCredentials",
    "cloudflare_api",
    "cloudflare_error",
    "code_for",
    "listing",
    "result",
]
