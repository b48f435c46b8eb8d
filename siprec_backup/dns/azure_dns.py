"""Azure DNS as a DNS lever, with the same methods as :class:`~siprec_backup.dns.BindDns`.

Each record set is one ARM resource, ``.../dnsZones/{zone}/{type}/{relative name}`` (``@`` for
the apex), read with GET and written with PUT: ``create`` sends ``If-None-Match: *`` so it can
never overwrite a set that appeared meanwhile; ``replace`` sends ``If-Match`` with the etag just
read (or ``If-None-Match: *`` when the set was absent), and ``delete`` sends DELETE with
``If-Match`` of the etag just read (nothing is sent for an absent set). A set changed by someone
else between the read and the write makes Azure answer 412: a CONFLICT.

Azure DNS has no batch of changes across record sets: the changes of one :meth:`apply` are sent
one after the other, so it is **not atomic across record sets** (a failure names the changes
already applied). Changes are synchronous: once the PUT returns, Azure's nameservers serve it, so
there is no change status to poll; :meth:`wait_propagated` checks the records through the API
and, with ``nameservers``, asks each of them directly. Azure DNS keeps no serial we use:
:attr:`UpdateResult.serial` is 0. Alias record sets (``targetResource``) are not managed.

Reference: https://learn.microsoft.com/en-us/rest/api/dns/record-sets/create-or-update (and
get, delete) at api-version 2018-05-01.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.name

from siprec_backup.cloud.azure import DNS_API_VERSION, AzureCredentials, AzureSession
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.dns.base import ApiDnsZone
from siprec_backup.dns.records import Change, RecordSet, absolute_name, parse_rdata, zone_name
from siprec_backup.errors import CloudDnsError

SERVICE = "dns"

#: The record-list property of each record type in an ARM record set.
PROPERTIES = {
    "A": "ARecords",
    "AAAA": "AAAARecords",
    "CNAME": "CNAMERecord",
    "MX": "MXRecords",
    "TXT": "TXTRecords",
    "SRV": "SRVRecords",
}


@dataclass
class AzureDns(ApiDnsZone):
    """One Azure DNS zone (resource group + zone name).

    >>> zone = AzureDns("siprec.example.com", "rg-dns", credentials=AzureCredentials(...))
    >>> zone.wait_propagated(zone.apply([Change.replace("db", "A", 60, "10.0.0.2")]))
    """

    zone: str
    resource_group: str
    credentials: AzureCredentials
    #: Nameservers to verify on (``host:port``); empty: verify through the API only.
    nameservers: Sequence[str] = ()
    #: Timeout of each direct nameserver query, in seconds.
    timeout: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    provider = "azure"
    service = SERVICE

    def __post_init__(self) -> None:
        self._origin = zone_name(self.zone)
        self.zone = self._origin.to_text()
        self.arm = AzureSession(
            self.credentials, service=SERVICE, family=CloudDnsError, retry=self.retry
        )
        #: The etag of each record set as last read: (absolute name, type) -> etag.
        self._etags: dict[tuple[str, str], str] = {}
        if not self.resource_group.strip():
            raise self._error("no Azure resource group configured for the DNS zone")
        if self.timeout <= 0:
            raise self._error("the nameserver timeout must be positive")

    def __repr__(self) -> str:
        return f"AzureDns({self.zone!r}, {self.resource_group!r}, {self.credentials.describe()})"

    def describe(self) -> str:
        """``Azure DNS zone siprec.lab. (resource group rg-dns)``: secret-free."""
        return f"Azure DNS zone {self.zone} (resource group {self.resource_group})"

    # --- plumbing --------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The zone's ARM resource path (the zone name without its final dot)."""
        return (
            f"{self.arm.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Network/dnsZones/{self._origin.to_text(omit_final_dot=True)}"
        )

    def _set_path(self, name: str, rtype: str) -> str:
        """``.../{type}/{relative name}``, ``@`` for the apex."""
        absolute = absolute_name(name, self._origin)
        relative = absolute.relativize(self._origin).to_text() if absolute != self._origin else "@"
        return f"{self.path}/{rtype}/{relative}"

    # --- reading ---------------------------------------------------------------------------

    def lookup(self, name: str, rtype: str) -> RecordSet:
        """GET the record set; a 404 ``NotFound`` is an absent set (a missing zone or
        resource group is a CONFIGURATION error)."""
        wanted = RecordSet(name, rtype).in_zone(self._origin)
        key = (wanted.name, wanted.rtype)
        try:
            body = self.arm.json(
                "GET", self._set_path(wanted.name, wanted.rtype), api_version=DNS_API_VERSION
            )
        except CloudDnsError as exc:
            if exc.provider_code == "NotFound":
                self._etags.pop(key, None)
                return wanted
            raise
        self._etags[key] = str(body.get("etag") or "")
        props = body.get("properties") or {}
        if props.get("targetResource"):
            raise self._error(f"{wanted.name} {wanted.rtype} is an alias record set")
        values = _values(wanted.rtype, props)
        return RecordSet(wanted.name, wanted.rtype, int(props.get("TTL") or 0), values).in_zone(
            self._origin
        )

    # --- applying ----------------------------------------------------------------------------

    def _send(self, changes: Sequence[tuple[Change, RecordSet]], comment: str) -> tuple[str, str]:
        """One request per record set, in order (not atomic across record sets)."""
        done: list[str] = []
        for change, current in changes:
            try:
                if self._send_one(change, current):
                    done.append(f"{change.action} {change.record.name} {change.record.rtype}")
            except CloudDnsError as exc:
                if not done:
                    raise
                raise exc.with_detail(f"(already applied: {'; '.join(done)})") from None
        return "", ""

    def _send_one(self, change: Change, current: RecordSet) -> bool:
        """Send one change; False when there was nothing to send (delete of an absent set)."""
        record = change.record
        path = self._set_path(record.name, record.rtype)
        etag = self._etags.get((record.name, record.rtype), "")
        if change.action == "delete":
            if not current.present:
                return False
            self.arm.request(
                "DELETE",
                path,
                api_version=DNS_API_VERSION,
                headers={"If-Match": etag} if etag else None,
            )
            self._etags.pop((record.name, record.rtype), None)
            return True
        if change.action == "create" or not current.present:
            headers = {"If-None-Match": "*"}  # never overwrite a set that appeared meanwhile
        else:
            headers = {"If-Match": etag} if etag else {}
        body = self.arm.json(
            "PUT",
            path,
            api_version=DNS_API_VERSION,
            json={"properties": {"TTL": record.ttl, **_api_records(record)}},
            headers=headers,
        )
        self._etags[(record.name, record.rtype)] = str(body.get("etag") or "")
        return True


