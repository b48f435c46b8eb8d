"""Alert transitions: one alert per change, reminders, recovery, flapping, bounded memory, JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from siprec_backup.alerting.transitions import (
    BROKEN,
    FLAPPING,
    HEALTHY,
    LAGGING,
    RECOVERY,
    REMINDER,
    TRANSITION,
    UNREACHABLE,
    Alert,
    AlertTracker,
    Observation,
)
from siprec_backup.errors import ConfigurationError

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _obs(minute: int, status: str, key: str = "c1/pg-2", reason: str = "") -> Observation:
    return Observation(
        key, status, reason or f"{status} at {minute}", T0 + timedelta(minutes=minute)
    )


def _run(tracker: AlertTracker, statuses: list[str], key: str = "c1/pg-2") -> list[Alert]:
    return [a for i, s in enumerate(statuses) for a in tracker.observe(_obs(i, s, key))]


def test_steady_healthy_node_never_alerts() -> None:
    tracker = AlertTracker()
    assert _run(tracker, [HEALTHY] * 500) == []
    assert tracker.announced("c1/pg-2") == HEALTHY


def test_each_transition_alerts_exactly_once() -> None:
    tracker = AlertTracker(reminder_interval=timedelta(hours=10), flap_threshold=10)
    statuses = [HEALTHY] * 5 + [LAGGING] * 5 + [BROKEN] * 30 + [LAGGING] * 5 + [HEALTHY] * 10
    alerts = _run(tracker, statuses)
    assert [(a.kind, a.previous, a.status) for a in alerts] == [
        (TRANSITION, HEALTHY, LAGGING),
        (TRANSITION, LAGGING, BROKEN),
        (TRANSITION, BROKEN, LAGGING),
        (RECOVERY, LAGGING, HEALTHY),
    ]
    assert [a.at for a in alerts] == [T0 + timedelta(minutes=m) for m in (5, 10, 40, 45)]
    assert alerts[1].severity == "critical"
    assert alerts[1].to_alert()["resolved"] is False
    recovery = alerts[-1].to_alert()
    assert recovery["resolved"] is True and recovery["severity"] == "info"
    assert recovery["resource"] == "siprec.node.c1.pg-2"
    assert recovery["summary"] == "c1/pg-2 recovered: healthy again (was lagging)"


def test_node_first_seen_broken_alerts_and_first_seen_healthy_does_not() -> None:
    tracker = AlertTracker()
    assert tracker.observe(_obs(0, HEALTHY, "c1/a")) == []
    [alert] = tracker.observe(_obs(0, UNREACHABLE, "c1/b", "connection refused"))
    assert (alert.kind, alert.previous, alert.status) == (TRANSITION, None, UNREACHABLE)
    assert alert.summary() == "c1/b is unreachable: connection refused"


def test_broken_node_pages_once_then_reminds_each_interval() -> None:
    tracker = AlertTracker(reminder_interval=timedelta(minutes=60))
    alerts = _run(tracker, [BROKEN] * 181)  # minutes 0..180
    assert [(a.kind, a.at) for a in alerts] == [
        (TRANSITION, T0),
        (REMINDER, T0 + timedelta(minutes=60)),
        (REMINDER, T0 + timedelta(minutes=120)),
        (REMINDER, T0 + timedelta(minutes=180)),
    ]
    reminder = alerts[1]
    assert reminder.since == T0 and reminder.status == BROKEN
    assert "reminder: since 2026-11-26T12:00:00+00:00" in reminder.summary()
    [recovery] = tracker.observe(_obs(181, HEALTHY))
    assert recovery.kind == RECOVERY and recovery.previous == BROKEN
    assert _run_from(tracker, 182, [HEALTHY] * 200) == []


def _run_from(tracker: AlertTracker, start: int, statuses: list[str]) -> list[Alert]:
    return [a for i, s in enumerate(statuses, start) for a in tracker.observe(_obs(i, s))]


def test_flapping_is_announced_once_then_suppressed_then_resolved() -> None:
    tracker = AlertTracker(history_size=10, flap_threshold=4, reminder_interval=timedelta(hours=10))
    flaps = [HEALTHY, BROKEN] * 10  # 19 changes
    alerts = _run(tracker, flaps)
    kinds = [(a.kind, a.status) for a in alerts]
    # The first changes alert normally, until more than 4 changes in the window: then "flapping".
    assert kinds == [
        (TRANSITION, BROKEN),
        (RECOVERY, HEALTHY),
        (TRANSITION, BROKEN),
        (RECOVERY, HEALTHY),
        (TRANSITION, FLAPPING),
    ]
    assert tracker.is_flapping("c1/pg-2")
    assert "5 status changes in the last 6 checks" in alerts[-1].reason
    # Stable again: flapping ends once the window holds at most 2 changes; the status is announced.
    calm = _run_from(tracker, 20, [HEALTHY] * 20)
    assert [(a.kind, a.previous, a.status) for a in calm] == [(RECOVERY, FLAPPING, HEALTHY)]
    assert not tracker.is_flapping("c1/pg-2")


def test_ten_thousand_observations_keep_memory_bounded() -> None:
    tracker = AlertTracker(
        history_size=20, evict_after=timedelta(hours=1), reminder_interval=timedelta(days=1)
    )
    statuses = [HEALTHY, LAGGING, BROKEN, UNREACHABLE]
    alerts = 0
    for i in range(10_000):
        # 50 steady nodes, plus a fresh short-lived node every 100 observations.
        key = f"c/node-{i % 50}" if i % 100 else f"c/ephemeral-{i}"
        status = statuses[(i // 50) % 4] if key.startswith("c/node") else BROKEN
        alerts += len(tracker.observe(Observation(key, status, "", T0 + timedelta(seconds=i))))
        assert tracker.history_entries() <= 20 * len(tracker.nodes())
    assert len(tracker.nodes()) <= 50 + 36  # ephemerals older than an hour are evicted
    assert tracker.history_entries() <= 20 * len(tracker.nodes())
    assert max(len(tracker.history(k)) for k in tracker.nodes()) == 20
    assert alerts > 0
    assert all(not key.startswith("c/ephemeral-100") for key in tracker.nodes())


def test_max_nodes_evicts_least_recently_seen() -> None:
    tracker = AlertTracker(max_nodes=3)
    for i, key in enumerate(["a/1", "a/2", "a/3", "a/1", "a/4"]):
        tracker.observe(Observation(key, HEALTHY, "", T0 + timedelta(seconds=i)))
    assert tracker.nodes() == ["a/3", "a/1", "a/4"]


def test_out_of_order_observation_is_ignored() -> None:
    tracker = AlertTracker()
    tracker.observe(_obs(10, HEALTHY))
    assert tracker.observe(_obs(5, BROKEN)) == []
    assert tracker.announced("c1/pg-2") == HEALTHY


def test_state_round_trips_through_json_and_keeps_deduplicating() -> None:
    tracker = AlertTracker(reminder_interval=timedelta(minutes=30))
    assert len(_run(tracker, [HEALTHY, BROKEN, BROKEN])) == 1
    text = tracker.to_json()
    json.loads(text)  # plain JSON, storable in a Prefect Variable or a file
    restored = AlertTracker.from_json(text, reminder_interval=timedelta(minutes=30))
    assert restored.history("c1/pg-2") == tracker.history("c1/pg-2")
    assert restored.to_json() == text
    # Still broken in the next run: no new page before the reminder is due.
    assert restored.observe(_obs(3, BROKEN)) == []
    [reminder] = restored.observe(_obs(31, BROKEN))
    assert reminder.kind == REMINDER and reminder.since == T0 + timedelta(minutes=1)


def test_invalid_inputs_fail_clearly() -> None:
    tracker = AlertTracker()
    with pytest.raises(ConfigurationError, match="unknown node status 'down'"):
        tracker.observe(_obs(0, "down"))
    with pytest.raises(ConfigurationError, match="aware"):
        tracker.observe(Observation("a/b", HEALTHY, "", datetime(2026, 1, 1)))
    with pytest.raises(ConfigurationError, match="invalid alert tracker state"):
        AlertTracker.from_json("{not json")
    with pytest.raises(ConfigurationError, match="invalid alert tracker state"):
        AlertTracker.from_json(json.dumps({"format": "other", "nodes": {}}))
    with pytest.raises(ConfigurationError, match="flap_threshold"):
        AlertTracker(history_size=5, flap_threshold=5)
