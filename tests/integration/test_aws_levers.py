"""The AWS levers against a real moto server: ELBv2 target groups (register, deregister, health,
wait) and Route53 (CREATE/UPSERT/DELETE, lookup, TTL lower/restore, INSYNC), plus the error
contract: throttling retried then raised, authentication refused, missing boto3.

moto runs as its own ``moto_server`` process for this module. Throttling and auth failures come
from a tiny local HTTP server answering the documented AWS XML error bodies (moto cannot throttle
or refuse keys on demand).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from siprec_backup.cloud.aws import AwsCredentials, aws_client
from siprec_backup.cloud.errors import classify
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.dns.base import UpdateResult
from siprec_backup.dns.records import Change, RecordSet
from siprec_backup.dns.route53 import Route53Dns
from siprec_backup.errors import (
    AUTH,
    CONFIGURATION,
    CONFLICT,
    THROTTLING,
    UNAVAILABLE,
    CloudDnsError,
    CloudLoadBalancerError,
    CloudProviderError,
    DnsError,
    LoadBalancerError,
    PropagationError,
)
from siprec_backup.lab import _process
from siprec_backup.lab.object_stores import answers_http
from siprec_backup.traffic.aws_elb import AwsTargetGroup
from siprec_backup.traffic.base import DRAIN, MAINT, UP, ServerState
from tests.conftest import run_cli
from tests.fakes.http import Reply, Request, serving

SECRET = "s3cr3t-never-shown-0123456789"
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
ELB_NS = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"
R53_NS = "https://route53.amazonaws.com/doc/2013-04-01/"


# --- moto ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto_server of our own on a free loopback port, stopped at the end of the module."""
    tool = Path(sys.executable).parent / "moto_server"
    assert tool.is_file(), f"moto_server is missing next to {sys.executable}: install moto[server]"
    port = _process.free_ports(1)[0]
    log = Path(tempfile.mkdtemp(prefix="siprec-aws-test-")) / "moto.log"
    env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
    proc = _process.spawn([tool, "-H", "127.0.0.1", "-p", str(port)], log=log, env=env)
    ticks = _process.start_ticks(proc.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        _process.wait_ready("moto", lambda: answers_http(url), proc=proc, log=log, timeout=30.0)
        yield url
    finally:
        _process.stop_process(proc.pid, ticks, group=True, timeout=10.0)
        proc.wait(timeout=5)
        shutil.rmtree(log.parent, ignore_errors=True)


@pytest.fixture
def creds(moto_url: str) -> AwsCredentials:
    return AwsCredentials(
        access_key_id="testing", secret_access_key=SECRET, endpoint_url=moto_url, timeout=5.0
    )


def _boto(service: str, creds: AwsCredentials) -> Any:
    factory: Any = boto3.client  # untyped: boto3-stubs covers only s3 here
    return factory(
        service,
        region_name=creds.region,
        endpoint_url=creds.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@dataclass
class Group:
    name: str
    arn: str
    instances: list[str]


@pytest.fixture
def group(creds: AwsCredentials) -> Group:
    """A fresh VPC target group (port 5060, no deregistration delay) and two instances."""
    ec2, elb = _boto("ec2", creds), _boto("elbv2", creds)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    started = ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2, SubnetId=subnet)
    name = f"sip-{uuid.uuid4().hex[:8]}"
    created = elb.create_target_group(
        Name=name, Protocol="TCP", Port=5060, VpcId=vpc, TargetType="instance"
    )
    arn = created["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(
        TargetGroupArn=arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "0"}],
    )
    return Group(name, arn, [i["InstanceId"] for i in started["Instances"]])


# --- ELBv2 -----------------------------------------------------------------------------------


