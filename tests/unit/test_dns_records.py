"""Record sets, changes and plans of the DNS lever: validation and formatting, no server."""

from __future__ import annotations

import dns.name
import pytest

from siprec_backup.dns import (
    BindDns,
    Change,
    Nameserver,
    RecordSet,
    check_targets,
    normalise,
    plan_line,
)
from siprec_backup.errors import ConfigurationError

ZONE = dns.name.from_text("siprec.lab.")
SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="


@pytest.mark.parametrize(
    ("rtype", "value", "canonical"),
    [
        ("A", "10.0.0.1", "10.0.0.1"),
        ("AAAA", "2001:DB8:0::10", "2001:db8::10"),
        ("CNAME", "www", "www.siprec.lab."),
        ("CNAME", "cdn.example.com.", "cdn.example.com."),
        ("MX", "10 mail", "10 mail.siprec.lab."),
        ("TXT", "v=spf1 -all", '"v=spf1 -all"'),
        ("TXT", '"a" "b"', '"a" "b"'),
        ("SRV", "10 5 5060 sip", "10 5 5060 sip.siprec.lab."),
    ],
)
def test_values_are_parsed_and_made_absolute(rtype: str, value: str, canonical: str) -> None:
    record = RecordSet("x", rtype.lower(), 60, (value,)).in_zone("siprec.lab")
    assert record == RecordSet("x.siprec.lab.", rtype, 60, (canonical,))


@pytest.mark.parametrize(
    ("rtype", "value", "message"),
    [
        ("A", "10.0.0.256", "bad A value '10.0.0.256'"),
        ("A", "2001:db8::1", "bad A value"),
        ("AAAA", "10.0.0.1", "bad AAAA value"),
        ("MX", "mail", "bad MX value 'mail'"),
        ("SRV", "10 5 sip", "bad SRV value"),
        ("SRV", "10 5 70000 sip", "bad SRV value"),
        ("PTR", "x", "unsupported DNS record type 'PTR'"),
    ],
)
def test_bad_values_are_refused(rtype: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace(".", r"\.")):
        RecordSet("db", rtype, 60, (value,))


def test_other_invalid_record_sets() -> None:
    with pytest.raises(ConfigurationError, match="one value"):
        RecordSet("alias", "CNAME", 60, ("a.example.", "b.example."))
    with pytest.raises(ConfigurationError, match="TTL"):
        RecordSet("db", "A", -1, ("10.0.0.1",))
    with pytest.raises(ConfigurationError, match="empty value"):
        RecordSet("db", "A", 60, (" ",))
    with pytest.raises(ConfigurationError, match="no value"):
        Change.replace("db", "A", 60)
    with pytest.raises(ConfigurationError, match="unknown DNS change 'upsert'"):
        Change("upsert", RecordSet("db", "A", 60, ("10.0.0.1",)))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["db.example.com.", "siprec.lab.example.", "lab."])
def test_a_name_outside_the_zone_is_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match=r"not inside the zone siprec\.lab\."):
        RecordSet(name, "A", 60, ("10.0.0.1",)).in_zone("siprec.lab.")


def test_names_relative_absolute_and_apex() -> None:
    for name in ("db", "db.siprec.lab.", "DB.siprec.lab."):
        assert RecordSet(name, "A", 60, ("10.0.0.1",)).in_zone(ZONE).name == "db.siprec.lab."
    assert RecordSet("@", "MX", 60, ("10 mx",)).in_zone(ZONE).name == "siprec.lab."
    values = RecordSet("db", "A", 60, ("10.0.0.2", "10.0.0.1", "10.0.0.2")).in_zone(ZONE).values
    assert values == ("10.0.0.1", "10.0.0.2")


def test_two_changes_to_one_record_set_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"two changes to db\.siprec\.lab\. A"):
        normalise(
            [Change.replace("db", "A", 60, "10.0.0.2"), Change.delete("db.siprec.lab.", "a")], ZONE
        )


def test_delete_expects_absence() -> None:
    change = Change.delete("db", "A").in_zone(ZONE)
    assert change.expected == RecordSet("db.siprec.lab.", "A")
    assert not change.expected.present


# --- the in-zone MX/SRV target rule ------------------------------------------------------------


def _check(changes: list[Change], existing: set[tuple[str, str]]) -> None:
    check_targets(
        normalise(changes, ZONE), ZONE, lambda name, rtype: (name.to_text(), rtype) in existing
    )


