"""Check many replication nodes at once: one thread per node, a per-node timeout, one
:class:`NodeHealth` per node whatever happens.

A node that refuses, times out or rejects the credentials is ``unreachable`` with the cause in
its reason (never a password); an unexpected error becomes an ``unreachable`` record too, never
a crash of the whole pass. Each connection and statement is bounded by ``timeout``; the pass
stops waiting at ``timeout`` plus a small grace, so one hung node cannot slow it further (its
thread is abandoned and ends when its socket gives up). After every node answered, the primary's
view of each replica of the same cluster and kind is merged into the replica's record.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from siprec_backup.errors import ConfigurationError
from siprec_backup.replication import mysql, postgres, redis
from siprec_backup.replication.health import (
    Kind,
    NodeHealth,
    Observation,
    Role,
    Thresholds,
    classify,
    now,
    one_line,
    unreachable,
)
from siprec_backup.sources.mysql import MySQLTarget
from siprec_backup.sources.postgres import PostgresTarget
from siprec_backup.sources.redis import RedisTarget

NodeTarget = PostgresTarget | MySQLTarget | RedisTarget
#: Extra seconds the pass waits beyond the per-node timeout (connect plus statements).
GRACE = 0.5


@dataclass(frozen=True)
class ReplicationNode:
    """One server of a replicated cluster, as configured.

    ``target`` says how to connect (its password is never shown). ``application_name``
    (PostgreSQL standbys) is the name the primary lists it under in pg_stat_replication (default:
    ``name``). ``heartbeat_table`` (MySQL/MariaDB, ``database.table``; set it on the primary
    and its replicas) turns on heartbeat lag: each pass first writes the primary's row, then
    reads its age on the replicas. The primary's user needs CREATE, INSERT and DELETE on it."""

    cluster: str
    name: str
    expected_role: Role
    target: NodeTarget = field(repr=False)
    application_name: str | None = None
    heartbeat_table: str | None = None

    def __post_init__(self) -> None:
        if self.expected_role not in ("primary", "replica"):
            raise ConfigurationError(
                f"node {self.name}: unknown role {self.expected_role!r}: use primary or replica"
            )
        if not self.cluster or not self.name:
            raise ConfigurationError("a replication node needs a cluster and a name")

    @property
    def kind(self) -> Kind:
        kind = self.target.kind
        if kind == "postgres":
            return "postgres"
        if kind == "mysql":
            return "mysql"
        return "redis"

    def describe(self) -> str:
        return f"{self.cluster}/{self.name} ({self.target.describe()})"


def unreachable_reason(error: BaseException) -> str:
    """``connection refused: …``, ``timeout: …``, ``authentication failed: …`` or ``error: …``:
    which of the three made the node unreachable, with the error's own line."""
    text = one_line(str(error) or type(error).__name__)
    low = text.lower()
    # libpq's refusal ends with its hint "Is the server running ... accepting TCP/IP ...".
    if "refused" in low or "accepting tcp/ip connections" in low:
        cause = "connection refused"
    elif "timeout" in low or "timed out" in low:
        cause = "timeout"
    elif any(
        word in low
        for word in ("authentication", "access denied", "wrongpass", "noauth", "password")
    ):
        cause = "authentication failed"
    else:
        cause = "error"
    return f"{cause}: {text}"


def _redact(text: str, node: ReplicationNode) -> str:
    password = getattr(node.target, "password", None)
    return text.replace(password, "***") if password else text


def _observe(node: ReplicationNode, timeout: float) -> Observation:
    target = node.target
    if isinstance(target, PostgresTarget):
        return postgres.observe(target, timeout=timeout)
    if isinstance(target, MySQLTarget):
        return mysql.observe(target, timeout=timeout, heartbeat_table=node.heartbeat_table)
    return redis.observe(target, timeout=timeout)


def _check_one(node: ReplicationNode, timeout: float) -> Observation | str:
    """The node's observation, or the reason it could not be observed."""
    try:
        return _observe(node, timeout)
    except Exception as exc:  # one node's failure (ours or a driver's) must not end the pass
        return _redact(unreachable_reason(exc), node)


def _merge(node: ReplicationNode, own: Observation, primary: Observation | None) -> Observation:
    if primary is None or node.expected_role != "replica":
        return own
    target = node.target
    if isinstance(target, PostgresTarget):
        return postgres.merge_primary_view(own, primary, node.application_name or node.name)
    if isinstance(target, MySQLTarget):
        return mysql.merge_primary_view(own, primary)
    return redis.merge_primary_view(own, primary, target.host, target.port)


