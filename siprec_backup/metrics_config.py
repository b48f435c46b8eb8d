"""``siprec-backup metrics`` without Prefect: the YAML configuration and the collector behind it.

The file names the stores whose catalogs give the backup and verification figures, and the
replicated clusters whose nodes each scrape checks::

    timeout_seconds: 5                  # per node and check (default 5)
    thresholds: {max_lag_seconds: 30}   # default for every cluster (fields of Thresholds)
    stores:
      - url: s3://siprec-backups/rec-eu1   # as `siprec-backup backup list --store` takes it
        cluster: rec-eu1                   # optional: only this cluster's backups
    clusters:
      - name: rec-eu1-pg
        kind: postgres                     # postgres | mysql | redis
        thresholds: {max_lag_bytes: 67108864}
        nodes:
          - name: pg1
            role: primary
            url: postgresql://monitor@db1.example.net:5432/postgres
            password_env: PG_MONITOR_PASSWORD
    load_balancers:                        # server states and sessions, read each scrape
      - name: lb1
        type: haproxy                      # haproxy | nginx_plus
        runtime_api: 10.0.0.5:9999         # or endpoint: http://lb1:8404/stats (+ username)
      - name: lb2
        type: nginx_plus
        endpoint: https://lb2:8080/api
        username: metrics
        password_env: NGINX_PLUS_PASSWORD

Passwords never appear in the file: ``password_env`` names the environment variable holding a
node's password (without it: no password, or the client's own, e.g. ``~/.pgpass``). Any problem
is one :class:`ConfigurationError` line naming the file, the field and the problem.

:class:`MetricsCollector` renders the exposition: one replication pass per call, and each
store's catalog read at most once per ``catalog_ttl`` seconds (listing a cloud store and reading
every manifest per scrape would be costly). A store that cannot be read shows as
``siprec_catalog_up{store} 0``, never as a failed scrape.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from siprec_backup.catalog import CatalogEntry, list_backups
from siprec_backup.errors import ConfigurationError, LoadBalancerError, SiprecBackupError
from siprec_backup.lever_metrics import add_load_balancer_metrics
from siprec_backup.metrics import (
    Registry,
    add_backup_metrics,
    add_replication_metrics,
    add_verification_metrics,
    serve,
)
from siprec_backup.replication import ReplicationNode, Thresholds, check_nodes
from siprec_backup.replication.check import NodeTarget
from siprec_backup.replication.health import one_line
from siprec_backup.storage import LocalStore, ObjectStore, open_store_url
from siprec_backup.targets import _SCHEMES, restore_target
from siprec_backup.traffic import HAProxy, LoadBalancer, NginxPlus, ServerStatus

# -- the file's shape ----------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThresholdsConfig(_Model):
    """The fields of :class:`Thresholds`; unset ones keep its defaults."""

    max_lag_bytes: int | None = Thresholds.max_lag_bytes
    max_lag_seconds: float | None = Thresholds.max_lag_seconds
    broken_lag_bytes: int | None = None
    broken_lag_seconds: float | None = None
    min_replicas: int = 0
    max_retained_bytes: int | None = Thresholds.max_retained_bytes


class NodeConfig(_Model):
    name: str = Field(min_length=1)
    role: Literal["primary", "replica"]
    url: str = Field(min_length=1, description="postgresql://, mysql:// or redis:// target.")
    password_env: str | None = Field(
        default=None, min_length=1, description="Environment variable holding the password."
    )
    application_name: str | None = Field(
        default=None, description="PostgreSQL standbys: their name in pg_stat_replication."
    )
    heartbeat_table: str | None = Field(
        default=None, description="MySQL/MariaDB: database.table for heartbeat lag."
    )


class ClusterConfig(_Model):
    name: str = Field(min_length=1)
    kind: Literal["postgres", "mysql", "redis"]
    thresholds: ThresholdsConfig | None = None
    nodes: list[NodeConfig] = Field(min_length=1)


class StoreConfig(_Model):
    url: str = Field(min_length=1)
    cluster: str = ""


class LoadBalancerConfig(_Model):
    name: str = Field(min_length=1)
    type: Literal["haproxy", "nginx_plus"]
    runtime_api: str | None = Field(default=None, description="HAProxy: host:port or socket.")
    endpoint: str | None = Field(default=None, description="Stats page or NGINX Plus API URL.")
    username: str | None = None
    password_env: str | None = Field(default=None, min_length=1)


class MetricsFile(_Model):
    timeout_seconds: float = Field(default=5.0, gt=0)
    thresholds: ThresholdsConfig = ThresholdsConfig()
    stores: list[StoreConfig] = Field(default_factory=list)
    clusters: list[ClusterConfig] = Field(default_factory=list)
    load_balancers: list[LoadBalancerConfig] = Field(default_factory=list)


# -- the validated configuration -----------------------------------------------------------------


@dataclass(frozen=True)
class StoreSource:
    """One store to read the catalog of; ``label`` (its metrics label) is its URL without the
    query, or the name of its storage block."""

    label: str
    store: ObjectStore
    prefix: str
    cluster: str


@dataclass(frozen=True)
class MetricsConfig:
    """What a scrape reads: the nodes, their thresholds by cluster, and the stores."""

    nodes: list[ReplicationNode]
    thresholds: dict[str, Thresholds]
    stores: list[StoreSource]
    timeout: float
    load_balancers: dict[str, LoadBalancer] = dataclasses.field(default_factory=dict)


class _FieldError(Exception):
    """A problem at one field; load_config adds the file name."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