def test_target_group_register_list_drain_wait(creds: AwsCredentials, group: Group) -> None:
    lb = AwsTargetGroup([group.name], credentials=creds)
    first, second = group.instances
    assert lb.servers() == []
    lb.set_state(group.name, first, ServerState.READY)
    lb.set_state(group.name, f"{second}:5080", ServerState.READY)

    found = {s.server: s for s in lb.servers()}
    assert set(found) == {first, f"{second}:5080"}
    assert found[first].state == UP and found[first].status == "healthy"
    assert found[first].address == f"{first}:5060"
    assert found[first].backend == group.name and found[first].current_sessions == 0
    assert lb.server(group.name, f"{first}:5060").server == first  # the group's port: same one
    assert lb.server(group.arn, first).state == UP  # the backend by its ARN as well
    assert "1 target group(s), 2 target(s)" in lb.check()

    lb.set_state(group.name, first, ServerState.DRAIN)
    assert lb.wait_drained(group.name, first, deadline_s=10.0, poll_s=0.1) < 10.0
    after = lb.server(group.name, first)
    assert after.state == MAINT and after.status.startswith("unused")
    assert [s.server for s in lb.servers()] == [f"{second}:5080"]

    lb.set_state(group.name, f"{second}:5080", ServerState.MAINT)
    lb.set_state(group.name, first, ServerState.READY)
    assert [(s.server, s.state) for s in lb.servers()] == [(first, UP)]

    # A fresh lever (as a later flow step builds one) waits on a target that is already gone.
    again = AwsTargetGroup([group.arn], credentials=creds)
    assert again.wait_drained(group.arn, f"{second}:5080", deadline_s=5.0) < 5.0


def test_target_group_errors_are_configuration(creds: AwsCredentials, group: Group) -> None:
    lb = AwsTargetGroup([group.name], credentials=creds)
    unregistered = lb.server(group.name, "i-0000000000000000")  # a candidate not yet registered
    assert (unregistered.state, unregistered.status) == (MAINT, "unused (not registered)")
    with pytest.raises(CloudLoadBalancerError) as bad:
        lb.server(group.name, "10.0.0.1:70000")
    assert bad.value.code == CONFIGURATION
    assert isinstance(bad.value, LoadBalancerError)
    with pytest.raises(CloudLoadBalancerError, match="no backend 'other'"):
        lb.set_state("other", group.instances[0], ServerState.READY)

    missing = AwsTargetGroup(["no-such-group"], credentials=creds)
    with pytest.raises(CloudLoadBalancerError) as exc:
        missing.servers()
    err = exc.value
    assert (err.provider, err.service, err.code) == ("aws", "elbv2", CONFIGURATION)
    assert err.provider_code == "TargetGroupNotFound"
    assert SECRET not in str(err) and SECRET not in repr(missing)


def test_every_group_and_assumed_role(creds: AwsCredentials, group: Group) -> None:
    """No target groups named: every group of the account; credentials via STS AssumeRole."""
    role = AwsCredentials(
        access_key_id="testing",
        secret_access_key=SECRET,
        role_arn="arn:aws:iam::123456789012:role/siprec-failover",
        endpoint_url=creds.endpoint_url,
    )
    lb = AwsTargetGroup(credentials=role)
    assert group.name in {g.name for g in lb.groups()}
    lb.set_state(group.name, group.instances[0], ServerState.READY)
    assert lb.server(group.name, group.instances[0]).state == UP
    assert SECRET not in repr(lb) and SECRET not in repr(role)


# --- Route53 ---------------------------------------------------------------------------------


@pytest.fixture
def zone(creds: AwsCredentials) -> tuple[str, str]:
    """A fresh public hosted zone: (name, id)."""
    name = f"z{uuid.uuid4().hex[:8]}.siprec.lab."
    made = _boto("route53", creds).create_hosted_zone(Name=name, CallerReference=name)
    return name, made["HostedZone"]["Id"].rsplit("/", 1)[-1]


