"""Prometheus metrics in the text exposition format 0.0.4, without a client library.

A :class:`Registry` holds gauge and counter families with labels; :meth:`Registry.render` gives
the exposition text, :func:`write_textfile` writes it atomically for node_exporter's textfile
collector, and :func:`serve` answers ``GET /metrics`` on a small thread. The helpers build the
families of siprec-backup from plain inputs:

* :func:`add_replication_metrics`: ``siprec_replication_lag_bytes{cluster,node,kind}``,
  ``siprec_replication_lag_seconds{cluster,node,kind}`` (absent when unknown, e.g. an unreachable
  node) and ``siprec_replication_node_status{cluster,node,kind,status}``, one-hot: one sample per
  possible status, ``1`` for the current one, ``0`` for the others (alert with
  ``siprec_replication_node_status{status="broken"} == 1``; no numeric code to remember).
* :func:`add_backup_metrics` from catalog entries, per ``{cluster,source}`` of the newest complete
  backup: ``siprec_backup_duration_seconds``, ``siprec_backup_bytes`` (stored, encrypted),
  ``siprec_backup_plaintext_bytes``, ``siprec_backup_last_success_timestamp_seconds``; and
  ``siprec_backup_success``: 1 if the newest backup is complete, 0 if it is incomplete (failed,
  or still running while the catalog was read).
* :func:`add_verification_metrics` from the catalog entries' verification marks, per
  ``{cluster,source}``: ``siprec_verify_success`` (1 if the newest restore verification passed),
  ``siprec_verify_last_success_timestamp_seconds`` (the newest passing one) and
  ``siprec_verify_restore_duration_seconds`` (the newest one's restore time).

siprec_backup/metrics_config.py builds these from a YAML file for ``siprec-backup metrics``.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from siprec_backup.catalog import CatalogEntry
from siprec_backup.errors import ConfigurationError
from siprec_backup.verify.report import BackupVerification

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NODE_STATUSES = ("healthy", "lagging", "broken", "unreachable")

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped as the format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Backslash and newline escaped (quotes stay as they are in HELP lines)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a fraction, NaN and infinities as Prometheus spells them."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass
class MetricFamily:
    """One metric name with its HELP, TYPE, label names and samples (last set value wins)."""

    name: str
    type: str  # gauge | counter
    help: str
    labelnames: tuple[str, ...]
    samples: dict[tuple[str, ...], float] = field(default_factory=dict)

    def set(self, value: float, **labels: str) -> None:
        """Set the sample of this label set (exactly the family's label names)."""
        if set(labels) != set(self.labelnames):
            raise ConfigurationError(
                f"metric {self.name} takes labels {list(self.labelnames)}, got {sorted(labels)}"
            )
        if self.type == "counter" and value < 0:
            raise ConfigurationError(f"counter {self.name} cannot be negative ({value})")
        self.samples[tuple(str(labels[n]) for n in self.labelnames)] = value

    def inc(self, amount: float = 1, **labels: str) -> None:
        """Add `amount` to the sample of this label set (counters only go up)."""
        if amount < 0 and self.type == "counter":
            raise ConfigurationError(f"counter {self.name} cannot decrease")
        key = tuple(str(labels.get(n, "")) for n in self.labelnames)
        self.set(self.samples.get(key, 0) + amount, **labels)

    def render(self) -> str:
        lines = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.type}"]
        for values, value in self.samples.items():
            pairs = ",".join(
                f'{n}="{escape_label_value(v)}"'
                for n, v in zip(self.labelnames, values, strict=True)
            )
            labels = "{" + pairs + "}" if pairs else ""
            lines.append(f"{self.name}{labels} {format_value(value)}")
        return "\n".join(lines) + "\n"


class Registry:
    """Metric families in registration order; render() is the whole exposition."""

    def __init__(self) -> None:
        self._families: dict[str, MetricFamily] = {}

    def gauge(self, name: str, help: str, labelnames: Iterable[str] = ()) -> MetricFamily:
        return self._family(name, "gauge", help, tuple(labelnames))

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> MetricFamily:
        if not name.endswith("_total"):
            raise ConfigurationError(f"counter {name} must end in _total (Prometheus convention)")
        return self._family(name, "counter", help, tuple(labelnames))

    def _family(self, name: str, kind: str, text: str, labelnames: tuple[str, ...]) -> MetricFamily:
        if not _METRIC_NAME.fullmatch(name):
            raise ConfigurationError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ConfigurationError(f"invalid label name {label!r} for {name}")
        existing = self._families.get(name)
        if existing is not None:
            if (existing.type, existing.labelnames) != (kind, labelnames):
                raise ConfigurationError(f"metric {name} already registered differently")
            return existing
        family = MetricFamily(name, kind, text, labelnames)
        self._families[name] = family
        return family

    def get(self, name: str) -> MetricFamily:
        return self._families[name]

    def render(self) -> str:
        return "".join(family.render() for family in self._families.values())


def write_textfile(registry: Registry | str, path: str | Path) -> None:
    """Write the exposition to `path` atomically (temp file + rename in the same directory).

    node_exporter's textfile collector only reads ``*.prom`` files, and a rename is atomic, so
    it never sees a half-written file.
    """
    text = registry if isinstance(registry, str) else registry.render()
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# -- the HTTP endpoint ---------------------------------------------------------------------------


