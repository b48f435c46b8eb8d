"""Alert channels: a signed generic webhook, Slack, PagerDuty Events v2 and SMTP mail.

Every channel sends one *alert dict*, the shape of ``FreshnessResult.to_alert()`` and
``Alert.to_alert()``: ``event``, ``resource`` (a stable id), ``severity`` (info / warning /
critical), ``summary`` (one line), ``fields`` (flat details) and optionally ``resolved`` (else an
``info`` severity means resolved). Objects with a ``to_alert()`` method are accepted as well.

Failures raise :class:`AlertDeliveryError` naming the channel and the HTTP status or the kind of
network error, never a secret: the HMAC secret, the PagerDuty routing key, the SMTP password and
the Slack webhook URL (its path is the credential) are ``repr=False`` and stay out of messages and
logs. Network errors, timeouts, HTTP 429 and 5xx are retried with a short bounded exponential
backoff (:class:`RetryPolicy`); other HTTP errors are not, retrying cannot fix them.

Webhook signature scheme (``WebhookChannel``)::

    X-Siprec-Timestamp: <unix seconds when sent>
    X-Siprec-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

The receiver recomputes the HMAC over the timestamp header, a dot and the raw body bytes, compares
in constant time, and rejects timestamps older than a few minutes so that a captured request
cannot be replayed later (:func:`verify_signature` does exactly this).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import urlsplit

from siprec_backup.errors import ConfigurationError, SiprecBackupError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Siprec-Signature"
TIMESTAMP_HEADER = "X-Siprec-Timestamp"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

_SEVERITIES = ("info", "warning", "error", "critical")
_EMOJI = {"info": ":white_check_mark:", "warning": ":warning:", "critical": ":rotating_light:"}


class AlertDeliveryError(SiprecBackupError):
    """An alert could not be delivered through a channel (after retries)."""


class _HasToAlert(Protocol):
    def to_alert(self) -> dict[str, Any]: ...


AlertLike = Mapping[str, Any] | _HasToAlert


class Channel(Protocol):
    """Something that delivers one alert or raises AlertDeliveryError."""

    @property
    def name(self) -> str: ...

    def send(self, alert: AlertLike) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failed delivery (tests use tiny delays)."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 5.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or self.timeout <= 0:
            raise ConfigurationError(f"invalid retry policy {self}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.base_delay * 2 ** (attempt - 1), self.max_delay))


def normalise(alert: AlertLike) -> dict[str, Any]:
    """The alert dict of `alert`, checked: a clear error instead of a half-filled message."""
    data = dict(alert) if isinstance(alert, Mapping) else alert.to_alert()
    for key in ("event", "resource", "severity", "summary"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigurationError(f"alert has no {key!r} (got keys {sorted(data)})")
    if data["severity"] not in _SEVERITIES:
        raise ConfigurationError(f"alert severity {data['severity']!r} not in {_SEVERITIES}")
    data.setdefault("fields", {})
    data.setdefault("resolved", data["severity"] == "info")
    return data


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: ``sha256=<hex HMAC(secret, timestamp + "." + body)>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance: float = 300.0,
) -> bool:
    """Whether a webhook request is authentic and fresh (for receivers and tests)."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return False
    if abs(age) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# -- HTTP channels -------------------------------------------------------------------------------


