"""Metrics of the levers a failover pulls.

Load balancer server states are read live by each scrape (:func:`add_load_balancer_metrics`):

* ``siprec_lb_up{lb}``: 1 if the load balancer answered, 0 if not;
* ``siprec_lb_server_state{lb,backend,server,state}``: one-hot over :data:`LB_STATES`;
* ``siprec_lb_server_current_sessions{lb,backend,server}``.

SSH commands and DNS updates happen inside flow runs, which end; their figures are accumulated
in a textfile for node_exporter's textfile collector in ``$SIPREC_METRICS_TEXTFILE_DIR`` (when
set), ``siprec_levers.prom``, updated under a lock by every run on that machine:

* ``siprec_ssh_commands_total{host,result}`` (result ok / failed / timeout) and
  ``siprec_ssh_command_seconds_total{host}``: mutating commands, as audited;
* ``siprec_dns_updates_total{zone}``, ``siprec_dns_propagation_seconds{zone}`` (the last
  update's time until every nameserver served it) and
  ``siprec_dns_last_update_timestamp_seconds{zone}``.

The counts live in ``siprec_levers.json`` beside it, so they survive between runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from siprec_backup.metrics import Registry, write_textfile
from siprec_backup.remote.audit import AuditRecord
from siprec_backup.traffic import (
    DOWN,
    DOWN_TRANSITIONAL,
    DRAIN,
    MAINT,
    NOLB,
    UNKNOWN,
    UP,
    UP_TRANSITIONAL,
    ServerStatus,
)

TEXTFILE_DIR_ENV = "SIPREC_METRICS_TEXTFILE_DIR"
TEXTFILE = "siprec_levers.prom"
STATE_FILE = "siprec_levers.json"
LB_STATES = (UP, UP_TRANSITIONAL, DOWN, DOWN_TRANSITIONAL, DRAIN, MAINT, NOLB, UNKNOWN)


def add_load_balancer_metrics(
    registry: Registry, lb: str, servers: list[ServerStatus] | None
) -> Registry:
    """The states and sessions of ``lb``'s servers; ``servers`` None: it did not answer."""
    registry.gauge("siprec_lb_up", "1 if the load balancer answered, 0 if not.", ("lb",)).set(
        0 if servers is None else 1, lb=lb
    )
    labels = ("lb", "backend", "server")
    state = registry.gauge(
        "siprec_lb_server_state",
        "1 for the server's current state, 0 for the others (" + ", ".join(LB_STATES) + ").",
        (*labels, "state"),
    )
    sessions = registry.gauge(
        "siprec_lb_server_current_sessions", "Current sessions on the server.", labels
    )
    for server in servers or []:
        names = {"lb": lb, "backend": server.backend, "server": server.server}
        for name in LB_STATES:
            state.set(1 if server.state == name else 0, **names, state=name)
        sessions.set(server.current_sessions, **names)
    return registry


def record_ssh_commands(records: Iterable[AuditRecord], directory: Path | None = None) -> None:
    """Add audited commands to the textfile's counters (no-op without a textfile directory)."""
    listed = list(records)
    if not listed:
        return

    def add(state: dict[str, Any]) -> None:
        for record in listed:
            host = state["ssh"].setdefault(record.host, {"ok": 0, "failed": 0, "timeout": 0})
            result = {None: "timeout", 0: "ok"}.get(record.exit_status, "failed")
            host[result] += 1
            host["seconds"] = host.get("seconds", 0.0) + record.duration

    _update(directory, add)


def record_dns_update(
    zone: str, propagation_seconds: float | None, directory: Path | None = None
) -> None:
    """Count an applied update of ``zone`` and keep its propagation time (when verified)."""

    def add(state: dict[str, Any]) -> None:
        figures = state["dns"].setdefault(zone, {"updates": 0})
        figures["updates"] += 1
        figures["last_update"] = time.time()
        if propagation_seconds is not None:
            figures["propagation_seconds"] = propagation_seconds

    _update(directory, add)


def render_lever_textfile(state: dict[str, Any]) -> Registry:
    """The textfile's families from the accumulated counts."""
    registry = Registry()
    commands = registry.counter(
        "siprec_ssh_commands_total", "Audited SSH commands by result.", ("host", "result")
    )
    seconds = registry.counter(
        "siprec_ssh_command_seconds_total", "Time spent in audited SSH commands.", ("host",)
    )
    for host, figures in sorted(state["ssh"].items()):
        for result in ("ok", "failed", "timeout"):
            commands.inc(figures.get(result, 0), host=host, result=result)
        seconds.inc(figures.get("seconds", 0.0), host=host)
    updates = registry.counter("siprec_dns_updates_total", "Applied DNS updates.", ("zone",))
    propagation = registry.gauge(
        "siprec_dns_propagation_seconds",
        "Seconds until every nameserver served the last verified update.",
        ("zone",),
    )
    last = registry.gauge(
        "siprec_dns_last_update_timestamp_seconds", "Unix time of the last update.", ("zone",)
    )
    for zone, figures in sorted(state["dns"].items()):
        updates.inc(figures["updates"], zone=zone)
        last.set(figures["last_update"], zone=zone)
        if "propagation_seconds" in figures:
            propagation.set(figures["propagation_seconds"], zone=zone)
    return registry


def _update(directory: Path | None, change: Callable[[dict[str, Any]], None]) -> None:
    if directory is None:
        configured = os.environ.get(TEXTFILE_DIR_ENV)
        if not configured:
            return
        directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f".{STATE_FILE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = directory / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            state = {}
        state.setdefault("ssh", {})
        state.setdefault("dns", {})
        change(state)
        temp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(state, sort_keys=True))
        os.replace(temp, path)
        write_textfile(render_lever_textfile(state), directory / TEXTFILE)
