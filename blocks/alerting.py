"""Alert channel blocks, and :func:`load_channels` that turns block names into engine channels.

Prefect's own notification blocks are used where they hold what our channel needs: a
``SlackWebhook`` block (its URL is a secret) becomes a Slack channel, and a ``PagerDutyWebHook``
block's integration key is the Events API v2 routing key. Where Prefect has no block that fits,
ours are here: a webhook signed with HMAC-SHA256 (``X-Siprec-Signature``), PagerDuty Events v2
with only a routing key (Prefect's block also demands a REST API key), and SMTP mail with
STARTTLS and login. Either way our engine channel sends our payload, with its own retries; the
secrets are SecretStr fields, masked in the UI and never logged.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect.blocks.notifications import PagerDutyWebHook, SlackWebhook
from pydantic import Field, SecretStr, field_validator

from blocks._docs import DOCS_URL
from blocks.loading import load_block
from siprec_backup.alerting import (
    Channel,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
)
from siprec_backup.alerting.channels import PAGERDUTY_EVENTS_URL
from siprec_backup.errors import ConfigurationError

PAGERDUTY_EU_EVENTS_URL = "https://events.eu.pagerduty.com/v2/enqueue"


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


class AlertWebhook(Block):
    """A webhook that receives alerts as JSON, signed with HMAC-SHA256.

    Each request carries ``X-Siprec-Timestamp`` and ``X-Siprec-Signature: sha256=<hex>``, the
    HMAC of ``timestamp + "." + body`` with the shared secret; the receiver recomputes it and
    rejects old timestamps (docs/configuration.md).

    Example:
        ```python
        from blocks.alerting import AlertWebhook
        channel = AlertWebhook.load("BLOCK_NAME").channel()
        ```
    """

    _block_type_name = "SIPREC Backup Alert Webhook"
    _block_type_slug = "siprec-backup-alert-webhook"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An HTTP(S) endpoint receiving alerts as JSON signed with HMAC-SHA256."

    url: str = Field(title="URL", description="Where alerts are POSTed (http or https).")
    secret: SecretStr = Field(
        title="Signing secret", description="Shared HMAC-SHA256 secret (secret).", min_length=16
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    def channel(self, name: str = "webhook") -> WebhookChannel:
        """The engine channel."""
        return WebhookChannel(url=self.url, secret=self.secret.get_secret_value(), name=name)


class PagerDutyEvents(Block):
    """PagerDuty through the Events API v2: a trigger per alert, resolved on recovery,
    de-duplicated per node (``dedup_key``).

    Example:
        ```python
        from blocks.alerting import PagerDutyEvents
        channel = PagerDutyEvents.load("BLOCK_NAME").channel()
        ```
    """

    _block_type_name = "SIPREC Backup PagerDuty Events"
    _block_type_slug = "siprec-backup-pagerduty-events"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "A PagerDuty service's Events API v2 integration (routing key)."

    routing_key: SecretStr = Field(
        title="Routing key",
        description="The Events API v2 integration key of the service (secret).",
        min_length=1,
    )
    url: str = Field(
        default=PAGERDUTY_EVENTS_URL,
        title="Events API URL",
        description="The enqueue endpoint (EU accounts: " + PAGERDUTY_EU_EVENTS_URL + ").",
    )
    source: str = Field(
        default="siprec-backup",
        title="Source",
        description="The event's source field: where the problem is.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    def channel(self, name: str = "pagerduty") -> PagerDutyChannel:
        """The engine channel."""
        return PagerDutyChannel(
            routing_key=self.routing_key.get_secret_value(),
            url=self.url,
            source=self.source,
            name=name,
        )


class SmtpEmail(Block):
    """Alerts by mail through an SMTP server, with optional STARTTLS and login.

    Example:
        ```python
        from blocks.alerting import SmtpEmail
        channel = SmtpEmail.load("BLOCK_NAME").channel()
        ```
    """

    _block_type_name = "SIPREC Backup SMTP Email"
    _block_type_slug = "siprec-backup-smtp-email"
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _description = "An SMTP relay and the recipients of alert mails."

    host: str = Field(title="Host", description="SMTP server host name or address.", min_length=1)
    port: int = Field(default=587, title="Port", description="SMTP port.", ge=1, le=65535)
    sender: str = Field(title="From", description="Sender address.", min_length=3)
    recipients: list[str] = Field(title="To", description="Recipient addresses.", min_length=1)
    username: str | None = Field(
        default=None, title="User", description="SMTP login (empty: no login)."
    )
    password: SecretStr | None = Field(
        default=None, title="Password", description="SMTP password (secret)."
    )
    starttls: bool = Field(
        default=True,
        title="STARTTLS",
        description="Upgrade the connection with STARTTLS before login (certificate checked).",
    )

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        bad = [address for address in value if "@" not in address]
        if bad:
            raise ValueError(f"not mail addresses: {', '.join(bad)}")
        return value

    def channel(self, name: str = "email") -> EmailChannel:
        """The engine channel."""
        return EmailChannel(
            host=self.host,
            port=self.port,
            sender=self.sender,
            recipients=tuple(self.recipients),
            username=self.username or None,
            password=self.password.get_secret_value() if self.password else None,
            starttls=self.starttls,
            name=name,
        )


def _slack(block: SlackWebhook, name: str) -> SlackChannel:
    return SlackChannel(webhook_url=block.url.get_secret_value(), name=name)


def _pagerduty(block: PagerDutyWebHook, name: str) -> PagerDutyChannel:
    url = PAGERDUTY_EU_EVENTS_URL if block.region_name == "eu" else PAGERDUTY_EVENTS_URL
    return PagerDutyChannel(
        routing_key=block.integration_key.get_secret_value(),
        url=url,
        source=block.source or "siprec-backup",
        name=name,
    )


#: The block types a channel name may refer to.
CHANNEL_BLOCKS: tuple[type[Block], ...] = (
    AlertWebhook,
    PagerDutyEvents,
    SmtpEmail,
    SlackWebhook,
    PagerDutyWebHook,
)


def _to_channel(block: Block, name: str) -> Channel:
    if isinstance(block, AlertWebhook | PagerDutyEvents | SmtpEmail):
        return block.channel(name)
    if isinstance(block, SlackWebhook):
        return _slack(block, name)
    if isinstance(block, PagerDutyWebHook):
        return _pagerduty(block, name)
    raise ConfigurationError(
        f"alert channel {name!r} is a {block.get_block_type_name()} block; use one of "
        + ", ".join(cls.get_block_type_slug() for cls in CHANNEL_BLOCKS)
    )


def _find(name: str) -> Block:
    """Block `name` ("type-slug/name", or a bare name that exactly one channel type has)."""
    if "/" in name:
        slug = name.split("/", 1)[0]
        kinds = [cls for cls in CHANNEL_BLOCKS if cls.get_block_type_slug() == slug]
        if not kinds:
            raise ConfigurationError(
                f"alert channel {name!r}: {slug!r} is not a channel block type; use one of "
                + ", ".join(cls.get_block_type_slug() or "" for cls in CHANNEL_BLOCKS)
            )
        return load_block(kinds[0], name.split("/", 1)[1])
    found = []
    for cls in CHANNEL_BLOCKS:
        try:
            found.append(load_block(cls, name))
        except ConfigurationError:
            continue
    if not found:
        raise ConfigurationError(f"no alert channel block named {name!r} on the Prefect server")
    if len(found) > 1:
        kinds_found = ", ".join(f"{b.get_block_type_slug()}/{name}" for b in found)
        raise ConfigurationError(f"alert channel {name!r} is ambiguous: name one of {kinds_found}")
    return found[0]


def load_channels(names: list[str]) -> list[Channel]:
    """The engine channels of the named blocks: ``"name"`` (unique among the channel block
    types) or ``"type-slug/name"``, e.g. ``"slack-webhook/ops"``."""
    if len(set(names)) != len(names):
        raise ConfigurationError("an alert channel is listed twice")
    return [_to_channel(_find(name), name) for name in names]