def _fqdn(name: dns.name.Name) -> str:
    """A target name as Azure stores it (no final dot)."""
    return name.to_text(omit_final_dot=True)


def _api_records(record: RecordSet) -> dict[str, Any]:
    """The ARM record property of ``record`` (``{"ARecords": [{"ipv4Address": ...}]}``)."""
    rdatas: list[Any] = record.rdatas()
    rtype = record.rtype
    if rtype == "A":
        items: Any = [{"ipv4Address": r.address} for r in rdatas]
    elif rtype == "AAAA":
        items = [{"ipv6Address": r.address} for r in rdatas]
    elif rtype == "CNAME":
        items = {"cname": _fqdn(rdatas[0].target)}
    elif rtype == "MX":
        items = [{"preference": r.preference, "exchange": _fqdn(r.exchange)} for r in rdatas]
    elif rtype == "TXT":
        items = [{"value": [s.decode() for s in r.strings]} for r in rdatas]
    else:  # SRV
        items = [
            {"priority": r.priority, "weight": r.weight, "port": r.port, "target": _fqdn(r.target)}
            for r in rdatas
        ]
    return {PROPERTIES[rtype]: items}


def _absolute(target: str) -> str:
    return target if target.endswith(".") else f"{target}."


def _txt(strings: Sequence[str]) -> str:
    return " ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in strings)


def _values(rtype: str, props: dict[str, Any]) -> tuple[str, ...]:
    """Zone-file values of an ARM record set's record property."""
    raw = props.get(PROPERTIES[rtype])
    if not raw:
        return ()
    if rtype == "CNAME":
        return (_absolute(str(raw["cname"])),)
    values = []
    for item in raw:
        if rtype == "A":
            values.append(str(item["ipv4Address"]))
        elif rtype == "AAAA":
            values.append(str(item["ipv6Address"]))
        elif rtype == "MX":
            values.append(f"{item['preference']} {_absolute(str(item['exchange']))}")
        elif rtype == "TXT":
            values.append(_txt([str(s) for s in item.get("value", [])]))
        else:
            values.append(
                f"{item['priority']} {item['weight']} {item['port']}"
                f" {_absolute(str(item['target']))}"
            )
    for value in values:  # refuse what dnspython cannot read, as for every lever
        parse_rdata(rtype, value, dns.name.root)
    return tuple(values)


__all__ = ["AzureDns"]
