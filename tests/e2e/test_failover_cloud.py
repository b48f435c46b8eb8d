"""The failover flow, unchanged, on cloud levers: a real three-node PostgreSQL cluster whose load
balancer and DNS live in a cloud. AWS is the lab's moto server (ELBv2 target group, Route53 hosted
zone); Google Cloud, Azure and Cloudflare, whose control planes cannot run here, are the small
fakes of ``tests/fakes``.

Each provider's fixture saves its blocks (credentials nested in the resource blocks, as an
operator would) and says which load balancer member is which node; the test kills the primary,
fails over, and checks through the provider's API that traffic and the record moved.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import SecretStr

from blocks.aws import AwsCredentials, AwsElbTargetGroups, Route53Zone
from blocks.azure import AzureCredentials, AzureDnsZone, AzureLoadBalancer
from blocks.cloudflare import CloudflareCredentials, CloudflareDnsZone
from blocks.dns import load_dns_zone
from blocks.gcp import CloudDnsZone, GcpBackendServices, GcpCredentials
from blocks.load_balancers import load_load_balancer
from deployments.lab_failover import save_failover_blocks
from flows.failover import FailoverRequest, failover
from siprec_backup.lab import LabState
from siprec_backup.lab.cluster_postgres import PostgresLabCluster
from siprec_backup.lab.probes import has, write
from siprec_backup.traffic import DRAIN, MAINT, ServerState
from tests.e2e.failover_support import audit_of, steps, wait_has
from tests.fakes.azure import running_fake_azure
from tests.fakes.cloudflare import running_fake_cloudflare
from tests.fakes.gcp import running_fake_gcp

SECRET = "cloud-secret-never-shown-7b1d"


@dataclass(frozen=True)
class CloudLevers:
    """Saved lever blocks in one cloud, and which member of the load balancer each node is."""

    load_balancer: str
    lb_servers: dict[str, str]  # node -> "backend/server"
    dns_zone: str


#: Builds a provider's levers for nodes (name -> address); seeds the LB with n1 in service.
LeversFactory = Callable[[LabState, str, dict[str, str]], contextlib.AbstractContextManager[Any]]


def _aws_client(lab: LabState, service: str) -> Any:
    factory: Any = boto3.client
    return factory(
        service,
        region_name="us-east-1",
        endpoint_url=lab.s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _aws_credentials(lab: LabState) -> AwsCredentials:
    return AwsCredentials(
        access_key_id="testing",
        secret_access_key=SecretStr(SECRET),
        endpoint_url=lab.s3_endpoint,
        timeout_seconds=5,
    )


def _target_group(lab: LabState, name: str, nodes: dict[str, str]) -> tuple[str, dict[str, str]]:
    """An ELBv2 target group on moto whose targets are one EC2 instance per node, n1
    registered; its block name and each node's ``group/instance``."""
    ec2, elb = _aws_client(lab, "ec2"), _aws_client(lab, "elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    started = ec2.run_instances(ImageId=ami, MinCount=3, MaxCount=3, SubnetId=subnet)
    ids = [i["InstanceId"] for i in started["Instances"]]
    instances = dict(zip(sorted(nodes), ids, strict=True))
    group = f"{name}-db"
    arn = elb.create_target_group(
        Name=group, Protocol="TCP", Port=5432, VpcId=vpc, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(
        TargetGroupArn=arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "0"}],
    )
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instances["n1"]}])
    AwsElbTargetGroups(credentials=_aws_credentials(lab), target_groups=[group]).save(
        f"{name}-elb", overwrite=True
    )
    return f"{name}-elb", {n: f"{group}/{i}" for n, i in instances.items()}


@contextlib.contextmanager
def aws_levers(lab: LabState, name: str, nodes: dict[str, str]) -> Iterator[CloudLevers]:
    """ELBv2 and Route53, both on the lab's moto server."""
    load_balancer, servers = _target_group(lab, name, nodes)
    zone = f"{name}.example.com"
    _aws_client(lab, "route53").create_hosted_zone(Name=zone, CallerReference=name)
    Route53Zone(credentials=_aws_credentials(lab), zone=zone).save(f"{name}-r53", overwrite=True)
    yield CloudLevers(load_balancer, servers, f"{name}-r53")


@contextlib.contextmanager
def cloudflare_levers(lab: LabState, name: str, nodes: dict[str, str]) -> Iterator[CloudLevers]:
    """Cloudflare DNS (the fake) in front of an ELBv2 target group (moto): a hybrid setup."""
    load_balancer, servers = _target_group(lab, name, nodes)
    with running_fake_cloudflare(SECRET) as fake:
        zone = f"{name}.example.com"
        fake.add_zone(zone)
        credentials = CloudflareCredentials(api_token=SecretStr(SECRET), api_url=fake.url)
        CloudflareDnsZone(credentials=credentials, zone=zone, proxied=False).save(
            f"{name}-cf", overwrite=True
        )
        yield CloudLevers(load_balancer, servers, f"{name}-cf")


