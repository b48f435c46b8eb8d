"""Monitoring tasks: one concurrent replication pass, alert delivery per channel with retries,
and the alert trackers' state kept in a Prefect Variable between runs.

The state is small but Prefect caps a variable's value at 5,000 characters: it is stored as
zlib-compressed JSON in base64 (about 900 characters for 10 nodes with 20 checks of history
each, 1,600 for 50). A state that does not fit is refused with the advice to split the
platforms over several state variables; an unreadable state is replaced by a fresh one (its
nodes are announced again once if they are not healthy).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import zlib
from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.types import MAX_VARIABLE_VALUE_LENGTH
from prefect.variables import Variable

from blocks.alerting import load_channels
from blocks.replication import MonitoredCluster
from siprec_backup.alerting import AlertDeliveryError, AlertTracker, deliver
from siprec_backup.errors import ConfigurationError
from siprec_backup.replication import NodeHealth, check_nodes

log = logging.getLogger(__name__)

STATE_FORMAT = "siprec-monitor-state/1"
_PREFIX = "zlib+b64:"
#: Waits between delivery attempts of a channel (each attempt already retries briefly).
DELIVERY_RETRY_DELAYS: list[float] = [10, 60]


@task(name="check-replication", cache_policy=NO_CACHE, timeout_seconds=300)
def check_replication(clusters: list[MonitoredCluster]) -> list[NodeHealth]:
    """One health record per node of `clusters`, all nodes checked concurrently. The largest
    timeout of the clusters applies to every node. Never fails on a down node: that node is
    'unreachable'."""
    nodes = [node for cluster in clusters for node in cluster.nodes]
    thresholds = {c.config.cluster: c.config.thresholds() for c in clusters}
    timeout = max((c.config.timeout_seconds for c in clusters), default=5.0)
    return check_nodes(nodes, thresholds, timeout=timeout)


def _retry_delivery_errors(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a delivery that failed on the network or the receiver; not a configuration error."""
    try:
        state.result()
    except AlertDeliveryError:
        return True
    except BaseException:
        return False
    return False


@task(
    name="deliver-alerts",
    task_run_name="deliver-alerts-{channel}",
    retries=len(DELIVERY_RETRY_DELAYS),
    retry_delay_seconds=DELIVERY_RETRY_DELAYS,
    retry_condition_fn=_retry_delivery_errors,
    cache_policy=NO_CACHE,
)
def deliver_alerts(channel: str, alerts: list[dict[str, Any]]) -> int:
    """Send `alerts` through the channel block named `channel`; how many were sent. A retry
    sends all of them again (at least once, never silently dropped)."""
    return deliver(alerts, load_channels([channel]))


def encode_state(trackers: Mapping[str, AlertTracker]) -> str:
    """The variable value holding every tracker's state."""
    document = {
        "format": STATE_FORMAT,
        "trackers": {key: json.loads(t.to_json()) for key, t in trackers.items()},
    }
    packed = zlib.compress(json.dumps(document, separators=(",", ":")).encode(), 9)
    return _PREFIX + base64.b64encode(packed).decode("ascii")


def decode_state(value: str) -> dict[str, Any]:
    """Tracker states by key from a variable value (ValueError if it is not ours)."""
    if not value.startswith(_PREFIX):
        raise ValueError("not a siprec-backup monitor state")
    try:
        text = zlib.decompress(base64.b64decode(value[len(_PREFIX) :], validate=True))
    except (binascii.Error, zlib.error) as exc:
        raise ValueError(f"corrupt state: {exc}") from None
    document = json.loads(text)
    if document.get("format") != STATE_FORMAT or not isinstance(document.get("trackers"), dict):
        raise ValueError(f"state format {document.get('format')!r}, expected {STATE_FORMAT!r}")
    return dict(document["trackers"])


def load_trackers(
    variable: str, settings: Mapping[str, Mapping[str, Any]]
) -> dict[str, AlertTracker]:
    """One tracker per key of `settings` (its AlertTracker keywords), with the state kept in
    Prefect variable `variable`; keys not in `settings` are dropped."""
    value = Variable.get(variable)
    states: dict[str, Any] = {}
    if value is not None:
        try:
            states = decode_state(str(value))
        except ValueError as exc:
            log.warning("alert state in variable %s ignored, starting afresh: %s", variable, exc)
    trackers = {}
    for key, kwargs in settings.items():
        state = states.get(key)
        if state is None:
            trackers[key] = AlertTracker(**kwargs)
            continue
        try:
            trackers[key] = AlertTracker.from_json(json.dumps(state), **kwargs)
        except ConfigurationError as exc:
            log.warning("alert state of %s ignored, starting afresh: %s", key, exc)
            trackers[key] = AlertTracker(**kwargs)
    return trackers


def save_trackers(variable: str, trackers: Mapping[str, AlertTracker]) -> None:
    """Keep the trackers' state in Prefect variable `variable` (ConfigurationError if too big)."""
    value = encode_state(trackers)
    if len(value) + 2 > MAX_VARIABLE_VALUE_LENGTH:  # the server limits the JSON text
        nodes = sum(len(t.nodes()) for t in trackers.values())
        raise ConfigurationError(
            f"the alert state of {nodes} nodes needs {len(value)} characters, beyond Prefect's "
            f"{MAX_VARIABLE_VALUE_LENGTH} per variable: monitor the platforms in several "
            "deployments, each with its own state_variable"
        )
    Variable.set(variable, value, tags=["siprec-backup"], overwrite=True)
