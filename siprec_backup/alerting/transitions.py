"""Alert on transitions only: de-duplicated, with reminders, recovery notices and flapping.

A monitoring flow observes every node every minute; paging every minute for the same broken node
would train people to ignore the pager. :class:`AlertTracker` turns a stream of
:class:`Observation` into the few :class:`Alert` worth sending:

* a **transition** when a node's status differs from the last one announced
  (healthy -> lagging -> broken, broken -> lagging ...); a node first seen not healthy counts;
* a **reminder** every ``reminder_interval`` while the announced status is not healthy;
* a **recovery** when the node is healthy again;
* **flapping**: each node keeps a ring buffer of its last ``history_size`` observations; more than
  ``flap_threshold`` status changes in it announce the node once as ``flapping`` and suppress the
  single transitions. Flapping ends (with hysteresis) when the changes drop to
  ``flap_threshold // 2`` or fewer: the current status is then announced as usual.

Memory is bounded: a history holds at most ``history_size`` entries, and nodes not observed for
``evict_after`` (or beyond ``max_nodes``, least recently observed first) are forgotten. The state
survives between flow runs as JSON (:meth:`AlertTracker.to_json` / :meth:`AlertTracker.from_json`).
This module is pure: no I/O, no clock (every observation carries its time).
"""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from siprec_backup.errors import ConfigurationError

HEALTHY = "healthy"
LAGGING = "lagging"
BROKEN = "broken"
UNREACHABLE = "unreachable"
#: Not an observed status: what a node is announced as while its status keeps changing.
FLAPPING = "flapping"

STATUSES = (HEALTHY, LAGGING, BROKEN, UNREACHABLE)

TRANSITION = "transition"
REMINDER = "reminder"
RECOVERY = "recovery"

SEVERITY = {
    HEALTHY: "info",
    LAGGING: "warning",
    BROKEN: "critical",
    UNREACHABLE: "critical",
    FLAPPING: "warning",
}

_STATE_FORMAT = "siprec-alert-tracker/1"


@dataclass(frozen=True)
class Observation:
    """One health check of one node, e.g. from the replication checks' NodeHealth."""

    key: str  # "cluster/node"
    status: str  # healthy | lagging | broken | unreachable
    reason: str
    at: datetime  # aware
    lag_bytes: int | None = None
    lag_seconds: float | None = None


@dataclass(frozen=True)
class Alert:
    """One notice worth sending: a transition, a reminder, a recovery or flapping."""

    key: str
    kind: str  # transition | reminder | recovery
    status: str  # the announced status (an observed status, or "flapping")
    previous: str | None  # the previously announced status; None for a node first seen
    reason: str
    at: datetime
    since: datetime  # when the announced status began
    lag_bytes: int | None = None
    lag_seconds: float | None = None

    @property
    def severity(self) -> str:
        return SEVERITY[self.status]

    @property
    def resource_id(self) -> str:
        """Stable id of the node across alerts (PagerDuty's dedup_key): ``siprec.node.<c>.<n>``."""
        return "siprec.node." + self.key.replace("/", ".")

    def summary(self) -> str:
        """One line for chat, pager and mail."""
        if self.kind == RECOVERY:
            return f"{self.key} recovered: healthy again (was {self.previous})"
        head = f"{self.key} is {self.status}"
        if self.kind == REMINDER:
            head += f" (reminder: since {self.since.isoformat(timespec='seconds')})"
        return f"{head}: {self.reason}" if self.reason else head

    def to_alert(self) -> dict[str, Any]:
        """The alert dict channels send, same shape as ``FreshnessResult.to_alert()``."""
        return {
            "event": f"siprec.node.{self.status}",
            "resource": self.resource_id,
            "severity": self.severity,
            "summary": self.summary(),
            "resolved": self.status == HEALTHY,
            "fields": {
                "node": self.key,
                "kind": self.kind,
                "status": self.status,
                "previous": self.previous,
                "reason": self.reason,
                "at": self.at.isoformat(),
                "since": self.since.isoformat(),
                "lag_bytes": self.lag_bytes,
                "lag_seconds": self.lag_seconds,
            },
        }


