"""The lever flows on the lab's real servers: drain a HAProxy server under live traffic, re-point
nginx, change all six DNS record types and verify them on BIND's primary and secondary, lower and
restore a TTL, run audited commands and service actions over SSH."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments.lab_blocks import LEVERS, save_lever_blocks
from flows.dns_change import DnsChange, dns_change, dns_ttl
from flows.load_balancer import lb_repoint, lb_server_state
from flows.remote_command import remote_command, remote_service
from siprec_backup.dns import RecordSet
from siprec_backup.errors import CommandFailedError, ConfigurationError
from siprec_backup.lab import LabState
from siprec_backup.lab.sshd import FAKE_ACTIVE_UNIT
from siprec_backup.traffic import UP, UP_TRANSITIONAL, ServerState
from tests.e2e.conftest import artifact, wait_for_events


@pytest.fixture(scope="module")
def levers(lab: LabState) -> LabState:
    save_lever_blocks(lab)
    return lab


# -- load balancers --------------------------------------------------------------------------


@pytest.fixture
def haproxy_ready(levers: LabState) -> Iterator[LabState]:
    yield levers
    lb = levers.haproxy().load_balancer()
    for name in ("app-a", "app-b"):
        lb.set_state("app", name, ServerState.READY)
    deadline = time.monotonic() + 5
    while {s.state for s in lb.servers()} - {UP, UP_TRANSITIONAL}:
        assert time.monotonic() < deadline, lb.servers()
        time.sleep(0.05)


def test_drain_under_live_traffic_waits_until_sessions_end(haproxy_ready: LabState) -> None:
    frontend = haproxy_ready.haproxy().frontend_url
    lb = haproxy_ready.haproxy().load_balancer()
    ended: list[float] = []

    def hold() -> None:
        httpx.get(f"{frontend}/slow?seconds=5", timeout=15)
        ended.append(time.monotonic())

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while lb.server("app", "app-a").current_sessions == 0:
        assert time.monotonic() < deadline, "the slow requests did not reach app-a"
        time.sleep(0.02)
    held = lb.server("app", "app-a").current_sessions

    summary = lb_server_state(
        LEVERS["haproxy"], "app", "app-a", ServerState.DRAIN, drain_deadline_seconds=30
    )
    returned = time.monotonic()
    for thread in threads:
        thread.join()

    assert held >= 1
    assert summary["state"] == "drain"
    assert summary["status"] == "DRAIN"
    assert summary["sessions"] == 0
    assert returned >= min(ended)  # it waited for the held sessions on app-a to end
    assert {httpx.get(frontend, timeout=5).text.strip() for _ in range(6)} == {"app-b"}
    table = artifact(f"lb-{LEVERS['haproxy']}")
    assert "set drain" in table.description
    events = wait_for_events(
        "siprec.lb.server.drain", f"siprec.lb-server.{LEVERS['haproxy']}.app.app-a"
    )
    assert events and events[0].payload["sessions"] == 0


def test_listing_only_and_unknown_server(levers: LabState) -> None:
    listed = lb_server_state(LEVERS["haproxy"])
    assert [(s["backend"], s["server"]) for s in listed["servers"]] == [
        ("app", "app-a"),
        ("app", "app-b"),
    ]
    state = lb_server_state(LEVERS["haproxy"], "app", "app-z", ServerState.MAINT, return_state=True)
    assert state.is_failed()
    assert "app/app-z" in str(state.message)


def test_nginx_repoint_moves_traffic_and_back(levers: LabState) -> None:
    nginx = levers.nginx()
    backends = levers.http_backends().addresses
    try:
        summary = lb_repoint(LEVERS["nginx"], nginx.upstream, [backends["app-b"]])
        assert summary["seconds"] < 10
        assert {httpx.get(nginx.url, timeout=5).text.strip() for _ in range(4)} == {"app-b"}
    finally:
        lb_repoint(LEVERS["nginx"], nginx.upstream, [backends["app-a"]])
    assert httpx.get(nginx.url, timeout=5).text.strip() == "app-a"
    refused = lb_repoint(LEVERS["haproxy"], "app", ["127.0.0.1:1"], return_state=True)
    assert refused.is_failed()
    assert "rewrites nginx upstream files" in str(refused.message)


# -- DNS --------------------------------------------------------------------------------------

SIX = [
    DnsChange(action="create", name="flow-a", type="A", ttl=120, values=["10.9.0.1"]),
    DnsChange(action="create", name="flow-aaaa", type="AAAA", ttl=120, values=["2001:db8::9"]),
    DnsChange(action="create", name="flow-cname", type="CNAME", ttl=120, values=["flow-a"]),
    DnsChange(action="create", name="flow-mx", type="MX", ttl=120, values=["10 flow-a"]),
    DnsChange(action="create", name="flow-txt", type="TXT", ttl=120, values=["cutover=blue"]),
    DnsChange(
        action="create", name="_sip._tcp.flow", type="SRV", ttl=120, values=["10 5 5060 flow-a"]
    ),
]


def served_on_both(lab: LabState, name: str, rtype: str) -> list[RecordSet]:
    primary = lab.bind("primary")
    secondary = lab.bind("secondary")
    return [
        primary.client().lookup(name, rtype),
        secondary.client().lookup(name, rtype),
    ]


def test_dns_dry_run_sends_nothing(levers: LabState) -> None:
    zone = levers.bind("primary").client()
    serial = zone.serial()
    result = dns_change(LEVERS["dns"], SIX[:1], dry_run=True)
    assert result["applied"] is False
    assert result["plan"] == ["create flow-a.siprec.lab. 120 A 10.9.0.1"]
    assert zone.serial() == serial
    assert "nothing sent" in artifact(f"dns-plan-{LEVERS['dns']}").data


def test_dns_change_of_all_six_types_verified_on_both_nameservers(levers: LabState) -> None:
    created = dns_change(LEVERS["dns"], SIX)
    assert created["applied"] and created["propagation_seconds"] is not None
    for change in SIX:
        for served in served_on_both(levers, change.name, change.type):
            assert served.present and served.ttl == 120
    rows = artifact(f"dns-propagation-{LEVERS['dns']}").data
    assert str(created["serial"]) in rows

    replaced = dns_change(
        LEVERS["dns"],
        [DnsChange(action="replace", name="flow-a", type="A", ttl=60, values=["10.9.0.2"])],
    )
    assert replaced["serial"] > created["serial"]
    assert [s.values for s in served_on_both(levers, "flow-a", "A")] == [("10.9.0.2",)] * 2

    deleted = dns_change(
        LEVERS["dns"],
        [DnsChange(action="delete", name=c.name, type=c.type) for c in reversed(SIX)],
    )
    assert deleted["applied"]
    for change in SIX:
        assert not any(s.present for s in served_on_both(levers, change.name, change.type))
    events = wait_for_events("siprec.dns.changed", "siprec.dns-zone.siprec.lab")
    assert events and "propagation_seconds" in events[0].payload


def test_dns_create_of_an_existing_record_fails_the_run(levers: LabState) -> None:
    state = dns_change(
        LEVERS["dns"],
        [DnsChange(action="create", name="db", type="A", values=["10.9.9.9"])],
        return_state=True,
    )
    assert state.is_failed()
    assert "YXRRSET" in str(state.message)


def test_dns_ttl_lowered_then_restored(levers: LabState) -> None:
    lowered = dns_ttl(LEVERS["dns"], "app", "A", 30)
    assert lowered["changed"] and lowered["ttl"] == 30
    previous = lowered["previous_ttl"]
    assert [s.ttl for s in served_on_both(levers, "app", "A")] == [30, 30]
    restored = dns_ttl(LEVERS["dns"], "app", "A", previous, restore=True)
    assert restored["previous_ttl"] == 30 and restored["ttl"] == previous
    assert [s.ttl for s in served_on_both(levers, "app", "A")] == [previous, previous]


# -- SSH --------------------------------------------------------------------------------------


def test_remote_commands_stream_and_are_audited(
    levers: LabState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIPREC_METRICS_TEXTFILE_DIR", str(tmp_path))
    results = remote_command(LEVERS["ssh"], ["echo out-line; echo err-line >&2", "echo second"])
    assert [r["exit_status"] for r in results] == [0, 0]
    assert "out-line" in results[0]["stdout_tail"] and "err-line" in results[0]["stderr_tail"]

    failed = remote_command(
        LEVERS["ssh"], ["true", "echo failing >&2; exit 3", "echo never"], return_state=True
    )
    assert failed.is_failed()
    assert "step 2 of 3" in str(failed.message)
    with pytest.raises(CommandFailedError):
        failed.result()
    audit = artifact(f"ssh-audit-{LEVERS['ssh']}").data
    assert "exit 3" in audit and "echo never" not in audit
    events = wait_for_events("siprec.ssh.command", f"siprec.host.{levers.ssh().host}")
    assert events and {"actor", "command", "exit_status"} <= set(events[0].payload)
    assert events[0].payload["actor"].startswith("prefect flow run ")
    host = levers.ssh().host
    metrics = (tmp_path / "siprec_levers.prom").read_text()
    assert f'siprec_ssh_commands_total{{host="{host}",result="ok"}} 3\n' in metrics
    assert f'siprec_ssh_commands_total{{host="{host}",result="failed"}} 1\n' in metrics


def test_remote_service_actions_and_hostile_unit(levers: LabState) -> None:
    systemctl = str(levers.ssh().systemctl)
    active = remote_service(LEVERS["ssh"], "is-active", FAKE_ACTIVE_UNIT, systemctl=systemctl)
    assert active["active"] is True
    restarted = remote_service(LEVERS["ssh"], "restart", "siprec-db.service", systemctl=systemctl)
    assert restarted["exit_status"] == 0
    assert "siprec-db.service" in restarted["stdout_tail"]
    hostile = remote_service(
        LEVERS["ssh"], "stop", "x; touch /tmp/pwned-by-flow", systemctl=systemctl, return_state=True
    )
    assert hostile.is_failed()
    with pytest.raises(ConfigurationError):
        hostile.result()
