"""The one retry loop of the cloud levers: throttled calls are retried with bounded exponential
backoff (or the provider's ``Retry-After`` when it gives one); every other failure is raised at
once, already classified."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from siprec_backup.errors import THROTTLING, CloudProviderError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of throttled calls: ``attempts`` in all, waiting ``base_delay * 2**n`` seconds
    (at most ``max_delay``) between them."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, retry: int, suggested: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based); the provider's
        ``suggested`` wait (Retry-After) when given, still capped at ``max_delay``."""
        wanted = suggested if suggested is not None else self.base_delay * 2**retry
        return float(max(0.0, min(self.max_delay, wanted)))


class ThrottledError(Exception):
    """Raised by an attempt to pass the provider's suggested wait along with the error."""

    def __init__(self, error: CloudProviderError, retry_after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def with_retries(
    attempt: Callable[[], T],
    classify: Callable[[BaseException], CloudProviderError],
    *,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``attempt()``, retried while it fails with throttling, at most ``policy.attempts`` times;
    any failure is raised as ``classify(exc)`` (a throttling error that outlasts the attempts says
    so in its message)."""
    policy = policy or RetryPolicy()
    tries = 0
    while True:
        try:
            return attempt()
        except Exception as exc:
            retry_after = exc.retry_after if isinstance(exc, ThrottledError) else None
            error = exc.error if isinstance(exc, ThrottledError) else classify(exc)
            tries += 1
            if error.code != THROTTLING:
                raise error from None
            if tries >= policy.attempts:
                raise error.with_detail(f"(still throttled after {tries} attempts)") from None
            sleep(policy.delay(tries - 1, retry_after))
