"""nginx 1.22 for the lab: ``upstream app { include <lab>/nginx/upstream.conf; }`` pointing at
"app-a" first, a proxy on a free port, and ``stub_status`` at ``/nginx_status``.

Per the tested recipe: ``-p``/``-c``/``-e`` and every ``*_temp_path`` under the lab directory
(otherwise nginx writes to /var/log/nginx and /var/lib/nginx), ``daemon off`` so the spawned
process is the master, and SIGQUIT (graceful) to stop it.
"""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import httpx

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.service import LabContext, Service, ServiceRecord
from siprec_backup.remote.runner import CommandRunner, LocalRunner
from siprec_backup.traffic import Nginx, UpstreamEntry, render_upstream

UPSTREAM = "app"
LOOPBACK = "127.0.0.1"

_CONFIG = """\
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp_body;
    proxy_temp_path {d}/tmp_proxy;
    fastcgi_temp_path {d}/tmp_fcgi;
    uwsgi_temp_path {d}/tmp_uwsgi;
    scgi_temp_path {d}/tmp_scgi;
    upstream {upstream} {{ include {d}/upstream.conf; }}
    server {{
        listen {loopback}:{port};
        location / {{ proxy_pass http://{upstream}; }}
        location = /nginx_status {{ stub_status; }}
    }}
}}
"""


@dataclass(frozen=True)
class NginxEndpoint:
    """How to reach and drive the lab's nginx."""

    url: str
    status_url: str
    prefix: str
    conf: str
    error_log: str
    pid_file: str
    include: str
    upstream: str = UPSTREAM

    @property
    def nginx_args(self) -> tuple[str, ...]:
        """``-p <dir> -c <conf> -e <error log>``: the arguments naming this instance."""
        return ("-p", self.prefix, "-c", self.conf, "-e", self.error_log)

    def load_balancer(
        self, runner: CommandRunner | None = None, *, probe_expect: str | None = None
    ) -> Nginx:
        """The lever on this nginx (locally unless ``runner``), probing ``url`` if asked."""
        return Nginx(
            runner=runner or LocalRunner(),
            includes={self.upstream: self.include},
            pid_file=self.pid_file,
            nginx_args=self.nginx_args,
            probe_url=self.url if probe_expect else None,
            probe_expect=probe_expect,
        )

    @classmethod
    def from_record(cls, record: ServiceRecord) -> NginxEndpoint:
        """Build the endpoint from a lab.json record."""
        return cls(
            url=record.fact("url"),
            status_url=record.fact("status_url"),
            prefix=record.fact("prefix"),
            conf=record.fact("conf"),
            error_log=record.fact("error_log"),
            pid_file=record.fact("pid_file"),
            include=record.fact("include"),
            upstream=record.fact("upstream"),
        )


class NginxService(Service):
    """nginx proxying to "app-a" through the managed include file."""

    name = "nginx"
    group = "nginx"
    after = ("http-backends",)
    stop_signal = signal.SIGQUIT
    stop_timeout = 10.0

    def _dir(self, root: Path) -> Path:
        return root / "nginx"

    def reset(self, root: Path) -> None:
        """Remove what an interrupted first start left."""
        shutil.rmtree(self._dir(root), ignore_errors=True)

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Write the config and the include (app-a), spawn nginx, wait until it proxies."""
        binary = shutil.which("nginx")
        if binary is None:
            raise LabError("nginx not found: install it (Debian: apt-get install nginx-light)")
        port = ctx.port(self.name)
        if not _process.port_is_free(port):
            raise LabError(f"{self.name}: port {port} on 127.0.0.1 is already in use")
        d = self._dir(ctx.root)
        (d / "logs").mkdir(parents=True, exist_ok=True)
        include = d / "upstream.conf"
        if not include.exists():  # a restart keeps the upstream a test or an operator chose
            app_a = ctx.record("http-backends").fact("app-a")
            include.write_text(render_upstream([UpstreamEntry(app_a)]))
        conf = d / "nginx.conf"
        conf.write_text(_CONFIG.format(d=d, upstream=UPSTREAM, loopback=LOOPBACK, port=port))
        error_log = d / "logs" / "error.log"
        argv = [binary, "-p", str(d), "-c", str(conf), "-e", str(error_log)]
        proc = _process.spawn(argv, log=ctx.log(self.name), cwd=d)
        url = f"http://{LOOPBACK}:{port}"
        ticks = self.launch(ctx, proc, lambda: self._answers(url), timeout=20.0)
        return ServiceRecord(
            name=self.name,
            pid=proc.pid,
            host=LOOPBACK,
            port=port,
            log=ctx.log(self.name),
            started_ticks=ticks,
            facts={
                "url": url,
                "status_url": f"{url}/nginx_status",
                "prefix": str(d),
                "conf": str(conf),
                "error_log": str(error_log),
                "pid_file": str(d / "nginx.pid"),
                "include": str(include),
                "upstream": UPSTREAM,
            },
        )

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            return httpx.get(f"{url}/nginx_status", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def is_ready(self, record: ServiceRecord) -> bool:
        """``/nginx_status`` answers."""
        return self._answers(record.fact("url"))
