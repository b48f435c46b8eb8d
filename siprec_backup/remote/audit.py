"""Audit records of what a failover changed on remote hosts.

Every mutating remote action (a command that is not marked read-only, an upload, a file
replaced) produces one :class:`AuditRecord`, delivered to a callback; the flow turns the
records into an artifact. Read-only probes (``systemctl status``, ``is-active``, ``sha256sum``)
are not audited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class AuditRecord:
    """Who ran what on which host, when (UTC), for how long, and how it ended.

    ``exit_status`` is None when the command never finished (timeout, lost connection).
    """

    actor: str
    host: str
    command: str
    exit_status: int | None
    started_at: datetime
    duration: float

    def to_dict(self) -> dict[str, str | int | float | None]:
        """A JSON-ready form (ISO 8601 start time) for artifacts and logs."""
        return {
            "actor": self.actor,
            "host": self.host,
            "command": self.command,
            "exit_status": self.exit_status,
            "started_at": self.started_at.isoformat(),
            "duration": round(self.duration, 3),
        }


#: Receives each audit record as soon as the action ends.
AuditSink = Callable[[AuditRecord], None]
