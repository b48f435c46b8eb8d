"""The ``lb-server-state`` flow: drain, disable or re-enable one load balancer server; and
``lb-repoint``: point an nginx upstream at other servers.

What an operator runs before maintenance on a database or application host ("drain db1, wait
until its sessions end"), and what the failover flows reuse. It reads the servers, sets the
state, waits (for drain and maint) until the server's current sessions reach 0 or the deadline,
reads them again, publishes the table as an artifact and emits ``siprec.lb.server.<state>``
(resource ``siprec.lb-server.<block>.<backend>.<server>``) with the time from request to
verified.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from flows._logging import set_log_level
from siprec_backup.errors import LoadBalancerError
from siprec_backup.traffic import ServerState, ServerStatus
from tasks.traffic import lb_servers, repoint_upstream, set_server_state, wait_drained


def server_rows(servers: list[ServerStatus], changed: str = "") -> list[dict[str, Any]]:
    """Table rows of the servers; the changed one marked."""
    return [
        {
            "backend": s.backend,
            "server": s.server,
            "address": s.address,
            "status": s.status,
            "state": s.state,
            "sessions": s.current_sessions,
            "weight": s.weight,
            "changed": "yes" if s.name == changed else "",
        }
        for s in servers
    ]


def _find(servers: list[ServerStatus], backend: str, server: str) -> ServerStatus:
    for status in servers:
        if (status.backend, status.server) == (backend, server):
            return status
    known = ", ".join(s.name for s in servers) or "none"
    raise LoadBalancerError(f"no server {backend}/{server} (known: {known})")


@flow(name="lb-server-state")
def lb_server_state(
    load_balancer: str,
    backend: str = "",
    server: str = "",
    state: ServerState | None = None,
    wait: bool = True,
    drain_deadline_seconds: float = 300,
    log_level: str = "INFO",
) -> dict[str, Any]:
    """Set a load balancer server ready, drain or maint, and wait until it is drained.

    Args:
        load_balancer: Name of the HAProxy, nginx or NGINX Plus block.
        backend: The backend (HAProxy) or upstream (nginx) of the server.
        server: The server's name (HAProxy) or address (nginx, NGINX Plus).
        state: ready, drain or maint; empty: only list the servers.
        wait: For drain and maint, wait until the server has no current session.
        drain_deadline_seconds: Fail if sessions remain after this long.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    logger = get_run_logger()
    before = lb_servers(load_balancer)
    if state is None:
        create_table_artifact(
            server_rows(before), key=f"lb-{load_balancer}", description=f"{load_balancer}"
        )
        return {"servers": server_rows(before)}
    previous = _find(before, backend, server)
    name = previous.name
    started = time.monotonic()
    set_server_state(load_balancer, backend, server, state)
    drained = None
    if wait and state in (ServerState.DRAIN, ServerState.MAINT):
        drained = wait_drained(load_balancer, backend, server, drain_deadline_seconds)
    after = lb_servers(load_balancer)
    seconds = time.monotonic() - started
    now = _find(after, backend, server)
    logger.info(
        "%s: %s -> %s (%s), %d sessions, %.2f s from request to verified",
        name,
        previous.status,
        now.status,
        state.value,
        now.current_sessions,
        seconds,
    )
    summary = {
        "load_balancer": load_balancer,
        "server": name,
        "state": state.value,
        "previous_status": previous.status,
        "status": now.status,
        "sessions": now.current_sessions,
        "drained_seconds": drained,
        "seconds": round(seconds, 3),
    }
    create_table_artifact(
        server_rows(after, changed=name),
        key=f"lb-{load_balancer}",
        description=f"{load_balancer}: {name} set {state.value} in {seconds:.2f} s",
    )
    emit_event(
        event=f"siprec.lb.server.{state.value}",
        resource={
            "prefect.resource.id": f"siprec.lb-server.{load_balancer}.{backend}.{server}",
            "prefect.resource.name": name,
        },
        payload=summary,
    )
    return summary


@flow(name="lb-repoint")
def lb_repoint(
    load_balancer: str, upstream: str, addresses: list[str], log_level: str = "INFO"
) -> dict[str, Any]:
    """Make `addresses` the only servers of an nginx upstream (include file, nginx -t, reload).

    Args:
        load_balancer: Name of the nginx block.
        upstream: The upstream to re-point.
        addresses: host:port of its new servers.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    seconds = repoint_upstream(load_balancer, upstream, addresses)
    get_run_logger().info("%s now -> %s (%.2f s)", upstream, ", ".join(addresses), seconds)
    after = lb_servers(load_balancer)
    create_table_artifact(
        server_rows(after),
        key=f"lb-{load_balancer}",
        description=f"{load_balancer}: {upstream} re-pointed in {seconds:.2f} s",
    )
    summary = {"upstream": upstream, "addresses": addresses, "seconds": round(seconds, 3)}
    emit_event(
        event="siprec.lb.upstream.repointed",
        resource={"prefect.resource.id": f"siprec.lb-upstream.{load_balancer}.{upstream}"},
        payload=summary,
    )
    return summary