def load_config(path: Path, environ: dict[str, str] | None = None) -> MetricsConfig:
    """Read and validate `path`; ConfigurationError ``<path>: <field>: <problem>`` if bad."""
    env = dict(os.environ if environ is None else environ)
    try:
        return _build(_read(path), env)
    except _FieldError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        problem = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigurationError(f"{path}: {where}: {problem}") from None


def _read(path: Path) -> MetricsFile:
    try:
        with path.open(encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path} is not valid YAML: {one_line(str(exc))}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigurationError(f"{path}: document: expected a mapping")
    return MetricsFile.model_validate(data or {})


def _build(data: MetricsFile, env: dict[str, str]) -> MetricsConfig:
    if not data.stores and not data.clusters and not data.load_balancers:
        raise _FieldError("document", "no stores, clusters or load balancers: nothing to measure")
    thresholds = {"*": _thresholds(data.thresholds, "thresholds")}
    nodes: list[ReplicationNode] = []
    for i, cluster in enumerate(data.clusters):
        where = f"clusters.{i}"
        if cluster.name in thresholds:
            raise _FieldError(f"{where}.name", f"cluster {cluster.name!r} is listed twice")
        chosen = cluster.thresholds or data.thresholds
        thresholds[cluster.name] = _thresholds(chosen, f"{where}.thresholds")
        names: set[str] = set()
        for j, node in enumerate(cluster.nodes):
            if node.name in names:
                raise _FieldError(f"{where}.nodes.{j}.name", f"node {node.name!r} is listed twice")
            names.add(node.name)
            nodes.append(_node(cluster, node, f"{where}.nodes.{j}", env))
    stores = [_store(store, f"stores.{i}") for i, store in enumerate(data.stores)]
    balancers: dict[str, LoadBalancer] = {}
    for i, lb in enumerate(data.load_balancers):
        if lb.name in balancers:
            raise _FieldError(f"load_balancers.{i}.name", f"{lb.name!r} is listed twice")
        balancers[lb.name] = _load_balancer(lb, f"load_balancers.{i}", env, data.timeout_seconds)
    return MetricsConfig(nodes, thresholds, stores, data.timeout_seconds, balancers)


def _load_balancer(
    config: LoadBalancerConfig, where: str, env: dict[str, str], timeout: float
) -> LoadBalancer:
    password = None
    if config.password_env is not None:
        password = env.get(config.password_env)
        if not password:
            raise _FieldError(f"{where}.password_env", f"${config.password_env} is not set")
    try:
        if config.type == "haproxy":
            return HAProxy(
                runtime=config.runtime_api,
                stats_url=config.endpoint,
                stats_user=config.username,
                stats_password=password,
                timeout=timeout,
            )
        if config.endpoint is None:
            raise _FieldError(f"{where}.endpoint", "the NGINX Plus API URL is required")
        return NginxPlus(
            config.endpoint, username=config.username, password=password, timeout=timeout
        )
    except LoadBalancerError as exc:
        raise _FieldError(where, str(exc)) from None


def _thresholds(config: ThresholdsConfig, where: str) -> Thresholds:
    try:
        return Thresholds(**config.model_dump())
    except ConfigurationError as exc:
        raise _FieldError(where, str(exc)) from None


def _node(
    cluster: ClusterConfig, node: NodeConfig, where: str, env: dict[str, str]
) -> ReplicationNode:
    if urlsplit(node.url).password is not None:
        raise _FieldError(f"{where}.url", "no password in the URL: name a variable in password_env")
    if node.application_name and cluster.kind != "postgres":
        raise _FieldError(f"{where}.application_name", "only PostgreSQL nodes take one")
    if node.heartbeat_table and cluster.kind != "mysql":
        raise _FieldError(f"{where}.heartbeat_table", "only MySQL/MariaDB nodes take one")
    schemes = _SCHEMES[cluster.kind]
    if urlsplit(node.url).scheme not in schemes:
        needed = " or ".join(f"{s}://" for s in schemes)
        raise _FieldError(
            f"{where}.url", f"a {cluster.kind} node needs a {needed} URL, not {node.url!r}"
        )
    try:
        target = restore_target(cluster.kind, node.url)
    except ConfigurationError as exc:
        raise _FieldError(f"{where}.url", str(exc)) from None
    assert isinstance(target, NodeTarget)  # the scheme check excludes RDB files
    password = None
    if node.password_env is not None:
        password = env.get(node.password_env)
        if not password:
            raise _FieldError(f"{where}.password_env", f"${node.password_env} is not set")
    return ReplicationNode(
        cluster.name,
        node.name,
        node.role,
        dataclasses.replace(target, password=password),
        application_name=node.application_name,
        heartbeat_table=node.heartbeat_table,
    )


