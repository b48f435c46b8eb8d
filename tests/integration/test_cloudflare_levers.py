"""The Cloudflare DNS lever against the fake Cloudflare API (tests/fakes/cloudflare.py): create,
replace, delete, TTLs, proxied records, batch atomicity, pagination, throttling, auth, the
failover-shaped sequence, and a real named standing in for Cloudflare's nameservers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from blocks.cloudflare import CloudflareCredentials as CredentialsBlock
from blocks.cloudflare import CloudflareDnsZone
from siprec_backup.cloud.cloudflare import CloudflareCredentials, cloudflare_error
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.dns.cloudflare import CloudflareDns
from siprec_backup.dns.records import Change, RecordSet
from siprec_backup.errors import (
    AUTH,
    CONFIGURATION,
    CONFLICT,
    PROVIDER,
    THROTTLING,
    CloudDnsError,
    DnsError,
)
from siprec_backup.lab import _process
from siprec_backup.lab.bind import prepare_dir, serves_zone, spawn_named, static_config
from tests.fakes.cloudflare import FakeCloudflare, running_fake_cloudflare

TOKEN = "cf-t0ken-never-shown-0123456789abcdef"
READ_ONLY = "cf-read-only-token-0123456789"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
ZONE = "siprec.lab"


@pytest.fixture
def fake() -> Iterator[FakeCloudflare]:
    with running_fake_cloudflare(TOKEN, read_only_token=READ_ONLY) as server:
        zone_id = server.add_zone(ZONE)
        server.add_record(zone_id, "A", "db.siprec.lab", "10.0.0.1", ttl=300)
        server.add_record(zone_id, "A", "web.siprec.lab", "192.0.2.10", ttl=300, proxied=True)
        yield server


def _zone_id(fake: FakeCloudflare) -> str:
    """The seeded zone's id (the only zone)."""
    return next(iter(fake.zones))


def _lever(fake: FakeCloudflare, token: str = TOKEN, **options: object) -> CloudflareDns:
    creds = CloudflareCredentials(api_token=token, api_url=fake.url, timeout=5.0)
    return CloudflareDns(ZONE, credentials=creds, retry=FAST, **options)  # type: ignore[arg-type]


def test_create_replace_delete(fake: FakeCloudflare) -> None:
    cf = _lever(fake)
    assert cf.lookup("db", "A") == RecordSet("db.siprec.lab.", "A", 300, ("10.0.0.1",))
    assert cf.zone_identifier() == _zone_id(fake)  # found by GET /zones?name=

    with pytest.raises(CloudDnsError) as dup:
        cf.apply([Change.create("db", "A", 300, "10.0.0.9")])
    assert dup.value.code == CONFLICT and isinstance(dup.value, DnsError)
    assert fake.batches == []  # refused before anything was sent

    made = cf.apply(
        [
            Change.create("sip", "A", 120, "10.0.1.1", "10.0.1.2"),
            Change.create("note", "TXT", 120, "hello there"),
            Change.create("mail", "MX", 300, "10 sip"),
        ]
    )
    assert len(fake.batches) == 1 and made.change_id == "" and made.serial == 0
    cf.wait_propagated(made, deadline=5.0)
    assert cf.lookup("sip", "A").values == ("10.0.1.1", "10.0.1.2")
    assert cf.lookup("note", "TXT").values == ('"hello there"',)
    assert cf.lookup("mail", "MX").values == ("10 sip.siprec.lab.",)
    assert fake.records_of(_zone_id(fake), "mail.siprec.lab")[0]["priority"] == 10

    kept_id = fake.records_of(_zone_id(fake), "db.siprec.lab")[0]["id"]
    change = Change.replace("db", "A", 300, "10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert cf.plan([change]) == [
        "replace db.siprec.lab. 300 A 10.0.0.1 -> 10.0.0.1, 10.0.0.2, 10.0.0.3"
    ]
    cf.wait_propagated(cf.apply([change]), deadline=5.0)
    assert fake.batches[-1].keys() == {"posts"}  # the kept value is neither deleted nor patched
    assert kept_id in {r["id"] for r in fake.records_of(_zone_id(fake), "db.siprec.lab")}
    cf.wait_propagated(cf.apply([Change.replace("db", "A", 300, "10.0.0.3")]), deadline=5.0)
    assert set(fake.batches[-1]) == {"deletes"} and len(fake.batches[-1]["deletes"]) == 2
    assert cf.lookup("db", "A").values == ("10.0.0.3",)

    gone = cf.apply([Change.delete("sip", "A"), Change.delete("absent", "A")])
    assert cf.wait_propagated(gone, deadline=5.0).expected[0] == RecordSet("sip.siprec.lab.", "A")
    assert not cf.lookup("sip", "A").present
    before = len(fake.batches)
    cf.apply([Change.delete("sip", "A")])  # absent: no batch is sent
    assert len(fake.batches) == before


