"""The SSH lever against the lab's real sshd: commands, host keys, keys, services, transfers,
the pool, audit records and the CommandRunner."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import paramiko
import pytest

from siprec_backup.errors import (
    CommandFailedError,
    CommandTimeoutError,
    ConfigurationError,
    HostKeyError,
    RemoteAuthError,
    RemoteError,
)
from siprec_backup.lab import LabState
from siprec_backup.lab.sshd import FAKE_ACTIVE_UNIT, SshEndpoint
from siprec_backup.remote import (
    AuditRecord,
    ServiceManager,
    SshClient,
    SshPool,
    SshRunner,
    download,
    upload,
)
from siprec_backup.remote import transfer as transfer
from siprec_backup.remote.output import MAX_LINE_CHARS, TAIL_LINES

PASSPHRASE = "lab passphrase for the test"
HOSTILE = ["x; touch {m}", "$(touch {m})", "`touch {m}`", "a b", "../x", "-H evil", "x\ntouch {m}"]


@pytest.fixture(scope="module")
def ssh(lab: LabState) -> SshEndpoint:
    return lab.ssh()


@pytest.fixture(scope="module")
def client(ssh: SshEndpoint) -> Iterator[SshClient]:
    with SshClient(ssh.ssh_config()) as connected:
        yield connected


def keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> Path:
    bits = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-a", "2", "-N", passphrase, "-f", str(path), *bits],
        check=True,
        capture_output=True,
    )
    return path


def authorize(ssh: SshEndpoint, key: Path) -> None:
    """Let ``key`` log in to the lab's sshd (appends its public half)."""
    with ssh.authorized_keys.open("a") as f:
        f.write(key.with_suffix(".pub").read_text())


# -- commands ---------------------------------------------------------------------------------


def test_lines_stream_as_they_arrive(client: SshClient) -> None:
    seen: list[tuple[float, str, str]] = []
    t0 = time.monotonic()
    result = client.run(
        "echo first; echo oops >&2; sleep 1; echo second",
        timeout=20,
        on_line=lambda stream, line: seen.append((time.monotonic() - t0, stream, line)),
    )
    assert [(s, line) for _, s, line in seen] == [
        ("stdout", "first"),
        ("stderr", "oops"),
        ("stdout", "second"),
    ]
    assert seen[2][0] - seen[0][0] >= 0.8  # "first" was delivered before the command ended
    assert result.ok and result.exit_status == 0
    assert result.stdout_tail == "first\nsecond" and result.stderr_tail == "oops"
    assert result.host == client.host and result.duration >= 1.0
    assert result.started_at.tzinfo is not None


