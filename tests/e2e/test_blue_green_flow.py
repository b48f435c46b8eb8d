"""The blue-green flow on real servers: two small HTTP servers (blue on 127.0.20.1, green on
127.0.20.2) behind a throwaway HAProxy, an A record on the lab's BIND primary and secondary.
Cut over to green; refuse an unhealthy green; roll back by itself when green fails during the
watch; cut back to blue; refuse a second cutover while one holds the lock."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.concurrency.sync import concurrency

from blocks.blue_green import BlueGreenCutover
from blocks.load_balancers import HAProxyLoadBalancer
from deployments.lab_blocks import LEVERS, save_lever_blocks
from flows._journal import read_journal
from flows.blue_green import CutoverRequest, blue_green, lock_name
from flows.failover import ensure_limit
from siprec_backup.dns import Change
from siprec_backup.errors import FailoverLockedError, SafetyRefusalError
from siprec_backup.failover.health import HealthCheckFailedError
from siprec_backup.lab import LabState
from siprec_backup.lab.cluster_haproxy import ClusterHAProxy
from siprec_backup.lab.clusters import ClusterNode
from siprec_backup.traffic import HAProxy
from tests.conftest import run_cli
from tests.e2e.conftest import artifact, wait_for_events

BLUE, GREEN = "127.0.20.1", "127.0.20.2"
TTL = 120


class ColourServer:
    """An HTTP server answering its colour on ``/`` and ``ok`` on ``/health``; ``healthy``
    False (or more than ``healthy_for`` health requests) makes ``/health`` answer 500."""

    def __init__(self, colour: str, host: str) -> None:
        self.colour = colour
        self.healthy = True
        self.healthy_for: int | None = None
        self.health_requests = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, 0), self._handler())
        self.httpd.daemon_threads = True
        self.host, self.port = host, int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _health_ok(self) -> bool:
        with self._lock:
            self.health_requests += 1
            within = self.healthy_for is None or self.health_requests <= self.healthy_for
            return self.healthy and within

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/health":
                    ok = server._health_ok()
                    self._answer(200 if ok else 500, b"ok" if ok else b"failing")
                else:
                    self._answer(200, server.colour.encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.port}/health"

    def node(self) -> ClusterNode:
        return ClusterNode(self.colour, self.host, self.port, unit="")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@dataclass
class Cutover:
    """A started blue-green setup: its servers, HAProxy, record and block."""

    name: str
    backend: str
    record: str
    blue: ColourServer
    green: ColourServer
    haproxy: ClusterHAProxy
    lab: LabState

    def request(self, **kw: Any) -> CutoverRequest:
        kw.setdefault("dry_run", False)
        return CutoverRequest(cutover=self.name, reason="test: new release", **kw)

    def through_lb(self, requests: int = 6) -> set[str]:
        """The colours answering new connections through HAProxy's frontend."""
        host, port = self.haproxy.frontend(self.backend)
        return {httpx.get(f"http://{host}:{port}/", timeout=5).text for _ in range(requests)}

    def lb_states(self) -> dict[str, str]:
        lever = HAProxy(runtime=self.haproxy.runtime, timeout=2)
        return {s.server: s.state for s in lever.servers() if s.backend == self.backend}

    def dns(self) -> dict[str, tuple[tuple[str, ...], int]]:
        """The record's addresses and TTL on BIND's primary and secondary, asked directly."""
        answers = {}
        for role in ("primary", "secondary"):
            served = self.lab.bind(role).client().lookup(self.record, "A")
            answers[role] = (served.values, served.ttl)
        return answers

    def serial(self) -> int:
        return self.lab.bind("primary").client().serial()


