"""Load balancer tasks: read servers, set a server's state, wait until it is drained.

Setting a state is idempotent, so it is retried when the load balancer could not be reached;
waiting for a drain is not retried (its deadline is the operator's). Each task loads the block
itself, so a task can run on any worker.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from blocks.load_balancers import load_load_balancer
from siprec_backup.errors import ConfigurationError, DrainTimeoutError, LoadBalancerError
from siprec_backup.traffic import Nginx, ServerState, ServerStatus

#: Waits between attempts to reach a load balancer that did not answer.
RETRY_DELAYS: list[float] = [2, 10]


def _retry_unreachable(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a LoadBalancerError (unreachable, refused); not a drain that timed out."""
    try:
        state.result()
    except DrainTimeoutError:
        return False
    except LoadBalancerError:
        return True
    except BaseException:
        return False
    return False


@task(name="lb-servers", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=RETRY_DELAYS)
def lb_servers(load_balancer: str) -> list[ServerStatus]:
    """Every backend server of load balancer block `load_balancer`, with state and sessions."""
    return load_load_balancer(load_balancer).servers()


@task(
    name="lb-set-state",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=_retry_unreachable,
)
def set_server_state(load_balancer: str, backend: str, server: str, state: ServerState) -> None:
    """Set `backend`/`server` ready, drain or maint."""
    load_load_balancer(load_balancer).set_state(backend, server, state)


@task(name="lb-wait-drained", cache_policy=NO_CACHE)
def wait_drained(load_balancer: str, backend: str, server: str, deadline_seconds: float) -> float:
    """Seconds until `backend`/`server` had no current session; DrainTimeoutError after the
    deadline (naming the sessions left)."""
    lb = load_load_balancer(load_balancer)
    return lb.wait_drained(backend, server, deadline_s=deadline_seconds)


@task(name="lb-repoint", cache_policy=NO_CACHE)
def repoint_upstream(load_balancer: str, upstream: str, addresses: list[str]) -> float:
    """Make `addresses` the only servers of nginx upstream `upstream`: include rewritten,
    ``nginx -t`` (the old file restored if it fails), reload; seconds until the new workers
    serve it."""
    lb = load_load_balancer(load_balancer)
    if not isinstance(lb, Nginx):
        raise ConfigurationError(
            f"{load_balancer} is {lb.describe()}: re-pointing rewrites nginx upstream files; "
            "for other load balancers set server states (lb-server-state)"
        )
    return lb.repoint(upstream, addresses)
