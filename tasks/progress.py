"""A throttled Prefect progress artifact driven by byte counts."""

from __future__ import annotations

import time
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact


def artifact_key(*parts: str) -> str:
    """An artifact key from names: Prefect allows lower-case letters, digits and dashes only."""
    return "-".join(parts).lower().replace("_", "-").replace(".", "-")


class ProgressArtifact:
    """Moves a progress artifact as bytes flow, at most every `interval` seconds.

    The total is an estimate (for PostgreSQL, the database size, larger than its dump), so the bar
    is capped at 99 % until :meth:`done`.
    """

    def __init__(self, key: str, total: int | None, description: str, interval: float = 2.0):
        self._total = total if total and total > 0 else None
        self._interval = interval
        self._last = 0.0
        self._description = description
        created = create_progress_artifact(0.0, key=key, description=description)
        assert isinstance(created, UUID)
        self._id = created

    def __call__(self, done_bytes: int) -> None:
        now = time.monotonic()
        if self._total is None or now - self._last < self._interval:
            return
        self._last = now
        percent = min(99.0, 100.0 * done_bytes / self._total)
        update_progress_artifact(self._id, percent, description=self._description)

    def done(self) -> None:
        update_progress_artifact(self._id, 100.0, description=self._description)