def _post_json(
    channel: str,
    url: str,
    body: bytes,
    retry: RetryPolicy,
    headers: Callable[[], dict[str, str]] | None = None,
) -> None:
    """POST `body`; retry transient failures; AlertDeliveryError without the URL's secret parts."""
    where = _origin(url)
    problem = ""
    for attempt in range(1, retry.attempts + 1):
        request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310
        request.add_header("Content-Type", "application/json")
        for name, value in (headers() if headers else {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=retry.timeout) as response:  # noqa: S310
                response.read(65536)
            return
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
            exc.close()
            if exc.code != 429 and exc.code < 500:
                break
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            problem = _network_problem(reason)
        if attempt < retry.attempts:
            pause = retry.delay(attempt)
            log.warning(
                "alert channel %s: attempt %d/%d to %s failed (%s), retrying in %.2fs",
                channel,
                attempt,
                retry.attempts,
                where,
                problem,
                pause,
            )
            time.sleep(pause)
    raise AlertDeliveryError(
        f"alert channel {channel!r}: delivery to {where} failed: {problem} "
        f"(after {attempt} attempt{'s' if attempt > 1 else ''})"
    )


def _origin(url: str) -> str:
    """Scheme, host and port of `url`: enough to diagnose, never the path or the query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _network_problem(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return type(reason).__name__


def _check_url(channel: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"alert channel {channel!r}: the URL must be http(s)://host/...")


@dataclass(frozen=True)
class WebhookChannel:
    """POSTs the alert dict as JSON, signed with HMAC-SHA256 (see the module docstring)."""

    url: str = field(repr=False)
    secret: str = field(repr=False)
    name: str = "webhook"
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        _check_url(self.name, self.url)
        if not self.secret:
            raise ConfigurationError(f"alert channel {self.name!r}: the HMAC secret is empty")

    def send(self, alert: AlertLike) -> None:
        body = json.dumps(normalise(alert), sort_keys=True, default=str).encode()

        def headers() -> dict[str, str]:
            timestamp = str(int(time.time()))  # fresh on each attempt: retries stay verifiable
            return {
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            }

        _post_json(self.name, self.url, body, self.retry, headers)


@dataclass(frozen=True)
class SlackChannel:
    """Posts to a Slack incoming webhook: ``{"text": summary, "blocks": [...]}``."""

    webhook_url: str = field(repr=False)
    name: str = "slack"
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        _check_url(self.name, self.webhook_url)

    @staticmethod
    def payload(alert: AlertLike) -> dict[str, Any]:
        data = normalise(alert)
        emoji = ":white_check_mark:" if data["resolved"] else _EMOJI.get(data["severity"], "")
        details = [f"*{k}*: {v}" for k, v in data["fields"].items() if v is not None]
        blocks: list[dict[str, Any]] = [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{emoji} *{data['summary']}*"},
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"{data['event']} · {data['resource']} · {data['severity']}",
                    }
                ],
            },
        ]
        if details:
            blocks.insert(
                1, {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(details)}}
            )
        return {"text": data["summary"], "blocks": blocks}

    def send(self, alert: AlertLike) -> None:
        body = json.dumps(self.payload(alert), default=str).encode()
        _post_json(self.name, self.webhook_url, body, self.retry)


@dataclass(frozen=True)
class PagerDutyChannel:
    """PagerDuty Events API v2: trigger, or resolve once resolved; de-duplicated by resource."""

    routing_key: str = field(repr=False)
    url: str = PAGERDUTY_EVENTS_URL
    source: str = "siprec-backup"
    name: str = "pagerduty"
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        _check_url(self.name, self.url)
        if not self.routing_key:
            raise ConfigurationError(f"alert channel {self.name!r}: the routing key is empty")

    def payload(self, alert: AlertLike) -> dict[str, Any]:
        data = normalise(alert)
        event: dict[str, Any] = {
            "routing_key": self.routing_key,
            "event_action": "resolve" if data["resolved"] else "trigger",
            "dedup_key": data["resource"],
        }
        if not data["resolved"]:
            event["payload"] = {
                "summary": data["summary"][:1024],
                "source": self.source,
                "severity": data["severity"],
                "timestamp": datetime.now(UTC).isoformat(),
                "component": data["resource"],
                "class": data["event"],
                "custom_details": data["fields"],
            }
        return event

    def send(self, alert: AlertLike) -> None:
        body = json.dumps(self.payload(alert), default=str).encode()
        _post_json(self.name, self.url, body, self.retry)


# -- mail ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailChannel:
    """Sends a plain-text mail through SMTP; STARTTLS and login are optional."""

    host: str
    port: int
    sender: str
    recipients: Sequence[str]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    name: str = "email"
    retry: RetryPolicy = RetryPolicy()
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.recipients or not self.sender:
            raise ConfigurationError(f"alert channel {self.name!r}: needs a sender and recipients")
        if self.username and not self.password:
            raise ConfigurationError(f"alert channel {self.name!r}: a username needs a password")

    def message(self, alert: AlertLike) -> EmailMessage:
        data = normalise(alert)
        state = "RESOLVED" if data["resolved"] else data["severity"].upper()
        message = EmailMessage()
        message["Subject"] = f"[siprec {state}] {data['summary']}"[:250]
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        lines = [data["summary"], "", f"event: {data['event']}", f"resource: {data['resource']}"]
        lines += [f"{k}: {v}" for k, v in data["fields"].items() if v is not None]
        message.set_content("\n".join(lines) + "\n")
        return message

    def send(self, alert: AlertLike) -> None:
        message = self.message(alert)
        problem = ""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                self._deliver(message)
                return
            except smtplib.SMTPAuthenticationError as exc:
                problem = f"authentication failed (SMTP {exc.smtp_code})"
                break
            except smtplib.SMTPResponseException as exc:
                problem = f"SMTP {exc.smtp_code}"
                if exc.smtp_code < 500 and attempt < self.retry.attempts:
                    time.sleep(self.retry.delay(attempt))
                    continue
                break
            except (smtplib.SMTPException, OSError) as exc:
                problem = _network_problem(exc) if isinstance(exc, OSError) else type(exc).__name__
            if attempt < self.retry.attempts:
                pause = self.retry.delay(attempt)
                log.warning(
                    "alert channel %s: attempt %d/%d to %s:%d failed (%s), retrying in %.2fs",
                    self.name,
                    attempt,
                    self.retry.attempts,
                    self.host,
                    self.port,
                    problem,
                    pause,
                )
                time.sleep(pause)
        raise AlertDeliveryError(
            f"alert channel {self.name!r}: mail via {self.host}:{self.port} failed: {problem} "
            f"(after {attempt} attempt{'s' if attempt > 1 else ''})"
        )

    def _deliver(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.retry.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=self.ssl_context or ssl.create_default_context())
            if self.username and self.password:
                smtp.login(self.username, self.password)
            smtp.send_message(message)


# -- fan-out -------------------------------------------------------------------------------------


def deliver(alerts: Iterable[AlertLike], channels: Sequence[Channel]) -> int:
    """Send every alert through every channel; one failing channel does not stop the others.

    Returns how many deliveries succeeded; raises one AlertDeliveryError listing the failures.
    """
    failures: list[str] = []
    sent = 0
    for alert in alerts:
        for channel in channels:
            try:
                channel.send(alert)
                sent += 1
            except AlertDeliveryError as exc:
                log.error("%s", exc)
                failures.append(str(exc))
    if failures:
        raise AlertDeliveryError(f"{len(failures)} alert deliveries failed: " + "; ".join(failures))
    return sent