def test_route53_create_upsert_delete(creds: AwsCredentials, zone: tuple[str, str]) -> None:
    name, zone_id = zone
    r53 = Route53Dns(name.rstrip("."), credentials=creds, poll_interval=0.1)
    assert r53.lookup("db", "A") == RecordSet(f"db.{name}", "A")

    created = r53.apply(
        [Change.create("db", "A", 300, "10.0.0.1"), Change.create("note", "TXT", 60, "hi there")]
    )
    assert r53.zone_id() == zone_id and created.change_id
    done = r53.wait_propagated(created, deadline=10.0)
    assert done.nameservers == () and done.expected == created.expected
    assert r53.lookup("db", "A") == RecordSet(f"db.{name}", "A", 300, ("10.0.0.1",))
    assert r53.lookup(f"note.{name}", "TXT").values == ('"hi there"',)

    with pytest.raises(CloudDnsError) as dup:
        r53.apply([Change.create("db", "A", 300, "10.0.0.9")])
    assert dup.value.code == CONFLICT and "exists as" in str(dup.value)
    assert isinstance(dup.value, DnsError)

    change = Change.replace("db", "A", 300, "10.0.0.2", "10.0.0.3")
    assert r53.plan([change]) == [f"replace db.{name} 300 A 10.0.0.1 -> 10.0.0.2, 10.0.0.3"]
    r53.wait_propagated(r53.apply([change]), deadline=10.0)
    assert r53.lookup("db", "A").values == ("10.0.0.2", "10.0.0.3")

    gone = r53.apply([Change.delete("db", "A"), Change.delete("absent", "A")])
    r53.wait_propagated(gone, deadline=10.0)
    assert not r53.lookup("db", "A").present
    nothing = r53.apply([Change.delete("db", "A")])  # absent: no batch is sent
    assert nothing.change_id == "" and nothing.status == ""
    assert r53.wait_propagated(nothing, deadline=5.0).expected == (RecordSet(f"db.{name}", "A"),)


def test_route53_ttl_lower_restore(creds: AwsCredentials, zone: tuple[str, str]) -> None:
    name, zone_id = zone
    r53 = Route53Dns(name, hosted_zone_id=f"/hostedzone/{zone_id}", credentials=creds)
    r53.apply([Change.create("sip", "A", 3600, "10.0.0.5")])

    lowered = r53.lower_ttl("sip", "A", 30)
    assert lowered.previous_ttl == 3600 and lowered.update is not None
    assert r53.wait_propagated(lowered.update, deadline=10.0).expected[0].ttl == 30
    assert r53.lookup("sip", "A") == RecordSet(f"sip.{name}", "A", 30, ("10.0.0.5",))
    assert r53.lower_ttl("sip", "A", 60).update is None  # already low enough

    restored = r53.restore_ttl("sip", "A", lowered.previous_ttl)
    assert restored.previous_ttl == 30 and restored.record.ttl == 3600
    assert r53.lookup("sip", "A").ttl == 3600
    assert r53.restore_ttl("sip", "A", 3600).update is None
    with pytest.raises(CloudDnsError, match="has no A record"):
        r53.lower_ttl("nothing", "A", 30)


def test_route53_zone_errors_and_nameserver_check(
    creds: AwsCredentials, zone: tuple[str, str]
) -> None:
    with pytest.raises(CloudDnsError, match="no Route53 hosted zone named") as by_name:
        Route53Dns("nowhere.siprec.lab", credentials=creds).lookup("db", "A")
    assert by_name.value.code == CONFIGURATION
    with pytest.raises(CloudDnsError) as by_id:
        Route53Dns("x.lab", hosted_zone_id="ZNOSUCHZONE", credentials=creds).lookup("db", "A")
    assert by_id.value.provider_code == "NoSuchHostedZone" and by_id.value.code == CONFIGURATION

    # A nameserver that does not answer: INSYNC and the API agree, the direct check times out.
    silent = f"127.0.0.1:{_process.free_ports(1)[0]}"
    r53 = Route53Dns(zone[0], credentials=creds, nameservers=[silent], timeout=0.2)
    result = r53.apply([Change.replace("db", "A", 60, "10.0.0.7")])
    with pytest.raises(PropagationError) as late:
        r53.wait_propagated(result, deadline=1.0)
    assert late.value.disagreeing == [silent]


