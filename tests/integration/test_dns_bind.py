"""The DNS lever against the lab's real BIND 9.18 primary and secondary: signed RFC 2136
updates of all six record types verified on both nameservers, plans that send nothing, refused
keys, a nameserver that never catches up, TTL lowering and restoring, and the propagation time."""

from __future__ import annotations

import dataclasses
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.name
import pytest

from siprec_backup.dns import BindDns, Change, Nameserver, RecordSet, discover_nameservers
from siprec_backup.dns.propagation import served
from siprec_backup.errors import ConfigurationError, DnsUpdateRefusedError, PropagationError
from siprec_backup.lab import LabState, _process
from siprec_backup.lab.bind import (
    ZONE,
    BindEndpoint,
    prepare_dir,
    serves_zone,
    spawn_named,
    static_config,
    zone_text,
)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def primary(lab: LabState) -> BindEndpoint:
    return lab.bind("primary")


@pytest.fixture(scope="module")
def secondary(lab: LabState) -> BindEndpoint:
    return lab.bind("secondary")


@pytest.fixture(scope="module")
def updater(primary: BindEndpoint, secondary: BindEndpoint) -> BindDns:
    """Updates through the primary, verified on the primary and the secondary."""
    return primary.client(nameservers=(primary.address, secondary.address))


def on(endpoint: BindEndpoint, name: str, rtype: str) -> RecordSet:
    """What one lab nameserver serves (asked directly, no recursion)."""
    qname = dns.name.from_text(name, origin=dns.name.from_text(ZONE))
    return served(Nameserver(endpoint.host, endpoint.port), qname, rtype, 2.0)


def test_lab_endpoints_hide_the_secret(lab: LabState, primary: BindEndpoint) -> None:
    assert primary.key_secret
    assert primary.key_secret not in repr(primary)
    assert primary.key_secret not in repr(primary.client())
    assert primary.key_secret not in str(lab.services["bind-primary"].to_json())
    assert primary.key_secret not in Path(lab.services["bind-primary"].log).read_text()
    assert primary.zone == ZONE and lab.bind("secondary").role == "secondary"


def test_create_replace_delete_every_type_on_both_nameservers(
    updater: BindDns, primary: BindEndpoint, secondary: BindEndpoint
) -> None:
    creates = [
        Change.create("t1-www", "A", 60, "192.0.2.10"),
        Change.create("t1-www", "AAAA", 60, "2001:db8::10"),
        Change.create("t1-alias", "CNAME", 60, "t1-www"),
        Change.create("t1-mail", "A", 60, "192.0.2.25"),
        Change.create("t1-mx", "MX", 60, "10 t1-mail"),
        Change.create("t1-txt", "TXT", 60, "v=spf1 -all"),
        Change.create("t1-sip", "A", 60, "192.0.2.50"),
        Change.create("_sip._tcp.t1", "SRV", 60, "10 5 5060 t1-sip"),
    ]
    replaces = [
        Change.replace("t1-www", "A", 30, "192.0.2.11", "192.0.2.12"),
        Change.replace("t1-www", "AAAA", 30, "2001:db8::11"),
        Change.replace("t1-alias", "CNAME", 30, "cdn.example.net."),
        Change.replace("t1-mx", "MX", 30, "10 t1-mail", "20 mx.example.net."),
        Change.replace("t1-txt", "TXT", 30, "v=spf1 ip4:192.0.2.0/24 -all", '"two" "strings"'),
        Change.replace("_sip._tcp.t1", "SRV", 30, "20 10 5061 t1-sip"),
    ]
    deletes = [
        Change.delete("t1-www", "AAAA"),
        Change.delete("t1-alias", "CNAME"),
        Change.delete("t1-mx", "MX"),
        Change.delete("t1-txt", "TXT"),
        Change.delete("_sip._tcp.t1", "SRV"),
        Change.delete("t1-www", "A"),
    ]
    serial = updater.serial()
    for changes in (creates, replaces, deletes):
        result = updater.apply(changes)
        assert result.serial > serial
        serial = result.serial
        verified = updater.wait_propagated(result, deadline=15)
        assert [s.nameserver.address for s in verified.nameservers] == [
            primary.address,
            secondary.address,
        ]
        assert all(s.serial is not None and s.serial >= serial for s in verified.nameservers)
        for expected in result.expected:  # asked again directly, independently of the verifier
            for endpoint in (primary, secondary):
                assert on(endpoint, expected.name, expected.rtype) == expected
    assert on(secondary, "t1-www", "A") == RecordSet("t1-www.siprec.lab.", "A")
    assert on(secondary, "t1-mail", "A").values == ("192.0.2.25",)