@contextlib.contextmanager
def azure_levers(lab: LabState, name: str, nodes: dict[str, str]) -> Iterator[CloudLevers]:
    """An Azure Load Balancer pool holding every node (n2 and n3 admin-state Down) and an Azure
    DNS zone, on the Azure fake (one service principal for both)."""
    with running_fake_azure(client_secret=SECRET) as fake:
        group, pool = "rg-sip", "db-writer"
        fake.add_load_balancer(group, f"{name}-lb", {pool: nodes})
        zone = f"{name}.example.com"
        fake.add_zone(group, zone)
        credentials = AzureCredentials(
            tenant_id=fake.tenant_id,
            client_id=fake.client_id,
            client_secret=SecretStr(SECRET),
            subscription_id=fake.subscription_id,
            authority_url=fake.url,
            management_url=fake.url,
        )
        block = AzureLoadBalancer(
            credentials=credentials, resource_group=group, load_balancer_name=f"{name}-lb"
        )
        block.save(f"{name}-alb", overwrite=True)
        for replica in ("n2", "n3"):
            block.load_balancer().set_state(pool, replica, ServerState.MAINT)
        AzureDnsZone(credentials=credentials, resource_group=group, zone=zone).save(
            f"{name}-adns", overwrite=True
        )
        yield CloudLevers(f"{name}-alb", {n: f"{pool}/{n}" for n in nodes}, f"{name}-adns")


@contextlib.contextmanager
def gcp_levers(lab: LabState, name: str, nodes: dict[str, str]) -> Iterator[CloudLevers]:
    """A backend service with one instance group per node (n2 and n3 at capacity 0) and a
    Cloud DNS managed zone, on the Google Cloud fake (one service account for both)."""
    with running_fake_gcp() as fake:
        service = f"{name}-db"
        fake.add_backend_service(service, {n: ["HEALTHY"] for n in nodes})
        zone = f"{name}.example.com"
        fake.add_zone(f"{name}-zone", zone, {})
        credentials = GcpCredentials(
            service_account_info=SecretStr(fake.service_account_key()),
            compute_url=fake.compute_url,
            dns_url=fake.dns_url,
        )
        block = GcpBackendServices(credentials=credentials, backend_services=[service])
        block.save(f"{name}-gbs", overwrite=True)
        for replica in ("n2", "n3"):
            block.load_balancer().set_state(service, replica, ServerState.MAINT)
        CloudDnsZone(credentials=credentials, zone=zone, managed_zone=f"{name}-zone").save(
            f"{name}-gdns", overwrite=True
        )
        yield CloudLevers(f"{name}-gbs", {n: f"{service}/{n}" for n in nodes}, f"{name}-gdns")


PROVIDERS: dict[str, LeversFactory] = {
    "aws": aws_levers,
    "azure": azure_levers,
    "cloudflare": cloudflare_levers,
    "gcp": gcp_levers,
}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> LeversFactory:
    return PROVIDERS[request.param]


def test_failover_moves_cloud_load_balancer_and_dns(lab: LabState, provider: LeversFactory) -> None:
    root = Path(tempfile.mkdtemp(prefix="siprec-failover-cloud-"))
    root.chmod(0o711)  # the postgres account traverses it to its data
    cluster = PostgresLabCluster(root / "cluster")
    name = f"fo-cloud-{uuid.uuid4().hex[:6]}"
    try:
        cluster.start()
        with provider(lab, name, {n.name: n.host for n in cluster.nodes}) as levers:
            blocks = save_failover_blocks(
                cluster,
                name,
                load_balancer=levers.load_balancer,
                lb_servers=levers.lb_servers,
                dns_block=levers.dns_zone,
                dns=load_dns_zone(levers.dns_zone),
            )
            _fail_over_and_check(cluster, blocks.dns_record or "", levers, name)
    finally:
        cluster.stop()


def _fail_over_and_check(
    cluster: PostgresLabCluster, record: str, levers: CloudLevers, name: str
) -> None:
    lb, dns = load_load_balancer(levers.load_balancer), load_dns_zone(levers.dns_zone)
    write("postgres", cluster.target("n1"), "before")
    for replica in ("n2", "n3"):
        wait_has("postgres", cluster.target(replica), "before")
    cluster.kill("n1")

    result = failover(FailoverRequest(cluster=name, reason="test: cloud", dry_run=False))
    assert result["outcome"] == "completed", result
    new = result["promoted"]
    assert has("postgres", cluster.target(new), "before")

    def state(node: str) -> str:
        backend, server = levers.lb_servers[node].split("/", 1)
        return lb.server(backend, server).state

    assert state("n1") == MAINT
    assert state(new) not in (MAINT, DRAIN)
    moved = dns.lookup(record, "A")
    assert (moved.values, moved.ttl) == ((cluster.node(new).host,), 60)
    audit = audit_of(name)
    assert audit["outcome"] == "completed"
    assert steps(audit) == [
        ("lb-fence", "done"),
        ("dns-prepare", "done"),
        ("promote", "done"),
        ("lb-switch", "done"),
        ("repoint", "done"),
        ("dns-switch", "done"),
    ]
    assert SECRET not in json.dumps(audit)
    seconds = ", ".join(f"{s['key']} {s['seconds']:.2f}" for s in audit["steps"])
    print(f"\n{levers.load_balancer} + {levers.dns_zone}: step seconds: {seconds}")
