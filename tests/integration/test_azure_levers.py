"""The Azure levers against a fake of the Azure endpoints (tests/fakes/azure.py): Load Balancer
backend address admin states (GET pool, PUT with If-Match, long-running operation), Azure DNS
record sets (GET/PUT/DELETE with etags), the token endpoint, and the error contract:
throttling retried then raised, refused credentials, etag conflicts, failed operations.

Azure cannot run locally; the fake answers with ARM's documented paths, shapes and errors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from blocks.azure import AzureCredentials as AzureCredentialsBlock
from blocks.azure import AzureDnsZone
from blocks.azure import AzureLoadBalancer as AzureLoadBalancerBlock
from siprec_backup.cloud.azure import (
    DNS_API_VERSION,
    NETWORK_API_VERSION,
    AzureCredentials,
    AzureSession,
)
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.dns.azure_dns import AzureDns
from siprec_backup.dns.records import Change, RecordSet
from siprec_backup.errors import (
    AUTH,
    CONFIGURATION,
    CONFLICT,
    PROVIDER,
    THROTTLING,
    CloudDnsError,
    CloudLoadBalancerError,
    DnsError,
    LoadBalancerError,
)
from siprec_backup.traffic.azure_lb import AzureLoadBalancer
from siprec_backup.traffic.base import DRAIN, MAINT, UNKNOWN, UP, ServerState
from tests.fakes.azure import FakeAzure, running_fake_azure

SECRET = "az-s3cr3t-never-shown-0123456789"
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
RG, LB, POOL, ZONE = "rg-sip", "lb-sip", "sip-edge", "siprec.lab"


@pytest.fixture
def fake() -> Iterator[FakeAzure]:
    """A fake with a load balancer (two pools) and a zone holding db A 10.0.0.1."""
    with running_fake_azure(client_secret=SECRET) as fake:
        fake.add_load_balancer(
            RG,
            LB,
            {POOL: {"sbc-a": "10.0.1.4", "sbc-b": "10.0.1.5"}, "sip-core": {"core-1": "10.0.2.4"}},
        )
        fake.add_record_set(RG, ZONE, "A", "db", 300, [{"ipv4Address": "10.0.0.1"}])
        yield fake


def creds(fake: FakeAzure, secret: str = SECRET, tenant: str = "") -> AzureCredentials:
    return AzureCredentials(
        tenant_id=tenant or fake.tenant_id,
        client_id=fake.client_id,
        client_secret=secret,
        subscription_id=fake.subscription_id,
        authority_url=fake.url,
        management_url=fake.url,
        timeout=5.0,
    )


def make_lb(fake: FakeAzure, operation_timeout: float = 300.0) -> AzureLoadBalancer:
    return AzureLoadBalancer(
        RG,
        LB,
        credentials=creds(fake),
        retry=FAST,
        poll_interval=0.01,
        operation_timeout=operation_timeout,
    )


def make_dns(fake: FakeAzure) -> AzureDns:
    return AzureDns(ZONE, RG, credentials=creds(fake), retry=FAST)


# --- Load Balancer ---------------------------------------------------------------------------


def test_pool_listing(fake: FakeAzure) -> None:
    lb = make_lb(fake)
    found = {(s.backend, s.server): s for s in lb.servers()}
    assert set(found) == {(POOL, "sbc-a"), (POOL, "sbc-b"), ("sip-core", "core-1")}
    a = found[(POOL, "sbc-a")]
    assert (a.address, a.state, a.current_sessions) == ("10.0.1.4", UP, 0)
    assert a.status == "adminState None, pool Succeeded"
    assert lb.server("sip-core", "core-1").address == "10.0.2.4"
    assert "2 backend pool(s), 3 backend address(es)" in lb.check()
    assert "Standard" in lb.check()

    # Every ARM request carried the documented api-version and one cached bearer token.
    arm = fake.arm_requests()
    assert len(arm) == 4 and fake.tokens_issued == 1
    assert all(r.query.get("api-version") == NETWORK_API_VERSION for r in arm)
    assert len({r.headers["authorization"] for r in arm}) == 1

    with pytest.raises(CloudLoadBalancerError) as unknown:
        lb.server(POOL, "sbc-z")
    assert unknown.value.code == CONFIGURATION and "sbc-a, sbc-b" in str(unknown.value)
    assert isinstance(unknown.value, LoadBalancerError)
    with pytest.raises(CloudLoadBalancerError) as no_pool:
        lb.set_state("nope", "sbc-a", ServerState.MAINT)
    assert (no_pool.value.code, no_pool.value.provider_code) == (CONFIGURATION, "NotFound")
    with pytest.raises(CloudLoadBalancerError) as no_lb:
        AzureLoadBalancer(RG, "other", credentials=creds(fake)).servers()
    assert no_lb.value.provider_code == "ResourceNotFound" and no_lb.value.code == CONFIGURATION


def test_drain_maint_ready(fake: FakeAzure) -> None:
    fake.operation_polls = 2
    lb = make_lb(fake)
    etag = lb._pool(POOL)["etag"]
    lb.set_state(POOL, "sbc-a", ServerState.DRAIN)
    assert fake.admin_state(RG, LB, POOL, "sbc-a") == "Down"
    assert fake.admin_state(RG, LB, POOL, "sbc-b") == "None"  # the rest of the pool kept
    put = fake.arm_requests("PUT")[-1]
    assert put.headers["if-match"] == etag and put.query["api-version"] == NETWORK_API_VERSION
    assert "provisioningState" not in put.body["properties"]
    polls = [r for r in fake.arm_requests("GET") if "/operations/" in r.path]
    assert len(polls) == 3  # InProgress twice, then Succeeded
    status = lb.server(POOL, "sbc-a")
    assert (status.state, status.status) == (MAINT, "adminState Down, pool Succeeded")
    assert lb.wait_drained(POOL, "sbc-a", deadline_s=2.0) < 2.0

    puts = len(fake.arm_requests("PUT"))
    lb.set_state(POOL, "sbc-a", ServerState.MAINT)  # already Down: nothing sent
    assert len(fake.arm_requests("PUT")) == puts

    lb.set_state(POOL, "sbc-a", ServerState.READY)
    assert fake.admin_state(RG, LB, POOL, "sbc-a") == "None"
    assert lb.server(POOL, "sbc-a").state == UP
    with pytest.raises(LoadBalancerError, match="still adminState None"):
        lb.wait_drained(POOL, "sbc-a", deadline_s=0.2, poll_s=0.05)


def test_operation_waits_honour_retry_after(fake: FakeAzure) -> None:
    fake.operation_retry_after = "1"
    lb = make_lb(fake)
    start = time.monotonic()
    lb.set_state(POOL, "sbc-b", ServerState.MAINT)
    assert 0.9 <= time.monotonic() - start < 5.0  # waited the PUT's Retry-After, not 0.01 s


def test_pool_etag_conflict(fake: FakeAzure) -> None:
    lb = make_lb(fake)
    fake.race_write("/backendAddressPools/sip-edge")
    with pytest.raises(CloudLoadBalancerError) as exc:
        lb.set_state(POOL, "sbc-a", ServerState.MAINT)
    assert (exc.value.code, exc.value.provider_code) == (CONFLICT, "PreconditionFailed")
    assert fake.admin_state(RG, LB, POOL, "sbc-a") == "None"
    lb.set_state(POOL, "sbc-a", ServerState.MAINT)  # a fresh read succeeds
    assert fake.admin_state(RG, LB, POOL, "sbc-a") == "Down"


def test_operation_failure_and_cancel(fake: FakeAzure) -> None:
    fake.operation_polls = 1
    lb = make_lb(fake)
    fake.fail_next_operation("InternalServerError", "An error occurred in the network RP.")
    with pytest.raises(CloudLoadBalancerError) as failed:
        lb.set_state(POOL, "sbc-a", ServerState.MAINT)
    err = failed.value
    assert (err.code, err.provider_code) == (PROVIDER, "InternalServerError")
    assert "Failed: An error occurred in the network RP." in str(err)
    assert fake.admin_state(RG, LB, POOL, "sbc-a") == "None"
    assert lb.server(POOL, "sbc-a").state == UNKNOWN  # the pool's provisioningState is Failed

    fake.fail_next_operation("Canceled", "Operation was canceled.", status="Canceled")
    with pytest.raises(CloudLoadBalancerError) as canceled:
        lb.set_state(POOL, "sbc-b", ServerState.MAINT)
    assert canceled.value.code == CONFLICT

    fake.operation_polls = 1000
    slow = make_lb(fake, operation_timeout=0.3)
    with pytest.raises(CloudLoadBalancerError, match=r"still in progress after 0\.3 s"):
        slow.set_state(POOL, "sbc-b", ServerState.MAINT)
    assert slow.server(POOL, "sbc-b").state == DRAIN  # Down, the pool still Updating


# --- Azure DNS -------------------------------------------------------------------------------


def test_dns_create_replace_delete(fake: FakeAzure) -> None:
    dns = make_dns(fake)
    assert dns.lookup("db", "A") == RecordSet("db.siprec.lab.", "A", 300, ("10.0.0.1",))
    assert dns.lookup("nothing", "A") == RecordSet("nothing.siprec.lab.", "A")
    assert dns.describe() == "Azure DNS zone siprec.lab. (resource group rg-sip)"

    created = dns.apply(
        [
            Change.create("sip", "A", 60, "10.0.0.5", "10.0.0.6"),
            Change.create("@", "TXT", 60, "v=spf1 -all"),
            Change.create("@", "MX", 60, "10 sip"),
            Change.create("_sip._udp", "SRV", 60, "10 5 5060 sip"),
            Change.create("www", "CNAME", 60, "sip.siprec.lab."),
            Change.create("v6", "AAAA", 60, "fd00::5"),
        ]
    )
    assert created.serial == 0 and created.change_id == "" and created.status == ""
    puts = fake.arm_requests("PUT")
    assert len(puts) == 6 and all(p.headers.get("if-none-match") == "*" for p in puts)
    assert all(p.query["api-version"] == DNS_API_VERSION for p in puts)
    assert puts[1].path.endswith("/dnsZones/siprec.lab/TXT/@")
    assert fake.record_set(RG, ZONE, "A", "sip")["properties"]["ARecords"] == [
        {"ipv4Address": "10.0.0.5"},
        {"ipv4Address": "10.0.0.6"},
    ]
    assert fake.record_set(RG, ZONE, "SRV", "_sip._udp")["properties"]["SRVRecords"] == [
        {"priority": 10, "weight": 5, "port": 5060, "target": "sip.siprec.lab"}
    ]
    assert dns.wait_propagated(created, deadline=5.0).expected == created.expected
    assert dns.lookup("@", "MX").values == ("10 sip.siprec.lab.",)
    assert dns.lookup("siprec.lab.", "TXT").values == ('"v=spf1 -all"',)
    assert dns.lookup("www", "CNAME").values == ("sip.siprec.lab.",)
    assert dns.lookup("v6", "AAAA").values == ("fd00::5",)

    sent = len(fake.arm_requests("PUT"))
    with pytest.raises(CloudDnsError) as dup:
        dns.apply([Change.create("db", "A", 300, "10.0.0.9")])
    assert dup.value.code == CONFLICT and "exists as" in str(dup.value)
    assert isinstance(dup.value, DnsError) and len(fake.arm_requests("PUT")) == sent

    change = Change.replace("db", "A", 300, "10.0.0.2")
    assert dns.plan([change]) == ["replace db.siprec.lab. 300 A 10.0.0.1 -> 10.0.0.2"]
    etag = fake.record_set(RG, ZONE, "A", "db")["etag"]
    dns.wait_propagated(dns.apply([change]), deadline=5.0)
    assert fake.arm_requests("PUT")[-1].headers["if-match"] == etag
    assert dns.lookup("db", "A").values == ("10.0.0.2",)

    etag = fake.record_set(RG, ZONE, "A", "sip")["etag"]
    gone = dns.apply([Change.delete("sip", "A"), Change.delete("absent", "A")])
    deletes = fake.arm_requests("DELETE")
    assert len(deletes) == 1 and deletes[0].headers["if-match"] == etag
    assert fake.record_set(RG, ZONE, "A", "sip") is None
    assert dns.wait_propagated(gone, deadline=5.0).expected[0] == RecordSet("sip.siprec.lab.", "A")


def test_dns_create_refused_when_it_appears_and_not_atomic(fake: FakeAzure) -> None:
    dns = make_dns(fake)
    fake.race_write("/A/late")  # someone creates it between our read and our PUT
    with pytest.raises(CloudDnsError) as refused:
        dns.apply([Change.create("late", "A", 60, "10.0.0.7")])
    assert (refused.value.code, refused.value.provider_code) == (CONFLICT, "PreconditionFailed")
    assert dns.lookup("late", "A").values == ("192.0.2.99",)  # theirs, not overwritten

    fake.race_write("/A/db")  # the second set changes under us: the first stays applied
    with pytest.raises(CloudDnsError) as half:
        dns.apply(
            [Change.create("new", "A", 60, "10.0.0.8"), Change.replace("db", "A", 60, "1.2.3.4")]
        )
    assert half.value.code == CONFLICT
    assert "already applied: create new.siprec.lab. A" in str(half.value)
    assert dns.lookup("new", "A").present and dns.lookup("db", "A").values == ("10.0.0.1",)

    with pytest.raises(CloudDnsError) as no_zone:
        AzureDns("elsewhere.lab", RG, credentials=creds(fake)).lookup("db", "A")
    assert (no_zone.value.code, no_zone.value.provider_code) == (CONFIGURATION, "ResourceNotFound")


def test_dns_ttl_lower_restore(fake: FakeAzure) -> None:
    dns = make_dns(fake)
    lowered = dns.lower_ttl("db", "A", 5)
    assert lowered.previous_ttl == 300 and lowered.update is not None
    assert fake.record_set(RG, ZONE, "A", "db")["properties"]["TTL"] == 5
    assert dns.lookup("db", "A") == RecordSet("db.siprec.lab.", "A", 5, ("10.0.0.1",))
    assert dns.lower_ttl("db", "A", 60).update is None  # already low enough
    restored = dns.restore_ttl("db", "A", lowered.previous_ttl)
    assert restored.record.ttl == 300 and dns.lookup("db", "A").ttl == 300
    assert dns.restore_ttl("db", "A", 300).update is None
    with pytest.raises(CloudDnsError, match="has no A record"):
        dns.lower_ttl("nothing", "A", 30)


# --- errors ----------------------------------------------------------------------------------


def test_throttling_retried_then_gives_up(fake: FakeAzure) -> None:
    lb = make_lb(fake)
    lb.servers()  # token fetched
    fake.throttle(2)
    assert len(lb.servers()) == 3
    assert len(fake.arm_requests()) == 4  # 1 + 2 throttled + 1

    fake.throttle(100)
    with pytest.raises(CloudDnsError) as exc:
        make_dns(fake).lookup("db", "A")
    err = exc.value
    assert (err.code, err.provider_code) == (THROTTLING, "SubscriptionRequestsThrottled")
    assert err.retryable and "still throttled after 4 attempts" in str(err)

    fake.throttle(1, retry_after="1")
    patient = AzureDns(ZONE, RG, credentials=creds(fake), retry=RetryPolicy(3, 0.01, 5.0))
    start = time.monotonic()
    assert patient.lookup("db", "A").present
    assert time.monotonic() - start >= 0.9  # ARM's Retry-After, not the 0.01 s backoff


def test_auth_refused_at_the_token_endpoint(fake: FakeAzure) -> None:
    wrong = "not-the-secret-" + SECRET[::-1]
    lb = AzureLoadBalancer(RG, LB, credentials=creds(fake, secret=wrong), retry=FAST)
    with pytest.raises(CloudLoadBalancerError) as exc:
        lb.servers()
    err = exc.value
    assert (err.provider, err.service, err.code) == ("azure", "network", AUTH)
    assert err.provider_code == "invalid_client" and "AADSTS7000215" in str(err)
    assert len(fake.requests) == 1 and not fake.arm_requests()  # not retried, ARM not called
    for text in (str(err), repr(err), repr(lb), repr(lb.credentials), repr(lb.arm)):
        assert wrong not in text and SECRET not in text

    with pytest.raises(CloudDnsError) as tenant:
        AzureDns(ZONE, RG, credentials=creds(fake, tenant="nope")).lookup("db", "A")
    assert tenant.value.code == CONFIGURATION and "AADSTS90002" in str(tenant.value)
    with pytest.raises(CloudDnsError, match="no Azure client secret configured"):
        AzureDns(ZONE, RG, credentials=creds(fake, secret="")).lookup("db", "A")


def test_auth_refused_by_arm(fake: FakeAzure) -> None:
    lb = make_lb(fake)
    lb.servers()
    fake.revoke_tokens()
    with pytest.raises(CloudLoadBalancerError) as expired:
        lb.servers()
    assert (expired.value.code, expired.value.provider_code) == (
        AUTH,
        "InvalidAuthenticationToken",
    )
    assert len(lb.servers()) == 3 and fake.tokens_issued == 2  # a new token next time

    fake.forbid()
    with pytest.raises(CloudLoadBalancerError) as denied:
        lb.set_state(POOL, "sbc-a", ServerState.MAINT)
    assert (denied.value.code, denied.value.provider_code) == (AUTH, "AuthorizationFailed")
    assert SECRET not in str(denied.value)

    # Without a token at all, ARM says so (401 AuthenticationFailed).
    bare = httpx.get(f"{fake.url}{lb.path}", params={"api-version": NETWORK_API_VERSION})
    assert bare.status_code == 401
    assert bare.json()["error"]["code"] == "AuthenticationFailed"


def test_api_version_checked_and_token_cached_until_expiry(fake: FakeAzure) -> None:
    arm = AzureSession(creds(fake), service="network", family=CloudLoadBalancerError, retry=FAST)
    path = f"{arm.subscription}/resourceGroups/{RG}/providers/Microsoft.Network/loadBalancers/{LB}"
    with pytest.raises(CloudLoadBalancerError) as wrong:
        arm.json("GET", path, api_version="2015-01-01")
    assert (wrong.value.code, wrong.value.provider_code) == (
        CONFIGURATION,
        "NoRegisteredProviderFound",
    )
    missing = httpx.get(f"{fake.url}{path}", headers=dict(arm.headers()))
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "MissingApiVersionParameter"

    fake.token_lifetime = 1
    short = AzureSession(creds(fake), service="dns", family=CloudDnsError)
    first = short.token()
    assert short.token() == first
    time.sleep(0.6)  # past half of a 1 s lifetime: refreshed before it expires
    assert short.token() != first


# --- the failover-shaped sequence ------------------------------------------------------------


def test_failover_shaped_sequence(fake: FakeAzure) -> None:
    fake.operation_polls = 1
    lb, dns = make_lb(fake), make_dns(fake)
    old, new = "sbc-a", "sbc-b"
    lb.set_state(POOL, new, ServerState.MAINT)  # the standby starts out of rotation

    before_old = lb.server(POOL, old).state
    before_new = lb.server(POOL, new).state
    assert (before_old, before_new) == (UP, MAINT)
    lb.set_state(POOL, old, ServerState.MAINT)
    lb.set_state(POOL, new, ServerState.READY)
    assert (lb.server(POOL, old).state, lb.server(POOL, new).state) == (MAINT, UP)

    current = dns.lookup("db", "A")
    ttl = current.ttl
    dns.lower_ttl("db", "A", 5)
    result = dns.apply([Change.replace("db", "A", 5, "10.0.0.2")])
    assert dns.wait_propagated(result, deadline=5.0).expected[0].values == ("10.0.0.2",)
    dns.restore_ttl("db", "A", ttl)
    assert dns.lookup("db", "A") == RecordSet("db.siprec.lab.", "A", 300, ("10.0.0.2",))

    # Roll back: the same calls in reverse.
    back = dns.apply([Change.replace("db", "A", ttl, *current.values)])
    dns.wait_propagated(back, deadline=5.0)
    lb.set_state(POOL, new, ServerState.MAINT if before_new == MAINT else ServerState.READY)
    lb.set_state(POOL, old, ServerState.READY)
    assert fake.admin_state(RG, LB, POOL, old) == "None"
    assert fake.admin_state(RG, LB, POOL, new) == "Down"
    assert dns.lookup("db", "A").values == ("10.0.0.1",)


# --- blocks ----------------------------------------------------------------------------------


def test_blocks_build_working_levers_without_showing_the_secret(fake: FakeAzure) -> None:
    credentials = AzureCredentialsBlock(
        tenant_id=fake.tenant_id,
        client_id=fake.client_id,
        client_secret=SecretStr(SECRET),
        subscription_id=fake.subscription_id,
        authority_url=fake.url,
        management_url=fake.url,
    )
    lb_block = AzureLoadBalancerBlock(
        credentials=credentials, resource_group=RG, load_balancer_name=LB
    )
    zone_block = AzureDnsZone(credentials=credentials, resource_group=RG, zone=ZONE)
    lb = lb_block.load_balancer()
    assert len(lb.servers()) == 3
    assert zone_block.dns().lookup("db", "A").values == ("10.0.0.1",)
    for text in (repr(credentials), repr(lb_block), repr(zone_block), str(credentials)):
        assert SECRET not in text
    assert AzureLoadBalancerBlock._block_type_slug == "siprec-backup-azure-load-balancer"
    assert AzureDnsZone._block_type_slug == "siprec-backup-azure-dns-zone"
    assert credentials._block_type_slug == "siprec-backup-azure-credentials"

    with pytest.raises(ValueError, match="management_url"):
        AzureCredentialsBlock(
            tenant_id="t",
            client_id="c",
            client_secret=SecretStr(SECRET),
            subscription_id="s",
            management_url="management.azure.com",
        )
