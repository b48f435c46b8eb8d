"""What a failover needs from each database, behind one interface.

One :class:`DatabaseOps` per kind (``postgres.py``, ``mysql.py``, ``redis.py`` in this package)
reads a node's replication state and performs the steps a failover or switchover takes on it:
fence, wait until applied, promote, repoint, demote. Every operation is idempotent (running it
twice leaves the node as running it once did) and bounded by ``timeout`` seconds, and raises
:class:`~siprec_backup.errors.FailoverError` (or a subclass) naming the node and the problem.

Positions are compared per kind: PostgreSQL by LSN (bytes), Redis by replication offset
(bytes), MySQL/MariaDB by GTID sequence numbers per replication domain (transactions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Kind = Literal["postgres", "mysql", "redis"]
Role = Literal["primary", "replica"]

#: The unit a data-loss figure is counted in, per kind.
LOSS_UNITS: dict[str, str] = {"postgres": "bytes", "mysql": "transactions", "redis": "bytes"}


@dataclass(frozen=True)
class Endpoint:
    """Where replicas reach a node (the host and port they replicate from)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Position:
    """A replication position as the server says it (``text``) and in comparable parts
    (``parts``): ``{"lsn": n}`` for PostgreSQL, ``{"offset": n}`` for Redis, ``{domain_id: seq}``
    (keys as text) for MySQL/MariaDB GTIDs."""

    kind: Kind
    text: str
    parts: Mapping[str, int] = field(default_factory=dict)

    def behind(self, other: Position) -> int:
        """How much ``other`` has that this position lacks, in :data:`LOSS_UNITS` of the kind
        (0 when this position is at or past ``other``)."""
        if other.kind != self.kind:
            raise ValueError(f"cannot compare a {self.kind} position with a {other.kind} one")
        return sum(max(0, n - self.parts.get(key, 0)) for key, n in other.parts.items())

    def at_least(self, other: Position) -> bool:
        """Whether this position has everything ``other`` has."""
        return self.behind(other) == 0

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "parts": dict(self.parts)}


@dataclass(frozen=True)
class NodeState:
    """What one reachable node says about itself.

    ``received``: what has arrived (replicas) or been written (primary); ``applied``: what is
    applied (on a primary the same as ``received``). ``upstream``: the primary a replica is
    configured to follow; ``streaming``: a replica is connected to it and receiving.
    ``writable``: the node accepts writes now (a primary that is not fenced)."""

    role: Role
    received: Position
    applied: Position
    upstream: Endpoint | None = None
    streaming: bool = False
    writable: bool = False
    facts: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "received": self.received.to_dict(),
            "applied": self.applied.to_dict(),
            "upstream": str(self.upstream) if self.upstream else None,
            "streaming": self.streaming,
            "writable": self.writable,
            "facts": dict(self.facts),
        }


class DatabaseOps(Protocol):
    """The failover steps for one kind of database. ``target`` is the kind's connection target
    (PostgresTarget with a superuser, MySQLTarget with SUPER / REPLICATION ADMIN rights,
    RedisTarget); passwords never appear in an error or a log line."""

    kind: Kind

    def inspect(self, target: Any, *, timeout: float) -> NodeState:
        """The node's role, positions, upstream and writability."""
        ...

    def fence(self, target: Any, *, timeout: float) -> None:
        """Stop the node accepting writes, reversibly (and across a restart where the server
        allows it). A replica or an already fenced node is left as it is."""
        ...

    def unfence(self, target: Any, *, timeout: float) -> None:
        """Undo :meth:`fence` (the node accepts writes again)."""
        ...

    def wait_applied(
        self, target: Any, *, timeout: float, until: Position | None = None
    ) -> NodeState:
        """Wait until the replica has applied everything it received (and at least ``until``
        when given); FailoverError when ``timeout`` passes first."""
        ...

    def promote(self, target: Any, *, timeout: float) -> NodeState:
        """Make the replica a writable primary and return its state once it accepts writes."""
        ...

    def repoint(self, target: Any, primary: Endpoint, *, timeout: float) -> None:
        """Make the replica follow ``primary`` (keeping its replication credentials)."""
        ...

    def wait_streaming(self, target: Any, primary: Endpoint, *, timeout: float) -> NodeState:
        """Wait until the replica is connected to ``primary`` and receiving."""
        ...