def test_ttl_lower_and_restore(fake: FakeCloudflare) -> None:
    cf = _lever(fake)
    lowered = cf.lower_ttl("db", "A", 5)  # below Cloudflare's minimum: sent as 60
    assert lowered.previous_ttl == 300 and lowered.update is not None
    assert lowered.record.ttl == 60
    assert fake.batches[-1] == {
        "patches": [{"id": fake.batches[-1]["patches"][0]["id"], "ttl": 60}]
    }
    cf.wait_propagated(lowered.update, deadline=5.0)
    assert cf.lookup("db", "A").ttl == 60
    assert cf.lower_ttl("db", "A", 5).update is None  # already as low as Cloudflare goes
    restored = cf.restore_ttl("db", "A", 300)
    assert restored.previous_ttl == 60 and restored.update is not None
    assert cf.lookup("db", "A") == RecordSet("db.siprec.lab.", "A", 300, ("10.0.0.1",))
    with pytest.raises(CloudDnsError, match="at most 86400") as high:
        cf.restore_ttl("db", "A", 100000)
    assert high.value.code == CONFIGURATION
    with pytest.raises(CloudDnsError, match="has no A record"):
        cf.lower_ttl("nothing", "A", 30)


def test_proxied_records_keep_their_proxy_and_automatic_ttl(fake: FakeCloudflare) -> None:
    cf = _lever(fake)
    assert cf.lookup("web", "A").ttl == 1  # proxied: Cloudflare's automatic TTL
    assert cf.lower_ttl("web", "A", 5).update is None
    assert cf.restore_ttl("web", "A", 3600).update is None  # nothing to send for a proxied set

    result = cf.apply([Change.replace("web", "A", 300, "192.0.2.20", "192.0.2.21")])
    cf.wait_propagated(result, deadline=5.0)  # expects TTL 1 on the proxied records
    records = fake.records_of(_zone_id(fake), "web.siprec.lab")
    assert {(r["content"], r["proxied"], r["ttl"]) for r in records} == {
        ("192.0.2.20", True, 1),
        ("192.0.2.21", True, 1),
    }

    dns_only = _lever(fake, proxied=False)
    dns_only.wait_propagated(dns_only.apply([Change.replace("web", "A", 300, "192.0.2.30")]))
    assert [
        (r["proxied"], r["ttl"]) for r in fake.records_of(_zone_id(fake), "web.siprec.lab")
    ] == [(False, 300)]
    always = _lever(fake, proxied=True)
    always.apply([Change.create("api", "A", 300, "192.0.2.40"), Change.create("t", "TXT", 60, "x")])
    assert fake.records_of(_zone_id(fake), "api.siprec.lab")[0]["proxied"] is True
    assert fake.records_of(_zone_id(fake), "t.siprec.lab")[0]["proxied"] is False  # not proxiable


def test_api_verification_notices_a_wrong_ttl(fake: FakeCloudflare) -> None:
    cf = _lever(fake)
    result = cf.apply([Change.replace("db", "A", 120, "10.0.0.1")])
    record = fake.records_of(_zone_id(fake), "db.siprec.lab")[0]
    fake.records[_zone_id(fake)][0]["ttl"] = 600  # someone changed it since
    assert record["ttl"] == 120
    with pytest.raises(CloudDnsError, match=r"expected db\.siprec\.lab\. 120 A") as wrong:
        cf.wait_propagated(result, deadline=5.0)
    assert wrong.value.code == PROVIDER


