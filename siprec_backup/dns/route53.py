"""Amazon Route53 as a DNS lever, with the same methods as :class:`~siprec_backup.dns.BindDns`.

Changes go as one ChangeBatch (atomic): ``create`` -> CREATE (refused if the set exists),
``replace`` -> UPSERT, ``delete`` -> DELETE of the record set as Route53 holds it now (nothing is
sent for a set that is absent; a set changed between the read and the DELETE makes Route53 refuse
the batch). A TTL change is an UPSERT of the values just read with the new TTL: unlike BIND's
prerequisite it is not atomic with the read (DELETE+CREATE in one batch would be, but moto refuses
a CREATE identical to an earlier one in its journal, so restoring a TTL would fail there).
:meth:`Route53Dns.wait_propagated` waits for GetChange to say INSYNC, then checks the records
through the API and, when ``nameservers`` are given, asks each of them directly.

Route53 has no zone serial: :attr:`UpdateResult.serial` is 0 and the nameserver check is on the
records only. Only simple routing record sets are managed (no alias, weighted or latency sets).
Errors are :class:`~siprec_backup.errors.CloudDnsError` (a :class:`DnsError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.name

from siprec_backup.cloud.aws import AwsCredentials, aws_client, call
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.dns.base import ApiDnsZone
from siprec_backup.dns.records import Change, RecordSet, absolute_name, zone_name
from siprec_backup.errors import CloudDnsError

SERVICE = "route53"

#: Route53's change actions for our change actions.
ACTIONS = {"create": "CREATE", "replace": "UPSERT", "delete": "DELETE"}


@dataclass
class Route53Dns(ApiDnsZone):
    """One Route53 hosted zone.

    >>> r53 = Route53Dns("siprec.example.com", credentials=AwsCredentials(profile="ops"))
    >>> r53.wait_propagated(r53.apply([Change.replace("db", "A", 60, "10.0.0.2")]))
    """

    zone: str
    #: ``Z0123...`` or ``/hostedzone/Z0123...``; empty: found by the zone's name.
    hosted_zone_id: str = ""
    credentials: AwsCredentials = field(default_factory=AwsCredentials)
    client: Any = field(default=None, repr=False)
    #: Nameservers to verify on (``host:port``); empty: verify through the API only.
    nameservers: Sequence[str] = ()
    #: Timeout of each direct nameserver query, in seconds.
    timeout: float = 5.0
    #: Seconds between GetChange polls while waiting for INSYNC.
    poll_interval: float = 2.0
    #: Whether a private hosted zone is meant (when two zones share the name).
    private: bool | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    provider = "aws"
    service = SERVICE
    done_status = "INSYNC"

    def __post_init__(self) -> None:
        self._origin = zone_name(self.zone)
        self.zone = self._origin.to_text()
        if self.hosted_zone_id:
            self.hosted_zone_id = self.hosted_zone_id.rsplit("/", 1)[-1]
        if self.timeout <= 0 or self.poll_interval <= 0:
            raise self._error("the Route53 timeout and poll interval must be positive")

    def describe(self) -> str:
        """``Route53 zone siprec.lab. (Z0123)``: secret-free, for logs."""
        zone_id = f" ({self.hosted_zone_id})" if self.hosted_zone_id else ""
        return f"Route53 zone {self.zone}{zone_id}"

    # --- plumbing --------------------------------------------------------------------------

    def _client(self) -> Any:
        if self.client is None:
            self.client = aws_client(
                SERVICE, self.credentials, family=CloudDnsError, retry=self.retry
            )
        return self.client

    def _call(self, operation: str, **kwargs: Any) -> Any:
        method = getattr(self._client(), operation)
        return call(method, service=SERVICE, family=CloudDnsError, retry=self.retry, **kwargs)

    def zone_id(self) -> str:
        """The hosted zone's id, looked up by name once if not configured."""
        if not self.hosted_zone_id:
            self.hosted_zone_id = self._find_zone()
        return self.hosted_zone_id

    def _find_zone(self) -> str:
        answer = self._call("list_hosted_zones_by_name", DNSName=self.zone, MaxItems="100")
        matches = [
            z
            for z in answer.get("HostedZones", [])
            if z["Name"].lower() == self.zone.lower()
            and (
                self.private is None or bool(z.get("Config", {}).get("PrivateZone")) == self.private
            )
        ]
        if not matches:
            raise self._error(f"no Route53 hosted zone named {self.zone}")
        if len(matches) > 1:
            ids = ", ".join(z["Id"].rsplit("/", 1)[-1] for z in matches)
            raise self._error(
                f"{len(matches)} hosted zones are named {self.zone} ({ids}): set hosted_zone_id"
            )
        return str(matches[0]["Id"]).rsplit("/", 1)[-1]

    # --- reading ---------------------------------------------------------------------------

    def lookup(self, name: str, rtype: str) -> RecordSet:
        """The record set ``name``/``rtype`` as Route53 holds it (no values if absent)."""
        qname = absolute_name(name, self._origin).canonicalize().to_text()
        rtype = rtype.upper()
        raw = self._raw(qname, rtype)
        if raw is None:
            return RecordSet(qname, rtype)
        return self._record(raw, rtype)

    def _raw(self, qname: str, rtype: str) -> dict[str, Any] | None:
        answer = self._call(
            "list_resource_record_sets",
            HostedZoneId=self.zone_id(),
            StartRecordName=qname,
            StartRecordType=rtype,
            MaxItems="1",
        )
        for raw in answer.get("ResourceRecordSets", []):
            if _same_name(raw["Name"], qname) and raw["Type"] == rtype:
                return dict(raw)
        return None

    def _record(self, raw: dict[str, Any], rtype: str) -> RecordSet:
        name = dns.name.from_text(raw["Name"]).canonicalize().to_text()
        if "AliasTarget" in raw or "SetIdentifier" in raw:
            raise self._error(
                f"{name} {rtype} is an alias or routing-policy record set, which this lever does"
                " not manage"
            )
        values = tuple(str(r["Value"]) for r in raw.get("ResourceRecords", []))
        return RecordSet(name, rtype, int(raw.get("TTL", 0)), values).in_zone(self._origin)

    # --- applying ----------------------------------------------------------------------------

    def _send(self, changes: Sequence[tuple[Change, RecordSet]], comment: str) -> tuple[str, str]:
        """One ChangeBatch: CREATE / UPSERT / DELETE of the set as Route53 holds it now (nothing
        for a delete of an absent set)."""
        batch = []
        for change, current in changes:
            if change.action == "delete":
                if current.present:
                    batch.append(_api_change("DELETE", current))
            else:
                batch.append(_api_change(ACTIONS[change.action], change.record))
        if not batch:
            return "", ""
        answer = self._call(
            "change_resource_record_sets",
            HostedZoneId=self.zone_id(),
            ChangeBatch={"Comment": comment, "Changes": batch},
        )
        info = answer["ChangeInfo"]
        return str(info["Id"]).rsplit("/", 1)[-1], str(info["Status"])

    # --- propagation -----------------------------------------------------------------------

    def _change_status(self, change_id: str) -> str:
        return str(self._call("get_change", Id=change_id)["ChangeInfo"]["Status"])


def _same_name(route53_name: str, qname: str) -> bool:
    """Route53 answers lowercase names with ``\\052`` for ``*``; compare as DNS names."""
    return bool(dns.name.from_text(route53_name) == dns.name.from_text(qname))


def _api_change(action: str, record: RecordSet) -> dict[str, Any]:
    return {
        "Action": action,
        "ResourceRecordSet": {
            "Name": record.name,
            "Type": record.rtype,
            "TTL": record.ttl,
            "ResourceRecords": [{"Value": v} for v in record.values],
        },
    }


__all__ = ["Route53Dns"]
