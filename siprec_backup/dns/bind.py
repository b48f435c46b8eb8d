"""BIND (or any RFC 2136 server): dynamic updates signed with TSIG, plans, TTL management.

Every update goes to the zone's primary over TCP, signed with the TSIG key. ``create`` carries
the prerequisite "this record set does not exist" (RFC 2136 section 2.4.3), so it cannot
overwrite; ``replace`` swaps the whole record set; ``delete`` removes it. A TTL change carries
"this record set has exactly these values" so it never resurrects values someone else changed
in between. A refused update raises :class:`~siprec_backup.errors.DnsUpdateRefusedError` with the
response code and the zone; the TSIG secret never appears in a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.update

from siprec_backup.dns.base import DnsZone, TtlChange, UpdateResult
from siprec_backup.dns.propagation import (
    Nameserver,
    PropagationResult,
    discover_nameservers,
    served,
    soa_serial,
    wait_for_propagation,
)
from siprec_backup.dns.records import Change, RecordSet, absolute_name, zone_name
from siprec_backup.errors import ConfigurationError, DnsError, DnsUpdateRefusedError

#: TSIG algorithms by the names BIND's ``tsig-keygen -a`` uses.
TSIG_ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-md5": dns.tsig.HMAC_MD5,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}

#: What a refusal's response code means, for the error message.
_RCODE_HINTS = {
    "YXRRSET": "a create found the record set already there",
    "NXRRSET": "the record set changed since it was read",
    "NOTAUTH": "the server is not authoritative for the zone or rejected the TSIG key",
    "REFUSED": "the update policy does not allow this key to make the change",
    "NOTZONE": "a name lies outside the zone",
    "BADSIG": "the TSIG signature does not verify: wrong secret",
    "BADKEY": "the server does not know this TSIG key name or algorithm",
    "BADTIME": "the clocks of this host and the server differ too much",
}


@dataclass
class BindDns(DnsZone):
    """One zone on a primary that accepts TSIG-signed RFC 2136 updates.

    >>> dns = BindDns("siprec.lab", "127.0.0.1:5353", "ddns-key", "hmac-sha256", secret)
    >>> dns.apply([Change.replace("db", "A", 60, "10.0.0.2")]).serial
    """

    zone: str
    primary: str
    key_name: str
    key_algorithm: str = "hmac-sha256"
    key_secret: str = field(default="", repr=False)
    timeout: float = 5.0
    #: Nameservers to verify on (``host:port``); empty: the zone's NS records.
    nameservers: Sequence[str] = ()

    def __post_init__(self) -> None:
        self._origin = zone_name(self.zone)
        self.zone = self._origin.to_text()
        self._primary = Nameserver.parse(self.primary)
        if self.key_algorithm.lower() not in TSIG_ALGORITHMS:
            raise ConfigurationError(
                f"unknown TSIG algorithm {self.key_algorithm!r}: use one of"
                f" {', '.join(TSIG_ALGORITHMS)}"
            )
        try:
            self._key_name = dns.name.from_text(self.key_name)
        except dns.exception.DNSException:
            raise ConfigurationError(f"bad TSIG key name {self.key_name!r}") from None
        try:
            secret = base64.b64decode(self.key_secret, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"the TSIG secret of {self.key_name} is not base64") from None
        if not secret:
            raise ConfigurationError(f"the TSIG secret of {self.key_name} is empty")
        self._key = dns.tsig.Key(
            self._key_name, secret, TSIG_ALGORITHMS[self.key_algorithm.lower()]
        )
        if self.timeout <= 0:
            raise ConfigurationError("the DNS timeout must be positive")

    def describe(self) -> str:
        """``BIND zone siprec.lab. on 127.0.0.1:5353``: secret-free, for logs."""
        return f"BIND zone {self.zone} on {self._primary.address}"

    # --- reading ---------------------------------------------------------------------------

    def lookup(self, name: str, rtype: str) -> RecordSet:
        """The record set ``name``/``rtype`` as the primary serves it (no values if absent)."""
        qname = absolute_name(name, self._origin)
        return served(self._primary, qname, rtype.upper(), self.timeout)

    def serial(self) -> int:
        """The zone's SOA serial on the primary."""
        return soa_serial(self._primary, self._origin, self.timeout)

    # --- planning and applying -------------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> UpdateResult:
        """Send the changes as one atomic, signed update; return the serial after it.

        ConfigurationError before sending if a change is invalid; DnsUpdateRefusedError if the
        primary refuses (a create whose record set exists: YXRRSET); DnsError if it cannot be
        reached.
        """
        start = time.monotonic()
        normal = self._prepare(changes)
        if not normal:
            raise ConfigurationError("no DNS changes to apply")
        update = self._message()
        for change in normal:
            record = change.record
            name = dns.name.from_text(record.name)
            if change.action == "delete":
                update.delete(name, dns.rdatatype.from_text(record.rtype))
                continue
            rdataset = dns.rdataset.from_rdata_list(record.ttl, record.rdatas())
            if change.action == "create":
                update.absent(name, record.rtype)
                update.add(name, rdataset)
            else:
                update.replace(name, rdataset)
        self._send(update)
        serial = self.serial()
        return UpdateResult(self.zone, tuple(normal), serial, time.monotonic() - start)

    # --- TTL management --------------------------------------------------------------------

    def _set_ttl(self, current: RecordSet, ttl: int) -> TtlChange:
        start = time.monotonic()
        target = RecordSet(current.name, current.rtype, ttl, current.values)
        name = dns.name.from_text(current.name)
        update = self._message()
        update.present(
            name, dns.rdataset.from_rdata_list(0, current.rdatas())
        )  # TTL 0: RFC 2136 2.4.2
        update.replace(name, dns.rdataset.from_rdata_list(ttl, target.rdatas()))
        self._send(update)
        result = UpdateResult(
            self.zone, (Change("replace", target),), self.serial(), time.monotonic() - start
        )
        return TtlChange(target, current.ttl, result)

    # --- propagation -----------------------------------------------------------------------

    def authoritative_nameservers(self, port: int = 53) -> list[Nameserver]:
        """The configured ``nameservers``, or else the zone's NS records resolved (``port``)."""
        if self.nameservers:
            return [Nameserver.parse(text) for text in self.nameservers]
        return discover_nameservers(self.zone, via=self._primary, port=port, timeout=self.timeout)

    def wait_propagated(
        self,
        result: UpdateResult,
        *,
        deadline: float = 60.0,
        interval: float = 0.1,
    ) -> PropagationResult:
        """Wait until every authoritative nameserver serves ``result``'s records at its serial
        or later; PropagationError after ``deadline`` seconds."""
        return wait_for_propagation(
            self.authoritative_nameservers(),
            self.zone,
            result.expected,
            min_serial=result.serial,
            deadline=deadline,
            interval=interval,
            timeout=min(self.timeout, 2.0),
        )

    # --- plumbing --------------------------------------------------------------------------

    def _message(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(
            self._origin,
            keyring=self._key,
            keyname=self._key_name,
            keyalgorithm=self._key.algorithm,
        )

    def _send(self, update: dns.update.UpdateMessage) -> dns.message.Message:
        try:
            response = dns.query.tcp(
                update, self._primary.ip(), port=self._primary.port, timeout=self.timeout
            )
        except dns.tsig.PeerError as exc:
            # The server's TSIG error (BADSIG, BADKEY, BADTIME...) in an unsigned response.
            self._refused(_tsig_rcode(exc))
        except dns.exception.Timeout:
            raise DnsError(
                f"no answer from the primary {self._primary.address} within {self.timeout:g} s"
            ) from None
        except (OSError, dns.exception.DNSException) as exc:
            raise DnsError(
                f"update of {self.zone} on {self._primary.address} failed: {exc}"
            ) from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            self._refused(dns.rcode.to_text(rcode))
        return response

    def _refused(self, rcode: str) -> NoReturn:
        hint = _RCODE_HINTS.get(rcode)
        raise DnsUpdateRefusedError(
            f"{self._primary.address} refused the update of {self.zone}: {rcode}"
            + (f" ({hint})" if hint else ""),
            zone=self.zone,
            rcode=rcode,
        )


def _tsig_rcode(exc: dns.tsig.PeerError) -> str:
    """The TSIG error name of a dnspython peer error."""
    names = {
        dns.tsig.PeerBadKey: "BADKEY",
        dns.tsig.PeerBadSignature: "BADSIG",
        dns.tsig.PeerBadTime: "BADTIME",
        dns.tsig.PeerBadTruncation: "BADTRUNC",
    }
    return names.get(type(exc), type(exc).__name__)