def test_a_failing_batch_changes_nothing(fake: FakeCloudflare) -> None:
    cf = _lever(fake)
    cf.apply([Change.create("sip", "A", 300, "10.0.1.1", "10.0.1.2")])
    before = fake.records_of(_zone_id(fake))

    def concurrent_delete(zone_id: str) -> None:  # another client removes one record first
        fake.records[zone_id] = [r for r in fake.records[zone_id] if r["content"] != "10.0.1.2"]

    fake.before_batch = concurrent_delete
    with pytest.raises(CloudDnsError) as exc:
        cf.apply(
            [
                Change.replace("db", "A", 300, "10.0.0.5"),
                Change.replace("sip", "A", 300, "10.0.1.9"),
            ]
        )
    err = exc.value
    assert err.code == CONFLICT and err.provider_code == "81044"
    assert "deletes[" in err.message and "Record does not exist" in err.message
    after = fake.records_of(_zone_id(fake))
    assert after == [r for r in before if r["content"] != "10.0.1.2"]  # the batch left no trace
    fake.before_batch = None

    # A later operation of the same batch fails validation: the deletes before it are undone.
    with httpx.Client() as client:
        answer = client.post(
            f"{fake.url}/zones/{_zone_id(fake)}/dns_records/batch",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={
                "deletes": [{"id": after[0]["id"]}],
                "posts": [{"type": "A", "name": "x.siprec.lab", "content": "10.0.0.1", "ttl": 5}],
            },
        )
    assert answer.status_code == 400 and answer.json()["errors"][0]["code"] == 1004
    assert cloudflare_error(answer)[0] == CONFIGURATION
    assert fake.records_of(_zone_id(fake)) == after


def test_pagination(fake: FakeCloudflare) -> None:
    values = [f"10.0.2.{i}" for i in range(1, 13)]
    for value in values:
        fake.add_record(_zone_id(fake), "A", "pool.siprec.lab", value, ttl=300)
    cf = _lever(fake, per_page=None)  # the fake's default page: 5 records
    assert cf.lookup("pool", "A").values == tuple(sorted(values))
    pages = [r for r in fake.requests if "name=pool.siprec.lab" in r]
    assert len(pages) == 3 and "page=3" in pages[-1]
    cf.wait_propagated(cf.apply([Change.replace("pool", "A", 300, "10.0.2.1")]), deadline=5.0)
    assert len(fake.batches[-1]["deletes"]) == 11


def test_throttling_is_retried_then_gives_up(fake: FakeCloudflare) -> None:
    cf = _lever(fake)
    fake.throttle(2, retry_after=0.01)
    assert cf.lookup("db", "A").values == ("10.0.0.1",)
    assert sum(1 for r in fake.requests if r.startswith("GET /client/v4/zones?")) == 3

    fake.throttle(10)
    with pytest.raises(CloudDnsError) as exc:
        cf.lookup("db", "A")
    err = exc.value
    assert err.code == THROTTLING and err.retryable and err.provider_code == "971"
    assert "after 3 attempts" in str(err)


def test_authentication_refused_and_token_never_shown(fake: FakeCloudflare) -> None:
    wrong = _lever(fake, token="not-the-token-" + TOKEN[::-1])
    with pytest.raises(CloudDnsError) as exc:
        wrong.lookup("db", "A")
    assert exc.value.code == AUTH and exc.value.provider_code == "10000"
    assert TOKEN[::-1] not in str(exc.value)

    reader = _lever(fake, token=READ_ONLY)
    assert reader.lookup("db", "A").present
    with pytest.raises(CloudDnsError) as write:
        reader.apply([Change.replace("db", "A", 300, "10.0.0.2")])
    assert write.value.code == AUTH and write.value.provider_code == "9109"

    cf = _lever(fake)
    for text in (str(exc.value), str(write.value), repr(cf), repr(cf.credentials), cf.describe()):
        assert TOKEN not in text and READ_ONLY not in text
    with pytest.raises(CloudDnsError, match="no Cloudflare API token") as missing:
        _lever(fake, token="").lookup("db", "A")
    assert missing.value.code == CONFIGURATION
    with pytest.raises(CloudDnsError, match=r"no Cloudflare zone named elsewhere\.lab"):
        CloudflareDns("elsewhere.lab", credentials=cf.credentials).lookup("db", "A")
    with pytest.raises(CloudDnsError) as bad_id:
        CloudflareDns(ZONE, zone_id="0" * 32, credentials=cf.credentials).lookup("db", "A")
    assert bad_id.value.code == CONFIGURATION and bad_id.value.provider_code == "7003"


def test_failover_shaped_sequence(fake: FakeCloudflare) -> None:
    dns = _lever(fake)
    name = "db.siprec.lab."
    ttl = dns.lookup(name, "A").ttl
    lowered = dns.lower_ttl(name, "A", 5)
    assert lowered.update is not None
    dns.wait_propagated(lowered.update, deadline=5.0)
    result = dns.apply([Change.replace(name, "A", ttl, "10.0.0.2")])
    dns.wait_propagated(result, deadline=5.0)
    dns.restore_ttl(name, "A", ttl)
    assert dns.lookup(name, "A") == RecordSet(name, "A", 300, ("10.0.0.2",))
    # ... and back.
    dns.lower_ttl(name, "A", 5)
    dns.wait_propagated(dns.apply([Change.replace(name, "A", ttl, "10.0.0.1")]), deadline=5.0)
    dns.restore_ttl(name, "A", ttl)
    assert dns.lookup(name, "A") == RecordSet(name, "A", 300, ("10.0.0.1",))


