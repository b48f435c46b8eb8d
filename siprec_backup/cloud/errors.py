"""The cloud provider error contract: every provider failure carries provider, service, code and
message, and the code says what to do about it.

Codes: :data:`MISSING_SDK` (install the extra the message names), :data:`CONFIGURATION` (fix the
block: unknown zone, target group, bad input), :data:`AUTH` (the provider refused our
credentials), :data:`THROTTLING` (retried with bounded exponential backoff, then raised),
:data:`CONFLICT` (the resource changed or already exists), :data:`UNAVAILABLE` (cannot reach the
endpoint, or a 5xx) and :data:`PROVIDER` (anything else the provider answered).

:class:`CloudLoadBalancerError` and :class:`CloudDnsError` also derive from the lever errors
(:class:`~siprec_backup.errors.LoadBalancerError`, :class:`~siprec_backup.errors.DnsError`), so a
failover flow that handles those handles cloud levers unchanged. Messages never hold secrets.
"""

from __future__ import annotations

from typing import Any

from siprec_backup.errors import DnsError, LoadBalancerError, SiprecBackupError

MISSING_SDK = "missing-sdk"
CONFIGURATION = "configuration"
AUTH = "auth"
THROTTLING = "throttling"
CONFLICT = "conflict"
UNAVAILABLE = "unavailable"
PROVIDER = "provider"

CODES = (MISSING_SDK, CONFIGURATION, AUTH, THROTTLING, CONFLICT, UNAVAILABLE, PROVIDER)

#: The pip command that installs each provider's optional SDK.
INSTALL_HINTS = {"aws": "pip install 'siprec-backup[aws]'"}

#: botocore ``Error.Code`` values by our code (anything else: by HTTP status).
AWS_CODES: dict[str, str] = {
    **dict.fromkeys(
        (
            "Throttling",
            "ThrottlingException",
            "ThrottledException",
            "RequestLimitExceeded",
            "TooManyRequestsException",
            "PriorRequestNotComplete",
            "SlowDown",
        ),
        THROTTLING,
    ),
    **dict.fromkeys(
        (
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "AccessDeniedException",
            "UnrecognizedClientException",
            "AuthFailure",
            "ExpiredToken",
            "ExpiredTokenException",
            "InvalidAccessKeyId",
            "UnauthorizedOperation",
        ),
        AUTH,
    ),
    **dict.fromkeys(
        (
            "InvalidInput",
            "ValidationError",
            "InvalidParameterValue",
            "InvalidTarget",
            "TargetGroupNotFound",
            "LoadBalancerNotFound",
            "NoSuchHostedZone",
            "NoSuchChange",
            "InvalidDomainName",
            "HostedZoneNotFound",
        ),
        CONFIGURATION,
    ),
    **dict.fromkeys(
        ("ResourceInUse", "ConcurrentModification", "DuplicateTargetGroupName"), CONFLICT
    ),
}

#: Phrases of an ``InvalidChangeBatch`` that mean "someone changed the record set" (a conflict);
#: any other InvalidChangeBatch is a configuration error (bad value, CNAME at the apex...).
_CONFLICT_PHRASES = ("already exists", "not found", "do not match", "does not match")


class CloudProviderError(SiprecBackupError):
    """A cloud provider call failed: ``provider`` (``"aws"``), ``service`` (``"route53"``),
    ``code`` (one of :data:`CODES`), ``message`` (the provider's words, secret-free) and
    ``provider_code`` (the provider's own error code, ``"Throttling"``) when it gave one."""

    def __init__(
        self, message: str, *, provider: str, service: str, code: str, provider_code: str = ""
    ) -> None:
        detail = f" [{provider_code}]" if provider_code else ""
        super().__init__(f"{provider} {service}: {code}{detail}: {message}")
        self.provider = provider
        self.service = service
        self.code = code
        self.message = message
        self.provider_code = provider_code

    @property
    def retryable(self) -> bool:
        """Whether retrying later may succeed (throttling only: the backoff retries it)."""
        return self.code == THROTTLING


class CloudLoadBalancerError(CloudProviderError, LoadBalancerError):
    """A cloud load balancer call failed (ELBv2...)."""


class CloudDnsError(CloudProviderError, DnsError):
    """A cloud DNS call failed (Route53...)."""


def missing_sdk(
    provider: str, service: str, package: str, family: type[CloudProviderError] = CloudProviderError
) -> CloudProviderError:
    """The error for a missing optional SDK, naming the extra to install."""
    hint = INSTALL_HINTS.get(provider, f"pip install 'siprec-backup[{provider}]'")
    return family(
        f"the Python package {package} is not installed: {hint}",
        provider=provider,
        service=service,
        code=MISSING_SDK,
    )


def _aws_code(provider_code: str, message: str, status: int) -> str:
    if provider_code == "InvalidChangeBatch":
        lowered = message.lower()
        return CONFLICT if any(p in lowered for p in _CONFLICT_PHRASES) else CONFIGURATION
    if provider_code in AWS_CODES:
        return AWS_CODES[provider_code]
    if status in (401, 403):
        return AUTH
    if status == 429:
        return THROTTLING
    if status == 409:
        return CONFLICT
    if status >= 500:
        return UNAVAILABLE
    if status in (400, 404):
        return CONFIGURATION
    return PROVIDER


def classify(
    exc: BaseException,
    *,
    service: str,
    provider: str = "aws",
    family: type[CloudProviderError] = CloudProviderError,
) -> CloudProviderError:
    """Our error for a botocore exception (``family`` picks the lever's error class).

    ClientError by its ``Error.Code`` (then its HTTP status); NoCredentialsError and other
    credential lookups are configuration errors; connection failures are "unavailable"; a
    parameter validation error is a configuration error. An error that is already ours is
    returned as it is.
    """
    if isinstance(exc, CloudProviderError):
        return exc
    from botocore import exceptions as bx

    def make(code: str, message: str, provider_code: str = "") -> CloudProviderError:
        return family(
            message, provider=provider, service=service, code=code, provider_code=provider_code
        )

    if isinstance(exc, bx.ClientError):
        response: dict[str, Any] = dict(exc.response)
        error = response.get("Error") or {}
        provider_code = str(error.get("Code") or "")
        message = str(error.get("Message") or error.get("message") or provider_code)
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        return make(_aws_code(provider_code, message, status), message, provider_code)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return make(
            CONFIGURATION,
            "no usable AWS credentials: set access keys, a profile or a role",
            type(exc).__name__,
        )
    if isinstance(exc, bx.ProfileNotFound):
        return make(CONFIGURATION, str(exc), "ProfileNotFound")
    if isinstance(exc, bx.NoRegionError):
        return make(CONFIGURATION, "no AWS region configured", "NoRegionError")
    if isinstance(exc, bx.ParamValidationError):
        return make(CONFIGURATION, str(exc).replace("\n", " "), "ParamValidationError")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionError | bx.HTTPClientError):
        return make(UNAVAILABLE, str(exc), type(exc).__name__)
    return make(PROVIDER, f"{type(exc).__name__}: {exc}", type(exc).__name__)
