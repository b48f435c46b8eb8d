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
Errors are :class:`~siprec_backup.cloud.errors.CloudDnsError` (a :class:`DnsError`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.name

from siprec_backup.cloud.aws import AwsCredentials, RetryPolicy, aws_client, call
from siprec_backup.cloud.errors import CONFIGURATION, CONFLICT, PROVIDER, CloudDnsError
from siprec_backup.dns.bind import TtlChange, UpdateResult
from siprec_backup.dns.propagation import (
    Nameserver,
    NameserverState,
    PropagationResult,
    wait_for_propagation,
)
from siprec_backup.dns.records import (
    Change,
    RecordSet,
    absolute_name,
    check_targets,
    normalise,
    plan_line,
    zone_name,
)
from siprec_backup.errors import PropagationError

SERVICE = "route53"

#: Route53's change actions for our change actions.
ACTIONS = {"create": "CREATE", "replace": "UPSERT", "delete": "DELETE"}


@dataclass(frozen=True)
class Route53UpdateResult(UpdateResult):
    """An applied Route53 change batch: its change id and the status Route53 answered."""

    change_id: str = ""
    status: str = ""


def _error(message: str, code: str = CONFIGURATION) -> CloudDnsError:
    return CloudDnsError(message, provider="aws", service=SERVICE, code=code)


@dataclass
class Route53Dns:
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

    def __post_init__(self) -> None:
        self._origin = zone_name(self.zone)
        self.zone = self._origin.to_text()
        if self.hosted_zone_id:
            self.hosted_zone_id = self.hosted_zone_id.rsplit("/", 1)[-1]
        if self.timeout <= 0 or self.poll_interval <= 0:
            raise _error("the Route53 timeout and poll interval must be positive")

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
            raise _error(f"no Route53 hosted zone named {self.zone}")
        if len(matches) > 1:
            ids = ", ".join(z["Id"].rsplit("/", 1)[-1] for z in matches)
            raise _error(
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
            raise _error(
                f"{name} {rtype} is an alias or routing-policy record set, which this lever does"
                " not manage"
            )
        values = tuple(str(r["Value"]) for r in raw.get("ResourceRecords", []))
        return RecordSet(name, rtype, int(raw.get("TTL", 0)), values).in_zone(self._origin)

    def serial(self) -> int:
        """Route53 keeps no zone serial: always 0."""
        return 0

    # --- planning and applying -------------------------------------------------------------

    def plan(self, changes: Sequence[Change]) -> list[str]:
        """One line per change against what Route53 holds now; sends no change."""
        normal = self._prepare(changes)
        return [plan_line(c, self.lookup(c.record.name, c.record.rtype)) for c in normal]

    def apply(self, changes: Sequence[Change]) -> Route53UpdateResult:
        """Send the changes as one ChangeBatch; the result carries the change id to wait on.

        CloudDnsError code "conflict" if a create finds the set already there (or a delete's set
        changed meanwhile), "configuration" for invalid changes.
        """
        start = time.monotonic()
        normal = self._prepare(changes)
        if not normal:
            raise _error("no DNS changes to apply")
        batch = []
        for change in normal:
            record = change.record
            if change.action == "delete":
                current = self.lookup(record.name, record.rtype)
                if current.present:
                    batch.append(_api_change("DELETE", current))
                continue
            if change.action == "create":
                self._absent(record)
            batch.append(_api_change(ACTIONS[change.action], record))
        return self._submit(batch, tuple(normal), start, "siprec-backup DNS lever")

    def _absent(self, record: RecordSet) -> None:
        """Refuse a create whose record set exists before sending it (Route53 refuses it too,
        but emulators do not always, and this message names the values found)."""
        current = self.lookup(record.name, record.rtype)
        if current.present:
            raise _error(
                f"create {record.name} {record.rtype}: exists as {current.describe()}", CONFLICT
            )

    def _submit(
        self, batch: list[dict[str, Any]], changes: tuple[Change, ...], start: float, comment: str
    ) -> Route53UpdateResult:
        change_id, status = "", "INSYNC"
        if batch:
            answer = self._call(
                "change_resource_record_sets",
                HostedZoneId=self.zone_id(),
                ChangeBatch={"Comment": comment, "Changes": batch},
            )
            info = answer["ChangeInfo"]
            change_id, status = str(info["Id"]).rsplit("/", 1)[-1], str(info["Status"])
        return Route53UpdateResult(
            zone=self.zone,
            changes=changes,
            serial=0,
            seconds=time.monotonic() - start,
            change_id=change_id,
            status=status,
        )

    def _prepare(self, changes: Sequence[Change]) -> list[Change]:
        normal = normalise(changes, self._origin)
        check_targets(
            normal,
            self._origin,
            lambda target, rtype: self.lookup(target.to_text(), rtype).present,
        )
        return normal

    # --- TTL management --------------------------------------------------------------------

    def lower_ttl(self, name: str, rtype: str, ttl: int) -> TtlChange:
        """Lower the TTL of an existing record set, keeping its values (left alone if already at
        or below ``ttl``); ``previous_ttl`` is what :meth:`restore_ttl` puts back."""
        current = self._existing(name, rtype)
        if current.ttl <= ttl:
            return TtlChange(current, current.ttl, None)
        return self._set_ttl(current, ttl)

    def restore_ttl(self, name: str, rtype: str, ttl: int) -> TtlChange:
        """Set the TTL of an existing record set back to ``ttl``, keeping its values."""
        current = self._existing(name, rtype)
        if current.ttl == ttl:
            return TtlChange(current, current.ttl, None)
        return self._set_ttl(current, ttl)

    def _existing(self, name: str, rtype: str) -> RecordSet:
        current = self.lookup(name, rtype)
        if not current.present:
            raise _error(f"{current.name} has no {current.rtype} record in {self.describe()}")
        return current

    def _set_ttl(self, current: RecordSet, ttl: int) -> TtlChange:
        start = time.monotonic()
        target = RecordSet(current.name, current.rtype, ttl, current.values)
        batch = [_api_change("UPSERT", target)]
        result = self._submit(batch, (Change("replace", target),), start, "siprec-backup TTL")
        return TtlChange(target, current.ttl, result)

    # --- propagation -----------------------------------------------------------------------

    def wait_insync(self, result: UpdateResult, *, deadline: float = 120.0) -> float:
        """Poll GetChange until INSYNC; return the seconds waited (PropagationError after
        ``deadline`` seconds)."""
        change_id = getattr(result, "change_id", "")
        start = time.monotonic()
        if not change_id or getattr(result, "status", "") == "INSYNC":
            return 0.0
        while True:
            status = str(self._call("get_change", Id=change_id)["ChangeInfo"]["Status"])
            elapsed = time.monotonic() - start
            if status == "INSYNC":
                return elapsed
            if elapsed >= deadline:
                raise PropagationError(
                    f"Route53 change {change_id} on {self.zone} still {status} after"
                    f" {deadline:g} s",
                    disagreeing=[f"route53:{change_id}"],
                )
            time.sleep(min(self.poll_interval, max(0.0, deadline - elapsed)))

    def authoritative_nameservers(self) -> list[Nameserver]:
        """The configured ``nameservers`` (Route53's own are checked through the API)."""
        return [Nameserver.parse(text) for text in self.nameservers]

    def wait_propagated(
        self,
        result: UpdateResult,
        *,
        deadline: float = 120.0,
        interval: float = 0.1,
    ) -> PropagationResult:
        """Wait for INSYNC, check every expected record set through the API, then (when
        ``nameservers`` are configured) wait until each serves them; all within ``deadline``."""
        start = time.monotonic()
        self.wait_insync(result, deadline=deadline)
        expected = tuple(r.in_zone(self._origin) for r in result.expected)
        self._verify_api(expected)
        left = max(0.0, deadline - (time.monotonic() - start))
        if self.nameservers:
            found = wait_for_propagation(
                self.authoritative_nameservers(),
                self.zone,
                expected,
                min_serial=0,
                deadline=left,
                interval=interval,
                timeout=min(self.timeout, 2.0),
            )
            states = found.nameservers
        else:
            states = ()
        return PropagationResult(
            zone=self.zone,
            min_serial=0,
            expected=expected,
            nameservers=states,
            seconds=time.monotonic() - start,
        )

    def _verify_api(self, expected: Sequence[RecordSet]) -> None:
        wrong = []
        for want in expected:
            have = self.lookup(want.name, want.rtype)
            if have.values != want.values or (want.present and have.ttl != want.ttl):
                wrong.append(f"holds {have.describe()}, expected {want.describe()}")
        if wrong:
            raise _error(f"{self.describe()} after INSYNC: {'; '.join(wrong)}", PROVIDER)


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


__all__ = ["NameserverState", "Route53Dns", "Route53UpdateResult"]
