"""Google Cloud DNS as a DNS lever, with the same methods as :class:`~siprec_backup.dns.BindDns`.

A change is one ``changes.create`` (atomic): ``deletions`` are the record sets as Cloud DNS holds
them now (Google refuses the change with 412 conditionNotMet when one no longer matches, or 404
when it is gone: both CONFLICT), ``additions`` the new ones (409 alreadyExists: CONFLICT). A
``create`` of a set that exists is refused before anything is sent; a ``replace`` that changes
nothing sends nothing. A TTL change deletes the set as read and adds it back with the new TTL in
the same change, so it is atomic with the read. :meth:`CloudDns.wait_propagated` polls
``changes.get`` until ``done``, checks the records through the API and, when ``nameservers`` are
given, asks each of them directly.

The managed zone is given by name, or found by the zone's DNS name through ``managedZones.list``
(one match required). Cloud DNS has no serial we use: :attr:`UpdateResult.serial` is 0.

REST: https://cloud.google.com/dns/docs/reference/rest/v1/changes (create, get),
.../resourceRecordSets/list, .../managedZones (get, list).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from siprec_backup.cloud.gcp import (
    GcpCredentials,
    GoogleToken,
    gcp_api,
    google_error,
    next_page_token,
)
from siprec_backup.cloud.http import ErrorParts, RestApi
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.dns.base import ApiDnsZone
from siprec_backup.dns.records import Change, RecordSet, absolute_name, zone_name
from siprec_backup.errors import CONFLICT, CloudDnsError

SERVICE = "dns"


def _dns_error(response: httpx.Response) -> ErrorParts:
    """Google's error mapping, plus: a change whose deletion is gone (404) is a conflict."""
    code, reason, message = google_error(response)
    request = response.request
    if (
        response.status_code == 404
        and request.method == "POST"
        and request.url.path.endswith("/changes")
    ):
        code = CONFLICT
    return code, reason, message