@dataclass
class _Node:
    """What the tracker remembers of one node."""

    status: str
    since: datetime
    last_seen: datetime
    reason: str
    history: deque[tuple[datetime, str]]
    announced: str = HEALTHY
    announced_since: datetime | None = None
    announced_at: datetime | None = None


@dataclass
class AlertTracker:
    """Turns observations into transition, reminder, recovery and flapping alerts."""

    reminder_interval: timedelta = timedelta(hours=1)
    history_size: int = 20
    flap_threshold: int = 4
    evict_after: timedelta = timedelta(days=7)
    max_nodes: int = 10_000
    _nodes: OrderedDict[str, _Node] = field(default_factory=OrderedDict, repr=False)

    def __post_init__(self) -> None:
        if self.reminder_interval <= timedelta(0) or self.evict_after <= timedelta(0):
            raise ConfigurationError("reminder_interval and evict_after must be positive")
        if self.history_size < 2 or not 0 < self.flap_threshold < self.history_size:
            raise ConfigurationError(
                f"need history_size >= 2 and 0 < flap_threshold < history_size, got "
                f"{self.history_size} and {self.flap_threshold}"
            )
        if self.max_nodes < 1:
            raise ConfigurationError(f"max_nodes must be at least 1, got {self.max_nodes}")

    # -- observing -------------------------------------------------------------------------------

    def observe(self, obs: Observation) -> list[Alert]:
        """Record `obs`; the alerts it causes (usually none). Older-than-known ones are ignored."""
        if obs.status not in STATUSES:
            raise ConfigurationError(
                f"unknown node status {obs.status!r} for {obs.key} (expected one of {STATUSES})"
            )
        if obs.at.tzinfo is None:
            raise ConfigurationError(f"observation of {obs.key} needs an aware time (UTC)")
        node = self._nodes.get(obs.key)
        if node is None:
            alerts = self._first(obs)
        elif obs.at < node.last_seen:
            return []
        else:
            alerts = self._next(node, obs)
            self._nodes.move_to_end(obs.key)
        self._evict(obs.at)
        return alerts

    def observe_all(self, observations: list[Observation]) -> list[Alert]:
        """Observe several nodes (one check round); all alerts in order."""
        return [alert for obs in observations for alert in self.observe(obs)]

    def _first(self, obs: Observation) -> list[Alert]:
        node = _Node(
            obs.status, obs.at, obs.at, obs.reason, deque([(obs.at, obs.status)], self.history_size)
        )
        self._nodes[obs.key] = node
        if obs.status == HEALTHY:
            return []
        return [self._announce(node, obs, TRANSITION, obs.status, previous=None)]

    def _next(self, node: _Node, obs: Observation) -> list[Alert]:
        node.history.append((obs.at, obs.status))
        node.last_seen = obs.at
        node.reason = obs.reason
        if obs.status != node.status:
            node.status, node.since = obs.status, obs.at
        changes = _changes(node.history)
        if node.announced == FLAPPING:
            if changes <= self.flap_threshold // 2:
                kind = RECOVERY if obs.status == HEALTHY else TRANSITION
                return [self._announce(node, obs, kind, obs.status, previous=FLAPPING)]
            return self._remind(node, obs)
        if changes > self.flap_threshold:
            return [self._announce(node, obs, TRANSITION, FLAPPING, previous=node.announced)]
        if obs.status != node.announced:
            kind = RECOVERY if obs.status == HEALTHY else TRANSITION
            return [self._announce(node, obs, kind, obs.status, previous=node.announced)]
        return self._remind(node, obs)

    def _remind(self, node: _Node, obs: Observation) -> list[Alert]:
        if node.announced == HEALTHY or node.announced_at is None:
            return []
        if obs.at - node.announced_at < self.reminder_interval:
            return []
        node.announced_at = obs.at
        since = node.announced_since or node.since
        return [self._alert(node, obs, REMINDER, node.announced, node.announced, since)]

    def _announce(
        self, node: _Node, obs: Observation, kind: str, status: str, *, previous: str | None
    ) -> Alert:
        node.announced, node.announced_since, node.announced_at = status, obs.at, obs.at
        return self._alert(node, obs, kind, status, previous, obs.at)

    @staticmethod
    def _alert(
        node: _Node,
        obs: Observation,
        kind: str,
        status: str,
        previous: str | None,
        since: datetime,
    ) -> Alert:
        reason = obs.reason
        if status == FLAPPING:
            changes = _changes(node.history)
            reason = (
                f"{changes} status changes in the last {len(node.history)} checks, "
                f"now {obs.status}" + (f" ({obs.reason})" if obs.reason else "")
            )
        return Alert(
            obs.key, kind, status, previous, reason, obs.at, since, obs.lag_bytes, obs.lag_seconds
        )

    def _evict(self, now: datetime) -> None:
        """Forget nodes not seen for `evict_after`, and the least recently seen beyond max_nodes."""
        while self._nodes:
            key, node = next(iter(self._nodes.items()))
            if len(self._nodes) > self.max_nodes or now - node.last_seen > self.evict_after:
                del self._nodes[key]
            else:
                break

    # -- inspecting ------------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        """Keys of the nodes remembered, least recently observed first."""
        return list(self._nodes)

    def history(self, key: str) -> list[tuple[datetime, str]]:
        """The last observations of `key` (at most history_size), oldest first."""
        node = self._nodes.get(key)
        return list(node.history) if node else []

    def announced(self, key: str) -> str | None:
        """The status last announced for `key` (None if unknown)."""
        node = self._nodes.get(key)
        return node.announced if node else None

    def is_flapping(self, key: str) -> bool:
        return self.announced(key) == FLAPPING

    def history_entries(self) -> int:
        """Total history entries held over all nodes (memory is proportional to this)."""
        return sum(len(node.history) for node in self._nodes.values())

    # -- persistence -----------------------------------------------------------------------------

    def to_json(self) -> str:
        """The tracker's state (not its settings) as JSON, to keep between flow runs."""
        nodes = {
            key: {
                "status": n.status,
                "since": n.since.isoformat(),
                "last_seen": n.last_seen.isoformat(),
                "reason": n.reason,
                "announced": n.announced,
                "announced_since": _iso(n.announced_since),
                "announced_at": _iso(n.announced_at),
                "history": [[at.isoformat(), status] for at, status in n.history],
            }
            for key, n in self._nodes.items()
        }
        return json.dumps({"format": _STATE_FORMAT, "nodes": nodes}, sort_keys=False)

    @classmethod
    def from_json(cls, text: str | bytes, **settings: Any) -> AlertTracker:
        """A tracker with `settings` (the constructor's keywords) and the state in `text`."""
        tracker = cls(**settings)
        try:
            data = json.loads(text)
            if data.get("format") != _STATE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {_STATE_FORMAT!r}")
            for key, raw in data["nodes"].items():
                history = deque(
                    (
                        (datetime.fromisoformat(at), _status(status))
                        for at, status in raw["history"]
                    ),
                    tracker.history_size,
                )
                tracker._nodes[str(key)] = _Node(
                    status=_status(raw["status"]),
                    since=datetime.fromisoformat(raw["since"]),
                    last_seen=datetime.fromisoformat(raw["last_seen"]),
                    reason=str(raw["reason"]),
                    history=history,
                    announced=_status(raw["announced"], FLAPPING),
                    announced_since=_from_iso(raw["announced_since"]),
                    announced_at=_from_iso(raw["announced_at"]),
                )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(f"invalid alert tracker state: {exc}") from None
        return tracker


def _changes(history: deque[tuple[datetime, str]]) -> int:
    statuses = [status for _, status in history]
    return sum(1 for a, b in itertools.pairwise(statuses) if a != b)


def _status(value: Any, *extra: str) -> str:
    if value not in (*STATUSES, *extra):
        raise ValueError(f"unknown status {value!r}")
    return str(value)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