def test_create_refuses_an_existing_record_set(updater: BindDns) -> None:
    updater.apply([Change.replace("t2-db", "A", 60, "10.0.1.1")])
    serial = updater.serial()
    with pytest.raises(DnsUpdateRefusedError, match="YXRRSET") as caught:
        updater.apply([Change.create("t2-db", "A", 60, "10.0.1.2")])
    assert caught.value.rcode == "YXRRSET" and caught.value.zone == ZONE
    assert updater.lookup("t2-db", "A").values == ("10.0.1.1",)
    assert updater.serial() == serial


def test_plan_prints_the_changes_and_sends_nothing(updater: BindDns) -> None:
    updater.apply([Change.replace("t3-db", "A", 60, "10.0.0.1"), Change.delete("t3-gone", "A")])
    serial = updater.serial()
    lines = updater.plan(
        [
            Change.replace("t3-db", "A", 60, "10.0.0.2"),
            Change.create("t3-new", "AAAA", 120, "2001:db8::2"),
            Change.delete("t3-db", "TXT"),
            Change.replace("t3-ttl", "A", 60, "10.0.0.3"),
        ]
    )
    assert lines == [
        "replace t3-db.siprec.lab. 60 A 10.0.0.1 -> 10.0.0.2",
        "create t3-new.siprec.lab. 120 AAAA 2001:db8::2",
        "delete t3-db.siprec.lab. TXT (absent): nothing to delete",
        "replace t3-ttl.siprec.lab. A (absent) -> 60 A 10.0.0.3",
    ]
    time.sleep(0.2)
    assert updater.serial() == serial
    assert updater.lookup("t3-db", "A").values == ("10.0.0.1",)
    assert not updater.lookup("t3-new", "AAAA").present


def test_wrong_tsig_secret_or_key_is_refused(updater: BindDns) -> None:
    serial = updater.serial()
    wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    bad_secret = dataclasses.replace(updater, key_secret=wrong)
    with pytest.raises(DnsUpdateRefusedError) as caught:
        bad_secret.apply([Change.replace("db", "A", 60, "10.9.9.9")])
    assert caught.value.rcode == "BADSIG" and caught.value.zone == ZONE
    assert wrong not in str(caught.value) and updater.key_secret not in str(caught.value)
    bad_key = dataclasses.replace(updater, key_name="no-such-key")
    with pytest.raises(DnsUpdateRefusedError, match="BADKEY") as caught:
        bad_key.apply([Change.replace("db", "A", 60, "10.9.9.9")])
    assert updater.key_secret not in str(caught.value)
    assert updater.serial() == serial
    assert "10.9.9.9" not in updater.lookup("db", "A").values


def test_an_in_zone_mx_target_needs_an_address(updater: BindDns) -> None:
    serial = updater.serial()
    with pytest.raises(
        ConfigurationError, match=r"points to t4-nomail\.siprec\.lab\., which has no A"
    ):
        updater.apply([Change.replace("t4", "MX", 60, "10 t4-nomail")])
    updater.apply(
        [
            Change.replace("t4", "MX", 60, "10 t4-mail"),
            Change.create("t4-mail", "A", 60, "192.0.2.4"),
        ]
    )
    assert updater.serial() == serial + 1
    # now present in the zone: an MX alone is accepted
    updater.apply([Change.replace("t4b", "MX", 60, "10 t4-mail")])


def test_ttl_lower_and_restore(updater: BindDns, secondary: BindEndpoint) -> None:
    updater.apply([Change.replace("t5-db", "A", 3600, "10.0.5.1")])
    lowered = updater.lower_ttl("t5-db", "A", 30)
    assert lowered.previous_ttl == 3600
    assert lowered.record == RecordSet("t5-db.siprec.lab.", "A", 30, ("10.0.5.1",))
    assert lowered.update is not None
    updater.wait_propagated(lowered.update, deadline=15)
    assert on(secondary, "t5-db", "A").ttl == 30
    again = updater.lower_ttl("t5-db", "A", 60)  # already lower: nothing sent
    assert again.update is None and again.previous_ttl == 30
    # the cutover itself, then the TTL goes back
    updater.apply([Change.replace("t5-db", "A", 30, "10.0.5.2")])
    restored = updater.restore_ttl("t5-db", "A", lowered.previous_ttl)
    assert restored.previous_ttl == 30 and restored.update is not None
    updater.wait_propagated(restored.update, deadline=15)
    assert on(secondary, "t5-db", "A") == RecordSet("t5-db.siprec.lab.", "A", 3600, ("10.0.5.2",))