class MetricsServer:
    """A running /metrics endpoint; close() (or the with-block) stops it."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="siprec-metrics",
            daemon=True,
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(host: str, port: int, collect: Callable[[], str]) -> MetricsServer:
    """Answer ``GET /metrics`` with ``collect()`` on a daemon thread (port 0: a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")
                return
            try:
                body = collect().encode("utf-8")
            except Exception as exc:
                self._reply(500, "text/plain; charset=utf-8", f"{type(exc).__name__}\n".encode())
                return
            self._reply(200, CONTENT_TYPE, body)

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: a scrape every 15 s is not worth a log line."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return MetricsServer(server)


# -- siprec-backup's metric families -------------------------------------------------------------


class NodeLike(Protocol):
    """What the replication metrics read of a node's health (NodeHealth has these)."""

    @property
    def cluster(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def lag_bytes(self) -> int | None: ...
    @property
    def lag_seconds(self) -> float | None: ...


def add_replication_metrics(registry: Registry, nodes: Iterable[NodeLike]) -> Registry:
    """Lag and one-hot status per node (see the module docstring)."""
    labels = ("cluster", "node", "kind")
    lag_bytes = registry.gauge(
        "siprec_replication_lag_bytes", "Replication lag of a replica behind its primary.", labels
    )
    lag_seconds = registry.gauge(
        "siprec_replication_lag_seconds", "Replication delay of a replica in seconds.", labels
    )
    status = registry.gauge(
        "siprec_replication_node_status",
        "1 for the node's current health status, 0 for the others "
        "(healthy, lagging, broken, unreachable).",
        (*labels, "status"),
    )
    for node in nodes:
        names = {"cluster": node.cluster, "node": node.node, "kind": node.kind}
        if node.lag_bytes is not None:
            lag_bytes.set(node.lag_bytes, **names)
        if node.lag_seconds is not None:
            lag_seconds.set(node.lag_seconds, **names)
        if node.status not in NODE_STATUSES:
            raise ConfigurationError(f"unknown node status {node.status!r} for {node.node}")
        for name in NODE_STATUSES:
            status.set(1 if name == node.status else 0, **names, status=name)
    return registry


def add_backup_metrics(registry: Registry, entries: Iterable[CatalogEntry]) -> Registry:
    """Per (cluster, source): the newest backup's success and the newest complete one's figures."""
    labels = ("cluster", "source")
    duration = registry.gauge(
        "siprec_backup_duration_seconds", "Duration of the newest complete backup.", labels
    )
    stored = registry.gauge(
        "siprec_backup_bytes",
        "Stored (compressed, encrypted) size of the newest complete backup.",
        labels,
    )
    plain = registry.gauge(
        "siprec_backup_plaintext_bytes", "Plaintext size of the newest complete backup.", labels
    )
    success = registry.gauge(
        "siprec_backup_success", "1 if the newest backup is complete, 0 if incomplete.", labels
    )
    last = registry.gauge(
        "siprec_backup_last_success_timestamp_seconds",
        "Unix time the newest complete backup finished.",
        labels,
    )
    newest: dict[tuple[str, str], CatalogEntry] = {}
    newest_complete: dict[tuple[str, str], CatalogEntry] = {}
    for entry in entries:
        key = (entry.cluster, entry.source)
        if key not in newest or entry.backup_id > newest[key].backup_id:
            newest[key] = entry
        if entry.manifest is not None and entry.status == "complete":
            found = newest_complete.get(key)
            if found is None or entry.backup_id > found.backup_id:
                newest_complete[key] = entry
    for (cluster, source), entry in sorted(newest.items(), key=lambda item: item[0]):
        names = {"cluster": cluster, "source": source}
        complete = newest_complete.get((cluster, source))
        if complete is not None and complete.manifest is not None:
            manifest = complete.manifest
            duration.set((manifest.finished_at - manifest.started_at).total_seconds(), **names)
            stored.set(manifest.stored_bytes, **names)
            plain.set(manifest.object.plaintext_bytes, **names)
            last.set(manifest.finished_at.timestamp(), **names)
        success.set(1 if entry.status == "complete" else 0, **names)
    return registry


def add_verification_metrics(registry: Registry, entries: Iterable[CatalogEntry] = ()) -> Registry:
    """Per (cluster, source), from the backups' latest verifications (``verification.json``):
    whether the newest verification passed, when the newest passing one ran, and how long the
    newest one's restore took. Sources never verified have no samples."""
    labels = ("cluster", "source")
    ok = registry.gauge(
        "siprec_verify_success",
        "1 if the newest restore verification of the source passed, 0 if it failed.",
        labels,
    )
    last = registry.gauge(
        "siprec_verify_last_success_timestamp_seconds",
        "Unix time of the newest passing restore verification of the source.",
        labels,
    )
    duration = registry.gauge(
        "siprec_verify_restore_duration_seconds",
        "Restore time of the source in its newest restore verification.",
        labels,
    )
    newest: dict[tuple[str, str], BackupVerification] = {}
    newest_passed: dict[tuple[str, str], BackupVerification] = {}
    for entry in entries:
        mark = entry.verification
        if mark is None:
            continue
        key = (entry.cluster, entry.source)
        if key not in newest or mark.verified_at > newest[key].verified_at:
            newest[key] = mark
        if mark.passed and (
            key not in newest_passed or mark.verified_at > newest_passed[key].verified_at
        ):
            newest_passed[key] = mark
    for (cluster, source), mark in sorted(newest.items(), key=lambda item: item[0]):
        ok.set(1 if mark.passed else 0, cluster=cluster, source=source)
        duration.set(mark.restore_seconds, cluster=cluster, source=source)
        passed = newest_passed.get((cluster, source))
        if passed is not None:
            last.set(passed.verified_at.timestamp(), cluster=cluster, source=source)
    return registry
