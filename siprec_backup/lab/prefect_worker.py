"""The lab's Prefect process worker, polling the work pool ``siprec-backup`` every 2 seconds.

It runs deployments (registered from deployments/prefect.yaml) as subprocesses of the project's
virtualenv, in the project directory. Importing Prefect takes 1-2 s, so the worker process is
started together with the server: a tiny bootstrap imports the Prefect CLI while the server
migrates, waits for ``/api/health``, then runs ``prefect worker start``.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

from siprec_backup.lab import _process
from siprec_backup.lab.prefect_server import prefect_env
from siprec_backup.lab.service import LabContext, Service, ServiceRecord

WORK_POOL = "siprec-backup"
WORKER_NAME = "siprec-lab-worker"
QUERY_SECONDS = "2"

#: Run by the worker's interpreter: argv = [health_url, timeout_s, *prefect_cli_args].
_BOOT = """\
import sys, time, urllib.request
from prefect.cli import app
import prefect.cli.worker, prefect.workers.process
health, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(health, timeout=2) as r:
            if r.read().strip() == b"true":
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"the Prefect server did not become healthy: {health}")
    time.sleep(0.05)
sys.argv = ["prefect", *sys.argv[3:]]
sys.exit(app())
"""


def project_dir() -> Path | None:
    """The source checkout holding this package (where deployments/prefect.yaml lives), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def _online_since(api_url: str, since: float) -> bool:
    """Whether a worker of the pool is ONLINE with a heartbeat newer than ``since`` (epoch s)."""
    try:
        r = httpx.post(f"{api_url}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=2.0)
        if r.status_code != 200:
            return False
        for w in r.json():
            beat = w.get("last_heartbeat_time")
            if (
                w.get("status") == "ONLINE"
                and beat
                and datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp() >= since
            ):
                return True
    except (httpx.HTTPError, ValueError):
        return False
    return False


class PrefectWorker(Service):
    """``prefect worker start --pool siprec-backup --type process``; the worker creates the pool."""

    name = "prefect-worker"
    group = "prefect"
    uses = ("prefect-server",)
    listens = False
    stop_timeout = 20.0

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Start the worker process at once; ready when the pool shows it ONLINE."""
        port = ctx.port("prefect-server")
        base = f"http://127.0.0.1:{port}"
        api_url = f"{base}/api"
        home = ctx.root / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        cwd = project_dir() or ctx.root
        env = prefect_env(ctx, home, api_url)
        env["PREFECT_WORKER_QUERY_SECONDS"] = QUERY_SECONDS
        since = time.time() - 1.0
        proc = _process.spawn(
            [
                sys.executable,
                "-c",
                _BOOT,
                f"{api_url}/health",
                "150",
                "worker",
                "start",
                "--pool",
                WORK_POOL,
                "--type",
                "process",
                "--name",
                WORKER_NAME,
            ],
            log=ctx.log(self.name),
            env=env,
            cwd=cwd,
        )
        ticks = self.launch(ctx, proc, lambda: _online_since(api_url, since), timeout=180.0)
        return ServiceRecord(
            name=self.name,
            pid=proc.pid,
            host=None,
            port=None,
            log=ctx.log(self.name),
            started_ticks=ticks,
            facts={
                "work_pool": WORK_POOL,
                "worker_name": WORKER_NAME,
                "api_url": api_url,
                "cwd": str(cwd),
                "query_seconds": int(QUERY_SECONDS),
            },
        )

    def is_ready(self, record: ServiceRecord) -> bool:
        """A worker of the pool is ONLINE (heartbeat within Prefect's window)."""
        return _online_since(record.fact("api_url"), 0.0)
