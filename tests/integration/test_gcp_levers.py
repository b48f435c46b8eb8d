"""The GCP levers against a fake Google Cloud (``tests/fakes/gcp.py``): backend services in both
drain modes (global and regional), operations, fingerprints, Cloud DNS changes, TTLs, pending
changes, pagination, and the error contract (throttling, refused tokens, 401s, missing
google-auth). Tokens come from real google-auth, posting a signed JWT to the fake's token
endpoint. Google offers no emulator for Compute or Cloud DNS, hence the fake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from blocks.gcp import CloudDnsZone
from blocks.gcp import GcpBackendServices as GcpBackendServicesBlock
from blocks.gcp import GcpCredentials as GcpCredentialsBlock
from siprec_backup.cloud.gcp import GcpCredentials, google_error, next_page_token
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.dns.cloud_dns import CloudDns
from siprec_backup.dns.records import Change, RecordSet
from siprec_backup.errors import (
    AUTH,
    CONFIGURATION,
    CONFLICT,
    MISSING_SDK,
    THROTTLING,
    UNAVAILABLE,
    CloudDnsError,
    CloudLoadBalancerError,
    DnsError,
    LoadBalancerError,
    PropagationError,
)
from siprec_backup.traffic.base import DOWN, DRAIN, MAINT, UP, ServerState
from siprec_backup.traffic.gcp_backend import GcpBackendServices
from tests.fakes.gcp import FakeGcp, running_fake_gcp

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
ZONE_RECORDS = {
    ("db.siprec.lab.", "A"): (300, ["10.0.0.1"]),
    ("www.siprec.lab.", "A"): (300, ["10.0.0.9"]),
    ("siprec.lab.", "MX"): (3600, ["10 mail.siprec.lab."]),
    ("mail.siprec.lab.", "A"): (3600, ["10.0.0.25"]),
}


@pytest.fixture
def fake() -> Iterator[FakeGcp]:
    with running_fake_gcp() as started:
        started.add_backend_service(
            "sip-edge", {"ig-a": ["HEALTHY", "HEALTHY"], "ig-b": ["UNHEALTHY"]}
        )
        started.add_zone("siprec-lab", "siprec.lab", ZONE_RECORDS)
        yield started


@pytest.fixture
def key(fake: FakeGcp) -> str:
    return fake.service_account_key()


@pytest.fixture
def creds(fake: FakeGcp, key: str) -> GcpCredentials:
    return GcpCredentials(
        service_account_info=key,
        compute_url=fake.compute_url,
        dns_url=fake.dns_url,
        timeout=5.0,
    )


def _lb(
    creds: GcpCredentials, names: tuple[str, ...] = ("sip-edge",), **kw: object
) -> GcpBackendServices:
    return GcpBackendServices(names, credentials=creds, retry=FAST, poll_interval=0.01, **kw)  # type: ignore[arg-type]


def _dns(creds: GcpCredentials, **kw: object) -> CloudDns:
    zone = CloudDns("siprec.lab", credentials=creds, retry=FAST, **kw)  # type: ignore[arg-type]
    zone.poll_interval = 0.01
    return zone


def _calls(fake: FakeGcp, method: str, suffix: str) -> int:
    return sum(1 for m, p in fake.requests if m == method and p.endswith(suffix))


def _private_key(key: str) -> str:
    return str(json.loads(key)["private_key"])


# --- backend services ------------------------------------------------------------------------


def test_capacity_mode_list_drain_maint_ready(fake: FakeGcp, creds: GcpCredentials) -> None:
    lb = _lb(creds)
    found = {s.server: s for s in lb.servers()}
    assert set(found) == {"ig-a", "ig-b"}
    assert (found["ig-a"].state, found["ig-a"].status) == (UP, "2/2 HEALTHY")
    assert found["ig-a"].address == "zones/us-central1-a/instanceGroups/ig-a"
    assert (found["ig-b"].state, found["ig-b"].status) == (DOWN, "0/1 HEALTHY")
    assert "1 backend service(s), 2 backend(s)" in lb.check()
    assert fake.token_requests == 1  # one token, reused while valid

    before = fake.service("sip-edge")["fingerprint"]
    lb.set_state("sip-edge", "ig-a", ServerState.DRAIN)
    backend = fake.service("sip-edge")["backends"][0]
    assert backend["capacityScaler"] == 0.0 and backend["balancingMode"] == "UTILIZATION"
    assert fake.service("sip-edge")["fingerprint"] != before
    status = lb.server("sip-edge", "ig-a")
    assert status.state == MAINT and status.current_sessions == 0  # no draining timeout
    assert lb.wait_drained("sip-edge", "ig-a", deadline_s=2.0) < 2.0

    lb.set_state("sip-edge", "ig-a", ServerState.MAINT)
    lb.set_state("sip-edge", "ig-a", ServerState.READY)
    assert fake.service("sip-edge")["backends"][0]["capacityScaler"] == 1.0
    assert lb.server("sip-edge", "ig-a").state == UP
    assert _calls(fake, "PATCH", "/global/backendServices/sip-edge") == 3


def test_capacity_drain_window_reads_drain_then_maint(fake: FakeGcp, creds: GcpCredentials) -> None:
    fake.add_backend_service(
        "sip-core", {"ig-c": ["HEALTHY"], "ig-d": ["HEALTHY"]}, draining_timeout=1
    )
    lb = _lb(creds, ("sip-core",))
    lb.set_state("sip-core", "ig-c", ServerState.DRAIN)
    status = lb.server("sip-core", "ig-c")
    assert (
        status.state == DRAIN and status.current_sessions == 1 and "draining (1 s)" in status.status
    )
    waited = lb.wait_drained("sip-core", "ig-c", deadline_s=5.0, poll_s=0.05)
    assert 0.5 < waited < 5.0
    assert lb.server("sip-core", "ig-c").state == MAINT
    # A fresh lever did not take it out: capacity 0 reads as MAINT at once.
    assert _lb(creds, ("sip-core",)).server("sip-core", "ig-d").state == UP
    assert _lb(creds, ("sip-core",)).server("sip-core", "ig-c").state == MAINT


def test_removal_mode_regional(fake: FakeGcp, creds: GcpCredentials) -> None:
    original = fake.add_backend_service(
        "sip-media",
        {"ig-m1": ["HEALTHY"], "ig-m2": ["HEALTHY"]},
        region="europe-west1",
        balancing_mode="CONNECTION",
    )
    kept = json.loads(json.dumps(original["backends"]))
    lb = _lb(creds, ("sip-media",), region="europe-west1", drain_mode="removal")
    lb.set_state("sip-media", "ig-m1", ServerState.MAINT)
    groups = [b["group"] for b in fake.service("sip-media", "europe-west1")["backends"]]
    assert groups == [fake.group_url("ig-m2")]
    status = lb.server("sip-media", "ig-m1")
    assert status.state == MAINT and status.status == "not attached"
    lb.set_state("sip-media", "ig-m1", ServerState.DRAIN)  # already out: nothing sent
    assert _calls(fake, "PATCH", "/regions/europe-west1/backendServices/sip-media") == 1

    lb.set_state("sip-media", "ig-m1", ServerState.READY)
    backends = fake.service("sip-media", "europe-west1")["backends"]
    assert sorted(backends, key=lambda b: b["group"]) == kept  # as it was, balancingMode kept
    assert lb.server("sip-media", "ig-m1").state == UP

    # A later run has no memory of the detached backend: READY needs groups.
    lb.set_state("sip-media", "ig-m1", ServerState.MAINT)
    fresh = _lb(creds, ("sip-media",), region="europe-west1", drain_mode="removal")
    with pytest.raises(CloudLoadBalancerError, match=r"set groups\['ig-m1'\]") as unknown:
        fresh.set_state("sip-media", "ig-m1", ServerState.READY)
    assert unknown.value.code == CONFIGURATION
    given = _lb(
        creds,
        ("sip-media",),
        region="europe-west1",
        drain_mode="removal",
        groups={"ig-m1": "zones/us-central1-a/instanceGroups/ig-m1"},
        balancing_mode="RATE",
    )
    assert given.server("sip-media", "ig-m1").state == MAINT
    given.set_state("sip-media", "ig-m1", ServerState.READY)
    added = fake.service("sip-media", "europe-west1")["backends"][-1]
    assert added == {
        "group": fake.group_url("ig-m1"),
        "balancingMode": "RATE",
        "capacityScaler": 1.0,
    }


def test_operation_running_then_done(fake: FakeGcp, creds: GcpCredentials) -> None:
    fake.operation_polls = 3
    lb = _lb(creds)
    lb.set_state("sip-edge", "ig-b", ServerState.MAINT)
    gets = [p for m, p in fake.requests if m == "GET" and "/global/operations/operation-" in p]
    assert len(gets) == 3 and len(set(gets)) == 1

    fake.operation_polls = 1000
    slow = _lb(creds, operation_timeout=0.2)
    with pytest.raises(CloudLoadBalancerError, match=r"still RUNNING after 0\.2 s") as exc:
        slow.set_state("sip-edge", "ig-b", ServerState.READY)
    assert exc.value.code == UNAVAILABLE


def test_operation_error_is_raised(fake: FakeGcp, creds: GcpCredentials) -> None:
    fake.operation_polls = 1
    fake.fail_operations(1, "RESOURCE_NOT_READY", http=400)
    lb = _lb(creds)
    with pytest.raises(CloudLoadBalancerError) as exc:
        lb.set_state("sip-edge", "ig-a", ServerState.MAINT)
    err = exc.value
    assert (err.provider, err.service, err.code) == ("gcp", "compute", CONFIGURATION)
    assert err.provider_code == "RESOURCE_NOT_READY" and "failed" in err.message
    assert isinstance(err, LoadBalancerError)
    assert fake.service("sip-edge")["backends"][0]["capacityScaler"] == 1.0  # nothing applied


def test_fingerprint_conflict(fake: FakeGcp, creds: GcpCredentials) -> None:
    def other_writer() -> None:
        fake.service("sip-edge")["fingerprint"] = "changed-by-someone-else"

    fake.before_write = other_writer
    lb = _lb(creds)
    with pytest.raises(CloudLoadBalancerError) as exc:
        lb.set_state("sip-edge", "ig-a", ServerState.MAINT)
    assert exc.value.code == CONFLICT and exc.value.provider_code == "conditionNotMet"
    assert _calls(fake, "PATCH", "/sip-edge") == 1  # a conflict is not retried
    fake.before_write = None
    lb.set_state("sip-edge", "ig-a", ServerState.MAINT)  # read again: succeeds
    assert fake.service("sip-edge")["backends"][0]["capacityScaler"] == 0.0


def test_unknown_backend_server_and_service(fake: FakeGcp, creds: GcpCredentials) -> None:
    lb = _lb(creds)
    with pytest.raises(CloudLoadBalancerError, match="no server 'ig-x'") as server:
        lb.server("sip-edge", "ig-x")
    assert server.value.code == CONFIGURATION
    with pytest.raises(CloudLoadBalancerError, match="no server 'ig-x'"):
        lb.set_state("sip-edge", "ig-x", ServerState.MAINT)
    with pytest.raises(CloudLoadBalancerError, match="no backend 'other'"):
        lb.set_state("other", "ig-a", ServerState.READY)
    with pytest.raises(CloudLoadBalancerError) as missing:
        _lb(creds, ("no-such-service",)).servers()
    assert missing.value.code == CONFIGURATION and missing.value.provider_code == "notFound"
    with pytest.raises(CloudLoadBalancerError, match="drain mode"):
        _lb(creds, drain_mode="weights")
    foreign = GcpCredentials(
        service_account_info=creds.service_account_info,
        project="someone-elses",
        compute_url=fake.compute_url,
    )
    with pytest.raises(CloudLoadBalancerError) as denied:
        GcpBackendServices(["sip-edge"], credentials=foreign, retry=FAST).servers()
    assert denied.value.code == AUTH and denied.value.provider_code == "forbidden"


# --- Cloud DNS -------------------------------------------------------------------------------


def test_dns_create_replace_delete(fake: FakeGcp, creds: GcpCredentials) -> None:
    zone = _dns(creds, managed_zone="siprec-lab")
    assert zone.lookup("db", "A") == RecordSet("db.siprec.lab.", "A", 300, ("10.0.0.1",))
    assert zone.lookup("@", "MX").values == ("10 mail.siprec.lab.",)
    assert not zone.lookup("sip", "A").present

    created = zone.apply([Change.create("sip", "A", 60, "10.0.0.7", "10.0.0.8")])
    assert created.status == "done" and created.change_id == "1"
    zone.wait_propagated(created, deadline=5.0)
    assert fake.rrset("siprec-lab", "sip.siprec.lab.", "A") == {
        "kind": "dns#resourceRecordSet",
        "name": "sip.siprec.lab.",
        "type": "A",
        "ttl": 60,
        "rrdatas": ["10.0.0.7", "10.0.0.8"],
    }
    with pytest.raises(CloudDnsError, match="exists as") as exists:
        zone.apply([Change.create("sip", "A", 60, "10.0.0.9")])
    assert exists.value.code == CONFLICT and isinstance(exists.value, DnsError)

    replaced = zone.apply([Change.replace("db", "A", 300, "10.0.0.2"), Change.delete("sip", "A")])
    posted = fake.zones["siprec-lab"].changes[replaced.change_id]
    assert [d["name"] for d in posted["deletions"]] == ["db.siprec.lab.", "sip.siprec.lab."]
    assert [(a["name"], a["rrdatas"]) for a in posted["additions"]] == [
        ("db.siprec.lab.", ["10.0.0.2"])
    ]
    zone.wait_propagated(replaced, deadline=5.0)
    assert fake.rrset("siprec-lab", "sip.siprec.lab.", "A") is None
    assert zone.plan([Change.replace("db", "A", 300, "10.0.0.2")]) == [
        "replace db.siprec.lab. 300 A 10.0.0.2 -> 10.0.0.2  (no change)"
    ]
    posts = _calls(fake, "POST", "/changes")
    same = zone.apply([Change.replace("db", "A", 300, "10.0.0.2")])
    assert same.change_id == "" and _calls(fake, "POST", "/changes") == posts  # nothing sent
    nothing = zone.apply([Change.delete("sip", "A")])  # already absent
    assert nothing.change_id == ""


def test_dns_ttl_lower_and_restore(fake: FakeGcp, creds: GcpCredentials) -> None:
    zone = _dns(creds)
    lowered = zone.lower_ttl("db", "A", 5)
    assert lowered.previous_ttl == 300 and lowered.update is not None
    assert fake.rrset("siprec-lab", "db.siprec.lab.", "A")["ttl"] == 5  # type: ignore[index]
    change = fake.zones["siprec-lab"].changes[lowered.update.change_id]
    assert change["deletions"][0]["ttl"] == 300 and change["additions"][0]["ttl"] == 5
    assert zone.lower_ttl("db", "A", 30).update is None  # already lower
    restored = zone.restore_ttl("db", "A", 300)
    assert restored.previous_ttl == 5
    assert fake.rrset("siprec-lab", "db.siprec.lab.", "A")["ttl"] == 300  # type: ignore[index]
    with pytest.raises(CloudDnsError, match="has no A record") as absent:
        zone.lower_ttl("nothing", "A", 5)
    assert absent.value.code == CONFIGURATION


def test_dns_pending_then_done(fake: FakeGcp, creds: GcpCredentials) -> None:
    fake.change_polls = 2
    zone = _dns(creds, managed_zone="siprec-lab")
    result = zone.apply([Change.replace("db", "A", 300, "10.0.0.3")])
    assert result.status == "pending"
    propagated = zone.wait_propagated(result, deadline=5.0)
    assert propagated.expected[0].values == ("10.0.0.3",)
    assert _calls(fake, "GET", f"/changes/{result.change_id}") == 2

    fake.change_polls = 1000
    stuck = zone.apply([Change.replace("db", "A", 300, "10.0.0.4")])
    with pytest.raises(PropagationError, match=r"still pending after 0\.2 s"):
        zone.wait_propagated(stuck, deadline=0.2)


def test_dns_concurrent_changes_conflict(fake: FakeGcp, creds: GcpCredentials) -> None:
    zone = _dns(creds, managed_zone="siprec-lab")
    held = fake.zones["siprec-lab"].rrsets

    def other_writer() -> None:
        held[("db.siprec.lab.", "A")]["rrdatas"] = ["10.9.9.9"]

    fake.before_write = other_writer
    with pytest.raises(CloudDnsError) as changed:
        zone.apply([Change.replace("db", "A", 300, "10.0.0.2")])
    assert changed.value.code == CONFLICT and changed.value.provider_code == "conditionNotMet"

    fake.before_write = lambda: held.pop(("www.siprec.lab.", "A"), None)
    with pytest.raises(CloudDnsError) as gone:
        zone.apply([Change.delete("www", "A")])
    assert gone.value.code == CONFLICT and gone.value.provider_code == "notFound"


def test_dns_zone_found_by_name_and_paginated(fake: FakeGcp, creds: GcpCredentials) -> None:
    for i in range(3):
        fake.add_zone(f"other-{i}", f"other{i}.lab", {})
    zone = _dns(creds)  # no managed zone: found by dnsName
    assert zone.lookup("www", "A").values == ("10.0.0.9",)
    assert zone.managed_zone == "siprec-lab"

    for i in range(3):  # the same dnsName three times (e.g. split-horizon private zones)
        fake.add_zone(f"dup-{i}", "dup.lab", {})
    ambiguous = CloudDns("dup.lab", credentials=creds, retry=FAST)
    with pytest.raises(CloudDnsError, match=r"3 managed zones serve dup\.lab\.") as exc:
        ambiguous.lookup("x", "A")
    assert exc.value.code == CONFIGURATION
    listed = [p for m, p in fake.requests if m == "GET" and p.endswith("/managedZones")]
    assert len(listed) >= 1 + 2  # the duplicate listing took two pages of two

    everything = list(
        zone.api.pages(
            f"projects/{fake.project}/managedZones/siprec-lab/rrsets",
            items="rrsets",
            next_page=next_page_token,
        )
    )
    assert len(everything) == len(fake.zones["siprec-lab"].rrsets) == 6  # SOA, NS + 4

    with pytest.raises(CloudDnsError, match=r"serves siprec\.lab\., not other\.lab\.") as wrong:
        CloudDns("other.lab", managed_zone="siprec-lab", credentials=creds).lookup("a", "A")
    assert wrong.value.code == CONFIGURATION


# --- throttling, auth, missing SDK ----------------------------------------------------------


@pytest.mark.parametrize("status", [429, 403])
def test_throttling_retried_then_succeeds(
    fake: FakeGcp, creds: GcpCredentials, status: int
) -> None:
    lb, zone = _lb(creds), _dns(creds, managed_zone="siprec-lab")
    lb.servers()
    zone.lookup("db", "A")
    fake.requests.clear()
    fake.throttle(2, status)
    assert len(lb.servers()) == 2
    fake.throttle(FAST.attempts - 1, status)
    assert zone.lookup("db", "A").present
    # servers(): GET + 2 getHealth, 2 of them retried; lookup: one GET tried 4 times.
    assert len(fake.requests) == 3 + 2 + FAST.attempts


def test_throttling_gives_up(fake: FakeGcp, creds: GcpCredentials) -> None:
    fake.throttle(10, 403)
    zone = _dns(creds, managed_zone="siprec-lab")
    with pytest.raises(CloudDnsError) as exc:
        zone.lookup("db", "A")
    err = exc.value
    assert err.code == THROTTLING and err.retryable and err.provider_code == "rateLimitExceeded"
    assert f"after {FAST.attempts} attempts" in str(err)
    assert len(fake.requests) == FAST.attempts


def test_token_refused_is_auth(fake: FakeGcp, creds: GcpCredentials, key: str) -> None:
    fake.refuse_tokens = True
    with pytest.raises(CloudLoadBalancerError) as lb_exc:
        _lb(creds).servers()
    with pytest.raises(CloudDnsError) as dns_exc:
        _dns(creds).lookup("db", "A")
    for err in (lb_exc.value, dns_exc.value):
        assert err.code == AUTH and err.provider_code == "invalid_grant"
        assert "refused" in err.message
        assert _private_key(key) not in str(err) and "PRIVATE KEY" not in str(err)
    assert fake.requests == []  # nothing reached the APIs


def test_api_401_is_auth_and_secret_free(fake: FakeGcp, creds: GcpCredentials, key: str) -> None:
    lb = _lb(creds)
    lb.servers()
    fake.revoke_tokens()  # the token google-auth holds is no longer accepted
    fake.requests.clear()
    with pytest.raises(CloudLoadBalancerError) as exc:
        lb.servers()
    err = exc.value
    assert err.code == AUTH and err.provider_code == "authError"
    assert len(fake.requests) == 1  # not retried
    assert "ya29" not in str(err) and _private_key(key) not in str(err)
    zone = _dns(creds)
    for shown in (repr(creds), repr(lb), repr(zone), str(creds.describe())):
        assert "PRIVATE KEY" not in shown and _private_key(key)[40:80] not in shown
    assert "failover@siprec-test.iam.gserviceaccount.com" in creds.describe()


def test_application_default_credentials(
    fake: FakeGcp, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key given: google.auth.default finds the key file named by the environment."""
    path = tmp_path / "adc.json"
    path.write_text(key)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    adc = GcpCredentials(compute_url=fake.compute_url, dns_url=fake.dns_url)
    assert _lb(adc).server("sip-edge", "ig-a").state == UP
    assert _dns(adc).lookup("db", "A").present


