"""The normalised replication health record, its thresholds and the status classification.

Pure: no I/O. Each server kind (postgres.py, mysql.py, redis.py) turns what the server says into
an :class:`Observation` (observed role, lag where known, facts, what is broken); :func:`classify`
turns an observation, the node's configured role and the cluster's :class:`Thresholds` into one
:class:`NodeHealth`. Order of the verdicts: unreachable, topology error, broken facts, lag beyond
the broken thresholds, lag beyond the lagging thresholds, healthy. Unknown lag stays ``None``:
it is never counted as 0.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from siprec_backup.errors import ConfigurationError

Kind = Literal["postgres", "mysql", "redis"]
Role = Literal["primary", "replica"]
Status = Literal["healthy", "lagging", "broken", "unreachable"]

KINDS: tuple[str, ...] = ("postgres", "mysql", "redis")
ROLES: tuple[str, ...] = ("primary", "replica")
STATUSES: tuple[str, ...] = ("healthy", "lagging", "broken", "unreachable")


@dataclass(frozen=True)
class Thresholds:
    """Per-cluster limits. A replica is ``lagging`` beyond ``max_lag_*`` and ``broken`` beyond
    ``broken_lag_*`` (None: no such limit). A primary with fewer than ``min_replicas`` attached
    replicas is broken; one whose absent replicas make it retain more than
    ``max_retained_bytes`` (inactive PostgreSQL slots) is lagging."""

    max_lag_bytes: int | None = 16 << 20
    max_lag_seconds: float | None = 30.0
    broken_lag_bytes: int | None = None
    broken_lag_seconds: float | None = None
    min_replicas: int = 0
    max_retained_bytes: int | None = 1 << 30

    def __post_init__(self) -> None:
        for name in (
            "max_lag_bytes",
            "max_lag_seconds",
            "broken_lag_bytes",
            "broken_lag_seconds",
            "max_retained_bytes",
        ):
            value = getattr(self, name)
            if value is not None and (not _finite(value) or value < 0):
                raise ConfigurationError(f"threshold {name} must be >= 0, got {value!r}")
        if self.min_replicas < 0:
            raise ConfigurationError(
                f"threshold min_replicas must be >= 0, got {self.min_replicas}"
            )
        for low, high in (
            ("max_lag_bytes", "broken_lag_bytes"),
            ("max_lag_seconds", "broken_lag_seconds"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and hi < lo:
                raise ConfigurationError(f"threshold {high} ({hi}) is below {low} ({lo})")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Observation:
    """What one reachable node says about its replication, before any threshold is applied.

    ``broken`` lists facts that make the node broken whatever the thresholds (a stopped thread,
    a link down, replay paused); ``warnings`` facts that make it lagging. ``attached_replicas``
    (primaries) counts the replicas connected and streaming; ``retained_bytes`` (primaries) is
    the most data kept for a replica that is not attached."""

    observed_role: Role
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    broken: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    attached_replicas: int | None = None
    retained_bytes: int | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeHealth:
    """One node's replication health at ``checked_at`` (JSON-ready through :meth:`to_dict`)."""

    cluster: str
    node: str
    kind: Kind
    expected_role: Role
    observed_role: Role | None
    reachable: bool
    status: Status
    reason: str
    lag_bytes: int | None
    lag_seconds: float | None
    facts: Mapping[str, Any]
    checked_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (the time in ISO 8601 UTC)."""
        return {
            "cluster": self.cluster,
            "node": self.node,
            "kind": self.kind,
            "expected_role": self.expected_role,
            "observed_role": self.observed_role,
            "reachable": self.reachable,
            "status": self.status,
            "reason": self.reason,
            "lag_bytes": self.lag_bytes,
            "lag_seconds": self.lag_seconds,
            "facts": json_safe(self.facts),
            "checked_at": self.checked_at.isoformat(),
        }

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"


def json_safe(value: Any) -> Any:
    """``value`` with every nested item turned into a JSON type (times as ISO text, intervals
    as seconds, decimals as int or float, bytes as text)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


def now() -> dt.datetime:
    """The current time in UTC."""
    return dt.datetime.now(dt.UTC)


def _check_names(kind: str, expected_role: str) -> None:
    if kind not in KINDS:
        raise ConfigurationError(f"unknown node kind {kind!r}: use one of {', '.join(KINDS)}")
    if expected_role not in ROLES:
        raise ConfigurationError(f"unknown role {expected_role!r}: use 'primary' or 'replica'")