# --- errors from a fake AWS endpoint ---------------------------------------------------------


@dataclass
class FakeAws:
    """Answers each request with ``reply(count, body)`` -> (status, xml); counts requests."""

    reply: Callable[[int, str], tuple[int, str]]
    requests: list[str] = field(default_factory=list)


def _elb_error(code: str, message: str) -> str:
    return (
        f'<ErrorResponse xmlns="{ELB_NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>r1</RequestId></ErrorResponse>"
    )


def _r53_error(code: str, message: str) -> str:
    return (
        f'<?xml version="1.0"?>\n<ErrorResponse xmlns="{R53_NS}"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>r1</RequestId></ErrorResponse>"
    )


ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/sip/0123456789abcdef"


def _elb_ok(body: str) -> str:
    if "Action=DescribeTargetGroups" in body:
        return (
            f'<DescribeTargetGroupsResponse xmlns="{ELB_NS}"><DescribeTargetGroupsResult>'
            f"<TargetGroups><member><TargetGroupArn>{ARN}</TargetGroupArn>"
            "<TargetGroupName>sip</TargetGroupName><Port>5060</Port>"
            "<TargetType>instance</TargetType></member></TargetGroups>"
            "</DescribeTargetGroupsResult><ResponseMetadata><RequestId>r2</RequestId>"
            "</ResponseMetadata></DescribeTargetGroupsResponse>"
        )
    return (
        f'<DescribeTargetHealthResponse xmlns="{ELB_NS}"><DescribeTargetHealthResult>'
        "<TargetHealthDescriptions><member><Target><Id>i-0abc</Id><Port>5060</Port></Target>"
        "<TargetHealth><State>draining</State><Reason>Target.DeregistrationInProgress</Reason>"
        "</TargetHealth></member></TargetHealthDescriptions></DescribeTargetHealthResult>"
        "<ResponseMetadata><RequestId>r3</RequestId></ResponseMetadata>"
        "</DescribeTargetHealthResponse>"
    )


@pytest.fixture
def fake_aws() -> Iterator[tuple[FakeAws, str]]:
    """A local HTTP server standing in for an AWS endpoint; stopped at the end of the test."""
    fake = FakeAws(reply=lambda n, body: (500, ""))

    def answer(request: Request) -> Reply:
        body = request.body.decode()
        fake.requests.append(f"{request.method} {request.target} {body}")
        status, xml = fake.reply(len(fake.requests), body)
        return Reply(status, xml, "text/xml")

    with serving(answer) as url:
        yield fake, url


def _fake_creds(url: str) -> AwsCredentials:
    return AwsCredentials(
        access_key_id="AKIAFAKE", secret_access_key=SECRET, endpoint_url=url, timeout=2.0
    )


def test_throttling_is_retried_then_succeeds(fake_aws: tuple[FakeAws, str]) -> None:
    fake, url = fake_aws
    fake.reply = lambda n, body: (
        (400, _elb_error("Throttling", "Rate exceeded")) if n <= 2 else (200, _elb_ok(body))
    )
    lb = AwsTargetGroup([ARN], credentials=_fake_creds(url), retry=FAST)
    found = lb.servers()
    assert [(s.server, s.state, s.current_sessions) for s in found] == [("i-0abc", DRAIN, 1)]
    assert found[0].status == "draining (Target.DeregistrationInProgress)"
    assert len(fake.requests) == 4  # 2 throttled + DescribeTargetGroups + DescribeTargetHealth


def test_throttling_gives_up_after_the_bounded_attempts(fake_aws: tuple[FakeAws, str]) -> None:
    fake, url = fake_aws
    fake.reply = lambda n, body: (400, _r53_error("PriorRequestNotComplete", "busy"))
    r53 = Route53Dns("siprec.lab", hosted_zone_id="Z1", credentials=_fake_creds(url), retry=FAST)
    with pytest.raises(CloudDnsError) as exc:
        r53.lookup("db", "A")
    assert exc.value.code == THROTTLING and exc.value.retryable
    assert exc.value.provider_code == "PriorRequestNotComplete"
    assert "after 4 attempts" in str(exc.value)
    assert len(fake.requests) == FAST.attempts


