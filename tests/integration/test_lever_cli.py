"""The lever commands (`blocks apply`, `lb`, `dns`, `ssh`) against the lab's real Prefect
server, HAProxy, nginx, BIND primary + secondary and sshd.

One YAML file in the seed's shape describes every lever, secrets as ${VAR} passed through the
environment. `blocks apply` saves it to Prefect; the other commands read it with --config. Each
group has at least one run as an operator runs it (a `siprec-backup` process of its own, for
--config with PREFECT_API_URL at a closed port: the break-glass path needs no Prefect server); the
other runs call the same entry point, ``siprec_backup.cli.main``, in this process, because each
new process spends seconds importing Prefect. Every output is checked for the stats password,
the TSIG secret and the private key.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import dns.name
import httpx
import pytest

from blocks.load_balancers import HAProxyLoadBalancer
from blocks.ssh import SshHost
from siprec_backup.cli import main
from siprec_backup.cli_levers import parse_change, split_values
from siprec_backup.dns import Change, Nameserver
from siprec_backup.dns.propagation import served
from siprec_backup.errors import ConfigurationError
from siprec_backup.lab import LabState
from siprec_backup.lab.bind import ZONE
from siprec_backup.lab.sshd import FAKE_ACTIVE_UNIT
from siprec_backup.traffic import DRAIN, UP, UP_TRANSITIONAL, ServerState
from tests.conftest import CLI, run_cli

pytestmark = pytest.mark.lab

CONFIG = """\
load_balancer:
  - name: cli-haproxy
    type: haproxy
    runtime_api: {runtime}
    endpoint: {stats_url}
    username: {stats_user}
    password: ${{CLI_STATS_PASSWORD}}
  - name: cli-haproxy-stats
    type: haproxy
    endpoint: {stats_url}
    username: {stats_user}
    password: ${{CLI_STATS_PASSWORD}}
  - name: cli-nginx
    type: nginx
    includes: {{app: {include}}}
    pid_file: {pid_file}
    nginx: {nginx}
    nginx_args: {nginx_args}
    ssh_host: cli-ssh
dns:
  name: cli-dns
  provider: bind
  zone: {zone}
  primary: "{primary}"
  nameservers: ["{primary}", "{secondary}"]
  credentials: {{key_name: {key_name}, algorithm: {algorithm}, secret: "${{CLI_TSIG_SECRET}}"}}
ssh:
  - name: cli-ssh
    host: {ssh_host}
    port: {ssh_port}
    username: {ssh_user}
    private_key: ${{CLI_SSH_KEY}}
    known_hosts: "{known_hosts}"
