"""Two loopback HTTP backends, "app-a" and "app-b", in one small Python process: the servers the
lab's HAProxy and nginx balance.

Each answers every GET with its own name, so a test sees where a request went, and
``/slow?seconds=N`` holds the connection N seconds first (at most 60), to create live sessions for
drain tests. Run as ``python -m siprec_backup.lab.http_backends --port-a A --port-b B``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.service import LabContext, Service, ServiceRecord

LOOPBACK = "127.0.0.1"
NAMES = ("app-a", "app-b")
MAX_SLOW = 60.0


def _handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/slow":
                try:
                    seconds = float(parse_qs(url.query).get("seconds", ["1"])[0])
                except ValueError:
                    seconds = 1.0
                time.sleep(min(max(seconds, 0.0), MAX_SLOW))
            body = f"{name}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def serve(ports: dict[str, int]) -> None:
    """Serve each named backend on its port until killed."""
    servers = []
    for name, port in ports.items():
        server = ThreadingHTTPServer((LOOPBACK, port), _handler(name))
        server.daemon_threads = True
        servers.append(server)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    print(f"serving {ports}", flush=True)
    for t in threads:
        t.join()


@dataclass(frozen=True)
class HttpBackendsEndpoint:
    """The two backends' addresses (``host:port``) and URLs."""

    addresses: dict[str, str]

    def url(self, name: str) -> str:
        """``http://host:port`` of backend ``name`` ("app-a" or "app-b")."""
        return f"http://{self.addresses[name]}"

    @classmethod
    def from_record(cls, record: ServiceRecord) -> HttpBackendsEndpoint:
        """Build the endpoint from the lab.json record."""
        return cls({name: record.fact(name) for name in NAMES})


class HttpBackends(Service):
    """The "app-a" and "app-b" backends: ``ctx.port`` for app-a, a free port for app-b."""

    name = "http-backends"
    group = "http-backends"
    stop_timeout = 5.0

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Spawn the process and wait until both backends answer."""
        ports = {"app-a": ctx.port(self.name), "app-b": _process.free_ports(1)[0]}
        for port in ports.values():
            if not _process.port_is_free(port):
                raise LabError(f"{self.name}: port {port} on 127.0.0.1 is already in use")
        argv = [sys.executable, "-m", "siprec_backup.lab.http_backends"]
        argv += ["--port-a", str(ports["app-a"]), "--port-b", str(ports["app-b"])]
        proc = _process.spawn(argv, log=ctx.log(self.name), cwd=ctx.root)
        facts = {name: f"{LOOPBACK}:{port}" for name, port in ports.items()}
        ticks = self.launch(ctx, proc, lambda: self._answers(facts), timeout=20.0)
        return ServiceRecord(
            name=self.name,
            pid=proc.pid,
            host=LOOPBACK,
            port=ports["app-a"],
            log=ctx.log(self.name),
            started_ticks=ticks,
            facts=dict(facts),
        )

    @staticmethod
    def _answers(addresses: dict[str, str]) -> bool:
        try:
            return all(
                httpx.get(f"http://{addr}/", timeout=1.0).text.strip() == name
                for name, addr in addresses.items()
            )
        except httpx.HTTPError:
            return False

    def is_ready(self, record: ServiceRecord) -> bool:
        """Both backends answer with their names."""
        return self._answers({name: record.fact(name) for name in NAMES})


def main(argv: list[str] | None = None) -> None:
    """Entry point of the backends process."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-a", type=int, required=True)
    parser.add_argument("--port-b", type=int, required=True)
    args = parser.parse_args(argv)
    serve({"app-a": args.port_a, "app-b": args.port_b})


if __name__ == "__main__":
    main()