def _store(config: StoreConfig, where: str) -> StoreSource:
    try:
        store, prefix = open_store_url(config.url)
    except ConfigurationError as exc:
        raise _FieldError(f"{where}.url", str(exc)) from None
    if isinstance(store, LocalStore) and not store.root.is_dir():
        raise _FieldError(f"{where}.url", f"directory {store.root} does not exist")
    parts = urlsplit(config.url)
    label = config.url if config.url.startswith("/") else parts._replace(query="").geturl()
    return StoreSource(label, store, prefix, config.cluster)


# -- the collector -------------------------------------------------------------------------------


@dataclass
class _CatalogRead:
    entries: list[CatalogEntry]
    ok: bool
    at: float


class MetricsCollector:
    """Renders the exposition: a replication pass per call, catalogs cached for ``catalog_ttl``.

    Safe to call from several threads at once (concurrent scrapes): a store's catalog is read
    by one of them while the others wait for it. ``warn`` receives one line per failed read.
    """

    def __init__(
        self,
        config: MetricsConfig,
        *,
        catalog_ttl: float = 0.0,
        warn: Callable[[str], None] = lambda line: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if catalog_ttl < 0:
            raise ConfigurationError(f"the catalog TTL must be >= 0 seconds, got {catalog_ttl:g}")
        self.config = config
        self.catalog_ttl = catalog_ttl
        self._warn = warn
        self._clock = clock
        self._lock = threading.Lock()
        self._catalogs: dict[int, _CatalogRead] = {}

    def collect(self) -> str:
        """The whole exposition text of one scrape."""
        registry = Registry()
        started = time.perf_counter()
        records = check_nodes(
            self.config.nodes, self.config.thresholds, timeout=self.config.timeout
        )
        add_replication_metrics(registry, records)
        registry.gauge(
            "siprec_replication_check_duration_seconds",
            "How long this scrape's replication check of every node took.",
        ).set(round(time.perf_counter() - started, 6))
        entries = self._catalog_metrics(registry)
        add_backup_metrics(registry, entries)
        add_verification_metrics(registry, entries)
        for name, lb in self.config.load_balancers.items():
            add_load_balancer_metrics(registry, name, self._servers(name, lb))
        return registry.render()

    def _servers(self, name: str, lb: LoadBalancer) -> list[ServerStatus] | None:
        """The load balancer's servers, or None (and a warning) if it did not answer."""
        try:
            return lb.servers()
        except LoadBalancerError as exc:
            self._warn(f"cannot read load balancer {name}: {one_line(str(exc))}")
            return None

    def _catalog_metrics(self, registry: Registry) -> list[CatalogEntry]:
        up = registry.gauge(
            "siprec_catalog_up", "1 if the store's catalog was read, 0 if not.", ("store",)
        )
        age = registry.gauge(
            "siprec_catalog_age_seconds",
            "Age of the catalog read these figures come from.",
            ("store",),
        )
        entries: list[CatalogEntry] = []
        for i, source in enumerate(self.config.stores):
            read = self._catalog(i, source)
            up.set(1 if read.ok else 0, store=source.label)
            age.set(round(self._clock() - read.at, 3), store=source.label)
            entries.extend(read.entries)
        return entries

    def _catalog(self, index: int, source: StoreSource) -> _CatalogRead:
        with self._lock:
            cached = self._catalogs.get(index)
            if cached is not None and cached.ok and self._clock() - cached.at < self.catalog_ttl:
                return cached
            try:
                entries = list_backups(source.store, source.prefix, cluster=source.cluster)
                read = _CatalogRead(entries, True, self._clock())
            except Exception as exc:  # a store outage must not fail the scrape
                # Only our own errors' text is known to be free of secrets.
                why = str(exc) if isinstance(exc, SiprecBackupError) else type(exc).__name__
                self._warn(f"cannot read the catalog of {source.label}: {one_line(why)}")
                read = _CatalogRead([], False, self._clock())
            self._catalogs[index] = read
            return read


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv4 address or a name; port 0: a free one) as (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigurationError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9187")
    return host, int(port)


def serve_until_stopped(
    collector: MetricsCollector, host: str, port: int, announce: Callable[[str], None]
) -> None:
    """Serve ``GET /metrics`` until SIGTERM or SIGINT (Ctrl-C), then stop cleanly. Call it from
    the main thread (signal handlers can only be installed there)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            server = serve(host, port, collector.collect)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        with server:
            announce(server.url)
            stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
