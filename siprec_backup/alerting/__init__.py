"""Alerting: which health changes are worth a notice (transitions), and how to send them (channels).

Pure engine code, no Prefect: flows keep the tracker's JSON state between runs and pick channels.
"""

from siprec_backup.alerting.channels import (
    AlertDeliveryError,
    Channel,
    EmailChannel,
    PagerDutyChannel,
    RetryPolicy,
    SlackChannel,
    WebhookChannel,
    deliver,
    sign,
    verify_signature,
)
from siprec_backup.alerting.transitions import Alert, AlertTracker, Observation

__all__ = [
    "Alert",
    "AlertDeliveryError",
    "AlertTracker",
    "Channel",
    "EmailChannel",
    "Observation",
    "PagerDutyChannel",
    "RetryPolicy",
    "SlackChannel",
    "WebhookChannel",
    "deliver",
    "sign",
    "verify_signature",
]
