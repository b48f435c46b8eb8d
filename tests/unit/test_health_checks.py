"""Health checks of the blue-green cutover against a real local HTTP server (a thread) and real
TCP sockets: status, body text, timeouts, refused connections, concurrency, no password shown;
and the blue-green block that configures them (documentation standard, validation)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from blocks.blue_green import BlueGreenCutover
from siprec_backup.errors import ConfigurationError
from siprec_backup.failover.health import (
    CheckResult,
    HealthCheck,
    all_ok,
    failures,
    run_checks,
)

SECRET = "s3cr3t-pa55"


class _Handler(BaseHTTPRequestHandler):
    """/ok: 200 "green ok"; /fail: 500; /slow?s=N: 200 after N seconds; /moved: 302."""

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/slow":
            time.sleep(float(query.split("=", 1)[1]))
        if path in ("/ok", "/slow"):
            self._answer(200, b"green ok")
        elif path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(500, b"broken")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one(check: HealthCheck, timeout: float = 2.0) -> CheckResult:
    (result,) = run_checks([check], timeout)
    return result


def test_http_healthy_and_unhealthy(server: str) -> None:
    ok = one(HealthCheck(f"http://{server}/ok"))
    assert ok.ok and ok.detail == "HTTP 200" and ok.url == f"http://{server}/ok"
    assert 0 <= ok.seconds < 2
    bad = one(HealthCheck(f"http://{server}/fail"))
    assert not bad.ok and bad.detail == "HTTP 500 (expected 200)"


def test_expected_status_and_body(server: str) -> None:
    assert one(HealthCheck(f"http://{server}/fail", status=500)).ok
    assert one(HealthCheck(f"http://{server}/ok", expect="green")).ok
    blue = one(HealthCheck(f"http://{server}/ok", expect="blue"))
    assert not blue.ok and "lacks 'blue'" in blue.detail
    # Redirects are not followed: a login page is not a healthy server.
    assert one(HealthCheck(f"http://{server}/moved")).detail == "HTTP 302 (expected 200)"
    assert one(HealthCheck(f"http://{server}/moved", status=302)).ok


def test_timeout_bounds_a_hanging_server(server: str) -> None:
    t0 = time.monotonic()
    slow = one(HealthCheck(f"http://{server}/slow?s=3"), timeout=0.5)
    assert time.monotonic() - t0 < 2.5
    assert not slow.ok and slow.detail == "no answer within 0.5 s"
    # The check's own timeout wins over the round's.
    own = one(HealthCheck(f"http://{server}/slow?s=0.3", timeout=2), timeout=0.1)
    assert own.ok


def test_refused_connections() -> None:
    port = _closed_port()
    http = one(HealthCheck(f"http://127.0.0.1:{port}/health"))
    assert not http.ok and http.detail == "connection refused"
    tcp = one(HealthCheck(f"tcp://127.0.0.1:{port}"))
    assert not tcp.ok and tcp.detail == "connection refused"


def test_tcp_connect(server: str) -> None:
    result = one(HealthCheck(f"tcp://{server}"))
    assert result.ok and result.detail == "connected"


def test_checks_run_concurrently_in_order(server: str) -> None:
    checks = [HealthCheck(f"http://{server}/slow?s=0.6") for _ in range(5)]
    checks.append(HealthCheck(f"http://{server}/fail"))
    t0 = time.monotonic()
    results = run_checks(checks, timeout=5)
    took = time.monotonic() - t0
    assert took < 2.0, f"five 0.6 s checks took {took:.2f} s: not concurrent"
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert not all_ok(results)
    assert failures(results) == [f"http://{server}/fail: HTTP 500 (expected 200)"]
    assert all_ok(results[:5])
    assert not all_ok([])
    assert run_checks([], 1) == []


def test_password_never_shown(server: str) -> None:
    check = HealthCheck(f"http://probe:{SECRET}@{server}/fail")
    result = one(check)
    assert check.name == f"http://***@{server}/fail"
    for text in (repr(check), str(result), result.describe(), str(result.to_dict())):
        assert SECRET not in text
    port = _closed_port()
    refused = one(HealthCheck(f"http://probe:{SECRET}@127.0.0.1:{port}/"))
    assert SECRET not in refused.describe()
    with pytest.raises(ConfigurationError) as bad:
        HealthCheck(f"ftp://probe:{SECRET}@host/")
    assert SECRET not in str(bad.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/", "must start with http://, https:// or tcp://"),
        ("host:80", "must start with"),
        ("tcp://host", "tcp:// needs host:port"),
        ("http:///health", "no host"),
        ("http://host:99999/", "Port out of range"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        HealthCheck(url)


def test_bad_settings() -> None:
    with pytest.raises(ConfigurationError, match="no HTTP status"):
        HealthCheck("http://host/", status=42)
    with pytest.raises(ConfigurationError, match="timeout must be positive"):
        HealthCheck("http://host/", timeout=0)
    with pytest.raises(ConfigurationError, match="timeout must be positive"):
        run_checks([HealthCheck("http://host/")], timeout=0)


# -- the blue-green block ---------------------------------------------------------------------


CHECKS: dict[str, Any] = {
    "blue_checks": ["http://10.0.0.1/health"],
    "green_checks": ["tcp://10.0.0.2:80"],
}
LB: dict[str, Any] = {
    "load_balancer": "lb",
    "blue_servers": ["web/b1"],
    "green_servers": ["web/g1"],
}
DNS: dict[str, Any] = {
    "dns_zone": "zone",
    "dns_records": ["api"],
    "blue_addresses": ["10.0.0.1"],
    "green_addresses": ["10.0.0.2"],
}


def test_block_builds_servers_addresses_and_checks() -> None:
    block = BlueGreenCutover(name="api", **LB, **DNS, **CHECKS, expect_body="ok")
    assert [str(s) for s in block.servers("green")] == ["web/g1"]
    assert block.addresses("blue") == ["10.0.0.1"] and block.rtype() == "A"
    (check,) = block.checks("blue")
    assert (check.name, check.status, check.expect, check.timeout) == (
        "http://10.0.0.1/health",
        200,
        "ok",
        5.0,
    )
    six = BlueGreenCutover(
        name="api",
        **CHECKS,
        **{**DNS, "blue_addresses": ["2001:db8::1"], "green_addresses": ["2001:db8::2"]},
    )
    assert six.rtype("green") == "AAAA"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({**CHECKS}, "set a load_balancer (with its servers) or dns_records, or both"),
        ({**CHECKS, **LB, "blue_servers": ["web"]}, "'web' must be 'backend/server'"),
        ({**CHECKS, **LB, "green_servers": []}, "name both blue_servers and green_servers"),
        ({**CHECKS, "blue_servers": ["web/b1"]}, "need a load_balancer block"),
        ({**CHECKS, **LB, "green_servers": ["web/b1"]}, "servers in both colours: web/b1"),
        ({**CHECKS, **DNS, "dns_zone": None}, "dns_records need a dns_zone block"),
        ({**CHECKS, **DNS, "green_addresses": []}, "need both blue_addresses and green_addresses"),
        ({**CHECKS, **DNS, "green_addresses": ["db2"]}, "'db2' is not an IP address"),
        ({**CHECKS, **DNS, "green_addresses": ["2001:db8::2"]}, "the same IP version"),
        ({**CHECKS, **LB, "blue_addresses": ["10.0.0.1"]}, "need dns_records"),
        ({**LB, "green_checks": ["tcp://10.0.0.2:80"]}, "give health checks for both colours"),
        ({**LB, **CHECKS, "green_checks": ["ftp://x/"]}, "green_checks: health check"),
    ],
)
def test_block_validation_messages(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        BlueGreenCutover(name="api", **settings)
    assert message in str(error.value)