@pytest.fixture
def cutover(lab: LabState) -> Iterator[Cutover]:
    save_lever_blocks(lab)
    suffix = uuid.uuid4().hex[:6]
    name, backend, record = f"bg-{suffix}", f"web{suffix}", f"bg-{suffix}"
    nameservers = (lab.bind("primary").address, lab.bind("secondary").address)
    dns = lab.bind("primary").client(nameservers=nameservers)
    blue, green = ColourServer("blue", BLUE), ColourServer("green", GREEN)
    root = Path(tempfile.mkdtemp(prefix="siprec-blue-green-"))
    haproxy = ClusterHAProxy(root)
    created = False
    try:
        haproxy.add_backend(backend, [blue.node(), green.node()], primary="blue")
        haproxy.start()  # blue serving, green disabled (MAINT)
        dns.wait_propagated(dns.apply([Change.create(record, "A", TTL, BLUE)]), deadline=30)
        created = True
        HAProxyLoadBalancer(runtime_api=haproxy.runtime, timeout_seconds=2).save(
            f"{name}-lb", overwrite=True
        )
        BlueGreenCutover(
            name=name,
            load_balancer=f"{name}-lb",
            blue_servers=[f"{backend}/blue"],
            green_servers=[f"{backend}/green"],
            dns_zone=LEVERS["dns"],
            dns_records=[record],
            blue_addresses=[BLUE],
            green_addresses=[GREEN],
            dns_ttl=TTL,
            prepare_ttl=5,
            blue_checks=[blue.health_url],
            green_checks=[green.health_url, f"tcp://{GREEN}:{green.port}"],
            watch_seconds=3,
            check_interval_seconds=0.5,
            failures_to_roll_back=2,
            check_timeout_seconds=2,
        ).save(name, overwrite=True)
        yield Cutover(name, backend, record, blue, green, haproxy, lab)
    finally:
        haproxy.stop()
        blue.stop()
        green.stop()
        shutil.rmtree(root, ignore_errors=True)
        if created:
            dns.apply([Change.delete(record, "A")])


def artifact_text(key: str) -> str:
    return str(artifact(key).data)


def audit_of(run: Cutover) -> dict[str, Any]:
    """The audit trail the run published (the JSON block of its artifact)."""
    markdown = artifact_text(f"blue-green-{run.name}")
    assert run.lab.bind("primary").key_secret not in markdown
    return dict(json.loads(markdown.split("```json\n", 1)[1].split("\n```", 1)[0]))


def steps(audit: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["key"], s["target"], s["status"]) for s in audit["steps"]]


def test_cutover_to_green_completes(cutover: Cutover) -> None:
    backend = cutover.backend
    before = cutover.lb_states()
    serial = cutover.serial()
    assert before == {"blue": "up", "green": "maint"}
    assert cutover.through_lb() == {"blue"}

    plan = blue_green(cutover.request(dry_run=True))
    assert plan["outcome"] == "dry-run"
    assert [(s["server"], s["after"]) for s in plan["plan"]["servers"]] == [
        (f"{backend}/green", "ready"),
        (f"{backend}/blue", "maint"),
    ]
    assert plan["plan"]["records"][0]["now"] == [BLUE]
    assert plan["plan"]["records"][0]["after"] == [GREEN]
    assert f"{cutover.green.health_url}: ok" in artifact_text(f"blue-green-plan-{cutover.name}")
    assert cutover.lb_states() == before and cutover.serial() == serial

    result = blue_green(cutover.request())
    assert result["outcome"] == "completed" and result["target"] == "green"
    assert cutover.through_lb() == {"green"}
    assert cutover.lb_states() == {"blue": "maint", "green": "up"}
    assert cutover.dns() == {"primary": ((GREEN,), TTL), "secondary": ((GREEN,), TTL)}
    audit = audit_of(cutover)
    assert audit["outcome"] == "completed" and audit["mode"] == "blue-green"
    assert steps(audit) == [
        ("preflight-checks", "green", "done"),
        ("dns-prepare", f"{cutover.record}.siprec.lab.", "done"),
        ("lb-ready", f"{backend}/green", "done"),
        ("lb-serving", f"{backend}/green", "done"),
        ("lb-drain", f"{backend}/blue", "done"),
        ("lb-maint", f"{backend}/blue", "done"),
        ("dns-switch", f"{cutover.record}.siprec.lab.", "done"),
        ("watch", "green", "done"),
        ("dns-ttl", f"{cutover.record}.siprec.lab.", "done"),
    ]
    watch = next(s for s in audit["steps"] if s["key"] == "watch")
    assert watch["result"] == {"rounds": 7, "failed_rounds": 0}
    assert audit["rollbacks"] == []
    assert read_journal(cutover.name, "blue-green")["outcome"] == "completed"  # type: ignore[index]
    events = wait_for_events("siprec.blue-green.completed", f"siprec.cluster.{cutover.name}")
    assert events and events[0].payload["error"] is None


