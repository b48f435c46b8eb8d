"""Private keys and known_hosts read from text, and SshConfig's hygiene (no server)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import paramiko
import pytest

from siprec_backup.errors import ConfigurationError
from siprec_backup.remote.auth import (
    is_encrypted,
    known_hosts_name,
    load_private_key,
    parse_known_hosts,
)
from siprec_backup.remote.ssh import SshConfig

PASSPHRASE = "correct horse battery"


def keygen(tmp_path: Path, kind: str, passphrase: str = "", fmt: str | None = None) -> str:
    path = tmp_path / f"{kind}-{fmt or 'openssh'}-{len(passphrase)}"
    extra = ["-m", fmt] if fmt else []
    extra += ["-a", "2"]  # few KDF rounds: encrypting and decrypting stay fast
    extra += ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", str(path), *extra],
        check=True,
        capture_output=True,
    )
    return path.read_text()


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("ed25519", paramiko.Ed25519Key), ("ecdsa", paramiko.ECDSAKey), ("rsa", paramiko.RSAKey)],
)
def test_key_types_plain_and_encrypted(tmp_path: Path, kind: str, cls: type) -> None:
    assert isinstance(load_private_key(keygen(tmp_path, kind)), cls)
    encrypted = keygen(tmp_path, kind, PASSPHRASE)
    assert is_encrypted(encrypted)
    assert isinstance(load_private_key(encrypted, PASSPHRASE), cls)
    with pytest.raises(ConfigurationError, match="encrypted: a passphrase is required"):
        load_private_key(encrypted)
    with pytest.raises(ConfigurationError, match="wrong passphrase") as info:
        load_private_key(encrypted, "not the passphrase")
    assert "not the passphrase" not in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)


def test_pem_rsa_key(tmp_path: Path) -> None:
    assert isinstance(load_private_key(keygen(tmp_path, "rsa", fmt="PEM")), paramiko.RSAKey)
    encrypted = keygen(tmp_path, "rsa", PASSPHRASE, fmt="PEM")
    assert is_encrypted(encrypted)
    assert isinstance(load_private_key(encrypted, PASSPHRASE), paramiko.RSAKey)
    with pytest.raises(ConfigurationError, match="wrong passphrase"):
        load_private_key(encrypted, "nope nope")


@pytest.mark.parametrize(
    "text", ["", "   \n", "hello", "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n"]
)
def test_garbage_keys(text: str) -> None:
    with pytest.raises(ConfigurationError, match="SSH private key"):
        load_private_key(text)


def host_line(tmp_path: Path, names: str) -> tuple[str, paramiko.PKey]:
    keygen(tmp_path, "ed25519")
    pub = (tmp_path / "ed25519-openssh-0.pub").read_text().split()
    key = paramiko.Ed25519Key(data=base64.b64decode(pub[1]))
    return f"{names} {pub[0]} {pub[1]}", key


def test_known_hosts_plain_port_and_hashed_entries(tmp_path: Path) -> None:
    line, key = host_line(tmp_path, "db1.example.test,10.0.0.5")
    hashed_name = paramiko.HostKeys.hash_host("[db2.example.test]:2222")
    text = "\n".join(
        [
            "# pinned by the platform team",
            "",
            line,
            f"[127.0.0.1]:15022 {line.split(' ', 1)[1]}",
            f"{hashed_name} {line.split(' ', 1)[1]}",
        ]
    )
    keys = parse_known_hosts(text)
    for name in ("db1.example.test", "10.0.0.5", "[127.0.0.1]:15022", "[db2.example.test]:2222"):
        found = keys.lookup(name)
        assert found is not None and found["ssh-ed25519"] == key, name
    assert keys.lookup("db3.example.test") is None
    assert keys.lookup("127.0.0.1") is None  # port 22 is a different entry


def test_known_hosts_errors_name_the_line(tmp_path: Path) -> None:
    line, _ = host_line(tmp_path, "h")
    with pytest.raises(ConfigurationError, match="line 2"):
        parse_known_hosts(f"{line}\nh ssh-ed25519 !!!notbase64!!!")
    with pytest.raises(ConfigurationError, match="line 1"):
        parse_known_hosts("h ssh-unknown AAAA")
    with pytest.raises(ConfigurationError, match="line 1"):
        parse_known_hosts("only-a-name")
    with pytest.raises(ConfigurationError, match="line 2: @revoked is not supported"):
        parse_known_hosts(f"{line}\n@revoked {line}")
    with pytest.raises(ConfigurationError, match="no host key"):
        parse_known_hosts("# nothing\n\n")


def test_known_hosts_name() -> None:
    assert known_hosts_name("db1", 22) == "db1"
    assert known_hosts_name("db1", 2222) == "[db1]:2222"


def test_config_repr_hides_secrets_and_validates() -> None:
    config = SshConfig(
        host="db1",
        username="ops",
        private_key="-----BEGIN OPENSSH PRIVATE KEY-----secretmaterial",
        known_hosts="db1 ssh-ed25519 AAAA",
        passphrase="hunter2hunter2",
    )
    text = repr(config)
    assert "secretmaterial" not in text and "hunter2" not in text
    assert "db1" in text and config.target == "ops@db1:22"
    for bad in ({"host": "a b"}, {"port": 0}, {"username": ""}, {"connect_timeout": 0}):
        values = {"host": "db1", "username": "ops", "private_key": "k", "known_hosts": "h"}
        with pytest.raises(ConfigurationError):
            SshConfig(**{**values, **bad})  # type: ignore[arg-type]