def test_nameservers_are_discovered_from_the_zone(primary: BindEndpoint) -> None:
    found = discover_nameservers(ZONE, via=primary.address, port=primary.port)
    assert found == [
        Nameserver("127.0.0.1", primary.port, "ns1.siprec.lab."),
        Nameserver("127.0.0.1", primary.port, "ns2.siprec.lab."),
    ]


@pytest.fixture
def stray(lab: LabState) -> Iterator[str]:
    """A third named serving its own static copy of the zone (serial 1): it never follows."""
    directory = lab.root / "bind" / f"stray-{os.getpid()}"
    port = _process.free_ports(1)[0]
    conf = prepare_dir(directory, static_config(directory, port), secret=None, zone=zone_text(1))
    proc: subprocess.Popen[bytes] = spawn_named(conf, directory / "named.log")
    try:
        _process.wait_ready(
            "stray named",
            lambda: serves_zone(port),
            proc=proc,
            log=directory / "named.log",
            timeout=20,
        )
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_nameserver_that_never_catches_up_is_named(
    updater: BindDns, primary: BindEndpoint, secondary: BindEndpoint, stray: str
) -> None:
    result = updater.apply([Change.replace("db", "A", 60, "10.0.6.2")])
    three = dataclasses.replace(updater, nameservers=(primary.address, secondary.address, stray))
    start = time.monotonic()
    with pytest.raises(PropagationError) as caught:
        three.wait_propagated(result, deadline=2.0)
    assert 2.0 <= time.monotonic() - start < 6.0
    assert caught.value.disagreeing == [stray]
    message = str(caught.value)
    assert "1 of 3 nameservers" in message
    assert f"{stray}: serial 1 < {result.serial}" in message
    assert "serves db.siprec.lab. 300 A 10.0.0.1, expected db.siprec.lab. 60 A 10.0.6.2" in message


def test_a_stopped_secondary_is_named_then_catches_up(
    lab: LabState, updater: BindDns, secondary: BindEndpoint
) -> None:
    pid = lab.services["bind-secondary"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        result = updater.apply([Change.replace("t7", "TXT", 60, "while stopped")])
        quick = dataclasses.replace(updater, timeout=0.5)
        with pytest.raises(PropagationError, match=r"no answer from 127\.0\.0\.1") as caught:
            quick.wait_propagated(result, deadline=1.5)
        assert caught.value.disagreeing == [secondary.address]
    finally:
        os.kill(pid, signal.SIGCONT)
    verified = updater.wait_propagated(result, deadline=15)
    assert (verified.serials[secondary.address] or 0) >= result.serial
    assert on(secondary, "t7", "TXT").values == ('"while stopped"',)


def _update_and_verify(updater: BindDns, value: str) -> float:
    start = time.monotonic()
    result = updater.apply([Change.replace("t8-db", "A", 60, value)])
    updater.wait_propagated(result, deadline=15, interval=0.005)
    return time.monotonic() - start


def test_propagation_time_to_both_nameservers(
    updater: BindDns, capsys: pytest.CaptureFixture[str]
) -> None:
    """Time from the update request to verified on the primary and the secondary: 20 isolated
    updates (0.6 s apart, as in a failover), then 10 back to back (BIND then paces its NOTIFYs
    about 0.5 s apart, so about half of them wait for the next one)."""
    isolated: list[float] = []
    for i in range(20):
        isolated.append(_update_and_verify(updater, f"10.0.8.{i + 1}"))
        time.sleep(0.6)
    burst = [_update_and_verify(updater, f"10.0.9.{i + 1}") for i in range(10)]

    def ms(values: list[float]) -> str:
        median = statistics.median(values) * 1000
        return (
            f"median {median:.1f} ms (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})"
        )

    with capsys.disabled():
        print(
            f"\nDNS update -> verified on primary + secondary: 20 isolated updates {ms(isolated)};"
            f" 10 back-to-back {ms(burst)}"
        )
    assert statistics.median(isolated) < 2.0
    assert max(burst) < 5.0