def test_large_output_keeps_only_a_bounded_tail(client: SshClient) -> None:
    count = 0

    def on_line(_stream: str, _line: str) -> None:
        nonlocal count
        count += 1

    tracemalloc.start()
    try:
        # about 27 MB of output in 76-character lines, plus one 100 000-character line
        result = client.run(
            "head -c 20000000 /dev/zero | base64; head -c 100000 /dev/zero | tr '\\0' x; echo",
            timeout=120,
            on_line=on_line,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    lines = result.stdout_tail.split("\n")
    assert len(lines) == TAIL_LINES
    assert max(len(line) for line in lines) <= MAX_LINE_CHARS
    assert lines[-1] == "x" * (100_000 % MAX_LINE_CHARS)
    assert count > 350_000
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while streaming 27 MB"


def test_non_zero_exit_raises_with_host_command_and_status(client: SshClient) -> None:
    with pytest.raises(CommandFailedError) as info:
        client.run("echo boom >&2; exit 3", timeout=20)
    err = info.value
    assert err.host == client.host
    assert err.command == "echo boom >&2; exit 3"
    assert err.exit_status == 3
    assert err.stderr_tail == "boom"
    assert "status 3" in str(err) and "boom" in str(err)
    result = client.run("exit 4", timeout=20, check=False)
    assert result.exit_status == 4 and not result.ok


def test_timeout_stops_the_command_and_its_children(client: SshClient, tmp_path: Path) -> None:
    """Even as root (sshd ignores "signal" requests then), the command's process group is
    stopped: the shell and a child it started are both gone."""
    pid_file = tmp_path / "sleep.pid"
    t0 = time.monotonic()
    try:
        with pytest.raises(CommandTimeoutError, match="did not finish within 1 s") as info:
            client.run(f"sleep 61 & echo $! > {pid_file}; sleep 60", timeout=1)
        assert info.value.host == client.host
        assert time.monotonic() - t0 < 8
        child = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while _alive(child):
            assert time.monotonic() < deadline, "the timed-out command's child still runs"
            time.sleep(0.05)
        assert client.run("echo still usable", timeout=20).stdout_tail == "still usable"
    finally:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(int(pid_file.read_text()), 9)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_stderr_keeps_its_first_line(client: SshClient) -> None:
    """The PID line we prepend is taken off stderr; the command's own first line stays."""
    lines: list[tuple[str, str]] = []
    result = client.run(
        "echo first >&2; echo second >&2",
        timeout=20,
        on_line=lambda s, line: lines.append((s, line)),
    )
    assert result.stderr_tail == "first\nsecond"
    assert lines == [("stderr", "first"), ("stderr", "second")]


def test_run_steps_stops_at_the_first_failure(client: SshClient, tmp_path: Path) -> None:
    marker = tmp_path / "step3"
    with pytest.raises(CommandFailedError) as info:
        client.run_steps(["true", "echo no >&2; exit 7", f"touch {marker}"], timeout=20)
    assert str(info.value).startswith("step 2 of 3: ")
    assert info.value.exit_status == 7 and info.value.command == "echo no >&2; exit 7"
    assert not marker.exists()
    results = client.run_steps(["echo a", ["echo", "b c"]], timeout=20)
    assert [r.stdout_tail for r in results] == ["a", "b c"]


def test_words_are_quoted_not_interpreted(client: SshClient, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    words = [w.format(m=marker) for w in HOSTILE]
    result = client.run(["printf", "%s\\n", *words], timeout=20)
    assert result.stdout_tail == "\n".join(words)
    assert not marker.exists()


# -- host keys and client keys ----------------------------------------------------------------


def test_unknown_host_key_is_refused(ssh: SshEndpoint) -> None:
    other = ssh.known_hosts.replace(f"[{ssh.host}]:{ssh.port}", f"[{ssh.host}]:{ssh.port + 1}")
    config = dataclasses.replace(ssh.ssh_config(), known_hosts=other)
    with pytest.raises(HostKeyError, match="not in known_hosts") as info:
        SshClient(config).connect()
    assert info.value.host == ssh.host


def test_changed_host_key_is_refused(ssh: SshEndpoint, tmp_path: Path) -> None:
    public = keygen(tmp_path / "impostor").with_suffix(".pub").read_text().split()
    config = dataclasses.replace(
        ssh.ssh_config(), known_hosts=f"[{ssh.host}]:{ssh.port} {public[0]} {public[1]}"
    )
    with pytest.raises(HostKeyError, match="host key changed") as info:
        SshClient(config).connect()
    assert info.value.host == ssh.host


def test_hashed_known_hosts_entry_is_accepted(ssh: SshEndpoint) -> None:
    name, rest = ssh.known_hosts.split(" ", 1)
    hashed = f"{paramiko.HostKeys.hash_host(name)} {rest}"
    config = dataclasses.replace(ssh.ssh_config(), known_hosts=f"# lab\nother {rest}\n{hashed}\n")
    with SshClient(config) as c:
        assert c.run("echo ok", timeout=20, mutating=False).stdout_tail == "ok"


def test_wrong_client_key_is_refused(ssh: SshEndpoint, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    config = dataclasses.replace(ssh.ssh_config(), private_key=stranger.read_text())
    with pytest.raises(RemoteAuthError, match="refused our key") as info:
        SshClient(config).connect()
    assert info.value.host == ssh.host


def test_connection_refused_is_a_remote_error(ssh: SshEndpoint) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = dataclasses.replace(ssh.ssh_config(), port=port, connect_timeout=3)
    with pytest.raises(RemoteError, match="cannot connect") as info:
        SshClient(config).connect()
    assert type(info.value) is RemoteError and info.value.host == ssh.host


def test_encrypted_key_needs_its_passphrase(ssh: SshEndpoint, tmp_path: Path) -> None:
    copy = tmp_path / "client_key_enc"
    copy.write_text(ssh.client_key.read_text())
    copy.chmod(0o600)
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-a", "2", "-P", "", "-N", PASSPHRASE, "-f", str(copy)],
        check=True,
        capture_output=True,
    )
    config = dataclasses.replace(
        ssh.ssh_config(), private_key=copy.read_text(), passphrase=PASSPHRASE
    )
    assert PASSPHRASE not in repr(config)
    with SshClient(config) as c:
        assert c.run("echo in", timeout=20).stdout_tail == "in"
    for passphrase, match in [(None, "passphrase is required"), ("wrong", "wrong passphrase")]:
        bad = dataclasses.replace(config, passphrase=passphrase)
        with pytest.raises(ConfigurationError, match=match) as info:
            SshClient(bad).connect()
        assert PASSPHRASE not in str(info.value) and "PRIVATE" not in str(info.value)


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_other_key_types_log_in(ssh: SshEndpoint, tmp_path: Path, kind: str) -> None:
    key = keygen(tmp_path / kind, kind)
    authorize(ssh, key)
    config = dataclasses.replace(ssh.ssh_config(), private_key=key.read_text())
    with SshClient(config) as c:
        assert c.run("echo ok", timeout=20).stdout_tail == "ok"


# -- services ---------------------------------------------------------------------------------


def test_hostile_service_names_never_reach_the_host(
    client: SshClient, ssh: SshEndpoint, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    records: list[AuditRecord] = []
    with SshClient(ssh.ssh_config(), audit=records.append) as audited:
        manager = ServiceManager(audited, systemctl=str(ssh.systemctl))
        for template in HOSTILE:
            name = template.format(m=marker)
            for call in (manager.start, manager.stop, manager.restart, manager.status):
                with pytest.raises(ConfigurationError) as info:
                    call(name)
                assert repr(name) in str(info.value)
            with pytest.raises(ConfigurationError):
                manager.is_active(name)
    assert not marker.exists()
    assert not Path("/tmp/pwned").exists()
    assert records == []  # nothing ran


def test_systemctl_actions_through_the_stand_in(ssh: SshEndpoint) -> None:
    records: list[AuditRecord] = []
    with SshClient(ssh.ssh_config(), actor="ops@test", audit=records.append) as c:
        manager = ServiceManager(c, systemctl=str(ssh.systemctl))
        for action in ("start", "stop", "restart"):
            result = getattr(manager, action)("siprec-recorder@1.service")
            assert result.stdout_tail.split("\n") == [
                action,
                "--no-pager",
                "--",
                "siprec-recorder@1.service",
            ]
        assert manager.is_active(FAKE_ACTIVE_UNIT) is True
        assert manager.is_active("nginx.service") is False
        assert manager.active_state("nginx.service") == "inactive"
        status = manager.status("nginx.service")
        assert status.exit_status == 3 and status.stdout_tail.endswith("inactive")
        assert manager.status(FAKE_ACTIVE_UNIT).exit_status == 0
    assert [r.command.split()[1] for r in records] == ["start", "stop", "restart"]
    assert all(r.actor == "ops@test" and r.exit_status == 0 for r in records)


def test_a_failing_systemctl_raises(client: SshClient, tmp_path: Path) -> None:
    failing = tmp_path / "systemctl"
    failing.write_text("#!/bin/sh\necho 'Failed to start x.service: Unit not found.' >&2\nexit 5\n")
    failing.chmod(0o755)
    manager = ServiceManager(client, systemctl=str(failing))
    with pytest.raises(CommandFailedError, match="Unit not found") as info:
        manager.start("x.service")
    assert info.value.exit_status == 5
    with pytest.raises(CommandFailedError):
        manager.status("x.service")  # 4 and above: no such unit, not an answer


# -- transfers --------------------------------------------------------------------------------


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // (1 << 20)):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def test_upload_and_download_8_mib(client: SshClient, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    sha = random_file(local, 8 << 20)
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    remote = remote_dir / "copy.bin"
    remote.write_bytes(b"old content")
    up = upload(client, local, str(remote))
    assert (up.bytes, up.sha256) == (8 << 20, sha)
    assert hashlib.sha256(remote.read_bytes()).hexdigest() == sha
    back = tmp_path / "back.bin"
    down = download(client, str(remote), back)
    assert (down.bytes, down.sha256) == (8 << 20, sha)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == sha
    assert sorted(p.name for p in remote_dir.iterdir()) == ["copy.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "local.bin", "remote"]


def test_checksum_mismatch_removes_the_destination(
    client: SshClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "local.bin"
    random_file(local, 1 << 20)
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    (remote_dir / "data.bin").write_bytes(b"keep me")
    # Fault injection: the remote sha256sum (really run) is reported as a different digest.
    real = transfer.remote_sha256
    monkeypatch.setattr(transfer, "remote_sha256", lambda c, p: "0" * 64 if real(c, p) else "")
    with pytest.raises(RemoteError, match="sha256 mismatch"):
        upload(client, local, str(remote_dir / "data.bin"))
    assert sorted(p.name for p in remote_dir.iterdir()) == ["data.bin"]
    assert (remote_dir / "data.bin").read_bytes() == b"keep me"
    with pytest.raises(RemoteError, match="sha256 mismatch"):
        download(client, str(local), tmp_path / "down.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.bin", "remote"]


def test_missing_files_are_remote_errors(client: SshClient, tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="no such file"):
        upload(client, tmp_path / "absent", str(tmp_path / "x"))
    with pytest.raises(RemoteError):
        download(client, str(tmp_path / "absent"), tmp_path / "y")
    with pytest.raises(RemoteError):
        upload(client, __file__, str(tmp_path / "no-such-dir" / "x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- pool, audit, runner ----------------------------------------------------------------------


def test_pool_reuses_one_connection(ssh: SshEndpoint) -> None:
    records: list[AuditRecord] = []
    with SshPool(actor="flow-run-1", audit=records.append) as pool:
        first = pool.get(ssh.ssh_config())
        second = pool.get(ssh.ssh_config())
        assert first is second and first.transport is second.transport
        assert len(pool) == 1
        first.run("true", timeout=20)
        transport = first.transport
        first.close()  # a dropped connection is re-established on the next get
        again = pool.get(ssh.ssh_config())
        assert again is first and again.connected and again.transport is not transport
        with pytest.raises(ConfigurationError, match="two different configurations"):
            pool.get(dataclasses.replace(ssh.ssh_config(), connect_timeout=3))
    assert not again.connected
    assert [r.actor for r in records] == ["flow-run-1"]


def test_audit_records_mutating_actions_only(ssh: SshEndpoint, tmp_path: Path) -> None:
    records: list[AuditRecord] = []
    local = tmp_path / "f.txt"
    local.write_text("x\n")
    with SshClient(ssh.ssh_config(), actor="alice", audit=records.append) as c:
        c.run("true", timeout=20)
        c.run("exit 2", timeout=20, check=False)
        c.run("uptime", timeout=20, mutating=False)
        ServiceManager(c, systemctl=str(ssh.systemctl)).is_active("nginx.service")
        upload(c, local, str(tmp_path / "g.txt"))
        download(c, str(tmp_path / "g.txt"), tmp_path / "h.txt")
        with pytest.raises(CommandTimeoutError):
            c.run("sleep 3", timeout=0.5)
    assert [(r.command, r.exit_status) for r in records] == [
        ("true", 0),
        ("exit 2", 2),
        (f"upload {local} -> {tmp_path / 'g.txt'}", 0),
        ("sleep 3", None),
    ]
    for r in records:
        assert r.actor == "alice" and r.host == ssh.host
        assert r.started_at.utcoffset() == timedelta(0)
        assert r.duration >= 0
        assert set(r.to_dict()) == {
            "actor",
            "host",
            "command",
            "exit_status",
            "started_at",
            "duration",
        }


def test_ssh_runner(client: SshClient, tmp_path: Path) -> None:
    runner = SshRunner(client)
    assert runner.host == client.host
    path = tmp_path / "upstream.conf"
    assert runner.read_text(str(path)) == ""
    path.write_text("old\n")
    path.chmod(0o640)
    runner.write_text(str(path), "server 10.0.0.2:5060;\n")
    assert path.read_text() == "server 10.0.0.2:5060;\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert runner.read_text(str(path)) == "server 10.0.0.2:5060;\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upstream.conf"]
    result = runner.run(["sh", "-c", "echo hi; echo err >&2; exit 3"], timeout=20)
    assert (result.exit_status, result.stdout_tail, result.stderr_tail) == (3, "hi", "err")
    marker = tmp_path / "pwned"
    assert runner.run(["echo", f"; touch {marker}"], timeout=20).exit_status == 0
    assert not marker.exists()


def test_measurements(ssh: SshEndpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = ssh.ssh_config()
    t0 = time.monotonic()
    with SshClient(config) as c:
        connect = time.monotonic() - t0
        rounds = []
        for _ in range(10):
            t1 = time.monotonic()
            c.run("true", timeout=20, mutating=False)
            rounds.append(time.monotonic() - t1)
        local = tmp_path / "m.bin"
        random_file(local, 8 << 20)
        up = upload(c, local, str(tmp_path / "m-remote.bin"))
        down = download(c, str(tmp_path / "m-remote.bin"), tmp_path / "m-back.bin")
    rounds.sort()
    with capsys.disabled():
        print(
            f"\nssh: connect {connect * 1000:.0f} ms, exec round trip median "
            f"{rounds[5] * 1000:.0f} ms (min {rounds[0] * 1000:.0f}), 8 MiB upload "
            f"{up.mib_per_second:.0f} MiB/s ({up.seconds:.2f} s), download "
            f"{down.mib_per_second:.0f} MiB/s ({down.seconds:.2f} s), both with sha256 checks"
        )
    assert connect < 10 and up.sha256 == down.sha256