def test_an_in_zone_target_without_address_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError, match=r"MX siprec\.lab\. points to mail\.siprec\.lab\."):
        _check([Change.replace("@", "MX", 60, "10 mail")], set())
    with pytest.raises(ConfigurationError, match=r"points to sip\.siprec\.lab\., which has no A"):
        _check([Change.create("_sip._tcp", "SRV", 60, "10 5 5060 sip")], set())


def test_an_in_zone_target_is_fine_with_its_address() -> None:
    _check(
        [Change.replace("@", "MX", 60, "10 mail"), Change.create("mail", "A", 60, "1.2.3.4")], set()
    )
    _check([Change.create("_sip._tcp", "SRV", 60, "10 5 5060 sip")], {("sip.siprec.lab.", "AAAA")})
    # targets outside the zone and the SRV "no service" target are not checked
    _check([Change.replace("@", "MX", 60, "10 mx.example.com.")], set())
    _check([Change.replace("_sip._udp", "SRV", 60, "0 0 0 .")], set())


def test_deleting_the_only_address_of_a_target_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"mail\.siprec\.lab\."):
        _check(
            [Change.replace("@", "MX", 60, "10 mail"), Change.delete("mail", "A")],
            {("mail.siprec.lab.", "A")},
        )
    _check(
        [Change.replace("@", "MX", 60, "10 mail"), Change.delete("mail", "A")],
        {("mail.siprec.lab.", "A"), ("mail.siprec.lab.", "AAAA")},
    )


# --- plans ------------------------------------------------------------------------------------


def _line(change: Change, current: RecordSet) -> str:
    return plan_line(change.in_zone(ZONE), current.in_zone(ZONE))


def test_plan_lines() -> None:
    db1 = RecordSet("db", "A", 60, ("10.0.0.1",))
    absent = RecordSet("db", "A")
    assert (
        _line(Change.replace("db", "A", 60, "10.0.0.2"), db1)
        == "replace db.siprec.lab. 60 A 10.0.0.1 -> 10.0.0.2"
    )
    assert (
        _line(Change.replace("db", "A", 30, "10.0.0.2", "10.0.0.3"), db1)
        == "replace db.siprec.lab. 60 A 10.0.0.1 -> 30 A 10.0.0.2, 10.0.0.3"
    )
    assert (
        _line(Change.replace("db", "A", 60, "10.0.0.1"), db1)
        == "replace db.siprec.lab. 60 A 10.0.0.1 -> 10.0.0.1  (no change)"
    )
    assert (
        _line(Change.replace("db", "A", 60, "10.0.0.2"), absent)
        == "replace db.siprec.lab. A (absent) -> 60 A 10.0.0.2"
    )
    assert (
        _line(Change.create("_sip._tcp", "SRV", 60, "10 5 5060 sip"), RecordSet("_sip._tcp", "SRV"))
        == "create _sip._tcp.siprec.lab. 60 SRV 10 5 5060 sip.siprec.lab."
    )
    assert _line(Change.create("db", "A", 60, "10.0.0.2"), db1).endswith(
        "(exists: the update would be refused)"
    )
    assert _line(Change.delete("db", "A"), db1) == "delete db.siprec.lab. 60 A 10.0.0.1"
    assert (
        _line(Change.delete("db", "A"), absent)
        == "delete db.siprec.lab. A (absent): nothing to delete"
    )


# --- configuration ----------------------------------------------------------------------------


def test_the_tsig_secret_is_never_shown() -> None:
    updater = BindDns("siprec.lab", "127.0.0.1:5353", "ddns-key", "hmac-sha256", SECRET)
    assert SECRET not in repr(updater)
    assert updater.zone == "siprec.lab."
    with pytest.raises(ConfigurationError, match="not base64") as caught:
        BindDns("siprec.lab", "127.0.0.1:5353", "ddns-key", "hmac-sha256", "not*base64!")
    assert "not*base64!" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="unknown TSIG algorithm 'hmac-sha999'"):
        BindDns("siprec.lab", "127.0.0.1:5353", "ddns-key", "hmac-sha999", SECRET)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        ("ns1.example.com", "ns1.example.com", 53),
        ("[2001:db8::1]:5300", "2001:db8::1", 5300),
        ("2001:db8::1", "2001:db8::1", 53),
    ],
)
def test_nameserver_addresses(text: str, host: str, port: int) -> None:
    assert Nameserver.parse(text) == Nameserver(host, port)


@pytest.mark.parametrize("text", ["127.0.0.1:99999", "127.0.0.1:x", ":53", "[::1"])
def test_bad_nameserver_addresses(text: str) -> None:
    with pytest.raises(ConfigurationError, match="nameserver address"):
        Nameserver.parse(text)
