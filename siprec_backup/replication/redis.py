"""Redis replication facts from ``INFO replication``.

A replica is broken when ``master_link_status`` is not ``up`` (the reason gives how long it has
been down). Its byte lag is best measured against the primary: the primary's
``master_repl_offset`` minus the replica's ``slave_repl_offset`` (:func:`merge_primary_view`),
with the primary's ``lag`` (seconds since the replica's last acknowledgement) as seconds. Alone,
a replica knows neither, so both stay unknown.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from siprec_backup.errors import SourceError, SourceUnavailableError
from siprec_backup.replication.health import Observation
from siprec_backup.sources.redis import RedisTarget


def unretried_client(target: RedisTarget, timeout: float) -> redis.Redis:
    """A client without redis-py's retries (they would stretch a refusal past the timeout)."""
    return redis.Redis(
        host=target.host,
        port=target.port,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        socket_connect_timeout=max(timeout, 0.1),
        socket_timeout=max(timeout, 0.1),
        retry=Retry(NoBackoff(), 0),
    )


def observe(target: RedisTarget, *, timeout: float) -> Observation:
    """Connect (within ``timeout``), read INFO replication, and describe it. Raises
    SourceUnavailableError (refused, timeout) or SourceError (authentication, other errors)."""
    client = unretried_client(target, timeout)
    try:
        info = cast(dict[str, Any], client.info("replication"))
    except redis.AuthenticationError as exc:
        raise SourceError(f"authentication to {target.describe()} failed: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise SourceUnavailableError(f"cannot connect to {target.describe()}: {exc}") from None
    except redis.RedisError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise SourceError(f"authentication to {target.describe()} failed: {exc}") from None
        raise SourceError(f"{target.describe()}: INFO replication failed: {exc}") from None
    finally:
        client.close()
    return describe(info)


def _replicas(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``slaveN`` entries of a primary's INFO (redis-py parses them into dicts)."""
    out = []
    for key in sorted(info, key=lambda k: int(k[5:]) if k[5:].isdigit() else 0):
        if key.startswith("slave") and key[5:].isdigit() and isinstance(info[key], dict):
            entry = dict(info[key])
            entry["name"] = key
            out.append(entry)
    return out


def describe(info: dict[str, Any]) -> Observation:
    """The observation of one server's parsed ``INFO replication`` (pure)."""
    role = str(info.get("role", ""))
    if role == "master":
        replicas = _replicas(info)
        facts = {
            "role": role,
            "connected_slaves": info.get("connected_slaves"),
            "master_repl_offset": info.get("master_repl_offset"),
            "master_replid": info.get("master_replid"),
            "replicas": replicas,
        }
        attached = sum(1 for r in replicas if r.get("state") == "online")
        warnings = tuple(
            f"replica {r.get('ip')}:{r.get('port')} is {r.get('state')}"
            for r in replicas
            if r.get("state") != "online"
        )
        return Observation(
            observed_role="primary", attached_replicas=attached, warnings=warnings, facts=facts
        )
    keys = (
        "master_host",
        "master_port",
        "master_link_status",
        "master_last_io_seconds_ago",
        "master_sync_in_progress",
        "master_link_down_since_seconds",
        "slave_repl_offset",
        "slave_read_repl_offset",
        "master_repl_offset",
        "master_replid",
    )
    facts = {"role": role, **{k: info.get(k) for k in keys if k in info}}
    broken: list[str] = []
    link = info.get("master_link_status")
    if link != "up":
        since = info.get("master_link_down_since_seconds")
        down = f", down for {since} s" if since is not None and since != -1 else ""
        where = f"{info.get('master_host')}:{info.get('master_port')}"
        broken.append(f"master link {link or 'unknown'} (primary {where}{down})")
    warnings = ("initial sync in progress",) if info.get("master_sync_in_progress") else ()
    return Observation(
        observed_role="replica", broken=tuple(broken), warnings=warnings, facts=facts
    )


def primary_entry(primary: Observation, host: str, port: int) -> dict[str, Any] | None:
    """The primary's ``slaveN`` entry of the replica listening on ``host:port``."""
    for entry in primary.facts.get("replicas", ()):
        if int(entry.get("port", -1)) == port and str(entry.get("ip")) in (host, "127.0.0.1"):
            return dict(entry)
    return None


def merge_primary_view(
    replica: Observation, primary: Observation, host: str, port: int
) -> Observation:
    """The replica's observation with byte and seconds lag seen from the primary."""
    if replica.observed_role != "replica" or primary.observed_role != "primary":
        return replica
    entry = primary_entry(primary, host, port)
    facts = dict(replica.facts)
    facts["primary_view"] = entry
    primary_offset = primary.facts.get("master_repl_offset")
    own = replica.facts.get("slave_repl_offset")
    lag_bytes = replica.lag_bytes
    if (
        isinstance(primary_offset, int)
        and isinstance(own, int)
        and replica.facts.get("master_replid") == primary.facts.get("master_replid")
    ):
        lag_bytes = max(0, primary_offset - own)
        facts["lag_source"] = "primary master_repl_offset"
    lag_seconds = replica.lag_seconds
    if entry is not None and isinstance(entry.get("lag"), int):
        lag_seconds = float(entry["lag"])
    return dataclasses.replace(replica, lag_bytes=lag_bytes, lag_seconds=lag_seconds, facts=facts)
