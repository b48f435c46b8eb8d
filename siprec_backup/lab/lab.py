"""The lab: a throwaway SIPREC data tier (PostgreSQL primary + replica, Prefect server + worker)
on free loopback ports under one directory, described by ``<lab>/lab.json``.

``up`` starts every server of the registry in parallel as far as their dependencies allow (the
slow Prefect server first), ``down`` stops them in reverse dependency order by their own PIDs.
The state file is written after each server is ready, so an interrupted ``up`` can still be
taken ``down``; it holds the application password and is therefore mode 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets as _secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.bind import TSIG_SECRET as BIND_TSIG_SECRET
from siprec_backup.lab.bind import BindEndpoint, BindPrimary, BindSecondary, new_tsig_secret
from siprec_backup.lab.haproxy import PASSWORD_SECRET as HAPROXY_PASSWORD_SECRET
from siprec_backup.lab.haproxy import HAProxyEndpoint, HAProxyService
from siprec_backup.lab.http_backends import HttpBackends, HttpBackendsEndpoint
from siprec_backup.lab.mariadb import PASSWORD_SECRET as MARIADB_PASSWORD_SECRET
from siprec_backup.lab.mariadb import REPL_PASSWORD_SECRET as MARIADB_REPL_PASSWORD_SECRET
from siprec_backup.lab.mariadb import MariaDBEndpoint, MariaDBPrimary, MariaDBReplica
from siprec_backup.lab.nginx import NginxEndpoint, NginxService
from siprec_backup.lab.object_stores import (
    LAB_BUCKET,
    Azurite,
    GCSEmulator,
    MotoS3,
    azurite_connection_string,
    lab_s3_store,
)
from siprec_backup.lab.postgres import (
    PASSWORD_SECRET,
    PostgresEndpoint,
    PostgresPrimary,
    PostgresReplica,
)
from siprec_backup.lab.prefect_server import PrefectServer
from siprec_backup.lab.prefect_worker import PrefectWorker
from siprec_backup.lab.redis import PASSWORD_SECRET as REDIS_PASSWORD_SECRET
from siprec_backup.lab.redis import RedisEndpoint, RedisPrimary, RedisReplica, RedisScratch
from siprec_backup.lab.service import LabContext, Service, ServiceRecord
from siprec_backup.lab.sshd import Sshd, SshEndpoint
from siprec_backup.storage import AzureBlobStore, GCSStore, ObjectStore

#: Where the lab lives unless ``root`` or ``$SIPREC_LAB_DIR`` says otherwise.
DEFAULT_LAB_DIR = Path("/tmp/siprec-backup-lab")  # noqa: S108 - a well-known, documented place
STATE_FILE = "lab.json"
MARKER_FILE = ".siprec-lab"
STATE_VERSION = 1

#: Every server of the lab, in start priority order (slowest first). Add new servers here.
SERVICES: list[Service] = [
    PrefectServer(),
    PostgresPrimary(),
    PostgresReplica(),
    MariaDBPrimary(),
    MariaDBReplica(),
    RedisPrimary(),
    RedisReplica(),
    RedisScratch(),
    HttpBackends(),
    HAProxyService(),
    NginxService(),
    BindPrimary(),
    BindSecondary(),
    Sshd(),
    MotoS3(),
    GCSEmulator(),
    Azurite(),
    PrefectWorker(),
]


@dataclass
class LabState:
    """The content of ``lab.json``: every server's record and the lab's secrets."""

    root: Path
    services: dict[str, ServiceRecord]
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    created_at: str = ""

    def postgres(self, role: str = "primary") -> PostgresEndpoint:
        """How to reach the PostgreSQL ``primary`` or ``replica``."""
        record, password = self._server("PostgreSQL", "postgres", role, PASSWORD_SECRET)
        return PostgresEndpoint.from_record(record, password)

    def mariadb(self, role: str = "primary") -> MariaDBEndpoint:
        """How to reach the MariaDB ``primary`` or ``replica``."""
        record, password = self._server("MariaDB", "mariadb", role, MARIADB_PASSWORD_SECRET)
        return MariaDBEndpoint.from_record(record, password)

    def bind(self, role: str = "primary") -> BindEndpoint:
        """How to reach the BIND ``primary`` (updates go there) or ``secondary``."""
        roles = ("primary", "secondary")
        record, secret = self._server("BIND", "bind", role, BIND_TSIG_SECRET, roles)
        return BindEndpoint.from_record(record, secret)

    def redis(self, role: str = "primary") -> RedisEndpoint:
        """How to reach the Redis ``primary``, ``replica`` or ``scratch`` (restore target)."""
        roles = ("primary", "replica", "scratch")
        record, password = self._server("Redis", "redis", role, REDIS_PASSWORD_SECRET, roles)
        return RedisEndpoint.from_record(record, password)

    def ssh(self) -> SshEndpoint:
        """How to log in to the lab's sshd (and where its systemctl stand-in is)."""
        return SshEndpoint.from_record(self._record("sshd"))

    def http_backends(self) -> HttpBackendsEndpoint:
        """The "app-a" and "app-b" HTTP backends behind HAProxy and nginx."""
        return HttpBackendsEndpoint.from_record(self._record("http-backends"))

    def haproxy(self) -> HAProxyEndpoint:
        """The lab's HAProxy: frontend, stats page (with its password) and runtime API."""
        try:
            password = self.secrets[HAPROXY_PASSWORD_SECRET]
        except KeyError:
            raise LabError(f"{self.state_file}: the HAProxy stats password is missing") from None
        return HAProxyEndpoint.from_record(self._record("haproxy"), password)

    def nginx(self) -> NginxEndpoint:
        """The lab's nginx and the upstream include file it reads."""
        return NginxEndpoint.from_record(self._record("nginx"))

    @property
    def prefect_api_url(self) -> str:
        """``PREFECT_API_URL`` of the lab's Prefect server."""
        return self._record("prefect-server").fact("api_url")

    @property
    def prefect_ui_url(self) -> str:
        """The Prefect UI of the lab."""
        return self._record("prefect-server").fact("ui_url")

    @property
    def state_file(self) -> Path:
        """``<root>/lab.json``."""
        return self.root / STATE_FILE

    @property
    def s3_endpoint(self) -> str:
        """The moto S3 endpoint URL (any credentials, e.g. ``testing``/``testing``)."""
        return self._record("s3").fact("endpoint")

    @property
    def gcs_endpoint(self) -> str:
        """The GCS emulator's endpoint URL (no credentials)."""
        return self._record("gcs").fact("endpoint")

    @property
    def azure_connection_string(self) -> str:
        """Azurite's connection string (its development key is public, still never log it)."""
        return azurite_connection_string(self._record("azurite").fact("endpoint"))

    def object_store(self, kind: str, bucket: str = LAB_BUCKET) -> ObjectStore:
        """An engine store on the lab's ``s3``, ``gcs`` or ``azure`` emulator."""
        if kind == "s3":
            return lab_s3_store(self.s3_endpoint, bucket)
        if kind == "gcs":
            return GCSStore(bucket, endpoint=self.gcs_endpoint)
        if kind == "azure":
            return AzureBlobStore(bucket, connection_string=self.azure_connection_string)
        raise LabError(f"unknown object store {kind!r}: use 's3', 'gcs' or 'azure'")

    def alive(self) -> dict[str, bool]:
        """Whether each recorded server still runs."""
        return {name: rec.alive() for name, rec in self.services.items()}

    def _server(
        self,
        title: str,
        prefix: str,
        role: str,
        secret: str,
        roles: tuple[str, ...] = ("primary", "replica"),
    ) -> tuple[ServiceRecord, str]:
        """The record of server ``<prefix>-<role>`` and its password from the lab's secrets."""
        if role not in roles:
            choices = ", ".join(repr(r) for r in roles)
            raise LabError(f"unknown {title} role {role!r}: use {choices}")
        record = self._record(f"{prefix}-{role}")
        try:
            return record, self.secrets[secret]
        except KeyError:
            raise LabError(f"{self.state_file}: the {title} password is missing") from None

    def _record(self, name: str) -> ServiceRecord:
        try:
            return self.services[name]
        except KeyError:
            hint = " (the lab was started with --no-prefect?)" if name.startswith("prefect") else ""
            raise LabError(f"{name} is not part of the lab at {self.root}{hint}") from None

    def to_json(self, *, include_secrets: bool = False) -> dict[str, Any]:
        """The JSON form; secrets only when writing the 0600 state file itself."""
        data: dict[str, Any] = {
            "version": STATE_VERSION,
            "root": str(self.root),
            "created_at": self.created_at,
            "services": {name: rec.to_json() for name, rec in self.services.items()},
        }
        if "prefect-server" in self.services:
            data["prefect"] = {"api_url": self.prefect_api_url, "ui_url": self.prefect_ui_url}
        if include_secrets:
            data["secrets"] = dict(self.secrets)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        """Parse ``lab.json``."""
        return cls(
            root=Path(data["root"]),
            services={name: ServiceRecord.from_json(rec) for name, rec in data["services"].items()},
            secrets=dict(data.get("secrets") or {}),
            created_at=str(data.get("created_at", "")),
        )


