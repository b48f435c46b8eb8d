"""Load balancer levers a failover pulls: list servers, set them ready / drain / maint, wait
until drained. One interface (:class:`LoadBalancer`) for HAProxy, nginx and NGINX Plus."""

from siprec_backup.traffic.base import (
    DOWN,
    DOWN_TRANSITIONAL,
    DRAIN,
    MAINT,
    NOLB,
    UNKNOWN,
    UP,
    UP_TRANSITIONAL,
    LoadBalancer,
    ServerState,
    ServerStatus,
)
from siprec_backup.traffic.haproxy import HAProxy, normalise_status, parse_stat_csv
from siprec_backup.traffic.nginx import Nginx, UpstreamEntry, parse_upstream, render_upstream
from siprec_backup.traffic.nginx_plus import NginxPlus

__all__ = [
    "DOWN",
    "DOWN_TRANSITIONAL",
    "DRAIN",
    "MAINT",
    "NOLB",
    "UNKNOWN",
    "UP",
    "UP_TRANSITIONAL",
    "HAProxy",
    "LoadBalancer",
    "Nginx",
    "NginxPlus",
    "ServerState",
    "ServerStatus",
    "UpstreamEntry",
    "normalise_status",
    "parse_stat_csv",
    "parse_upstream",
    "render_upstream",
]
