"""Cloud provider plumbing shared by the cloud levers: classification onto the error contract
(:class:`~siprec_backup.errors.CloudProviderError`), the bounded retry of throttled calls, AWS
clients (boto3 is imported only when a client is built) and JSON REST calls for the providers
driven over HTTP (Google Cloud, Azure, Cloudflare)."""

from siprec_backup.cloud.aws import AwsCredentials, aws_client, aws_session, call
from siprec_backup.cloud.errors import classify, code_for_status, missing_sdk
from siprec_backup.cloud.http import RestApi
from siprec_backup.cloud.retry import RetryPolicy, with_retries

__all__ = [
    "AwsCredentials",
    "RestApi",
    "RetryPolicy",
    "aws_client",
    "aws_session",
    "call",
    "classify",
    "code_for_status",
    "missing_sdk",
    "with_retries",
]