def default_root() -> Path:
    """``$SIPREC_LAB_DIR`` or :data:`DEFAULT_LAB_DIR`."""
    env = os.environ.get("SIPREC_LAB_DIR")
    return Path(env) if env else DEFAULT_LAB_DIR


class Lab:
    """Start, inspect and stop the lab under ``root``."""

    def __init__(self, root: Path | None = None, *, services: Sequence[Service] | None = None):
        self.root = Path(os.path.abspath(root if root is not None else default_root()))
        self.services = list(SERVICES if services is None else services)
        self._by_name = {s.name: s for s in self.services}

    @property
    def state_file(self) -> Path:
        """``<root>/lab.json``."""
        return self.root / STATE_FILE

    # --- public API --------------------------------------------------------------------------

    def up(
        self,
        *,
        scale_mb: int = 0,
        prefect: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> LabState:
        """Start the lab, or only its dead servers if it is already up, then grow the seed data
        to about ``scale_mb`` MiB (0: schema only). ``progress`` gets the data size in bytes."""
        wanted = [s for s in self.services if prefect or s.group != "prefect"]
        with self._locked(create=True):
            state = self._read()
            fresh = state is None
            if state is None:
                self._prepare_fresh_dir()
                state = LabState(
                    root=self.root,
                    services={},
                    secrets={PASSWORD_SECRET: _secrets.token_urlsafe(24)},
                    created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                )
            state.secrets.setdefault(REDIS_PASSWORD_SECRET, _secrets.token_urlsafe(24))
            state.secrets.setdefault(HAPROXY_PASSWORD_SECRET, _secrets.token_urlsafe(24))
            state.secrets.setdefault(MARIADB_PASSWORD_SECRET, _secrets.token_urlsafe(24))
            state.secrets.setdefault(MARIADB_REPL_PASSWORD_SECRET, _secrets.token_urlsafe(24))
            state.secrets.setdefault(BIND_TSIG_SECRET, new_tsig_secret())
            todo = [s for s in wanted if not self._running(state, s.name)]
            if todo:
                self._start(state, todo, fresh=fresh)
        if scale_mb > 0:
            from siprec_backup.lab import seed

            seed.fill(state.postgres().conninfo(), scale_mb, progress=progress)
        return state

    def down(self, *, keep: bool = False) -> None:
        """Stop every server; remove the lab directory unless ``keep`` (then a later ``up``
        restarts the servers on their data, ports and password)."""
        if not self.root.exists():
            return
        with self._locked(create=False):
            state = self._read()
            if state is not None:
                self._stop(state, list(state.services))
            elif not (self.root / MARKER_FILE).exists() and any(self.root.iterdir()):
                raise LabError(f"{self.root} is not a lab directory: refusing to delete it")
            self._stop_orphans()
            if not keep:
                shutil.rmtree(self.root, ignore_errors=True)
                if self.root.exists():
                    shutil.rmtree(self.root)

    def state(self) -> LabState:
        """The lab's state from ``lab.json``."""
        state = self._read()
        if state is None:
            raise LabError(
                f"the lab is not running (no {self.state_file}): run `siprec-backup lab up`"
            )
        return state

    # --- state file --------------------------------------------------------------------------

    def _read(self) -> LabState | None:
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LabError(f"cannot read {self.state_file}: {exc}") from exc
        try:
            state = LabState.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise LabError(f"{self.state_file} is damaged ({exc}): run `lab down`") from exc
        state.root = self.root
        return state

    def _write(self, state: LabState) -> None:
        """Atomically replace lab.json, readable by its owner only (it holds the password)."""
        fd, tmp = tempfile.mkstemp(prefix=".lab.", suffix=".json", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)
                json.dump(state.to_json(include_secrets=True), f, indent=2)
                f.write("\n")
            os.replace(tmp, self.state_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self, *, create: bool) -> Iterator[None]:
        """Serialise ``up``/``down`` of one lab across processes (flock on the directory)."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _prepare_fresh_dir(self) -> None:
        """Empty a previous lab's leftovers (only if marked as a lab), then mark the directory."""
        marker = self.root / MARKER_FILE
        entries = list(self.root.iterdir())
        if entries and not marker.exists():
            raise LabError(
                f"{self.root} is not empty and is not a lab directory: choose another --dir"
            )
        self._stop_orphans()
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        os.chmod(self.root, 0o755)  # noqa: S103 - the postgres account must traverse it
        marker.write_text("siprec-backup lab directory: `siprec-backup lab down` removes it\n")

    # --- starting and stopping ---------------------------------------------------------------

    @staticmethod
    def _running(state: LabState, name: str) -> bool:
        rec = state.services.get(name)
        return rec is not None and rec.alive()

    def service(self, name: str) -> Service:
        """The registered server called ``name``."""
        try:
            return self._by_name[name]
        except KeyError:
            raise LabError(f"the lab has no server called {name!r}") from None

    def _service(self, name: str) -> Service | None:
        return self._by_name.get(name)

    def _start(self, state: LabState, todo: list[Service], *, fresh: bool) -> None:
        """Start ``todo`` in dependency order, in parallel; on failure stop what this call
        started and re-raise."""
        ports = {n: r.port for n, r in state.services.items() if r.port is not None}
        new = [s.name for s in todo if s.listens and s.name not in ports]
        ports.update(zip(new, _process.free_ports(len(new)), strict=True))
        for svc in todo:
            if svc.name not in state.services:  # never started: clear an interrupted attempt
                svc.stop_orphans(self.root)
                svc.reset(self.root)
        alive = {n: r for n, r in state.services.items() if r.alive()}
        ctx = LabContext(root=self.root, ports=ports, secrets=state.secrets, records=dict(alive))
        self._write(state)

        started: list[str] = []
        pending = {s.name: s for s in todo}
        error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="lab-start") as pool:
            running: dict[Future[ServiceRecord], Service] = {}
            try:
                while pending or running:
                    for name, svc in list(pending.items()):
                        if error is None and all(d in ctx.records for d in svc.after):
                            running[pool.submit(svc.start, ctx)] = svc
                            del pending[name]
                    if not running:
                        if error is None:
                            missing = {n: s.after for n, s in pending.items()}
                            error = LabError(f"lab services wait for unknown servers: {missing}")
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        svc = running.pop(fut)
                        try:
                            record = fut.result()
                        except BaseException as exc:
                            if error is None:
                                error = exc
                            ctx.cancel.set()
                            continue
                        ctx.add(record)
                        state.services[svc.name] = record
                        started.append(svc.name)
                        self._write(state)
            except BaseException as exc:  # KeyboardInterrupt while waiting
                ctx.cancel.set()
                if error is None:
                    error = exc
        if error is not None:
            self._stop(state, started)
            if fresh:
                with contextlib.suppress(OSError):
                    self.state_file.unlink()
            else:
                self._write(state)
            raise error

    def _stop(self, state: LabState, names: list[str]) -> None:
        """Stop servers in waves: a server stops only after every server using it stopped."""
        remaining = set(names)
        errors: list[str] = []
        while remaining:
            wave = [
                n for n in remaining if not any(n in self._deps(m) for m in remaining if m != n)
            ] or list(remaining)
            with ThreadPoolExecutor(max_workers=len(wave), thread_name_prefix="lab-stop") as pool:
                futures = {n: pool.submit(self._stop_one, state.services[n]) for n in wave}
                for n, fut in futures.items():
                    try:
                        fut.result()
                    except LabError as exc:
                        errors.append(f"{n}: {exc}")
            remaining -= set(wave)
        if errors:
            raise LabError("could not stop every lab server: " + "; ".join(errors))

    def _stop_orphans(self) -> None:
        for svc in reversed(self.services):
            svc.stop_orphans(self.root)

    def _deps(self, name: str) -> tuple[str, ...]:
        svc = self._service(name)
        return svc.dependencies() if svc is not None else ()

    def _stop_one(self, record: ServiceRecord) -> None:
        svc = self._service(record.name)
        if svc is not None:
            svc.stop(record)
        else:  # recorded by a newer version of the lab: stop it the generic way
            _process.stop_process(record.pid, record.started_ticks, group=True)


