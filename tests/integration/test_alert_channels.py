"""Alert channels against real local receivers: an HTTP server and an aiosmtpd SMTP server.

No lab servers needed: the receivers are started here on free loopback ports.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from siprec_backup.alerting import (
    AlertDeliveryError,
    AlertTracker,
    EmailChannel,
    Observation,
    PagerDutyChannel,
    RetryPolicy,
    SlackChannel,
    WebhookChannel,
    deliver,
    verify_signature,
)
from siprec_backup.freshness import FreshnessResult
from tests.conftest import Receiver

SECRET = "whsec-5f2b9c-do-not-leak"
ROUTING_KEY = "R0UT1NGKEYdonotleak0000000000000"
SLACK_TOKEN = "T000/B000/XXXXslacktokendonotleak"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, timeout=5)
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _broken_alert() -> dict[str, Any]:
    tracker = AlertTracker()
    [alert] = tracker.observe(Observation("c1/pg-2", "broken", "WAL receiver stopped", T0))
    return alert.to_alert()


def _recovery_alert() -> dict[str, Any]:
    tracker = AlertTracker()
    tracker.observe(Observation("c1/pg-2", "broken", "WAL receiver stopped", T0))
    [alert] = tracker.observe(Observation("c1/pg-2", "healthy", "", T0 + timedelta(minutes=5)))
    return alert.to_alert()


def _assert_no_secret(text: str) -> None:
    for secret in (SECRET, ROUTING_KEY, SLACK_TOKEN, "smtp-pass-do-not-leak", "/hook/"):
        assert secret not in text


def test_webhook_is_signed_over_timestamp_and_raw_body(receiver: Receiver) -> None:
    channel = WebhookChannel(receiver.url("/hook/abc"), SECRET, retry=FAST)
    channel.send(_broken_alert())
    [request] = receiver.requests
    timestamp = request.headers["X-Siprec-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 30
    expected = hmac.new(
        SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    assert request.headers["X-Siprec-Signature"] == f"sha256={expected}"
    assert verify_signature(SECRET, timestamp, request.body, request.headers["X-Siprec-Signature"])
    # Tampered body, wrong secret, or a replay ten minutes later: rejected.
    signature = request.headers["X-Siprec-Signature"]
    assert not verify_signature(SECRET, timestamp, request.body + b" ", signature)
    assert not verify_signature("other", timestamp, request.body, signature)
    assert not verify_signature(
        SECRET, timestamp, request.body, signature, now=int(timestamp) + 600
    )
    payload = json.loads(request.body)
    assert payload["event"] == "siprec.node.broken"
    assert payload["severity"] == "critical"
    assert payload["fields"]["reason"] == "WAL receiver stopped"
    assert request.headers["Content-Type"] == "application/json"
    _assert_no_secret(repr(channel))


def test_freshness_alert_goes_through_the_webhook(receiver: Receiver) -> None:
    stale = FreshnessResult(
        "c1",
        "pg",
        "stale",
        timedelta(hours=26),
        "20261124T020000Z-000001",
        T0 - timedelta(hours=30),
        timedelta(hours=30),
    )
    WebhookChannel(receiver.url("/hook/abc"), SECRET, retry=FAST).send(stale)
    payload = json.loads(receiver.requests[0].body)
    assert payload["event"] == "siprec.backup.stale"
    assert payload["resource"] == "siprec.source.c1.pg"
    assert payload["resolved"] is False
    assert payload["summary"] == stale.summary()


def test_slack_payload_shape(receiver: Receiver) -> None:
    channel = SlackChannel(receiver.url(f"/services/{SLACK_TOKEN}"), retry=FAST)
    channel.send(_broken_alert())
    [request] = receiver.requests
    assert request.path == f"/services/{SLACK_TOKEN}"
    payload = json.loads(request.body)
    assert set(payload) == {"text", "blocks"}
    assert payload["text"] == "c1/pg-2 is broken: WAL receiver stopped"
    assert payload["blocks"][0]["type"] == "section"
    assert payload["blocks"][0]["text"]["type"] == "mrkdwn"
    assert "c1/pg-2 is broken" in payload["blocks"][0]["text"]["text"]
    assert all(block["type"] in {"section", "context"} for block in payload["blocks"])
    _assert_no_secret(repr(channel))


def test_pagerduty_trigger_then_resolve_with_one_dedup_key(receiver: Receiver) -> None:
    channel = PagerDutyChannel(ROUTING_KEY, url=receiver.url("/v2/enqueue"), retry=FAST)
    channel.send(_broken_alert())
    channel.send(_recovery_alert())
    trigger, resolve = (json.loads(r.body) for r in receiver.requests)
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "siprec.node.c1.pg-2"
    body = trigger["payload"]
    assert body["summary"] == "c1/pg-2 is broken: WAL receiver stopped"
    assert body["source"] == "siprec-backup"
    assert body["severity"] == "critical"
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert body["custom_details"]["status"] == "broken"
    assert resolve["event_action"] == "resolve"
    assert resolve["dedup_key"] == trigger["dedup_key"]
    _assert_no_secret(repr(channel))


def test_server_error_is_retried_then_succeeds(receiver: Receiver) -> None:
    receiver.statuses = [503, 500]
    WebhookChannel(receiver.url("/hook/abc"), SECRET, retry=FAST).send(_broken_alert())
    assert len(receiver.requests) == 3
    for request in receiver.requests:  # every attempt is signed
        assert verify_signature(
            SECRET,
            request.headers["X-Siprec-Timestamp"],
            request.body,
            request.headers["X-Siprec-Signature"],
        )


def test_persistent_500_gives_a_clear_error_without_secrets(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [500] * 5
    channel = PagerDutyChannel(ROUTING_KEY, url=receiver.url("/v2/enqueue"), retry=FAST)
    with caplog.at_level(logging.DEBUG), pytest.raises(AlertDeliveryError) as failed:
        channel.send(_broken_alert())
    message = str(failed.value)
    assert message == (
        f"alert channel 'pagerduty': delivery to http://127.0.0.1:{receiver.port} failed: "
        "HTTP 500 (after 3 attempts)"
    )
    assert len(receiver.requests) == 3
    _assert_no_secret(message + caplog.text)
    assert "retrying" in caplog.text


def test_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [400]
    channel = SlackChannel(receiver.url(f"/services/{SLACK_TOKEN}"), retry=FAST)
    with pytest.raises(AlertDeliveryError, match=r"'slack'.*HTTP 400 \(after 1 attempt\)") as e:
        channel.send(_broken_alert())
    assert len(receiver.requests) == 1
    _assert_no_secret(str(e.value))


def test_receiver_down_gives_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    port = _closed_port()
    channel = SlackChannel(f"http://127.0.0.1:{port}/services/{SLACK_TOKEN}", retry=FAST)
    with caplog.at_level(logging.DEBUG), pytest.raises(AlertDeliveryError) as failed:
        channel.send(_broken_alert())
    assert str(failed.value) == (
        f"alert channel 'slack': delivery to http://127.0.0.1:{port} failed: "
        "connection refused (after 3 attempts)"
    )
    _assert_no_secret(str(failed.value) + caplog.text)


def test_deliver_continues_past_a_failing_channel(receiver: Receiver) -> None:
    down = WebhookChannel(f"http://127.0.0.1:{_closed_port()}/hook/x", SECRET, retry=FAST)
    up = WebhookChannel(receiver.url("/hook/abc"), SECRET, name="ops-webhook", retry=FAST)
    with pytest.raises(AlertDeliveryError, match=r"^2 alert deliveries failed: .*'webhook'"):
        deliver([_broken_alert(), _recovery_alert()], [down, up])
    assert len(receiver.requests) == 2  # the working channel got both alerts
    assert deliver([_broken_alert()], [up]) == 1
    assert len(receiver.requests) == 3


# -- SMTP ------------------------------------------------------------------------------------


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: Any, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        self.messages.append(
            (str(envelope.mail_from), list(envelope.rcpt_tos), message_from_bytes(content))
        )
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, _Inbox]]:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_closed_port())
    controller.start()
    yield controller, inbox
    controller.stop()


def test_email_arrives_with_subject_and_body(smtp_server: tuple[Controller, _Inbox]) -> None:
    controller, inbox = smtp_server
    channel = EmailChannel(
        "127.0.0.1",
        controller.port,
        "siprec@example.org",
        ["oncall@example.org", "dba@example.org"],
        retry=FAST,
    )
    channel.send(_broken_alert())
    channel.send(_recovery_alert())
    (sender, rcpts, broken), (_, _, recovered) = inbox.messages
    assert sender == "siprec@example.org"
    assert rcpts == ["oncall@example.org", "dba@example.org"]
    assert broken["Subject"] == "[siprec CRITICAL] c1/pg-2 is broken: WAL receiver stopped"
    body = broken.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert b"resource: siprec.node.c1.pg-2" in body
    assert b"reason: WAL receiver stopped" in body
    assert recovered["Subject"] == "[siprec RESOLVED] c1/pg-2 recovered: healthy again (was broken)"


def test_email_server_down_and_password_hidden() -> None:
    port = _closed_port()
    channel = EmailChannel(
        "127.0.0.1",
        port,
        "siprec@example.org",
        ["oncall@example.org"],
        username="siprec",
        password="smtp-pass-do-not-leak",
        retry=FAST,
    )
    _assert_no_secret(repr(channel))
    with pytest.raises(AlertDeliveryError) as failed:
        channel.send(_broken_alert())
    assert str(failed.value) == (
        f"alert channel 'email': mail via 127.0.0.1:{port} failed: connection refused "
        "(after 3 attempts)"
    )


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_email_with_starttls_and_login(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    def authenticator(
        server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"siprec",
            b"smtp-pass-do-not-leak",
        )
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

    inbox = _Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=_closed_port(),
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    try:
        client_tls = ssl.create_default_context(cafile=str(cert))
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": controller.port,
            "sender": "siprec@example.org",
            "recipients": ["oncall@example.org"],
            "username": "siprec",
            "starttls": True,
            "retry": FAST,
            "ssl_context": client_tls,
        }
        EmailChannel(password="smtp-pass-do-not-leak", **settings).send(_broken_alert())
        [(_, _, message)] = inbox.messages
        assert message["Subject"].startswith("[siprec CRITICAL] c1/pg-2 is broken")
        wrong = EmailChannel(password="wrong-password", **settings)
        with pytest.raises(AlertDeliveryError) as failed:
            wrong.send(_broken_alert())
        assert str(failed.value) == (
            f"alert channel 'email': mail via 127.0.0.1:{controller.port} failed: "
            "authentication failed (SMTP 535) (after 1 attempt)"
        )
        assert len(inbox.messages) == 1
    finally:
        controller.stop()