ZONE_FILE = """$ORIGIN siprec.lab.
$TTL 300
@    IN SOA ns1 hostmaster ( 1 60 10 86400 30 )
@    IN NS  ns1
ns1  IN A   127.0.0.1
db   60 IN A 10.0.0.2
web  300 IN A 104.16.0.1
"""


@pytest.fixture
def nameserver() -> Iterator[str]:
    """A real named serving what Cloudflare's nameservers would: ``db`` directly, ``web``
    (proxied) as one of Cloudflare's own addresses."""
    directory = Path(tempfile.mkdtemp(prefix="siprec-cf-ns-"))
    os.chmod(directory, 0o755)  # noqa: S103 - named runs as bind and must enter it
    port = _process.free_ports(1)[0]
    conf = prepare_dir(directory, static_config(directory, port), secret=None, zone=ZONE_FILE)
    proc: subprocess.Popen[bytes] = spawn_named(conf, directory / "named.log")
    try:
        _process.wait_ready(
            "named", lambda: serves_zone(port), proc=proc, log=directory / "named.log", timeout=20
        )
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def test_nameserver_check_leaves_proxied_records_out(fake: FakeCloudflare, nameserver: str) -> None:
    cf = _lever(fake, nameservers=[nameserver], timeout=1.0)
    result = cf.apply(
        [Change.replace("db", "A", 5, "10.0.0.2"), Change.replace("web", "A", 300, "192.0.2.50")]
    )
    done = cf.wait_propagated(result, deadline=5.0)
    assert [s.agrees for s in done.nameservers] == [True]
    served = done.nameservers[0].served
    assert [r.describe() for r in served] == ["db.siprec.lab. 60 A 10.0.0.2"]  # web left out

    unproxied = _lever(fake, nameservers=[nameserver], timeout=0.5, proxied=False)
    late = unproxied.apply([Change.replace("web", "A", 300, "192.0.2.60")])
    with pytest.raises(DnsError, match=r"104\.16\.0\.1"):
        unproxied.wait_propagated(late, deadline=1.0)


def test_blocks_build_the_lever(fake: FakeCloudflare) -> None:
    creds = CredentialsBlock(api_token=SecretStr(TOKEN), api_url=fake.url)
    block = CloudflareDnsZone(credentials=creds, zone=ZONE, proxied=True, min_ttl=30)
    dns = block.dns()
    assert (dns.zone, dns.proxied, dns.min_ttl, dns.credentials.api_url) == (
        "siprec.lab.",
        True,
        30,
        fake.url,
    )
    assert dns.lookup("db", "A").present
    assert TOKEN not in repr(creds) and TOKEN not in repr(block)
    with pytest.raises(ValidationError, match="api_url"):
        CredentialsBlock(api_token=SecretStr(TOKEN), api_url="ftp://x")
    with pytest.raises(ValidationError, match="api_token"):
        CredentialsBlock(api_token=SecretStr(" "))
    with pytest.raises(ValidationError, match="zone_id"):
        CloudflareDnsZone(credentials=creds, zone=ZONE, zone_id="Z123")
    assert CredentialsBlock._block_type_slug.startswith("siprec-backup-cloudflare-")
    assert CloudflareDnsZone._block_type_slug.startswith("siprec-backup-cloudflare-")


def test_error_bodies_are_classified() -> None:
    def answer(status: int, code: int, message: str) -> httpx.Response:
        body = {"success": False, "errors": [{"code": code, "message": message}], "result": None}
        return httpx.Response(status, json=body)

    assert cloudflare_error(answer(429, 971, "slow down"))[:2] == (THROTTLING, "971")
    assert cloudflare_error(answer(400, 971, "slow down"))[0] == THROTTLING
    assert cloudflare_error(answer(403, 10000, "Authentication error"))[0] == AUTH
    assert cloudflare_error(answer(400, 9109, "Invalid access token"))[0] == AUTH
    assert cloudflare_error(answer(400, 81057, "The record already exists."))[0] == CONFLICT
    assert (
        cloudflare_error(answer(400, 81058, "An identical record already exists."))[0] == CONFLICT
    )
    assert cloudflare_error(answer(404, 7003, "Could not route"))[0] == CONFIGURATION
    assert (
        cloudflare_error(httpx.Response(502, text="<html>bad gateway</html>"))[0] == "unavailable"
    )