def _change_xml(status: str) -> str:
    return (
        f'<GetChangeResponse xmlns="{R53_NS}"><ChangeInfo><Id>/change/C1</Id>'
        f"<Status>{status}</Status><SubmittedAt>2026-01-01T00:00:00Z</SubmittedAt>"
        "</ChangeInfo></GetChangeResponse>"
    )


def test_route53_waits_for_insync(fake_aws: tuple[FakeAws, str]) -> None:
    """GetChange answers PENDING twice, then INSYNC; a change that stays PENDING times out."""
    fake, url = fake_aws
    fake.reply = lambda n, body: (200, _change_xml("PENDING" if n <= 2 else "INSYNC"))
    r53 = Route53Dns("siprec.lab", hosted_zone_id="Z1", credentials=_fake_creds(url))
    r53.poll_interval = 0.05
    pending = UpdateResult("siprec.lab.", (), 0, 0.0, change_id="C1", status="PENDING")
    assert r53.wait_done(pending, deadline=5.0) < 5.0
    assert len(fake.requests) == 3 and fake.requests[0].startswith("GET /2013-04-01/change/C1")

    fake.reply = lambda n, body: (200, _change_xml("PENDING"))
    with pytest.raises(PropagationError, match=r"still PENDING after 0\.3 s"):
        r53.wait_done(pending, deadline=0.3)


def test_drain_timeout_while_still_draining(fake_aws: tuple[FakeAws, str]) -> None:
    fake, url = fake_aws
    fake.reply = lambda n, body: (200, _elb_ok(body))
    lb = AwsTargetGroup(["sip"], credentials=_fake_creds(url))
    with pytest.raises(LoadBalancerError, match="still draining"):
        lb.wait_drained("sip", "i-0abc", deadline_s=0.3, poll_s=0.1)


@pytest.mark.parametrize(
    ("service", "body"),
    [
        ("elbv2", _elb_error("InvalidClientTokenId", "The security token is invalid.")),
        ("route53", _r53_error("SignatureDoesNotMatch", "The request signature we calculated")),
    ],
)
def test_auth_refused_is_classified(fake_aws: tuple[FakeAws, str], service: str, body: str) -> None:
    fake, url = fake_aws
    fake.reply = lambda n, _: (403, body)
    err: CloudProviderError
    if service == "elbv2":
        lb = AwsTargetGroup(["sip"], credentials=_fake_creds(url), retry=FAST)
        with pytest.raises(CloudLoadBalancerError) as elb_exc:
            lb.check()
        err, shown = elb_exc.value, repr(lb)
    else:
        r53 = Route53Dns("siprec.lab", hosted_zone_id="Z1", credentials=_fake_creds(url))
        with pytest.raises(CloudDnsError) as dns_exc:
            r53.lookup("db", "A")
        err, shown = dns_exc.value, repr(r53)
    assert (err.provider, err.service, err.code) == ("aws", service, AUTH)
    assert len(fake.requests) == 1  # refused credentials are not retried
    assert SECRET not in str(err) and SECRET not in shown


def test_unreachable_endpoint_and_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{_process.free_ports(1)[0]}"
    lb = AwsTargetGroup(["sip"], credentials=_fake_creds(closed))
    with pytest.raises(CloudLoadBalancerError) as down:
        lb.servers()
    assert down.value.code == UNAVAILABLE

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    anonymous = AwsTargetGroup(["sip"], credentials=AwsCredentials(endpoint_url=closed))
    with pytest.raises(CloudLoadBalancerError) as none:
        anonymous.servers()
    assert none.value.code == CONFIGURATION and "no usable AWS credentials" in str(none.value)
    with pytest.raises(CloudProviderError) as half:
        aws_client("route53", AwsCredentials(access_key_id="AKIAFAKE"))
    assert half.value.code == CONFIGURATION


