"""Failover steps on Redis 7 nodes (master/replica replication, no Sentinel), with redis-py.

Positions are replication offsets (bytes): ``master_repl_offset`` on a primary, the replica's
``slave_repl_offset`` (a replica applies what it receives at once, so received = applied). A
promoted replica keeps counting from its own offset, so positions stay comparable across a
failover.

Fencing uses ``min-replicas-to-write``: set to :data:`FENCE_MIN_REPLICAS` (more replicas than
can ever exist), the primary refuses every write with ``NOREPLICAS``, on every connection
(including ones opened before), keeps its data and its replicas, and never un-fences by itself
(unlike ``CLIENT PAUSE WRITE``, which expires). The check only works while
``min-replicas-max-lag`` is non-zero, so a fence also sets that to 10 (Redis's default) when it
is 0. :meth:`RedisOps.unfence` sets ``min-replicas-to-write`` back to 0 (it does not restore an
earlier non-zero value). The fence is not written to the config file, so it does not survive a
restart. A fence is verified with a write that cannot change data: ``DEL`` of a random key that
does not exist must answer ``NOREPLICAS``.

Repointing keeps the replica's ``masterauth``; when it is empty the node's own password (the
target's) is set as ``masterauth``, which is right when every node shares one password.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import redis

from siprec_backup.errors import FailoverError, SafetyRefusalError
from siprec_backup.failover.databases import Endpoint, Kind, NodeState, Position
from siprec_backup.replication.redis import unretried_client
from siprec_backup.sources.redis import RedisTarget

#: ``min-replicas-to-write`` of a fenced primary (INT_MAX: no primary has that many replicas).
FENCE_MIN_REPLICAS = 2147483647
#: ``min-replicas-max-lag`` a fence sets when it is 0 (0 turns the min-replicas check off).
FENCE_MAX_LAG = 10
POLL = 0.02


def _node(target: RedisTarget) -> str:
    return f"{target.host}:{target.port}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextmanager
def _session(target: RedisTarget, timeout: float, what: str) -> Iterator[redis.Redis]:
    """A connection to ``target``; every redis error becomes a FailoverError naming the node
    and ``what`` was being done (redis-py's messages carry no password)."""
    client = unretried_client(target, timeout)
    try:
        yield client
    except redis.AuthenticationError as exc:
        raise FailoverError(
            f"{what}: authentication failed ({_first_line(exc)})", node=_node(target)
        ) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise FailoverError(
            f"{what}: cannot reach the server ({_first_line(exc)})", node=_node(target)
        ) from None
    except redis.RedisError as exc:
        raise FailoverError(f"{what}: {_first_line(exc)}", node=_node(target)) from None
    finally:
        client.close()


def _config_int(client: redis.Redis, name: str) -> int:
    value = cast(dict[str, str], client.config_get(name)).get(name, "0")
    return int(value)


def _state(client: redis.Redis) -> NodeState:
    """The node's state from INFO replication and its min-replicas settings."""
    info = cast(dict[str, Any], client.info("replication"))
    to_write = _config_int(client, "min-replicas-to-write")
    max_lag = _config_int(client, "min-replicas-max-lag")
    good = int(info.get("min_slaves_good_slaves", info.get("connected_slaves", 0)))
    refusing = to_write > 0 and max_lag > 0 and good < to_write
    facts: dict[str, Any] = {
        "master_replid": info.get("master_replid"),
        "min_replicas_to_write": to_write,
        "min_replicas_max_lag": max_lag,
        "fenced": to_write >= FENCE_MIN_REPLICAS,
        "refusing_writes": refusing,
    }
    if info.get("role") == "master":
        offset = int(info.get("master_repl_offset", 0))
        position = Position("redis", str(offset), {"offset": offset})
        facts["connected_slaves"] = int(info.get("connected_slaves", 0))
        return NodeState(
            role="primary",
            received=position,
            applied=position,
            writable=not refusing,
            facts=facts,
        )
    offset = int(info.get("slave_repl_offset", 0))
    position = Position("redis", str(offset), {"offset": offset})
    for key in (
        "master_link_status",
        "master_sync_in_progress",
        "master_link_down_since_seconds",
        "slave_read_repl_offset",
    ):
        if key in info:
            facts[key] = info[key]
    return NodeState(
        role="replica",
        received=position,
        applied=position,
        upstream=Endpoint(str(info.get("master_host", "")), int(info.get("master_port", 0))),
        streaming=info.get("master_link_status") == "up"
        and not int(info.get("master_sync_in_progress", 0)),
        writable=False,
        facts=facts,
    )


def _poll(
    target: RedisTarget,
    client: redis.Redis,
    timeout: float,
    done: Callable[[NodeState], bool],
    waiting_for: str,
) -> NodeState:
    """Read the node's state until ``done(state)``; FailoverError once ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        state = _state(client)
        if done(state):
            return state
        if time.monotonic() >= deadline:
            raise FailoverError(
                f"still waiting for {waiting_for} after {timeout:g} s (role {state.role}, "
                f"offset {state.applied.text}, upstream {state.upstream or '-'}, "
                f"streaming {state.streaming})",
                node=_node(target),
            )
        time.sleep(POLL)


def _probe_write_refused(client: redis.Redis) -> bool:
    """Whether a write is refused, tried with a DEL of a random key that does not exist (so it
    changes no data even when accepted)."""
    try:
        client.delete(f"siprec-backup:fence-probe:{secrets.token_hex(16)}")
    except redis.ResponseError as exc:
        if str(exc).startswith(("NOREPLICAS", "READONLY")):
            return True
        raise
    return False


def _ensure_masterauth(client: redis.Redis, target: RedisTarget) -> None:
    """Set ``masterauth`` to the node's own password when it has none (see the module doc)."""
    current = cast(dict[str, str], client.config_get("masterauth")).get("masterauth", "")
    if not current and target.password:
        client.config_set("masterauth", target.password)


def _follows(state: NodeState, primary: Endpoint) -> bool:
    return state.role == "replica" and state.upstream == primary


class RedisOps:
    """:class:`~siprec_backup.failover.databases.DatabaseOps` for Redis (targets are
    :class:`~siprec_backup.sources.redis.RedisTarget`)."""

    kind: Kind = "redis"

    def inspect(self, target: RedisTarget, *, timeout: float) -> NodeState:
        """Role, offset, upstream, link and writability (a fenced primary is not writable)."""
        with _session(target, timeout, "inspect") as client:
            return _state(client)

    def fence(self, target: RedisTarget, *, timeout: float) -> None:
        """Make a primary refuse every write (``min-replicas-to-write`` INT_MAX) and check that a
        write really is refused. A replica is left as it is (it refuses writes already)."""
        with _session(target, timeout, "fence") as client:
            if _state(client).role == "replica":
                return
            if _config_int(client, "min-replicas-max-lag") <= 0:
                client.config_set("min-replicas-max-lag", FENCE_MAX_LAG)
            client.config_set("min-replicas-to-write", FENCE_MIN_REPLICAS)
            if not _probe_write_refused(client):
                raise FailoverError("fence set but a write is still accepted", node=_node(target))

    def unfence(self, target: RedisTarget, *, timeout: float) -> None:
        """Set ``min-replicas-to-write`` back to 0 (not to a value it had before the fence)."""
        with _session(target, timeout, "unfence") as client:
            client.config_set("min-replicas-to-write", 0)
            state = _state(client)
            if state.role == "primary" and _probe_write_refused(client):
                raise FailoverError("unfenced but writes are still refused", node=_node(target))

    def wait_applied(
        self, target: RedisTarget, *, timeout: float, until: Position | None = None
    ) -> NodeState:
        """Wait until the node's offset reaches ``until`` (a replica applies on receipt, so
        without ``until`` this returns at once)."""
        with _session(target, timeout, "wait applied") as client:
            if until is None:
                return _state(client)
            return _poll(
                target,
                client,
                timeout,
                lambda s: s.applied.at_least(until),
                f"offset {until.text}",
            )

    def promote(self, target: RedisTarget, *, timeout: float) -> NodeState:
        """``REPLICAOF NO ONE`` and ``min-replicas-to-write 0`` (a former fenced primary);
        returns once the node is a writable primary. Writes no key."""
        with _session(target, timeout, "promote") as client:
            if _state(client).role == "replica":
                client.slaveof()  # REPLICAOF NO ONE
            client.config_set("min-replicas-to-write", 0)
            return _poll(
                target,
                client,
                timeout,
                lambda s: s.role == "primary" and s.writable,
                "the writable primary role",
            )

    def repoint(self, target: RedisTarget, primary: Endpoint, *, timeout: float) -> None:
        """``REPLICAOF primary`` (``masterauth`` kept, or set as the module doc says). Refuses
        a writable primary (it would take writes until the link is up): :meth:`demote` it."""
        if (target.host, target.port) == (primary.host, primary.port):
            raise SafetyRefusalError("cannot repoint a node to itself", node=_node(target))
        with _session(target, timeout, "repoint") as client:
            state = _state(client)
            if _follows(state, primary):
                return
            if state.role == "primary" and state.writable:
                raise SafetyRefusalError(
                    f"is a writable primary: fence or demote it before following {primary}",
                    node=_node(target),
                )
            _ensure_masterauth(client, target)
            client.slaveof(primary.host, primary.port)  # REPLICAOF

    def wait_streaming(
        self, target: RedisTarget, primary: Endpoint, *, timeout: float
    ) -> NodeState:
        """Wait until the node follows ``primary`` with its link up and no sync in progress."""
        with _session(target, timeout, "wait streaming") as client:
            return _poll(
                target,
                client,
                timeout,
                lambda s: _follows(s, primary) and s.streaming,
                f"streaming from {primary}",
            )

    def demote(self, target: RedisTarget, primary: Endpoint, *, timeout: float) -> None:
        """Turn an old primary into a replica of ``primary``: fence it (if not yet), REPLICAOF,
        clear the fence (a replica refuses writes anyway) and wait until it streams."""
        deadline = time.monotonic() + timeout
        if (target.host, target.port) == (primary.host, primary.port):
            raise SafetyRefusalError("cannot demote a node to follow itself", node=_node(target))
        self.fence(target, timeout=timeout)
        with _session(target, timeout, "demote") as client:
            if not _follows(_state(client), primary):
                _ensure_masterauth(client, target)
                client.slaveof(primary.host, primary.port)  # REPLICAOF
            client.config_set("min-replicas-to-write", 0)
        self.wait_streaming(target, primary, timeout=max(0.1, deadline - time.monotonic()))


OPS = RedisOps()
