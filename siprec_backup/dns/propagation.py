"""Propagation verification: ask every authoritative nameserver directly until all serve a change.

Each nameserver is queried on its own address with the RD flag cleared (no resolver and no cache
in between), for the zone's SOA serial and for every expected record set. A nameserver agrees when
it answers authoritatively, its serial is at least the serial the primary reported after the
update, and it serves exactly the expected values and TTL (or nothing, after a delete). The wait
fails after a deadline with a :class:`~siprec_backup.errors.PropagationError` naming the
nameservers that still disagree and what they serve.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rrset

from siprec_backup.dns.records import RecordSet, zone_name
from siprec_backup.errors import ConfigurationError, DnsError, PropagationError


@dataclass(frozen=True)
class Nameserver:
    """One nameserver to query: an address (or host name) and port, and its NS name if known."""

    host: str
    port: int = 53
    name: str = ""

    @property
    def address(self) -> str:
        """``host:port`` (``[v6]:port`` for IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def label(self) -> str:
        """How messages name it: ``ns2.siprec.lab. (127.0.0.1:5354)`` or just the address."""
        return f"{self.name} ({self.address})" if self.name else self.address

    @classmethod
    def parse(cls, text: str, default_port: int = 53) -> Nameserver:
        """``"host:port"``, ``"[v6]:port"``, ``"host"`` or a bare IPv6 address."""
        text = text.strip()
        host, port = text, default_port
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ConfigurationError(f"bad nameserver address {text!r}: use [v6]:port")
            if rest:
                port = _port(text, rest[1:])
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = _port(text, port_text)
        if not host:
            raise ConfigurationError(f"bad nameserver address {text!r}: no host")
        return cls(host=host, port=port)

    def ip(self) -> str:
        """The IP address to send to (a host name is resolved by the system resolver)."""
        if dns.inet.is_address(self.host):
            return self.host
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise DnsError(f"cannot resolve nameserver {self.host}: {exc}") from None
        return str(infos[0][4][0])


def _port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"bad port in nameserver address {text!r}")
    return int(port_text)


def query(
    nameserver: Nameserver, qname: dns.name.Name, rtype: str, timeout: float
) -> dns.message.Message:
    """Ask ``nameserver`` directly, recursion not desired (UDP, TCP if truncated)."""
    request = dns.message.make_query(qname, dns.rdatatype.from_text(rtype))
    request.flags &= ~dns.flags.RD
    try:
        response, _ = dns.query.udp_with_fallback(
            request, nameserver.ip(), port=nameserver.port, timeout=timeout
        )
    except dns.exception.Timeout:
        raise DnsError(f"no answer from {nameserver.label} within {timeout:g} s") from None
    except (OSError, dns.exception.DNSException) as exc:
        raise DnsError(f"query to {nameserver.label} failed: {exc}") from None
    return response


def _authoritative(nameserver: Nameserver, response: dns.message.Message) -> None:
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise DnsError(f"{nameserver.label} answered {dns.rcode.to_text(rcode)}")
    if not response.flags & dns.flags.AA:
        raise DnsError(f"{nameserver.label} is not authoritative for the zone")


def soa_serial(nameserver: Nameserver, zone: dns.name.Name, timeout: float) -> int:
    """The zone's SOA serial as ``nameserver`` serves it; DnsError if it cannot tell."""
    response = query(nameserver, zone, "SOA", timeout)
    _authoritative(nameserver, response)
    rrset = response.get_rrset(response.answer, zone, dns.rdataclass.IN, dns.rdatatype.SOA)
    if rrset is None or not isinstance(rrset[0], dns.rdtypes.ANY.SOA.SOA):
        raise DnsError(f"{nameserver.label} serves no SOA record for {zone}")
    return int(rrset[0].serial)


def _answer(
    nameserver: Nameserver, name: dns.name.Name, rtype: str, timeout: float
) -> dns.rrset.RRset | None:
    response = query(nameserver, name, rtype, timeout)
    _authoritative(nameserver, response)
    return response.get_rrset(
        response.answer, name, dns.rdataclass.IN, dns.rdatatype.from_text(rtype)
    )


def served(nameserver: Nameserver, name: dns.name.Name, rtype: str, timeout: float) -> RecordSet:
    """What ``nameserver`` serves for ``name``/``rtype`` (no values if nothing)."""
    rrset = _answer(nameserver, name, rtype, timeout)
    if rrset is None:
        return RecordSet(name.to_text(), rtype)
    values = tuple(sorted({rd.to_text() for rd in rrset}))
    return RecordSet(name.to_text(), rtype, int(rrset.ttl), values)


