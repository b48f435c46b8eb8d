"""`blocks apply` files: the seed's shape, ${VAR} from the environment, secrets only that way,
and one error line naming the file, the field and the problem (no Prefect server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.apply import read_blocks
from blocks.aws import AwsElbTargetGroups, Route53Zone
from blocks.cloudflare import CloudflareDnsZone
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


CLOUD = """\
load_balancer:
  type: "aws_elb"  # Requires AWS SDK
  endpoint: "us-west-2"
  target_groups: [db-writer]

dns:
  provider: "route53"  # Requires AWS SDK
  zone: example.com
  credentials:
    region: "us-west-2"
    access_key_id: "${AWS_ACCESS_KEY_ID}"
    secret_access_key: "${AWS_SECRET_ACCESS_KEY}"
"""
AWS_ENV = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "aws-secret-0123"}


def test_the_seed_full_cloud_example_becomes_blocks(tmp_path: Path) -> None:
    planned = read_blocks(write(tmp_path, CLOUD), AWS_ENV)
    lb, zone = (p.block for p in planned)
    assert isinstance(lb, AwsElbTargetGroups) and isinstance(zone, Route53Zone)
    assert lb.credentials.region == "us-west-2"  # the seed's endpoint is the region
    assert lb.load_balancer().target_groups == ("db-writer",)
    engine = zone.dns()
    assert (engine.zone, engine.credentials.region) == ("example.com.", "us-west-2")
    assert engine.credentials.secret_access_key == "aws-secret-0123"
    assert "aws-secret-0123" not in repr(engine) + repr(zone)
    url = CLOUD.replace('endpoint: "us-west-2"', "endpoint: http://127.0.0.1:5000")
    lb = read_blocks(write(tmp_path, url), AWS_ENV)[0].block
    assert isinstance(lb, AwsElbTargetGroups)
    assert lb.credentials.endpoint_url == "http://127.0.0.1:5000"


HYBRID = """\
load_balancer:
  type: "haproxy"  # Use on-premises LB (fully functional)
  runtime_api: 10.0.0.5:9999

dns:
  provider: "cloudflare"  # Requires SDK installation
  zone: example.com       # (the seed's example leaves the zone out)
  proxied: false
  credentials:
    api_token: "${CLOUDFLARE_API_TOKEN}"
"""


def test_the_seed_hybrid_example_becomes_blocks(tmp_path: Path) -> None:
    token = "cf-token-0123456789"
    planned = read_blocks(write(tmp_path, HYBRID), {"CLOUDFLARE_API_TOKEN": token})
    zone = planned[1].block
    assert isinstance(zone, CloudflareDnsZone)
    assert zone.credentials.api_token.get_secret_value() == token
    engine = zone.dns()
    assert engine.zone == "example.com." and engine.proxied is False
    assert token not in repr(engine) + repr(zone)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            CLOUD.replace('"${AWS_SECRET_ACCESS_KEY}"', "plain"),
            "dns.credentials.secret_access_key: a secret must come from the environment",
        ),
        (CLOUD.replace("    region:", "    regoin:"), "dns.credentials.regoin: unknown field"),
        (
            CLOUD.replace('    access_key_id: "${AWS_ACCESS_KEY_ID}"\n', ""),
            "dns.credentials: Value error, give both access_key_id and secret_access_key",
        ),
        (CLOUD.replace("  credentials:\n", "  credentials: keys\n  x:\n"), "dns.credentials"),
    ],
)
def test_bad_cloud_entries_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        read_blocks(write(tmp_path, text), AWS_ENV)
    assert message in str(err.value) and "aws-secret-0123" not in str(err.value)


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
            "load_balancer.type: 'f5' is not one of haproxy, nginx, nginx_plus, aws_elb, gcp_lb,"
            " azure_lb",
        ),
        (
            SEED.replace('type: "haproxy"', "type: nginx"),
            "load_balancer.endpoint: open-source nginx is driven through its upstream",
        ),
        (
            SEED.replace('provider: "bind"', "provider: powerdns"),
            "dns.provider: 'powerdns' is not one of bind, route53, cloudflare, cloud_dns,"
            " azure_dns",
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
        ("secret_access_key", True),
        ("client_secret", True),
        ("service_account_info", True),
        ("access_key_id", False),
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