_SUBPROCESS = """
import sys
if sys.argv[1] == "no-sdk":
    sys.modules["google.auth"] = None  # import google.auth now fails as without the extra
from siprec_backup.cloud.gcp import GcpCredentials
from siprec_backup.dns.cloud_dns import CloudDns
from siprec_backup.errors import CloudProviderError
from siprec_backup.traffic.gcp_backend import GcpBackendServices
creds = GcpCredentials(project="p", compute_url="http://127.0.0.1:9", dns_url="http://127.0.0.1:9")
for lever in (GcpBackendServices(["sip"], credentials=creds).servers,
              lambda: CloudDns("siprec.lab", credentials=creds).lookup("db", "A")):
    try:
        lever()
    except CloudProviderError as exc:
        print(type(exc).__name__, exc.code, "|", exc)
"""


def _run(mode: str, tmp_path: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    env |= {"NO_GCE_CHECK": "true", "CLOUDSDK_CONFIG": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_missing_google_auth_names_the_extra(tmp_path: Path) -> None:
    lines = _run("no-sdk", tmp_path)
    assert lines[0].startswith(f"CloudLoadBalancerError {MISSING_SDK} |")
    assert lines[1].startswith(f"CloudDnsError {MISSING_SDK} |")
    assert all(
        "google-auth" in line and "pip install 'siprec-backup[gcp]'" in line for line in lines
    )


def test_no_application_default_credentials(tmp_path: Path) -> None:
    lines = _run("no-adc", tmp_path)
    assert len(lines) == 2
    assert all(
        f" {CONFIGURATION} " in line and "no usable Google credentials" in line for line in lines
    )


@pytest.mark.parametrize(
    ("status", "body", "expected", "provider_code"),
    [
        (
            429,
            {"code": 429, "status": "RESOURCE_EXHAUSTED"},
            THROTTLING,
            "RESOURCE_EXHAUSTED",
        ),
        (
            403,
            {
                "code": 403,
                "status": "PERMISSION_DENIED",
                "errors": [{"reason": "userRateLimitExceeded"}],
            },
            THROTTLING,
            "userRateLimitExceeded",
        ),
        (
            403,
            {"code": 403, "status": "PERMISSION_DENIED", "errors": [{"reason": "forbidden"}]},
            AUTH,
            "forbidden",
        ),
        (401, {"code": 401, "status": "UNAUTHENTICATED"}, AUTH, "UNAUTHENTICATED"),
        (404, {"code": 404, "errors": [{"reason": "notFound"}]}, CONFIGURATION, "notFound"),
        (409, {"code": 409, "errors": [{"reason": "alreadyExists"}]}, CONFLICT, "alreadyExists"),
        (
            412,
            {"code": 412, "errors": [{"reason": "conditionNotMet"}]},
            CONFLICT,
            "conditionNotMet",
        ),
        (503, {"code": 503, "errors": [{"reason": "backendError"}]}, UNAVAILABLE, "backendError"),
    ],
)
def test_google_error_bodies(
    status: int, body: dict[str, object], expected: str, provider_code: str
) -> None:
    response = httpx.Response(status, json={"error": {"message": "words", **body}})
    assert google_error(response) == (expected, provider_code, "words")
    assert google_error(httpx.Response(502, text="<html>bad gateway</html>"))[0] == UNAVAILABLE


# --- the failover sequence and the blocks -----------------------------------------------------


def test_failover_shaped_sequence(fake: FakeGcp, creds: GcpCredentials) -> None:
    """What the failover flow does: old primary to MAINT, new one READY, DNS moved with a low
    TTL, then everything rolled back the same way."""
    fake.set_health("ig-b", ["HEALTHY"])
    fake.service("sip-edge")["backends"][1]["capacityScaler"] = 0.0  # the standby
    fake.operation_polls, fake.change_polls = 1, 1
    lb, dns = _lb(creds), _dns(creds, managed_zone="siprec-lab")

    def cut(old: str, new: str, address: str) -> None:
        assert lb.server("sip-edge", old).state == UP
        lb.set_state("sip-edge", old, ServerState.MAINT)
        lb.set_state("sip-edge", new, ServerState.READY)
        current = dns.lookup("db", "A")
        dns.lower_ttl("db", "A", 5)
        result = dns.apply([Change.replace("db", "A", 5, address)])
        dns.wait_propagated(result, deadline=5.0)
        dns.restore_ttl("db", "A", current.ttl)

    assert lb.server("sip-edge", "ig-b").state == MAINT
    cut("ig-a", "ig-b", "10.0.0.2")
    assert (lb.server("sip-edge", "ig-a").state, lb.server("sip-edge", "ig-b").state) == (MAINT, UP)
    assert dns.lookup("db", "A") == RecordSet("db.siprec.lab.", "A", 300, ("10.0.0.2",))
    cut("ig-b", "ig-a", "10.0.0.1")  # roll back
    assert (lb.server("sip-edge", "ig-a").state, lb.server("sip-edge", "ig-b").state) == (UP, MAINT)
    assert fake.rrset("siprec-lab", "db.siprec.lab.", "A")["rrdatas"] == ["10.0.0.1"]  # type: ignore[index]


def test_blocks_build_the_levers(fake: FakeGcp, key: str) -> None:
    credentials = GcpCredentialsBlock(
        service_account_info=key, compute_url=fake.compute_url, dns_url=fake.dns_url
    )
    assert credentials.project_id() == fake.project
    assert _private_key(key)[40:80] not in repr(credentials)
    lb_block = GcpBackendServicesBlock(credentials=credentials, backend_services=["sip-edge"])
    assert lb_block.load_balancer().server("sip-edge", "ig-a").state == UP
    zone_block = CloudDnsZone(credentials=credentials, zone="siprec.lab", managed_zone="siprec-lab")
    assert zone_block.dns().lookup("db", "A").values == ("10.0.0.1",)
    for block in (GcpCredentialsBlock, GcpBackendServicesBlock, CloudDnsZone):
        assert block.get_block_type_slug().startswith("siprec-backup-gcp-")

    with pytest.raises(ValueError, match="service_account_info") as bad:
        GcpCredentialsBlock(service_account_info='{"type": "authorized_user"}')
    assert "service_account" in str(bad.value)
    with pytest.raises(ValueError, match="not valid JSON"):
        GcpCredentialsBlock(service_account_info="not json at all")
    with pytest.raises(ValueError, match="compute_url"):
        GcpCredentialsBlock(compute_url="compute.example")
    with pytest.raises(ValueError, match="backend_services"):
        GcpBackendServicesBlock(backend_services=[])