@pytest.mark.parametrize(
    ("code", "message", "status", "expected"),
    [
        ("ThrottlingException", "slow down", 400, THROTTLING),
        ("RequestLimitExceeded", "slow down", 503, THROTTLING),
        ("UnrecognizedClientException", "who?", 400, AUTH),
        ("AccessDenied", "no", 403, AUTH),
        (
            "InvalidChangeBatch",
            "Tried to create resource record set but it already exists",
            400,
            CONFLICT,
        ),
        (
            "InvalidChangeBatch",
            "RRSet of type CNAME with DNS name x. is not permitted",
            400,
            CONFIGURATION,
        ),
        ("InvalidInput", "bad", 400, CONFIGURATION),
        ("InternalFailure", "oops", 500, UNAVAILABLE),
    ],
)
def test_classify_botocore_client_errors(
    code: str, message: str, status: int, expected: str
) -> None:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    error = ClientError(response, "SomeOperation")
    ours = classify(error, service="route53", family=CloudDnsError)
    assert isinstance(ours, CloudDnsError) and ours.code == expected and ours.message == message


_NO_BOTO3 = """
import sys
sys.modules["boto3"] = None  # import boto3 now fails as if the extra were not installed
from siprec_backup.dns.route53 import Route53Dns
from siprec_backup.errors import CloudProviderError
from siprec_backup.traffic.aws_elb import AwsTargetGroup
levers = (AwsTargetGroup(["sip"]).servers, Route53Dns("siprec.lab").zone_id)
for lever in levers:
    try:
        lever()
    except CloudProviderError as exc:
        print(type(exc).__name__, exc.code, "|", exc)
"""


def test_missing_boto3_names_the_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _NO_BOTO3], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CloudLoadBalancerError missing-sdk |")
    assert lines[1].startswith("CloudDnsError missing-sdk |")
    assert all("pip install 'siprec-backup[aws]'" in line for line in lines)


# --- break-glass CLI ---------------------------------------------------------------------------


def test_break_glass_cli_drives_route53_and_elb_from_the_config_file(
    creds: AwsCredentials, zone: tuple[str, str], group: Group, tmp_path: Path
) -> None:
    """With Prefect down, an operator changes the record and the target group from the file
    (the seed's shape), secrets from the environment; nothing secret is printed."""
    name, _ = zone
    path = tmp_path / "levers.yaml"
    path.write_text(
        f"""\
load_balancer:
  name: writer
  type: aws_elb
  endpoint: {creds.endpoint_url}
  target_groups: [{group.name}]
  credentials: {{access_key_id: testing, secret_access_key: "${{AWS_SECRET}}"}}
dns:
  provider: route53
  zone: {name}
  credentials:
    endpoint_url: {creds.endpoint_url}
    access_key_id: testing
    secret_access_key: ${{AWS_SECRET}}
"""
    )
    env = {"AWS_SECRET": SECRET, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    config = ("--config", str(path))

    applied = run_cli("dns", "apply", *config, "--change", "create db A 60 10.0.0.7", env=env)
    assert applied.returncode == 0, applied.stderr
    assert f"create db.{name} 60 A 10.0.0.7" in applied.stdout
    shown = run_cli("dns", "show", *config, "db", "A", env=env)
    assert shown.returncode == 0 and f"db.{name} 60 A 10.0.0.7" in shown.stdout, shown.stdout

    first = group.instances[0]
    assert run_cli("lb", "set", *config, group.name, first, "ready", env=env).returncode == 0
    listed = run_cli("lb", "list", *config, env=env)
    assert listed.returncode == 0 and first in listed.stdout, listed.stdout
    for done in (applied, shown, listed):
        assert SECRET not in done.stdout + done.stderr

    refused = run_cli("dns", "show", *config, "db", "A", env={**env, "AWS_SECRET": ""})
    assert refused.returncode == 1
    assert "secret_access_key" in refused.stderr and len(refused.stderr.splitlines()) == 1