def _primaries(
    nodes: Sequence[ReplicationNode], results: Mapping[int, Observation | str]
) -> dict[tuple[str, str], Observation]:
    """The observation of each (cluster, kind)'s configured primary that really is one."""
    out: dict[tuple[str, str], Observation] = {}
    for i, node in enumerate(nodes):
        result = results.get(i)
        if (
            node.expected_role == "primary"
            and isinstance(result, Observation)
            and result.observed_role == "primary"
        ):
            out.setdefault((node.cluster, node.kind), result)
    return out


def _thresholds_for(
    node: ReplicationNode, thresholds: Thresholds | Mapping[str, Thresholds]
) -> Thresholds:
    if isinstance(thresholds, Thresholds):
        return thresholds
    return thresholds.get(node.cluster) or thresholds.get("*") or Thresholds()


def check_nodes(
    nodes: Sequence[ReplicationNode],
    thresholds: Thresholds | Mapping[str, Thresholds],
    *,
    timeout: float = 5.0,
    max_workers: int = 16,
) -> list[NodeHealth]:
    """One health record per node, in the order of ``nodes``. ``thresholds`` is one set for
    every cluster or a mapping by cluster name (``"*"``: the default). The whole pass takes at
    most about ``timeout`` seconds per wave of ``max_workers`` nodes (plus one ``timeout`` for
    the heartbeat writes when some MySQL primary has a ``heartbeat_table``)."""
    if timeout <= 0:
        raise ConfigurationError(f"timeout must be > 0, got {timeout}")
    if max_workers < 1:
        raise ConfigurationError(f"max_workers must be >= 1, got {max_workers}")
    names = [(n.cluster, n.name) for n in nodes]
    if len(set(names)) != len(names):
        raise ConfigurationError("a node is listed twice (same cluster and name)")
    if not nodes:
        return []
    started = now()
    results: dict[int, Observation | str] = {}
    executor = cf.ThreadPoolExecutor(
        max_workers=min(max_workers, len(nodes)), thread_name_prefix="replication-check"
    )
    try:
        _heartbeats(executor, nodes, timeout)
        futures = {executor.submit(_check_one, node, timeout): i for i, node in enumerate(nodes)}
        waves = -(-len(nodes) // max_workers)
        deadline = time.monotonic() + waves * (timeout + GRACE)
        pending = set(futures)
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            done, pending = cf.wait(pending, timeout=remaining)
            for future in done:
                results[futures[future]] = future.result()
        for future in pending:
            results[futures[future]] = f"timeout: no answer within {timeout:g} s"
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    primaries = _primaries(nodes, results)
    return [
        _record(node, results[i], primaries.get((node.cluster, node.kind)), thresholds, started)
        for i, node in enumerate(nodes)
    ]


def _heartbeats(
    executor: cf.ThreadPoolExecutor, nodes: Sequence[ReplicationNode], timeout: float
) -> None:
    """Write the heartbeat row of every MySQL primary that has one, within ``timeout``. A
    failure is left to the primary's own check to report (unreachable); its replicas then show
    a growing heartbeat age."""
    beats = [
        executor.submit(mysql.beat, node.target, node.heartbeat_table, timeout=timeout)
        for node in nodes
        if node.heartbeat_table
        and node.expected_role == "primary"
        and isinstance(node.target, MySQLTarget)
    ]
    if beats:
        cf.wait(beats, timeout=timeout + GRACE)


def _record(
    node: ReplicationNode,
    result: Observation | str,
    primary: Observation | None,
    thresholds: Thresholds | Mapping[str, Thresholds],
    checked_at: dt.datetime,
) -> NodeHealth:
    if isinstance(result, str):
        return unreachable(
            cluster=node.cluster,
            node=node.name,
            kind=node.kind,
            expected_role=node.expected_role,
            reason=result,
            checked_at=checked_at,
            facts={"target": node.target.describe()},
        )
    observation = _merge(node, result, primary)
    observation = dataclasses.replace(
        observation, facts={"target": node.target.describe(), **observation.facts}
    )
    return classify(
        observation,
        cluster=node.cluster,
        node=node.name,
        kind=node.kind,
        expected_role=node.expected_role,
        thresholds=_thresholds_for(node, thresholds),
        checked_at=checked_at,
    )


def check_node(
    node: ReplicationNode, thresholds: Thresholds, *, timeout: float = 5.0
) -> NodeHealth:
    """One node alone (no primary view merged in)."""
    return _record(node, _check_one(node, timeout), None, thresholds, now())
