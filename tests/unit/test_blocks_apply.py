"""`blocks apply` files: the seed's shape, ${VAR} from the environment, secrets only that way,
and one error line naming the file, the field and the problem (no Prefect server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.apply import read_blocks
from blocks.dns import BindDnsZone
from blocks.load_balancers import HAProxyLoadBalancer, NginxPlusLoadBalancer
from blocks.ssh import SshHost
from siprec_backup.config_file import is_secret_field, load_config_file
from siprec_backup.errors import ConfigurationError

TSIG = "c2VjcmV0LXRzaWcta2V5LWZvci10ZXN0cw=="
ENV = {"HAPROXY_PASSWORD": "hunter2-stats", "TSIG_SECRET": TSIG, "DB1_KEY": "-----KEY-----"}

SEED = """\
load_balancer:
  type: "haproxy"  # or "nginx"
  endpoint: "http://haproxy-stats:8404"
  username: "admin"
  password: "${HAPROXY_PASSWORD}"

dns:
  provider: "bind"
  zone: "example.com"
  nameservers: ["ns1.example.com:53", "ns2.example.com:53"]
  credentials:
    key_name: ddns-key
    secret: ${TSIG_SECRET}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "levers.yaml"
    path.write_text(text)
    return path


def test_the_seed_example_becomes_blocks(tmp_path: Path) -> None:
    planned = read_blocks(write(tmp_path, SEED), ENV)
    assert [(p.where, p.name, type(p.block)) for p in planned] == [
        ("load_balancer", "load-balancer", HAProxyLoadBalancer),
        ("dns", "dns", BindDnsZone),
    ]
    lb = planned[0].block
    assert isinstance(lb, HAProxyLoadBalancer)
    assert lb.endpoint == "http://haproxy-stats:8404"
    assert lb.password is not None and lb.password.get_secret_value() == "hunter2-stats"
    zone = planned[1].block
    assert isinstance(zone, BindDnsZone)
    engine = zone.dns()
    assert engine.primary == "ns1.example.com:53"
    assert engine.zone == "example.com."
    assert TSIG not in repr(engine) and "hunter2" not in repr(lb)


def test_lists_and_ssh_files(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    known = tmp_path / "known_hosts"
    known.write_text("[db1]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\n")
    path = write(
        tmp_path,
        f"""\
load_balancer:
  - name: lb-a
    type: nginx_plus
    endpoint: https://lb-a:8080/api
  - name: lb-b
    type: haproxy
    runtime_api: /run/haproxy/admin.sock
ssh:
  - name: db1
    host: db1
    username: siprec
    private_key_file: {key}
    known_hosts_file: {known}
  - name: db2
    host: db2
    username: siprec
    private_key: ${{DB1_KEY}}
    known_hosts: "db2 ssh-ed25519 AAAA"
""",
    )
    planned = read_blocks(path, ENV)
    assert [(p.where, p.name) for p in planned] == [
        ("load_balancer[0]", "lb-a"),
        ("load_balancer[1]", "lb-b"),
        ("ssh[0]", "db1"),
        ("ssh[1]", "db2"),
    ]
    assert isinstance(planned[0].block, NginxPlusLoadBalancer)
    db1 = planned[2].block
    assert isinstance(db1, SshHost)
    assert db1.private_key.get_secret_value().startswith("-----BEGIN OPENSSH")
    assert db1.known_hosts.startswith("[db1]:22")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SEED.replace('"${HAPROXY_PASSWORD}"', "secure_password"),
            "load_balancer.password: a secret must come from the environment",
        ),
        (
            SEED.replace("${TSIG_SECRET}", "${NOT_SET_ANYWHERE}"),
            "dns.credentials.secret: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            SEED.replace('type: "haproxy"', "type: f5"),
            "load_balancer.type: 'f5' is not one of haproxy, nginx, nginx_plus",
        ),
        (
            SEED.replace('type: "haproxy"', "type: nginx"),
            "load_balancer.endpoint: open-source nginx is driven through its upstream",
        ),
        (
            SEED.replace('provider: "bind"', "provider: cloudflare"),
            "dns.provider: 'cloudflare' is not one of bind",
        ),
        (SEED.replace("  username:", "  usrname:"), "load_balancer.usrname: unknown field"),
        (
            SEED.replace("key_name: ddns-key", "keyname: ddns-key"),
            "dns.credentials.keyname: unknown field",
        ),
        (SEED.replace('zone: "example.com"', "zone: ''"), "dns.zone: String should have at least"),
        (SEED + "ssh:\n  - host: db1\n", "ssh[0].name: required"),
        (
            SEED.replace("dns:\n", "dns:\n  name: Bad_Name\n"),
            "dns.name: 'Bad_Name' must be lowercase letters",
        ),
        (SEED + "loadbalancer: {}\n", "unknown section 'loadbalancer'"),
        ("load_balancer: [\n", "invalid YAML"),
        ("- just\n- a list\n", "the file must hold a mapping of sections"),
    ],
)
def test_bad_files_are_one_line_naming_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as err:
        read_blocks(path, ENV)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: ")
    assert message in line
    for secret in ENV.values():
        assert secret not in line


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        load_config_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("tsig_secret", True),
        ("api_token", True),
        ("private_key", True),
        ("passphrase", True),
        ("secret", True),
        ("private_key_file", False),
        ("key_name", False),
        ("username", False),
        ("known_hosts", False),
    ],
)
def test_secret_field_names(name: str, secret: bool) -> None:
    assert is_secret_field(name) is secret