def test_unhealthy_green_is_refused_and_nothing_changes(cutover: Cutover) -> None:
    cutover.green.healthy = False
    before, serial = cutover.lb_states(), cutover.serial()
    with pytest.raises(SafetyRefusalError, match="green is not healthy, nothing changed"):
        blue_green(cutover.request())
    assert cutover.lb_states() == before
    assert cutover.serial() == serial
    assert cutover.dns() == {"primary": ((BLUE,), TTL), "secondary": ((BLUE,), TTL)}
    assert cutover.through_lb() == {"blue"}
    audit = audit_of(cutover)
    assert audit["outcome"] == "refused"
    assert steps(audit) == [("preflight-checks", "green", "failed")]
    assert "HTTP 500 (expected 200)" in audit["error"]


def test_green_failing_during_the_watch_rolls_everything_back(cutover: Cutover) -> None:
    # Healthy for the pre-flight and the first two watch rounds, then 500.
    cutover.green.healthy_for = 3
    serial = cutover.serial()
    with pytest.raises(HealthCheckFailedError, match="2 rounds in a row"):
        blue_green(cutover.request())

    cutover.haproxy.wait_serving(cutover.backend, "blue")
    assert cutover.through_lb() == {"blue"}
    assert cutover.lb_states() == {"blue": "up", "green": "maint"}
    assert cutover.dns() == {"primary": ((BLUE,), TTL), "secondary": ((BLUE,), TTL)}
    assert cutover.serial() > serial  # changed, then changed back
    audit = audit_of(cutover)
    assert audit["outcome"] == "rolled-back"
    assert audit["next_step"] is None  # every undo succeeded
    record = f"{cutover.record}.siprec.lab."
    backend = cutover.backend
    assert steps(audit)[-4:] == [
        ("dns-switch", record, "done"),
        ("watch", "green", "failed"),
        ("watch-round", "green", "failed"),
        ("watch-round", "green", "failed"),
    ]
    rounds = [s for s in audit["steps"] if s["key"] == "watch-round"]
    assert [r["result"]["round"] for r in rounds] == [3, 4]
    assert all("HTTP 500" in r["error"] for r in rounds)
    assert audit["rollbacks"] == [
        f"undone: DNS switch (back to {record} 5 A {BLUE})",
        f"undone: load balancer {backend}/blue (back to drain)",
        f"undone: load balancer {backend}/blue (back to ready)",
        f"undone: load balancer {backend}/green (back to maint)",
        f"undone: TTL of {record} (back to {TTL} s)",
    ]
    assert read_journal(cutover.name, "blue-green")["outcome"] == "rolled-back"  # type: ignore[index]


def test_cut_back_to_blue(cutover: Cutover) -> None:
    assert blue_green(cutover.request(watch_seconds=0))["outcome"] == "completed"
    assert cutover.through_lb() == {"green"}
    result = blue_green(cutover.request(target="blue", watch_seconds=1))
    assert result["outcome"] == "completed" and result["target"] == "blue"
    assert cutover.through_lb() == {"blue"}
    assert cutover.lb_states() == {"blue": "up", "green": "maint"}
    assert cutover.dns() == {"primary": ((BLUE,), TTL), "secondary": ((BLUE,), TTL)}
    assert [s[:2] for s in steps(audit_of(cutover))][:4] == [
        ("preflight-checks", "blue"),
        ("dns-prepare", f"{cutover.record}.siprec.lab."),
        ("lb-ready", f"{cutover.backend}/blue"),
        ("lb-serving", f"{cutover.backend}/blue"),
    ]


def test_a_second_cutover_is_refused_while_one_runs(cutover: Cutover) -> None:
    name = lock_name(cutover.name)
    ensure_limit(name)
    serial = cutover.serial()
    with (
        concurrency(name, occupy=1, timeout_seconds=5, strict=True, lease_duration=60),
        pytest.raises(FailoverLockedError, match="already running"),
    ):
        blue_green(cutover.request())
    assert cutover.serial() == serial
    assert cutover.lb_states() == {"blue": "up", "green": "maint"}


def test_cli_prints_the_plan(cutover: Cutover) -> None:
    env = {"PREFECT_API_URL": cutover.lab.prefect_api_url}
    done = run_cli("cutover", cutover.name, "--reason", "cli plan", "--target", "blue", env=env)
    assert done.returncode == 0, done.stderr
    assert f"# Blue-green plan for `{cutover.name}`: green -> **blue**" in done.stdout
    assert f"| {cutover.backend}/green | green | " in done.stdout
    bad = run_cli("cutover", cutover.name, "--reason", "cli plan", "--target", "red", env=env)
    assert bad.returncode == 1 and "--target must be green or blue" in bad.stderr
