"""Cloud provider plumbing shared by the cloud levers: the provider error contract and AWS
sessions/clients (boto3 is imported only when a client is built)."""

from siprec_backup.cloud.aws import AwsCredentials, RetryPolicy, aws_client, aws_session, call
from siprec_backup.cloud.errors import (
    CODES,
    CloudDnsError,
    CloudLoadBalancerError,
    CloudProviderError,
    classify,
)

__all__ = [
    "CODES",
    "AwsCredentials",
    "CloudDnsError",
    "CloudLoadBalancerError",
    "CloudProviderError",
    "RetryPolicy",
    "aws_client",
    "aws_session",
    "call",
    "classify",
]
