"""AWS sessions and clients for the cloud levers, and the retrying call wrapper they all use.

Credentials come from explicit keys, a named profile, or boto3's default chain (environment,
instance role); ``role_arn`` then assumes a role through STS on top of whichever of those applies.
``endpoint_url`` points every client at an emulator (moto). boto3 is an optional extra and is
imported only when a client is built: without it the factory raises a
:class:`~siprec_backup.errors.CloudProviderError` with code ``missing-sdk`` that names
``pip install 'siprec-backup[aws]'``.

Clients are built with botocore's own retries turned off, so :func:`call` is the one place that
retries (throttling only, exponential backoff, bounded) and classifies errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from siprec_backup.cloud.errors import classify, missing_sdk
from siprec_backup.cloud.retry import RetryPolicy, with_retries
from siprec_backup.errors import CONFIGURATION, CloudProviderError

PROVIDER = "aws"


@dataclass(frozen=True)
class AwsCredentials:
    """Where AWS clients get their credentials, region and endpoint; secrets stay out of repr."""

    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    profile: str = ""
    role_arn: str = ""
    role_session_name: str = "siprec-backup"
    external_id: str = field(default="", repr=False)
    #: An emulator's or a VPC endpoint's URL; empty: AWS's public endpoints.
    endpoint_url: str = ""
    #: Connect and read timeout of every request, in seconds.
    timeout: float = 10.0

    def describe(self) -> str:
        """Secret-free: ``region us-east-1, profile ops, role arn:...`` for logs."""
        parts = [f"region {self.region}"]
        if self.access_key_id:
            parts.append("explicit keys")
        if self.profile:
            parts.append(f"profile {self.profile}")
        if self.role_arn:
            parts.append(f"role {self.role_arn}")
        if self.endpoint_url:
            parts.append(f"endpoint {self.endpoint_url}")
        return ", ".join(parts)


def boto3_module(
    service: str = "client", family: type[CloudProviderError] = CloudProviderError
) -> Any:
    """The boto3 module; CloudProviderError ``missing-sdk`` with the install hint if absent."""
    try:
        import boto3
    except ImportError:
        raise missing_sdk(PROVIDER, service, "boto3", family) from None
    return boto3


def _check(credentials: AwsCredentials, service: str, family: type[CloudProviderError]) -> None:
    def bad(message: str) -> CloudProviderError:
        return family(message, provider=PROVIDER, service=service, code=CONFIGURATION)

    if bool(credentials.access_key_id) != bool(credentials.secret_access_key):
        raise bad("set both the access key id and the secret access key, or neither")
    if credentials.access_key_id and credentials.profile:
        raise bad("set either explicit keys or a profile, not both")
    if not credentials.region:
        raise bad("no AWS region configured")
    if credentials.timeout <= 0:
        raise bad("the AWS request timeout must be positive")


def aws_session(
    credentials: AwsCredentials,
    *,
    service: str = "sts",
    family: type[CloudProviderError] = CloudProviderError,
    retry: RetryPolicy | None = None,
) -> Any:
    """A boto3 Session for ``credentials``; with ``role_arn``, one holding the role's temporary
    credentials from STS AssumeRole (called through :func:`call`)."""
    boto3 = boto3_module(service, family)
    _check(credentials, service, family)
    try:
        session = boto3.session.Session(
            aws_access_key_id=credentials.access_key_id or None,
            aws_secret_access_key=credentials.secret_access_key or None,
            aws_session_token=credentials.session_token or None,
            profile_name=credentials.profile or None,
            region_name=credentials.region,
        )
    except Exception as exc:  # ProfileNotFound and friends
        raise classify(exc, service=service, family=family) from None
    if not credentials.role_arn:
        return session
    sts = _client_from(session, "sts", credentials, family)
    kwargs: dict[str, Any] = {
        "RoleArn": credentials.role_arn,
        "RoleSessionName": credentials.role_session_name,
    }
    if credentials.external_id:
        kwargs["ExternalId"] = credentials.external_id
    answer = call(sts.assume_role, service="sts", family=family, retry=retry, **kwargs)
    temporary = answer["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=temporary["AccessKeyId"],
        aws_secret_access_key=temporary["SecretAccessKey"],
        aws_session_token=temporary["SessionToken"],
        region_name=credentials.region,
    )


def _client_from(
    session: Any, service: str, credentials: AwsCredentials, family: type[CloudProviderError]
) -> Any:
    from botocore.config import Config

    config = Config(
        connect_timeout=credentials.timeout,
        read_timeout=credentials.timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
    )
    try:
        return session.client(
            service,
            region_name=credentials.region,
            endpoint_url=credentials.endpoint_url or None,
            config=config,
        )
    except Exception as exc:
        raise classify(exc, service=service, family=family) from None


def aws_client(
    service: str,
    credentials: AwsCredentials,
    *,
    family: type[CloudProviderError] = CloudProviderError,
    retry: RetryPolicy | None = None,
) -> Any:
    """A boto3 client of ``service`` ("elbv2", "route53"...) with botocore retries off."""
    session = aws_session(credentials, service=service, family=family, retry=retry)
    return _client_from(session, service, credentials, family)


def call(
    method: Callable[..., Any],
    /,
    *,
    service: str,
    family: type[CloudProviderError] = CloudProviderError,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> Any:
    """``method(**kwargs)``, retrying throttling with exponential backoff (``retry``, bounded);
    any failure raised as ``family`` classified by :func:`~siprec_backup.cloud.errors.classify`.
    """
    return with_retries(
        lambda: method(**kwargs),
        lambda exc: classify(exc, service=service, family=family),
        policy=retry,
        sleep=sleep,
    )