def unreachable(
    *,
    cluster: str,
    node: str,
    kind: Kind,
    expected_role: Role,
    reason: str,
    checked_at: dt.datetime | None = None,
    facts: Mapping[str, Any] | None = None,
) -> NodeHealth:
    """The record of a node that could not be checked (refused, timed out, auth failed)."""
    _check_names(kind, expected_role)
    return NodeHealth(
        cluster=cluster,
        node=node,
        kind=kind,
        expected_role=expected_role,
        observed_role=None,
        reachable=False,
        status="unreachable",
        reason=one_line(reason),
        lag_bytes=None,
        lag_seconds=None,
        facts=json_safe(dict(facts or {})),
        checked_at=checked_at or now(),
    )


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _fmt_bytes(n: float) -> str:
    return f"{int(n)} B"


def verdict(
    observation: Observation, expected_role: Role, thresholds: Thresholds
) -> tuple[Status, str]:
    """The status and one-line reason of a reachable node (the classification rules)."""
    obs = observation
    if obs.observed_role != expected_role:
        other = "a replica" if obs.observed_role == "replica" else "a primary"
        return "broken", f"topology: configured {expected_role} is {other}"
    if obs.broken:
        return "broken", "; ".join(obs.broken)
    if expected_role == "primary":
        attached = obs.attached_replicas
        if thresholds.min_replicas and (attached is None or attached < thresholds.min_replicas):
            seen = "unknown" if attached is None else str(attached)
            return "broken", (
                f"only {seen} replica(s) attached, at least {thresholds.min_replicas} expected"
            )
    lag_b, lag_s = obs.lag_bytes, obs.lag_seconds
    t = thresholds
    if lag_b is not None and t.broken_lag_bytes is not None and lag_b > t.broken_lag_bytes:
        return "broken", f"lag {_fmt_bytes(lag_b)} beyond the broken limit {t.broken_lag_bytes} B"
    if lag_s is not None and t.broken_lag_seconds is not None and lag_s > t.broken_lag_seconds:
        return "broken", f"lag {lag_s:.1f} s beyond the broken limit {t.broken_lag_seconds} s"
    lagging: list[str] = []
    if lag_b is not None and t.max_lag_bytes is not None and lag_b > t.max_lag_bytes:
        lagging.append(f"lag {_fmt_bytes(lag_b)} beyond {t.max_lag_bytes} B")
    if lag_s is not None and t.max_lag_seconds is not None and lag_s > t.max_lag_seconds:
        lagging.append(f"lag {lag_s:.1f} s beyond {t.max_lag_seconds} s")
    retained = obs.retained_bytes
    if (
        retained is not None
        and t.max_retained_bytes is not None
        and retained > t.max_retained_bytes
    ):
        lagging.append(
            f"{retained} B retained for absent replicas, beyond {t.max_retained_bytes} B"
        )
    lagging.extend(obs.warnings)
    if lagging:
        return "lagging", "; ".join(lagging)
    if expected_role == "replica":
        known = []
        if lag_b is not None:
            known.append(f"{lag_b} B")
        if lag_s is not None:
            known.append(f"{lag_s:.1f} s")
        return "healthy", "replicating, lag " + (" / ".join(known) if known else "unknown")
    count = "" if obs.attached_replicas is None else f", {obs.attached_replicas} replica(s)"
    return "healthy", f"primary{count}"


def classify(
    observation: Observation,
    *,
    cluster: str,
    node: str,
    kind: Kind,
    expected_role: Role,
    thresholds: Thresholds,
    checked_at: dt.datetime | None = None,
) -> NodeHealth:
    """The health record of a reachable node (see :func:`verdict` for the rules)."""
    _check_names(kind, expected_role)
    status, reason = verdict(observation, expected_role, thresholds)
    return NodeHealth(
        cluster=cluster,
        node=node,
        kind=kind,
        expected_role=expected_role,
        observed_role=observation.observed_role,
        reachable=True,
        status=status,
        reason=one_line(reason),
        lag_bytes=observation.lag_bytes,
        lag_seconds=observation.lag_seconds,
        facts=json_safe(dict(observation.facts)),
        checked_at=checked_at or now(),
    )
