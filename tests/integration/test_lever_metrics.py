"""Lever metrics: load balancer server states read live by `siprec-backup metrics` (the lab's
HAProxy through its stats page with a password from the environment, and one that does not
answer), and the SSH/DNS counters the flows accumulate in a node_exporter textfile."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from siprec_backup.lab import LabState
from siprec_backup.lever_metrics import (
    STATE_FILE,
    TEXTFILE,
    record_dns_update,
    record_ssh_commands,
)
from siprec_backup.remote.audit import AuditRecord
from siprec_backup.traffic import UP, UP_TRANSITIONAL, ServerState
from tests.conftest import run_cli

lab = pytest.mark.lab


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@lab
def test_metrics_command_reads_load_balancer_states(lab: LabState, tmp_path: Path) -> None:
    haproxy = lab.haproxy()
    config = tmp_path / "metrics.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "timeout_seconds": 2,
                "load_balancers": [
                    {
                        "name": "lab-haproxy",
                        "type": "haproxy",
                        "endpoint": haproxy.stats_url,
                        "username": haproxy.stats_user,
                        "password_env": "LAB_STATS_PASSWORD",
                    },
                    {
                        "name": "gone",
                        "type": "haproxy",
                        "runtime_api": f"127.0.0.1:{closed_port()}",
                    },
                ],
            }
        )
    )
    env = {"LAB_STATS_PASSWORD": haproxy.stats_password}
    lb = haproxy.load_balancer()
    lb.set_state("app", "app-a", ServerState.DRAIN)
    try:
        done = run_cli("metrics", "--config", str(config), "--once", env=env)
    finally:
        lb.set_state("app", "app-a", ServerState.READY)
        deadline = time.monotonic() + 5
        while lb.server("app", "app-a").state not in (UP, UP_TRANSITIONAL):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert 'siprec_lb_up{lb="lab-haproxy"} 1\n' in out
    assert 'siprec_lb_up{lb="gone"} 0\n' in out
    a = 'lb="lab-haproxy",backend="app",server="app-a"'
    b = 'lb="lab-haproxy",backend="app",server="app-b"'
    assert f'siprec_lb_server_state{{{a},state="drain"}} 1\n' in out
    assert f'siprec_lb_server_state{{{a},state="up"}} 0\n' in out
    assert f'siprec_lb_server_state{{{b},state="up"}} 1\n' in out
    assert f"siprec_lb_server_current_sessions{{{a}}} 0\n" in out
    assert "cannot read load balancer gone" in done.stderr
    assert haproxy.stats_password not in out + done.stderr


def test_a_missing_password_variable_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "metrics.yaml"
    config.write_text(
        "load_balancers:\n  - {name: lb, type: nginx_plus, endpoint: http://x/api,"
        " password_env: NOT_SET_FOR_THIS}\n"
    )
    done = run_cli("metrics", "--config", str(config), "--once")
    assert done.returncode == 1
    assert "load_balancers.0.password_env: $NOT_SET_FOR_THIS is not set" in done.stderr
    assert done.stderr.count("\n") == 1


def test_flow_figures_accumulate_in_the_textfile(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    records = [
        AuditRecord("me", "db1", "systemctl stop x", 0, now, 0.5),
        AuditRecord("me", "db1", "false", 1, now, 0.25),
        AuditRecord("me", "db2", "sleep 99", None, now, 2.0),
    ]
    record_ssh_commands(records, tmp_path)
    record_ssh_commands(records[:1], tmp_path)
    record_dns_update("siprec.lab.", 0.42, tmp_path)
    record_dns_update("siprec.lab.", None, tmp_path)
    text = (tmp_path / TEXTFILE).read_text()
    assert 'siprec_ssh_commands_total{host="db1",result="ok"} 2\n' in text
    assert 'siprec_ssh_commands_total{host="db1",result="failed"} 1\n' in text
    assert 'siprec_ssh_commands_total{host="db2",result="timeout"} 1\n' in text
    assert 'siprec_ssh_command_seconds_total{host="db1"} 1.25\n' in text
    assert 'siprec_dns_updates_total{zone="siprec.lab."} 2\n' in text
    assert 'siprec_dns_propagation_seconds{zone="siprec.lab."} 0.42\n' in text
    assert (tmp_path / STATE_FILE).is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_no_directory_no_textfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIPREC_METRICS_TEXTFILE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    record_dns_update("siprec.lab.", 0.1)
    assert list(tmp_path.iterdir()) == []
