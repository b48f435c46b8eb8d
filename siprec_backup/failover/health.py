"""Health checks of a set of servers, as a blue-green cutover runs them before and after it moves
traffic: an HTTP(S) GET that must answer the expected status (and, optionally, contain a text),
or a TCP connect. Every check is bounded by a timeout and the checks of one round run
concurrently, so a round takes as long as its slowest check, never their sum.

No Prefect here. Credentials in a check URL (``https://user:secret@host/health``) are never
shown: results name the URL without them.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

import httpx

from siprec_backup.errors import ConfigurationError, FailoverError

SCHEMES = ("http", "https", "tcp")
DEFAULT_TIMEOUT = 5.0
#: Most checks run at once in one round.
MAX_WORKERS = 16


class HealthCheckFailedError(FailoverError):
    """The servers a cutover moves traffic to failed their health checks."""


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"health check {_safe(url)!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(
            f"health check {_safe(url)!r}: the URL must start with http://, https:// or tcp://"
        )
    if not parts.hostname:
        raise ConfigurationError(f"health check {_safe(url)!r}: no host")
    if parts.scheme == "tcp" and port is None:
        raise ConfigurationError(f"health check {_safe(url)!r}: tcp:// needs host:port")
    return parts


def _safe(url: str) -> str:
    """``url`` without a password (user info is replaced by ``***``)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url.strip()
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"***@{host}").geturl()


@dataclass(frozen=True)
class HealthCheck:
    """One check: ``http(s)://...`` (GET; healthy = ``status`` and, if set, ``expect`` in the
    body; redirects are not followed) or ``tcp://host:port`` (healthy = a connection opens).

    ``timeout`` bounds the whole check (None: the round's timeout).
    """

    url: str = field(repr=False)
    status: int = 200
    expect: str | None = None
    timeout: float | None = None
    verify_tls: bool = True

    def __post_init__(self) -> None:
        _split(self.url)
        if not 100 <= self.status <= 599:
            raise ConfigurationError(
                f"health check {self.name}: status {self.status} is no HTTP status"
            )
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError(f"health check {self.name}: the timeout must be positive")

    @property
    def name(self) -> str:
        """The URL as results and logs show it (no password)."""
        return _safe(self.url)

    def __repr__(self) -> str:
        return f"HealthCheck({self.name!r}, status={self.status}, expect={self.expect!r})"

    def run(self, timeout: float = DEFAULT_TIMEOUT) -> CheckResult:
        """Run the check once; never raises for an unhealthy or unreachable server."""
        limit = self.timeout if self.timeout is not None else timeout
        t0 = time.monotonic()
        parts = _split(self.url)
        try:
            if parts.scheme == "tcp":
                ok, detail = _tcp(parts, limit)
            else:
                ok, detail = self._http(limit)
        except Exception as exc:  # a check reports, it does not fail the caller
            ok, detail = False, _describe_error(exc, limit)
        if parts.password:
            detail = detail.replace(parts.password, "***")
        return CheckResult(self.name, ok, detail, round(time.monotonic() - t0, 3))

    def _http(self, limit: float) -> tuple[bool, str]:
        with httpx.Client(timeout=limit, verify=self.verify_tls, follow_redirects=False) as client:
            response = client.get(self.url)
        if response.status_code != self.status:
            return False, f"HTTP {response.status_code} (expected {self.status})"
        if self.expect is not None and self.expect not in response.text:
            return False, f"HTTP {response.status_code} but the body lacks {self.expect!r}"
        return True, f"HTTP {response.status_code}"


def _tcp(parts: SplitResult, limit: float) -> tuple[bool, str]:
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=limit):
        return True, "connected"


def _describe_error(exc: Exception, limit: float) -> str:
    if isinstance(exc, httpx.TimeoutException | socket.timeout | TimeoutError):
        return f"no answer within {limit:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, httpx.ConnectError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(exc).lower():
            return "connection refused"
        return f"cannot connect: {_first_line(exc)}"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``url`` without its password, ``detail`` why."""

    url: str
    ok: bool
    detail: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {"url": self.url, "ok": self.ok, "detail": self.detail, "seconds": self.seconds}

    def describe(self) -> str:
        return f"{self.url}: {'ok' if self.ok else 'FAILED'} ({self.detail}, {self.seconds} s)"


def run_checks(checks: list[HealthCheck], timeout: float = DEFAULT_TIMEOUT) -> list[CheckResult]:
    """Run every check at once, each bounded by its timeout (``timeout`` unless it has its
    own); the results in the order of ``checks``."""
    if timeout <= 0:
        raise ConfigurationError("the health check timeout must be positive")
    if not checks:
        return []
    pool = ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(checks)))
    try:
        futures = [pool.submit(check.run, timeout) for check in checks]
        results = []
        for check, future in zip(checks, futures, strict=True):
            limit = check.timeout if check.timeout is not None else timeout
            try:
                # A check ends by its own timeout; the margin covers a slow DNS lookup.
                results.append(future.result(timeout=limit + 2.0))
            except FutureTimeout:
                results.append(
                    CheckResult(check.name, False, f"no answer within {limit:g} s", limit)
                )
        return results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def all_ok(results: list[CheckResult]) -> bool:
    """Whether a round passed (a round of no checks does not)."""
    return bool(results) and all(r.ok for r in results)


def failures(results: list[CheckResult]) -> list[str]:
    """One line per failed check."""
    return [f"{r.url}: {r.detail}" for r in results if not r.ok]
