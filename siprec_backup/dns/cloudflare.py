"""Cloudflare DNS as a DNS lever, over the API v4 (:mod:`siprec_backup.cloud.cloudflare`).

A record set (name + type) is the list of Cloudflare records with that name and type. A change
goes as ONE ``POST /zones/{id}/dns_records/batch`` (deletes, patches, posts), which Cloudflare
runs in one database transaction (propagation to its edge is per record, not atomic): a replace
keeps the records whose value stays (patching their TTL if it changes), deletes the others and
posts the new values; a delete deletes every record of the set. Changes are synchronous: the
answer means applied (no change id to poll).

Proxied records (A, AAAA, CNAME): new records take ``proxied`` (None: the flag of the records
they replace, or false for a new set). Cloudflare answers a proxied name with its own addresses
and forces its TTL to 1 ("automatic"), so the API verification expects TTL 1 on proxied records,
:meth:`CloudflareDns.lower_ttl` / :meth:`restore_ttl` leave proxied sets alone (the origin
change is seen at once through the proxy) and the direct nameserver check leaves them out.
A set's TTL as read is the largest TTL of its unproxied records (1 if all are proxied).

TTLs: Cloudflare accepts 1 (automatic) or ``min_ttl`` (60; 30 on Enterprise zones) to 86400 s.
A lower TTL (a cutover's 5 s) is sent as ``min_ttl``; the verification expects that; an automatic
TTL is served as 300 s. Errors are :class:`~siprec_backup.errors.CloudDnsError`.

Docs: https://developers.cloudflare.com/api/resources/dns/subresources/records/ (list with
name/type/page/per_page, result_info.total_pages; batch: deletes, patches, puts, posts in that
order, one transaction), https://developers.cloudflare.com/dns/manage-dns-records/how-to/batch-record-changes
and https://developers.cloudflare.com/dns/proxy-status/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.name
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.IN.SRV

from siprec_backup.cloud.cloudflare import CloudflareCredentials, cloudflare_api, listing, result
from siprec_backup.cloud.http import RestApi
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.dns.base import ApiDnsZone, TtlChange
from siprec_backup.dns.records import (
    Change,
    RecordSet,
    absolute_name,
    parse_rdata,
    zone_name,
)
from siprec_backup.errors import PROVIDER, CloudDnsError

SERVICE = "dns"
#: Cloudflare's "automatic" TTL, forced on proxied records.
AUTO_TTL = 1
#: The TTL Cloudflare's nameservers serve for an automatic TTL.
AUTO_TTL_SERVED = 300
MAX_TTL = 86400
PROXIABLE = ("A", "AAAA", "CNAME")


@dataclass
class CloudflareDns(ApiDnsZone):
    """One Cloudflare zone.

    >>> cf = CloudflareDns("example.com", credentials=CloudflareCredentials(api_token=token))
    >>> cf.wait_propagated(cf.apply([Change.replace("db", "A", 60, "10.0.0.2")]))
    """

    zone: str
    #: The zone's 32-hex id; empty: found by the zone's name.
    zone_id: str = ""
    credentials: CloudflareCredentials = field(default_factory=CloudflareCredentials)
    #: Proxy status of new A/AAAA/CNAME records; None: that of the records they replace.
    proxied: bool | None = None
    #: Nameservers to verify on (``host:port``); empty: verify through the API only.
    nameservers: Sequence[str] = ()
    #: Timeout of each direct nameserver query, in seconds.
    timeout: float = 5.0
    #: Records per listing page; None: Cloudflare's default (100).
    per_page: int | None = 100
    #: The zone's smallest TTL other than automatic (60; 30 on Enterprise).
    min_ttl: int = 60
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    api: RestApi | None = field(default=None, repr=False)
    provider = "cloudflare"
    service = SERVICE

    def __post_init__(self) -> None:
        self._origin = zone_name(self.zone)
        self.zone = self._origin.to_text()
        if self.timeout <= 0:
            raise self._error("the Cloudflare nameserver timeout must be positive")
        if not 30 <= self.min_ttl <= MAX_TTL:
            raise self._error(f"min_ttl must be 30..{MAX_TTL}, not {self.min_ttl}")
        if self.per_page is not None and self.per_page < 1:
            raise self._error("per_page must be positive")
        #: Each record set's records as last read: (name without final dot, type) -> records.
        self._read: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def describe(self) -> str:
        """``Cloudflare zone example.com. (023e...)``: secret-free, for logs."""
        zone_id = f" ({self.zone_id})" if self.zone_id else ""
        return f"Cloudflare zone {self.zone}{zone_id}"

    # --- plumbing --------------------------------------------------------------------------

    def _api(self) -> RestApi:
        if self.api is None:
            self.api = cloudflare_api(
                self.credentials, service=SERVICE, family=CloudDnsError, retry=self.retry
            )
        return self.api

    def _page(self, **params: Any) -> dict[str, Any]:
        if self.per_page is not None:
            params["per_page"] = self.per_page
        return params

    def zone_identifier(self) -> str:
        """The zone's id, looked up by name (``GET /zones?name=``) once if not configured."""
        if not self.zone_id:
            wanted = self.zone.rstrip(".").lower()
            found = [
                z
                for z in listing(self._api(), "/zones", self._page(name=wanted))
                if str(z.get("name", "")).lower() == wanted
            ]
            if not found:
                raise self._error(f"no Cloudflare zone named {wanted} is visible to the token")
            if len(found) > 1:
                ids = ", ".join(str(z["id"]) for z in found)
                raise self._error(f"{len(found)} zones are named {wanted} ({ids}): set zone_id")
            self.zone_id = str(found[0]["id"])
        return self.zone_id

    def _records(self, qname: str, rtype: str) -> list[dict[str, Any]]:
        """The Cloudflare records of ``qname`` (absolute) and ``rtype``, every page; kept as
        the last read of that set (:meth:`_last_read`)."""
        name = qname.rstrip(".").lower()
        path = f"/zones/{self.zone_identifier()}/dns_records"
        found = [
            r
            for r in listing(self._api(), path, self._page(name=name, type=rtype))
            if str(r.get("name", "")).rstrip(".").lower() == name and r.get("type") == rtype
        ]
        self._read[(name, rtype)] = found
        return found

    def _last_read(self, qname: str, rtype: str) -> list[dict[str, Any]]:
        """The records of the set as last read (by the lookup just before a change, or the
        check just after it), or read now."""
        held = self._read.get((qname.rstrip(".").lower(), rtype))
        return held if held is not None else self._records(qname, rtype)

    # --- reading ---------------------------------------------------------------------------

    def lookup(self, name: str, rtype: str) -> RecordSet:
        """The record set ``name``/``rtype`` as Cloudflare holds it (no values if absent)."""
        qname = absolute_name(name, self._origin).canonicalize().to_text()
        return self._record_set(qname, rtype.upper(), self._records(qname, rtype.upper()))

    def _record_set(self, qname: str, rtype: str, raws: list[dict[str, Any]]) -> RecordSet:
        if not raws:
            return RecordSet(qname, rtype)
        values = tuple(self._value(r, rtype) for r in raws)
        direct = [int(r.get("ttl") or AUTO_TTL) for r in raws if not r.get("proxied")]
        return RecordSet(qname, rtype, max(direct, default=AUTO_TTL), values).in_zone(self._origin)

    def _value(self, raw: dict[str, Any], rtype: str) -> str:
        """One Cloudflare record as a canonical zone-file value."""
        content = str(raw.get("content") or "")
        if rtype == "CNAME":
            text = content.rstrip(".") + "."
        elif rtype == "MX":
            text = f"{raw.get('priority', 0)} {content.rstrip('.')}."
        elif rtype == "SRV":
            data = raw.get("data") or {}
            if data:
                text = (
                    f"{data['priority']} {data['weight']} {data['port']}"
                    f" {str(data['target']).rstrip('.')}."
                )
            else:
                text = f"{raw.get('priority', 0)} {content.rstrip('.')}."
        else:
            text = content
        return str(parse_rdata(rtype, text, self._origin).to_text())

    # --- applying ----------------------------------------------------------------------------

    def _ttl(self, ttl: int) -> int:
        """The TTL Cloudflare is sent for ``ttl``: 1 stays automatic, lower ones are raised to
        ``min_ttl``; above 86400 is refused."""
        if ttl == AUTO_TTL:
            return AUTO_TTL
        if ttl > MAX_TTL:
            raise self._error(f"Cloudflare TTLs are at most {MAX_TTL} s, not {ttl}")
        return max(ttl, self.min_ttl)

    def _new_proxied(self, rtype: str, raws: list[dict[str, Any]]) -> bool:
        if rtype not in PROXIABLE:
            return False
        if self.proxied is not None:
            return self.proxied
        return bool(raws) and all(bool(r.get("proxied")) for r in raws)

    def _fields(self, record: RecordSet, value: str, proxied: bool) -> dict[str, Any]:
        """The batch ``posts`` item of one value of ``record``."""
        body: dict[str, Any] = {
            "type": record.rtype,
            "name": record.name.rstrip("."),
            "ttl": AUTO_TTL if proxied else self._ttl(record.ttl),
            "comment": "siprec-backup",
        }
        if record.rtype in PROXIABLE:
            body["proxied"] = proxied
        rdata = parse_rdata(record.rtype, value, dns.name.root)
        if isinstance(rdata, dns.rdtypes.ANY.CNAME.CNAME):
            body["content"] = rdata.target.to_text(omit_final_dot=True)
        elif isinstance(rdata, dns.rdtypes.ANY.MX.MX):
            body["content"] = rdata.exchange.to_text(omit_final_dot=True)
            body["priority"] = rdata.preference
        elif isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
            body["data"] = {
                "priority": rdata.priority,
                "weight": rdata.weight,
                "port": rdata.port,
                "target": rdata.target.to_text(omit_final_dot=True),
            }
        else:
            body["content"] = value
        return body

    def _batch(
        self, change: Change, raws: list[dict[str, Any]], batch: dict[str, list[Any]]
    ) -> None:
        """Add ``change``'s operations against the records it finds (``raws``) to ``batch``."""
        record = change.record
        if change.action == "delete":
            batch["deletes"].extend({"id": r["id"]} for r in raws)
            return
        wanted = set(record.values)
        kept: set[str] = set()
        for raw in raws:
            value = self._value(raw, record.rtype)
            if value not in wanted or value in kept:
                batch["deletes"].append({"id": raw["id"]})
                continue
            kept.add(value)
            ttl = AUTO_TTL if raw.get("proxied") else self._ttl(record.ttl)
            if int(raw.get("ttl") or AUTO_TTL) != ttl:
                batch["patches"].append({"id": raw["id"], "ttl": ttl})
        proxied = self._new_proxied(record.rtype, raws)
        batch["posts"].extend(
            self._fields(record, v, proxied) for v in record.values if v not in kept
        )

    def _send(self, changes: Sequence[tuple[Change, RecordSet]], comment: str) -> tuple[str, str]:
        """One batch of deletes, patches and posts (nothing is sent when nothing changes)."""
        batch: dict[str, list[Any]] = {"deletes": [], "patches": [], "posts": []}
        for change, _current in changes:
            raws = self._last_read(change.record.name, change.record.rtype)
            self._batch(change, raws, batch)
        if any(batch.values()):
            result(
                self._api(),
                "POST",
                f"/zones/{self.zone_identifier()}/dns_records/batch",
                json={k: v for k, v in batch.items() if v},
            )
            self._read.clear()  # the ids changed: read again before the next change
        return "", ""

    def _set_ttl(self, current: RecordSet, ttl: int) -> TtlChange:
        """Patch the TTL of the set's unproxied records to ``ttl`` as Cloudflare takes it;
        nothing for a proxied set (automatic) or one already there."""
        raws = self._last_read(current.name, current.rtype)
        effective = self._ttl(ttl)
        direct = [r for r in raws if not r.get("proxied")]
        if not direct or all(int(r.get("ttl") or AUTO_TTL) == effective for r in direct):
            return TtlChange(current, current.ttl, None)
        target = RecordSet(current.name, current.rtype, effective, current.values)
        update = self._applied([(Change("replace", target), current)], "siprec-backup TTL")
        return TtlChange(target, current.ttl, update)

    # --- verification ------------------------------------------------------------------------

    def _verify_api(self, expected: Sequence[RecordSet]) -> None:
        """Values as expected; TTL 1 on proxied records, the sent TTL on the others."""
        wrong = []
        for want in expected:
            raws = self._records(want.name, want.rtype)
            have = self._record_set(want.name, want.rtype, raws)
            ttls_ok = not want.present or all(
                int(r.get("ttl") or AUTO_TTL)
                == (AUTO_TTL if r.get("proxied") else self._ttl(want.ttl))
                for r in raws
            )
            if have.values != want.values or not ttls_ok:
                wrong.append(f"holds {have.describe()}, expected {want.describe()}")
        if wrong:
            raise self._error(f"{self.describe()} after the change: {'; '.join(wrong)}", PROVIDER)

    def _served_by_nameservers(self, expected: tuple[RecordSet, ...]) -> tuple[RecordSet, ...]:
        """The unproxied sets with the TTL Cloudflare serves (proxied ones answer Cloudflare's
        own addresses, so they are verified through the API only)."""
        served = []
        for want in expected:
            raws = self._last_read(want.name, want.rtype)  # as the API check just read it
            if any(r.get("proxied") for r in raws):
                continue
            if not want.present:
                served.append(want)
                continue
            ttl = self._ttl(want.ttl)
            ttl = AUTO_TTL_SERVED if ttl == AUTO_TTL else ttl
            served.append(RecordSet(want.name, want.rtype, ttl, want.values))
        return tuple(served)


__all__ = ["AUTO_TTL", "CloudflareDns"]
