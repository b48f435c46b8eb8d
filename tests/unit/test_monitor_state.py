"""The alert trackers' state as kept in a Prefect variable: compact, round-trips, bounded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from prefect.types import MAX_VARIABLE_VALUE_LENGTH

from siprec_backup.alerting import AlertTracker, Observation
from tasks.monitor import decode_state, encode_state

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _tracker(nodes: int, checks: int) -> AlertTracker:
    tracker = AlertTracker()
    for i in range(checks):
        at = T0 + timedelta(minutes=i)
        for n in range(nodes):
            status = "broken" if n % 5 == 0 and i >= checks // 2 else "healthy"
            reason = f"replicating, lag {i * 100 + n} B / 0.{i % 10} s"
            tracker.observe(Observation(f"c{n // 2}/node-{n}", status, reason, at))
    return tracker


def test_state_of_50_nodes_with_full_history_fits_a_variable() -> None:
    trackers = {"replication:pg": _tracker(50, 25), "backup": _tracker(4, 25)}
    value = encode_state(trackers)
    assert len(value) + 2 <= MAX_VARIABLE_VALUE_LENGTH, len(value)
    states = decode_state(value)
    assert set(states) == {"replication:pg", "backup"}
    again = AlertTracker.from_json(json.dumps(states["replication:pg"]))
    original = trackers["replication:pg"]
    assert again.nodes() == original.nodes()
    assert again.announced("c0/node-0") == "broken"
    assert again.history("c0/node-0") == original.history("c0/node-0")


@pytest.mark.parametrize("value", ["plain text", "zlib+b64:not-base64!", "zlib+b64:eJwDAAAAAAE="])
def test_foreign_or_corrupt_state_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        decode_state(value)
