"""Classifying provider failures onto the error contract of :class:`~siprec_backup.errors.
CloudProviderError` (provider, service, code, message), and the missing-SDK error.

Every provider maps its own error codes first (botocore's ``Error.Code`` here; the REST providers
in their modules) and falls back on the HTTP status with :func:`code_for_status`.
"""

from __future__ import annotations

from typing import Any

from siprec_backup.errors import (
    AUTH,
    CONFIGURATION,
    CONFLICT,
    MISSING_SDK,
    PROVIDER,
    THROTTLING,
    UNAVAILABLE,
    CloudProviderError,
)

#: The pip command that installs each provider's optional SDK.
INSTALL_HINTS = {
    "aws": "pip install 'siprec-backup[aws]'",
    "gcp": "pip install 'siprec-backup[gcp]'",
    "azure": "pip install 'siprec-backup[azure]'",
}

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


def code_for_status(status: int) -> str:
    """Our code for an HTTP status the provider gave no more specific error code for."""
    if status in (401, 403):
        return AUTH
    if status == 429:
        return THROTTLING
    if status in (409, 412):  # 412: an If-Match / fingerprint that no longer matches
        return CONFLICT
    if status >= 500:
        return UNAVAILABLE
    if status in (400, 404, 405, 422):
        return CONFIGURATION
    return PROVIDER


def _aws_code(provider_code: str, message: str, status: int) -> str:
    if provider_code == "InvalidChangeBatch":
        lowered = message.lower()
        return CONFLICT if any(p in lowered for p in _CONFLICT_PHRASES) else CONFIGURATION
    return AWS_CODES.get(provider_code) or code_for_status(status)


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