"""


Result = subprocess.CompletedProcess[str]


@dataclass(frozen=True)
class Levers:
    """The configuration file, the environment its ${VAR}s need, and the secrets in it."""

    path: Path
    env: dict[str, str]
    secrets: tuple[str, ...]

    def process(self, *args: str, prefect: str | None = None) -> Result:
        """A `siprec-backup ARGS` process with only the file's variables; Prefect at `prefect`,
        else at a closed port."""
        env = {**self.env, "PREFECT_API_URL": prefect or f"http://127.0.0.1:{closed_port()}/api"}
        return self._no_secrets(run_cli(*args, env=env, timeout=120))

    def run(self, *args: str) -> Result:
        """`siprec-backup ARGS` through ``main()`` in this process (Prefect: the lab's)."""
        out, err = io.StringIO(), io.StringIO()
        code: int | str | None = 0
        with (
            mock.patch.dict(os.environ, self.env),
            mock.patch.object(sys, "argv", ["siprec-backup", *args]),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                main()
            except SystemExit as exc:
                code = exc.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        return self._no_secrets(Result(args, status, out.getvalue(), err.getvalue()))

    def lever(self, group: str, command: str, name: str, *args: str) -> list[str]:
        """`GROUP COMMAND --config FILE --name NAME ARGS` in this process: stdout lines."""
        done = self.run(group, command, "--config", str(self.path), "--name", name, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    def _no_secrets(self, done: Result) -> Result:
        for secret in self.secrets:
            assert secret not in done.stdout + done.stderr, f"a secret leaked from {done.args}"
        return done


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_error_line(done: Result, code: int = 1) -> str:
    """The single stderr line of a failed command, without its prefix."""
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("siprec-backup: error: "), done.stderr
    return lines[0].removeprefix("siprec-backup: error: ")


@pytest.fixture(scope="module")
def levers(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Levers:
    haproxy, nginx, ssh = lab.haproxy(), lab.nginx(), lab.ssh()
    primary, secondary = lab.bind("primary"), lab.bind("secondary")
    path = tmp_path_factory.mktemp("levers") / "levers.yaml"
    path.write_text(
        CONFIG.format(
            runtime=haproxy.runtime_tcp,
            stats_url=haproxy.stats_url,
            stats_user=haproxy.stats_user,
            include=nginx.include,
            pid_file=nginx.pid_file,
            nginx=shutil.which("nginx") or "nginx",
            nginx_args=json.dumps(list(nginx.nginx_args)),
            zone=primary.zone,
            primary=primary.address,
            secondary=secondary.address,
            key_name=primary.key_name,
            algorithm=primary.key_algorithm,
            ssh_host=ssh.host,
            ssh_port=ssh.port,
            ssh_user=ssh.user,
            known_hosts=ssh.known_hosts.strip(),
        )
    )
    key = ssh.client_key.read_text()
    key_body = max(key.splitlines(), key=len)  # a base64 line of the key itself
    env = {
        "CLI_STATS_PASSWORD": haproxy.stats_password,
        "CLI_TSIG_SECRET": primary.key_secret,
        "CLI_SSH_KEY": key,
    }
    return Levers(path, env, (haproxy.stats_password, primary.key_secret, key_body))


# --- blocks apply -------------------------------------------------------------------------


def test_blocks_apply_creates_then_updates(levers: Levers, lab: LabState) -> None:
    dry = levers.run("blocks", "apply", str(levers.path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "would save SIPREC Backup HAProxy cli-haproxy",
        "would save SIPREC Backup HAProxy cli-haproxy-stats",
        "would save SIPREC Backup nginx cli-nginx",
        "would save SIPREC Backup BIND Zone cli-dns",
        "would save SIPREC Backup SSH Host cli-ssh",
    ]
    with pytest.raises(ValueError):
        HAProxyLoadBalancer.load("cli-haproxy")  # the dry run saved nothing

    first = levers.process("blocks", "apply", str(levers.path), prefect=lab.prefect_api_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        line.replace("would save", "created") for line in dry.stdout.splitlines()
    ]
    again = levers.run("blocks", "apply", str(levers.path))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        line.replace("would save", "updated") for line in dry.stdout.splitlines()
    ]
    saved, host = HAProxyLoadBalancer.load("cli-haproxy"), SshHost.load("cli-ssh")
    assert isinstance(saved, HAProxyLoadBalancer) and isinstance(host, SshHost)
    assert saved.password is not None
    assert saved.password.get_secret_value() == levers.env["CLI_STATS_PASSWORD"]
    assert host.private_key.get_secret_value() == levers.env["CLI_SSH_KEY"]

    # The levers work from the saved blocks (the stats one uses the password over HTTP).
    check = levers.run("lb", "check", "--block", "cli-haproxy-stats")
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"ok: HAProxy stats {lab.haproxy().stats_url}: ")
    assert check.stdout.rstrip().endswith(": 2 server(s) in 1 backend(s)")
    for group, command, *args in (("dns", "show", "db", "A"), ("ssh", "check")):
        block = {"dns": "cli-dns", "ssh": "cli-ssh"}[group]
        used = levers.run(group, command, "--block", block, *args)
        assert used.returncode == 0, used.stderr


def test_blocks_apply_refuses_bad_files_and_saves_nothing(
    levers: Levers, lab: LabState, tmp_path: Path
) -> None:
    valid = (
        "ssh:\n  - name: cli-never-saved\n    host: h\n    username: u\n"
        "    private_key: ${CLI_SSH_KEY}\n    known_hosts: h ssh-ed25519 AAAA\n"
    )
    lb = "load_balancer:\n  name: cli-bad\n  type: haproxy\n  endpoint: http://127.0.0.1:1/s\n"
    cases = {
        "literal.yaml": (lb + "  password: hunter2-in-the-file\n", "load_balancer.password"),
        "unknown.yaml": (lb + "  colour: blue\n", "load_balancer.colour: unknown field"),
        "unset.yaml": (
            lb + "  password: ${CLI_NOT_SET}\n",
            "load_balancer.password: environment variable CLI_NOT_SET is not set",
        ),
        "type.yaml": (lb + "  timeout_seconds: soon\n", "load_balancer.timeout_seconds: "),
    }
    for file, (text, _) in cases.items():
        (tmp_path / file).write_text(valid + text)
    results = [levers.run("blocks", "apply", str(tmp_path / file)) for file in cases]
    for (file, (_, expected)), done in zip(cases.items(), results, strict=True):
        line = one_error_line(done)
        assert line.startswith(f"{tmp_path / file}: "), line
        assert expected in line, line
        assert done.stdout == ""
    literal = one_error_line(results[0])
    assert "a secret must come from the environment" in literal
    assert "hunter2" not in results[0].stdout + results[0].stderr
    assert "valid number" in one_error_line(results[3])
    with pytest.raises(ValueError):
        SshHost.load("cli-never-saved")
    with pytest.raises(ValueError):
        HAProxyLoadBalancer.load("cli-bad")


# --- load balancers -----------------------------------------------------------------------


@pytest.fixture
def haproxy_ready(lab: LabState) -> Iterator[None]:
    """Both HAProxy servers ready again after the test."""
    yield
    lb = lab.haproxy().load_balancer()
    for server in ("app-a", "app-b"):
        lb.set_state("app", server, ServerState.READY)
    deadline = time.monotonic() + 5
    while {s.state for s in lb.servers()} - {UP, UP_TRANSITIONAL}:
        assert time.monotonic() < deadline, lb.servers()
        time.sleep(0.05)


def test_lb_check_list_and_set_from_the_file(
    levers: Levers, lab: LabState, haproxy_ready: None
) -> None:
    haproxy = lab.haproxy()
    config = ("--config", str(levers.path))
    check = levers.run("lb", "check", *config, "--name", "cli-haproxy")
    listing = levers.run("lb", "list", *config, "--name", "cli-haproxy")
    several = levers.run("lb", "check", *config)
    repoint = levers.run("lb", "repoint", "app", "127.0.0.1:1", *config, "--name", "cli-haproxy")
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"ok: HAProxy runtime {haproxy.runtime_tcp}: HAProxy 2.")
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == [
        "BACKEND",
        "SERVER",
        "ADDRESS",
        "STATUS",
        "STATE",
        "SESSIONS",
        "WEIGHT",
    ]
    app_rows = {row.split()[1]: row.split() for row in rows if row.startswith("app ")}
    assert set(app_rows) == {"app-a", "app-b"}
    assert app_rows["app-b"][4] == UP
    assert app_rows["app-b"][2] == lab.http_backends().addresses["app-b"]
    as_json = levers.run("lb", "list", *config, "--name", "cli-haproxy", "--json")
    assert [(s["server"], s["state"]) for s in json.loads(as_json.stdout)] == [
        ("app-a", UP),
        ("app-b", UP),
    ]
    assert "pick one with --name" in one_error_line(several)
    assert "repoint is for open-source nginx" in one_error_line(repoint)

    # As an operator would, in a process of its own, Prefect unreachable.
    done = levers.process("lb", "set", "app", "app-b", "drain", *config, "--name", "cli-haproxy")
    assert done.returncode == 0, done.stderr
    drained = done.stdout.splitlines()
    assert drained[0] == "app/app-b: set drain"
    assert drained[1].startswith("app/app-b: 0 current sessions after ")
    assert haproxy.load_balancer().server("app", "app-b").state == DRAIN
    ready = levers.lever("lb", "set", "cli-haproxy", "app", "app-b", "ready")
    assert ready == ["app/app-b: set ready"]
    assert haproxy.load_balancer().server("app", "app-b").state in (UP, UP_TRANSITIONAL)


def test_lb_repoint_nginx_over_ssh(levers: Levers, lab: LabState) -> None:
    nginx, backends = lab.nginx(), lab.http_backends().addresses
    try:
        done = levers.process(
            "lb", "repoint", "app", backends["app-b"], "--config", str(levers.path), "--name",
            "cli-nginx",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"app -> {backends['app-b']}: reloaded and serving in ")
        assert {httpx.get(nginx.url, timeout=5).text.strip() for _ in range(4)} == {"app-b"}
        levers.lever("lb", "repoint", "cli-nginx", "app", backends["app-a"])
        assert {httpx.get(nginx.url, timeout=5).text.strip() for _ in range(4)} == {"app-a"}
    finally:
        nginx.load_balancer().repoint("app", [backends["app-a"]])


# --- DNS ----------------------------------------------------------------------------------


def serves(lab: LabState, role: str, name: str, rtype: str) -> tuple[int, tuple[str, ...]]:
    endpoint = lab.bind(role)
    qname = dns.name.from_text(name, origin=dns.name.from_text(ZONE))
    record = served(Nameserver(endpoint.host, endpoint.port), qname, rtype, 2.0)
    return record.ttl, record.values


def test_dns_plan_apply_ttl_and_bad_changes(levers: Levers, lab: LabState) -> None:
    engine = lab.bind("primary").client()
    primary, secondary = lab.bind("primary").address, lab.bind("secondary").address
    serial = engine.serial()
    changes = [
        "--change", "create cli-db A 60 192.0.2.1, 192.0.2.2",
        "--change", "create cli-sip A 60 192.0.2.5",
        "--change", "create _sip._tcp.cli SRV 60 10 5 5060 cli-sip, 20 5 5060 cli-sip",
    ]  # fmt: skip
    try:
        config = ("--config", str(levers.path))
        dry = levers.run("dns", "apply", *config, *changes, "--dry-run")
        bad = levers.run("dns", "apply", *config, "--change", "upsert x A 1")
        no_ttl = levers.run("dns", "apply", *config, "--change", "replace x A 1.2.3.4")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.splitlines() == [
            f"create cli-db.{ZONE} 60 A 192.0.2.1, 192.0.2.2",
            f"create cli-sip.{ZONE} 60 A 192.0.2.5",
            f"create _sip._tcp.cli.{ZONE} 60 SRV 10 5 5060 cli-sip.{ZONE}, "
            f"20 5 5060 cli-sip.{ZONE}",
            f"dry run: nothing sent (zone {ZONE} serial {serial})",
        ]
        assert engine.serial() == serial
        assert "unknown action 'upsert'" in one_error_line(bad)
        assert "replace needs a TTL" in one_error_line(no_ttl)

        done = levers.process("dns", "apply", *config, *changes)
        assert done.returncode == 0, done.stderr
        applied = done.stdout.splitlines()
        assert applied[3].startswith("applied: serial ")
        new_serial = int(applied[3].split()[2])
        assert new_serial > serial
        assert applied[4].startswith(f"verified on {primary}: serial {new_serial} after ")
        assert applied[5].startswith(f"verified on {secondary}: serial {new_serial} after ")
        assert applied[6].startswith("propagated to 2 nameserver(s) in ")
        srv = ("10 5 5060 cli-sip.siprec.lab.", "20 5 5060 cli-sip.siprec.lab.")
        assert serves(lab, "secondary", "_sip._tcp.cli", "SRV") == (60, srv)

        shown = levers.lever("dns", "show", "cli-dns", "cli-db", "A")
        assert shown[0] == f"cli-db.{ZONE} 60 A 192.0.2.1, 192.0.2.2"

        lowered = levers.lever("dns", "ttl", "cli-dns", "cli-db", "A", "5")
        assert lowered[0].startswith(f"cli-db.{ZONE} A: previous TTL 60, now 5 (serial ")
        assert lowered[-1].startswith("propagated to 2 nameserver(s)")
        assert serves(lab, "secondary", "cli-db", "A")[0] == 5
        restored = levers.lever("dns", "ttl", "cli-dns", "cli-db", "A", "60", "--restore")
        assert restored[0].startswith(f"cli-db.{ZONE} A: previous TTL 5, now 60 (serial ")
        assert serves(lab, "secondary", "cli-db", "A") == (60, ("192.0.2.1", "192.0.2.2"))
    finally:
        engine.apply([Change.delete(n, t) for n, t in [("cli-db", "A"), ("_sip._tcp.cli", "SRV")]])
        engine.apply([Change.delete("cli-sip", "A")])


def test_change_syntax() -> None:
    assert parse_change("replace db A 60 10.0.0.2, 10.0.0.3") == Change.replace(
        "db", "A", 60, "10.0.0.2", "10.0.0.3"
    )
    assert parse_change("create _sip._tcp SRV 60 10 5 5060 sip1") == Change.create(
        "_sip._tcp", "SRV", 60, "10 5 5060 sip1"
    )
    assert parse_change("DELETE old CNAME") == Change.delete("old", "CNAME")
    assert split_values('"a,b", c') == ['"a,b"', "c"]
    for bad, problem in [
        ("delete old CNAME 60", "delete takes only NAME TYPE"),
        ("replace db A", "replace needs a TTL"),
        ("replace db A 60", "no value after the TTL"),
        ("replace db A 60 10.0.0.2,", "empty value"),
        ("replace db A 60 not-an-address", "bad A value"),
        ("replace db SPF 60 x", "unsupported DNS record type"),
    ]:
        with pytest.raises(ConfigurationError, match=problem):
            parse_change(bad)


# --- SSH ----------------------------------------------------------------------------------


def test_ssh_check_run_and_timeout(levers: Levers, lab: LabState, tmp_path: Path) -> None:
    ssh = lab.ssh()
    config = ("--config", str(levers.path))
    check = levers.run("ssh", "check", *config)
    timed_out = levers.run("ssh", "run", *config, "--timeout", "1", "--", "sleep", "30")
    assert check.returncode == 0, check.stderr
    key_type = ssh.known_hosts.split()[1]
    assert check.stdout.startswith(
        f"ok: ssh {ssh.user}@{ssh.host}:{ssh.port}: host key {key_type} SHA256:"
    )
    assert "did not finish within 1 s" in one_error_line(timed_out, 124)
    no_prefect = one_error_line(levers.process("ssh", "check", "--block", "cli-ssh"))
    assert no_prefect.startswith("cannot reach the Prefect server at http://127.0.0.1:")
    assert no_prefect.endswith("without it, use --config FILE.yaml")

    # Streaming: the first line arrives while the command still runs; its status is ours.
    audit = tmp_path / "audit.jsonl"
    script = "echo first; echo oops >&2; sleep 2; echo second; exit 7"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIPREC_"))},
        **levers.env,
        "PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api",
    }
    start = time.monotonic()
    with subprocess.Popen(
        [CLI, "ssh", "run", *config, "--audit-log", str(audit), "--", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        first_at = time.monotonic() - start
        rest, err = proc.communicate(timeout=60)
        ended_at = time.monotonic() - start
    assert first == "first\n" and rest == "second\n" and err == "oops\n"
    assert proc.returncode == 7
    assert ended_at - first_at > 1.5, (first_at, ended_at)
    [record] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert record["command"] == script and record["exit_status"] == 7
    assert record["host"] == ssh.host and "(siprec-backup CLI)" in record["actor"]


def test_ssh_service_and_transfers(levers: Levers, lab: LabState, tmp_path: Path) -> None:
    ssh = lab.ssh()
    config = ("--config", str(levers.path))
    systemctl = ("--systemctl", str(ssh.systemctl))
    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    remote = str(tmp_path / "remote" / "payload.bin")
    Path(remote).parent.mkdir()
    restart = levers.run("ssh", "service", "restart", "siprec-x.service", *config, *systemctl)
    active = levers.run("ssh", "service", "is-active", FAKE_ACTIVE_UNIT, *config, *systemctl)
    put = levers.run("ssh", "put", str(local), remote, *config)
    assert restart.returncode == 0, restart.stderr
    # The stand-in prints its arguments: they arrived quoted, one word each.
    assert restart.stdout.splitlines()[:4] == ["restart", "--no-pager", "--", "siprec-x.service"]
    assert restart.stdout.splitlines()[-1].startswith("ok: restart siprec-x.service on ")
    assert (active.returncode, active.stdout) == (0, "active\n")
    assert put.returncode == 0, put.stderr
    assert f"3,145,745 bytes, sha256 {digest}, " in put.stdout
    assert hashlib.sha256(Path(remote).read_bytes()).hexdigest() == digest

    back = tmp_path / "back.bin"
    got = levers.lever("ssh", "get", "cli-ssh", remote, str(back))
    assert f"3,145,745 bytes, sha256 {digest}, " in got[0] and got[0].endswith(" MiB/s")
    assert back.read_bytes() == local.read_bytes()