def format_status(state: LabState) -> str:
    """A human-readable table of what runs where, plus the URLs and connection strings."""
    order = {s.name: i for i, s in enumerate(SERVICES)}
    records = sorted(state.services.values(), key=lambda r: (order.get(r.name, len(order)), r.name))
    rows = [("SERVICE", "PID", "STATE", "ADDRESS", "LOG")]
    rows += [
        (r.name, str(r.pid), "alive" if r.alive() else "DEAD", r.address, str(r.log))
        for r in records
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"lab {state.root} (created {state.created_at or '?'})"]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    ]
    facts: list[tuple[str, str]] = []
    if "prefect-server" in state.services:
        facts.append(("Prefect UI", state.prefect_ui_url))
        facts.append(("PREFECT_API_URL", state.prefect_api_url))
        worker = state.services.get("prefect-worker")
        if worker is not None:
            facts.append(("work pool", str(worker.facts.get("work_pool"))))
    for role in ("primary", "replica"):
        if f"postgres-{role}" in state.services:
            facts.append((f"PostgreSQL {role}", state.postgres(role).dsn()))
    if "postgres-primary" in state.services:
        superuser = state.postgres().superuser
        facts.append(("PostgreSQL superuser", f"{superuser!r}: no password from 127.0.0.1"))
    for role in ("primary", "replica"):
        if f"mariadb-{role}" in state.services:
            facts.append((f"MariaDB {role}", state.mariadb(role).dsn()))
    for role in ("primary", "replica", "scratch"):
        if f"redis-{role}" in state.services:
            redis = state.redis(role)
            facts.append((f"Redis {role}", f"redis://{redis.host}:{redis.port}"))
    if "haproxy" in state.services:
        haproxy = state.haproxy()
        facts.append(("HAProxy", f"{haproxy.frontend_url} (stats {haproxy.stats_url})"))
        facts.append(("HAProxy runtime API", f"{haproxy.runtime_tcp} or {haproxy.runtime_socket}"))
    if "nginx" in state.services:
        nginx = state.nginx()
        facts.append(("nginx", f"{nginx.url} (upstream {nginx.upstream}: {nginx.include})"))
    for role in ("primary", "secondary"):
        if f"bind-{role}" in state.services:
            bind = state.bind(role)
            facts.append((f"BIND {role}", f"{bind.address} zone {bind.zone} key {bind.key_name}"))
    if "sshd" in state.services:
        ssh = state.ssh()
        facts.append(("SSH", f"{ssh.user}@{ssh.host} -p {ssh.port} -i {ssh.client_key}"))
    if "s3" in state.services:
        facts.append(("S3 endpoint", f"{state.s3_endpoint} (bucket {LAB_BUCKET})"))
    if "gcs" in state.services:
        facts.append(("GCS endpoint", f"{state.gcs_endpoint} (bucket {LAB_BUCKET})"))
    if "azurite" in state.services:
        facts.append(("Azure Blob", f"{state.services['azurite'].fact('endpoint')}"))
    secrets = ", ".join(sorted(state.secrets))
    facts.append(("passwords", f"{state.state_file} secrets ({secrets})"))
    width = max((len(k) for k, _ in facts), default=0) + 2
    lines.append("")
    lines += [f"{k + ':':{width}}{v}" for k, v in facts]
    return "\n".join(lines)