@dataclass
class CloudDns(ApiDnsZone):
    """One Cloud DNS managed zone.

    >>> zone = CloudDns("siprec.example.com", managed_zone="siprec", credentials=creds)
    >>> zone.wait_propagated(zone.apply([Change.replace("db", "A", 60, "10.0.0.2")]))
    """

    zone: str
    #: The managed zone's name (``siprec-example``); empty: found by ``zone`` (its dnsName).
    managed_zone: str = ""
    credentials: GcpCredentials = field(default_factory=GcpCredentials)
    #: Nameservers to verify on (``host:port``); empty: verify through the API only.
    nameservers: Sequence[str] = ()
    #: Timeout of each direct nameserver query, in seconds.
    timeout: float = 5.0
    #: Seconds between changes.get polls while waiting for "done".
    poll_interval: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    provider = "gcp"
    service = SERVICE
    done_status = "done"

    def __post_init__(self) -> None:
        self._origin = zone_name(self.zone)
        self.zone = self._origin.to_text()
        if self.timeout <= 0 or self.poll_interval <= 0:
            raise self._error("the Cloud DNS timeout and poll interval must be positive")
        self._token = GoogleToken(self.credentials, SERVICE, CloudDnsError)
        self.api: RestApi = gcp_api(
            SERVICE,
            self.credentials.dns_url,
            self._token,
            family=CloudDnsError,
            retry=self.retry,
            timeout=self.credentials.timeout,
        )
        self.api.errors = _dns_error
        self._checked = False
        #: Record sets as last read, in Google's form (deletions must match them exactly).
        self._raw: dict[tuple[str, str], dict[str, Any]] = {}

    def describe(self) -> str:
        """``Cloud DNS zone siprec.lab. (siprec-lab)``: secret-free, for logs."""
        managed = f" ({self.managed_zone})" if self.managed_zone else ""
        return f"Cloud DNS zone {self.zone}{managed}"

    # --- the managed zone --------------------------------------------------------------------

    def _project_path(self) -> str:
        return f"projects/{self._token.project()}/managedZones"

    def _zone_path(self) -> str:
        """``projects/p/managedZones/name``; the zone is found or checked on first use."""
        if not self._checked:
            if self.managed_zone:
                found = self.api.json("GET", f"{self._project_path()}/{self.managed_zone}")
                if not _same(str(found.get("dnsName", "")), self.zone):
                    raise self._error(
                        f"managed zone {self.managed_zone} serves {found.get('dnsName')}, not"
                        f" {self.zone}"
                    )
            else:
                self.managed_zone = self._find_zone()
            self._checked = True
        return f"{self._project_path()}/{self.managed_zone}"

    def _find_zone(self) -> str:
        zones = [
            z
            for z in self.api.pages(
                self._project_path(),
                items="managedZones",
                next_page=next_page_token,
                params={"dnsName": self.zone},
            )
            if _same(str(z.get("dnsName", "")), self.zone)
        ]
        if not zones:
            raise self._error(f"no Cloud DNS managed zone serves {self.zone}")
        if len(zones) > 1:
            names = ", ".join(str(z.get("name")) for z in zones)
            raise self._error(
                f"{len(zones)} managed zones serve {self.zone} ({names}): set managed_zone"
            )
        return str(zones[0]["name"])

    # --- reading ---------------------------------------------------------------------------

    def lookup(self, name: str, rtype: str) -> RecordSet:
        """The record set ``name``/``rtype`` as Cloud DNS holds it (no values if absent)."""
        qname = absolute_name(name, self._origin).canonicalize().to_text()
        rtype = rtype.upper()
        found = None
        for raw in self.api.pages(
            f"{self._zone_path()}/rrsets",
            items="rrsets",
            next_page=next_page_token,
            params={"name": qname, "type": rtype},
        ):
            if _same(str(raw.get("name", "")), qname) and raw.get("type") == rtype:
                found = raw
        if found is None:
            self._raw.pop((qname, rtype), None)
            return RecordSet(qname, rtype)
        if found.get("routingPolicy"):
            raise self._error(
                f"{qname} {rtype} has a routing policy, which this lever does not manage"
            )
        record = RecordSet(
            qname, rtype, int(found.get("ttl", 0)), tuple(str(v) for v in found.get("rrdatas", []))
        ).in_zone(self._origin)
        self._raw[(qname, rtype)] = dict(found)
        return record

    # --- applying ----------------------------------------------------------------------------

    def _deletion(self, current: RecordSet) -> dict[str, Any]:
        """The set as Cloud DNS answered it when read (it must match exactly)."""
        raw = self._raw.get((current.name, current.rtype))
        if raw is not None:
            return {k: raw[k] for k in ("name", "type", "ttl", "rrdatas") if k in raw}
        return _api_record(current)

    def _send(self, changes: Sequence[tuple[Change, RecordSet]], comment: str) -> tuple[str, str]:
        """One changes.create: the current sets deleted, the new ones added."""
        deletions, additions = [], []
        for change, current in changes:
            if change.action != "delete" and current == change.record:
                continue  # nothing to change
            if current.present:
                deletions.append(self._deletion(current))
            if change.action != "delete":
                additions.append(_api_record(change.record))
        if not (deletions or additions):
            return "", ""
        answer = self.api.json(
            "POST",
            f"{self._zone_path()}/changes",
            json={"kind": "dns#change", "additions": additions, "deletions": deletions},
        )
        return str(answer.get("id", "")), str(answer.get("status", ""))

    def _change_status(self, change_id: str) -> str:
        return str(self.api.json("GET", f"{self._zone_path()}/changes/{change_id}").get("status"))


def _same(a: str, b: str) -> bool:
    return a.lower().rstrip(".") == b.lower().rstrip(".")


def _api_record(record: RecordSet) -> dict[str, Any]:
    return {
        "kind": "dns#resourceRecordSet",
        "name": record.name,
        "type": record.rtype,
        "ttl": record.ttl,
        "rrdatas": list(record.values),
    }


__all__ = ["CloudDns"]
