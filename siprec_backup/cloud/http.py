"""JSON REST calls to a cloud control plane (Google Cloud, Azure, Cloudflare) over httpx.

One :class:`RestApi` per provider service: it adds the provider's auth headers, retries throttled
calls through :func:`~siprec_backup.cloud.retry.with_retries` (honouring ``Retry-After``), and
raises every failure as a :class:`~siprec_backup.errors.CloudProviderError` whose code the
provider's own ``errors`` function picks from the response (falling back on the HTTP status).
Headers are never put in a message, so tokens stay out of logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from siprec_backup.cloud.errors import code_for_status
from siprec_backup.cloud.retry import RetryPolicy, ThrottledError, with_retries
from siprec_backup.errors import THROTTLING, UNAVAILABLE, CloudProviderError

#: What a provider's error parser returns for a failed response: (our code, the provider's own
#: code, the provider's message).
ErrorParts = tuple[str, str, str]

#: A request to make next: (absolute URL or path, query parameters).
PageRequest = tuple[str, Mapping[str, Any] | None]


def generic_error(response: httpx.Response) -> ErrorParts:
    """The code by HTTP status and the body's ``error.message`` / ``message`` (or its reason)."""
    message, provider_code = response.reason_phrase, ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            provider_code = str(error.get("code") or error.get("status") or "")
        elif isinstance(error, str):
            message = error
    return code_for_status(response.status_code), provider_code, message


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (the HTTP-date form is not used by these APIs)."""
    value = response.headers.get("retry-after", "")
    try:
        return float(value)
    except ValueError:
        return None


@dataclass
class RestApi:
    """One provider service's REST API (``base_url``), authenticated by ``auth()`` headers.

    >>> api = RestApi("cloudflare", "dns", "https://api.cloudflare.com/client/v4",
    ...               auth=lambda: {"Authorization": f"Bearer {token}"}, family=CloudDnsError)
    >>> api.json("GET", "/zones", params={"name": "example.com"})
    """

    provider: str
    service: str
    base_url: str
    auth: Callable[[], Mapping[str, str]] = field(repr=False)
    family: type[CloudProviderError] = CloudProviderError
    errors: Callable[[httpx.Response], ErrorParts] = generic_error
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 10.0
    verify: bool | str = True
    client: httpx.Client | None = field(default=None, repr=False)

    def error(self, code: str, message: str, provider_code: str = "") -> CloudProviderError:
        """An error of this service (``family``) with our ``code``."""
        return self.family(
            message,
            provider=self.provider,
            service=self.service,
            code=code,
            provider_code=provider_code,
        )

    def _http(self) -> httpx.Client:
        if self.client is None:
            self.client = httpx.Client(timeout=self.timeout, verify=self.verify)
        return self.client

    def url(self, path: str) -> str:
        """``path`` under ``base_url`` (an absolute URL, e.g. a next-page link, is kept)."""
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call (retried while throttled); the response if 2xx, else the classified error.
        ``data`` is a form body (an OAuth2 token request)."""

        def attempt() -> httpx.Response:
            merged = {**self.auth(), **(headers or {})}
            response = self._http().request(
                method, self.url(path), params=params, json=json, data=data, headers=merged
            )
            if response.is_success:
                return response
            code, provider_code, message = self.errors(response)
            error = self.error(code, f"{method} {path}: {message}", provider_code)
            raise ThrottledError(error, retry_after(response) if code == THROTTLING else None)

        return with_retries(attempt, self._classify, policy=self.retry)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`request`'s JSON body ({} when it has none)."""
        response = self.request(method, path, **kwargs)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise self.error(
                UNAVAILABLE, f"{method} {path}: the answer is not JSON ({response.status_code})"
            ) from None

    def pages(
        self,
        path: str,
        *,
        items: str,
        next_page: Callable[[Any, PageRequest], PageRequest | None],
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a listing, following ``next_page(body, this_request)`` until it
        returns None; ``items`` is the key of each page's list."""
        request: PageRequest | None = (path, params)
        while request is not None:
            body = self.json("GET", request[0], params=request[1])
            yield from body.get(items) or []
            request = next_page(body, request)

    def _classify(self, exc: BaseException) -> CloudProviderError:
        if isinstance(exc, CloudProviderError):
            return exc
        if isinstance(exc, httpx.TransportError):
            return self.error(
                UNAVAILABLE, f"cannot reach {self.base_url}: {exc}", type(exc).__name__
            )
        raise exc

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self.client is not None:
            self.client.close()
            self.client = None
