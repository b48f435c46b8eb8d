"""The lab's Prefect server: ``prefect server start`` on a free port, SQLite in ``<lab>/prefect``.

Prefect is started as a subprocess (the engine never imports it) and watched through its HTTP
API. A fresh database costs 4-5 s of migrations, so the first start keeps a snapshot of the
migrated database in a cache directory and later starts copy it in (about half the start time).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
from importlib import metadata
from pathlib import Path

import httpx

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.service import LabContext, Service, ServiceRecord

LOOPBACK = "127.0.0.1"

#: Rows a running server adds that must not leak from the template into another lab.
_INSTANCE_TABLES = (
    "worker",
    "work_queue",
    "work_pool",
    "events",
    "event_resources",
    "configuration",
    "automation",
    "deployment",
    "flow_run",
    "flow",
)


def prefect_executable() -> Path:
    """The ``prefect`` CLI of the running interpreter's environment (the venv)."""
    cand = Path(sys.executable).parent / "prefect"
    if cand.is_file():
        return cand
    found = shutil.which("prefect")
    if found:
        return Path(found)
    raise LabError(
        f"the prefect CLI was not found next to {sys.executable} nor on PATH: "
        "install siprec-backup with its dependencies (pip install -e .)"
    )


def cache_dir() -> Path:
    """Where the migrated template database is kept: ``$SIPREC_LAB_CACHE`` or
    ``$XDG_CACHE_HOME/siprec-backup/lab`` (default ``~/.cache/siprec-backup/lab``)."""
    env = os.environ.get("SIPREC_LAB_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "siprec-backup" / "lab"


def template_path() -> Path:
    """The template for the installed Prefect version (migrations differ between versions)."""
    try:
        version = metadata.version("prefect")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return cache_dir() / f"prefect-{version}.db"


def save_template(db: Path, template: Path) -> None:
    """Snapshot a running server's database consistently (SQLite backup API), strip what belongs
    to that server instance, and publish it atomically. Best effort: the cache is optional."""
    tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            tables = {
                r[0] for r in dst.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            dst.execute("PRAGMA foreign_keys = OFF")
            for table in _INSTANCE_TABLES:
                if table in tables:
                    dst.execute(f'DELETE FROM "{table}"')
            dst.commit()
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            src.close()
            dst.close()
        os.replace(tmp, template)
    except (OSError, sqlite3.Error):
        with contextlib.suppress(OSError):
            tmp.unlink()


def prefect_env(ctx: LabContext, home: Path, api_url: str) -> dict[str, str]:
    """The environment of the lab's Prefect processes: no inherited PREFECT_* settings (a user's
    profile or another lab's API URL), home and API URL of this lab, no analytics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def healthy(base_url: str) -> bool:
    """Whether ``GET <base>/api/health`` answers ``true``."""
    try:
        r = httpx.get(f"{base_url}/api/health", timeout=2.0)
        return r.status_code == 200 and r.json() is True
    except (httpx.HTTPError, ValueError):
        return False


class PrefectServer(Service):
    """``prefect server start`` with its SQLite database in ``<lab>/prefect``."""

    name = "prefect-server"
    group = "prefect"
    stop_timeout = 20.0

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Start the server (from the cached template database when there is one) and wait
        until ``/api/health`` is true."""
        port = ctx.port(self.name)
        base = f"http://{LOOPBACK}:{port}"
        home = ctx.root / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        db = home / "prefect.db"
        template = template_path()
        from_template = False
        if not db.exists() and template.is_file():
            shutil.copyfile(template, db)
            from_template = True
        fresh_without_template = not db.exists()
        if not _process.port_is_free(port):
            raise LabError(f"{self.name}: port {port} on 127.0.0.1 is already in use")
        env = prefect_env(ctx, home, f"{base}/api")
        if from_template:
            # The template was migrated and got the block types from this very Prefect
            # version: skipping both checks saves ~0.7 s of the start.
            env["PREFECT_API_DATABASE_MIGRATE_ON_START"] = "false"
            env["PREFECT_API_BLOCKS_REGISTER_ON_START"] = "false"
        proc = _process.spawn(
            [prefect_executable(), "server", "start", "--host", LOOPBACK, "--port", str(port)],
            log=ctx.log(self.name),
            env=env,
            cwd=home,
        )
        try:
            ticks = self.launch(ctx, proc, lambda: healthy(base), timeout=120.0)
        except LabError:
            if from_template:  # a damaged template must not break every later start
                with contextlib.suppress(OSError):
                    template.unlink()
            raise
        if fresh_without_template:
            save_template(db, template)
        return ServiceRecord(
            name=self.name,
            pid=proc.pid,
            host=LOOPBACK,
            port=port,
            log=ctx.log(self.name),
            started_ticks=ticks,
            facts={
                "api_url": f"{base}/api",
                "ui_url": base,
                "home": str(home),
                "from_template": from_template,
            },
        )

    def reset(self, root: Path) -> None:
        """Remove a database left by an interrupted first start."""
        for name in ("prefect.db", "prefect.db-wal", "prefect.db-shm"):
            with contextlib.suppress(FileNotFoundError):
                (root / "prefect" / name).unlink()

    def is_ready(self, record: ServiceRecord) -> bool:
        """``/api/health`` answers true."""
        return healthy(record.fact("ui_url"))