def discover_nameservers(
    zone: str, *, via: Nameserver | str, port: int = 53, timeout: float = 2.0
) -> list[Nameserver]:
    """The zone's authoritative nameservers: its NS records as served by ``via`` (usually the
    primary), each resolved to its addresses (in-zone names from ``via``, others from the system
    resolver) and given ``port``."""
    origin = zone_name(zone)
    source = via if isinstance(via, Nameserver) else Nameserver.parse(via)
    ns_set = _answer(source, origin, "NS", timeout)
    if not ns_set:
        raise DnsError(f"{source.label} serves no NS records for {origin}")
    found: list[Nameserver] = []
    for target in sorted({dns.name.from_text(rd.to_text()) for rd in ns_set}):
        addresses: list[str] = []
        if target.is_subdomain(origin):
            for rtype in ("A", "AAAA"):
                addresses += served(source, target, rtype, timeout).values
        else:
            try:
                infos = socket.getaddrinfo(target.to_text(), port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                raise DnsError(f"cannot resolve nameserver {target}: {exc}") from None
            addresses += [str(info[4][0]) for info in infos]
        if not addresses:
            raise DnsError(f"nameserver {target} of {origin} has no address")
        for address in dict.fromkeys(addresses):
            found.append(Nameserver(host=address, port=port, name=target.to_text()))
    return found


@dataclass(frozen=True)
class NameserverState:
    """What one nameserver served at its last check; ``problem`` is empty once it agrees."""

    nameserver: Nameserver
    serial: int | None
    served: tuple[RecordSet, ...]
    problem: str
    #: Seconds from the start of the wait until it first agreed (None if it never did).
    seconds: float | None = None

    @property
    def agrees(self) -> bool:
        """Whether it serves the expected records at a recent enough serial."""
        return not self.problem


@dataclass(frozen=True)
class PropagationResult:
    """Every nameserver agreed: their serials and how long each took."""

    zone: str
    min_serial: int
    expected: tuple[RecordSet, ...]
    nameservers: tuple[NameserverState, ...]
    #: Seconds from the start of the wait until the last nameserver agreed.
    seconds: float

    @property
    def serials(self) -> dict[str, int | None]:
        """The serial each nameserver served, by label."""
        return {s.nameserver.label: s.serial for s in self.nameservers}


def _same(expected: RecordSet, got: RecordSet) -> bool:
    if expected.values != got.values:
        return False
    return not expected.present or expected.ttl == got.ttl


def check_nameserver(
    nameserver: Nameserver,
    zone: dns.name.Name,
    expected: Sequence[RecordSet],
    *,
    min_serial: int,
    timeout: float = 2.0,
) -> NameserverState:
    """One check of one nameserver against normalised ``expected`` record sets."""
    serial: int | None = None
    got: list[RecordSet] = []
    try:
        serial = soa_serial(nameserver, zone, timeout)
        for record in expected:
            got.append(served(nameserver, dns.name.from_text(record.name), record.rtype, timeout))
    except DnsError as exc:
        return NameserverState(nameserver, serial, tuple(got), str(exc))
    problems: list[str] = []
    if serial < min_serial:
        problems.append(f"serial {serial} < {min_serial}")
    for want, have in zip(expected, got, strict=True):
        if not _same(want, have):
            problems.append(f"serves {have.describe()}, expected {want.describe()}")
    return NameserverState(nameserver, serial, tuple(got), "; ".join(problems))


def wait_for_propagation(
    nameservers: Sequence[Nameserver],
    zone: str,
    expected: Sequence[RecordSet],
    *,
    min_serial: int,
    deadline: float = 60.0,
    interval: float = 0.1,
    timeout: float = 2.0,
) -> PropagationResult:
    """Poll every nameserver until each serves ``expected`` at ``min_serial`` or later.

    ``expected`` names may be relative to ``zone``. A nameserver that agreed is not asked again
    (serials only grow). Raises PropagationError after ``deadline`` seconds, naming each
    nameserver that still disagrees and what it serves.
    """
    if not nameservers:
        raise ConfigurationError(f"no nameservers to verify {zone} on")
    origin = zone_name(zone)
    wanted = tuple(r.in_zone(origin) for r in expected)
    start = time.monotonic()
    states: dict[Nameserver, NameserverState] = {}
    while True:
        for ns in nameservers:
            previous = states.get(ns)
            if previous is not None and previous.agrees:
                continue
            left = deadline - (time.monotonic() - start)
            state = check_nameserver(
                ns, origin, wanted, min_serial=min_serial, timeout=max(0.05, min(timeout, left))
            )
            if state.agrees:
                state = NameserverState(
                    ns, state.serial, state.served, "", time.monotonic() - start
                )
            states[ns] = state
        elapsed = time.monotonic() - start
        if all(s.agrees for s in states.values()):
            return PropagationResult(
                zone=origin.to_text(),
                min_serial=min_serial,
                expected=wanted,
                nameservers=tuple(states[ns] for ns in nameservers),
                seconds=elapsed,
            )
        if elapsed >= deadline:
            bad = [states[ns] for ns in nameservers if not states[ns].agrees]
            detail = "; ".join(f"{s.nameserver.label}: {s.problem}" for s in bad)
            raise PropagationError(
                f"{len(bad)} of {len(nameservers)} nameservers of {origin} still disagree after"
                f" {deadline:g} s: {detail}",
                disagreeing=[s.nameserver.label for s in bad],
            )
        time.sleep(min(interval, max(0.0, deadline - elapsed)))
