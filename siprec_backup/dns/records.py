"""Record sets and changes, validated with dnspython's own rdata parser before anything is sent.

A :class:`RecordSet` is what one name serves for one type (every value shares one TTL, as in
DNS). Names may be relative (``"db"``, ``"@"``) or absolute (``"db.siprec.lab."``); values may use
relative target names too. :meth:`RecordSet.in_zone` turns both into their absolute form inside a
zone and refuses a name outside it, so plans, updates and propagation checks all compare the same
canonical text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.MX
import dns.rdtypes.IN.SRV

from siprec_backup.errors import ConfigurationError

#: The record types the DNS lever manages.
RTYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "SRV")
#: Largest TTL DNS allows (RFC 2181 section 8).
MAX_TTL = 2**31 - 1

Action = Literal["create", "replace", "delete"]
ACTIONS: tuple[Action, ...] = ("create", "replace", "delete")


def zone_name(zone: str) -> dns.name.Name:
    """The absolute name of ``zone`` (a trailing dot is optional); ConfigurationError if bad."""
    try:
        return dns.name.from_text(zone.strip() or ".", origin=dns.name.root)
    except dns.exception.DNSException as exc:
        raise ConfigurationError(f"bad DNS zone name {zone!r}: {exc}") from None


def absolute_name(name: str, zone: dns.name.Name) -> dns.name.Name:
    """``name`` made absolute in ``zone`` ("@" is the apex); ConfigurationError if it is
    malformed or lies outside the zone."""
    text = name.strip()
    try:
        result = zone if text in ("@", "") else dns.name.from_text(text, origin=zone)
    except dns.exception.DNSException as exc:
        raise ConfigurationError(f"bad DNS name {name!r}: {exc}") from None
    if not result.is_subdomain(zone):
        raise ConfigurationError(f"{result} is not inside the zone {zone}")
    return result


def _txt_value(value: str) -> str:
    """A TXT value in zone-file syntax: taken as is when quoted, else as one literal string."""
    if value.startswith('"'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_rdata(rtype: str, value: str, origin: dns.name.Name | None = None) -> dns.rdata.Rdata:
    """One value parsed by dnspython; relative names in it are made absolute in ``origin``."""
    text = _txt_value(value) if rtype == "TXT" else value
    try:
        return dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text, origin=origin, relativize=False
        )
    except (dns.exception.DNSException, ValueError) as exc:
        raise ConfigurationError(f"bad {rtype} value {value!r}: {exc}") from None


@dataclass(frozen=True)
class RecordSet:
    """The records of one name and type: ``RecordSet("db", "A", 60, ("10.0.0.1",))``.

    ``values`` in zone-file syntax (``"10 mail"`` for MX, ``"10 5 5060 sip"`` for SRV; a TXT value
    without quotes is one literal string). No values means the record set is absent, which is
    what a delete leaves and what the propagation check then expects.
    """

    name: str
    rtype: str
    ttl: int = 300
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        rtype = self.rtype.upper()
        object.__setattr__(self, "rtype", rtype)
        object.__setattr__(self, "values", tuple(self.values))
        if rtype not in RTYPES:
            raise ConfigurationError(
                f"unsupported DNS record type {self.rtype!r}: use one of {', '.join(RTYPES)}"
            )
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, int):
            raise ConfigurationError(f"the TTL of {self.name} {rtype} must be an integer")
        if not 0 <= self.ttl <= MAX_TTL:
            raise ConfigurationError(f"the TTL of {self.name} {rtype} must be 0..{MAX_TTL}")
        if rtype == "CNAME" and len(self.values) > 1:
            raise ConfigurationError(f"{self.name} CNAME can have one value, not {self.values}")
        for value in self.values:
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(f"{self.name} {rtype}: empty value")
            parse_rdata(rtype, value)

    @property
    def present(self) -> bool:
        """Whether the record set exists (has at least one value)."""
        return bool(self.values)

    def in_zone(self, zone: str | dns.name.Name) -> RecordSet:
        """This record set with an absolute name and canonical, sorted, de-duplicated values."""
        origin = zone if isinstance(zone, dns.name.Name) else zone_name(zone)
        name = absolute_name(self.name, origin)
        values = sorted({parse_rdata(self.rtype, v, origin).to_text() for v in self.values})
        return RecordSet(name.canonicalize().to_text(), self.rtype, self.ttl, tuple(values))

    def rdatas(self) -> list[dns.rdata.Rdata]:
        """The values as dnspython rdata (names already absolute after :meth:`in_zone`)."""
        return [parse_rdata(self.rtype, v, dns.name.root) for v in self.values]

    def describe(self) -> str:
        """``"db.siprec.lab. 60 A 10.0.0.1, 10.0.0.2"``, or ``"db.siprec.lab. A (absent)"``."""
        if not self.values:
            return f"{self.name} {self.rtype} (absent)"
        return f"{self.name} {self.ttl} {self.rtype} {', '.join(self.values)}"


@dataclass(frozen=True)
class Change:
    """One change to one record set: ``create`` (refused if the set exists), ``replace`` (the
    whole set) or ``delete`` (the whole set; its values and TTL are ignored)."""

    action: Action
    record: RecordSet

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigurationError(
                f"unknown DNS change {self.action!r}: use one of {', '.join(ACTIONS)}"
            )
        if self.action != "delete" and not self.record.values:
            raise ConfigurationError(
                f"{self.action} {self.record.name} {self.record.rtype}: no value"
            )

    @classmethod
    def create(cls, name: str, rtype: str, ttl: int, *values: str) -> Change:
        """Add a record set that must not exist yet."""
        return cls("create", RecordSet(name, rtype, ttl, values))

    @classmethod
    def replace(cls, name: str, rtype: str, ttl: int, *values: str) -> Change:
        """Set the whole record set to ``values`` (created if absent)."""
        return cls("replace", RecordSet(name, rtype, ttl, values))

    @classmethod
    def delete(cls, name: str, rtype: str) -> Change:
        """Remove the whole record set (nothing happens if it is absent)."""
        return cls("delete", RecordSet(name, rtype))

    def in_zone(self, zone: str | dns.name.Name) -> Change:
        """This change with its record normalised by :meth:`RecordSet.in_zone`."""
        return Change(self.action, self.record.in_zone(zone))

    @property
    def expected(self) -> RecordSet:
        """What the nameservers must serve once the change is applied."""
        if self.action == "delete":
            return RecordSet(self.record.name, self.record.rtype)
        return self.record


def plan_line(change: Change, current: RecordSet) -> str:
    """One line of a plan: what ``change`` does to ``current`` (what the primary serves now).

    ``replace db.siprec.lab. 60 A 10.0.0.1 -> 10.0.0.2`` (the TTL is repeated on the right only
    when it changes), ``create ...``, ``delete ...``; both normalised to the zone.
    """
    new = change.record
    if change.action == "create":
        note = "  (exists: the update would be refused)" if current.present else ""
        return f"create {new.describe()}{note}"
    if change.action == "delete":
        if not current.present:
            return f"delete {current.describe()}: nothing to delete"
        return f"delete {current.describe()}"
    if not current.present:
        return f"replace {current.describe()} -> {new.ttl} {new.rtype} {', '.join(new.values)}"
    new_values = ", ".join(new.values)
    right = new_values if new.ttl == current.ttl else f"{new.ttl} {new.rtype} {new_values}"
    unchanged = "  (no change)" if current == new else ""
    return f"replace {current.describe()} -> {right}{unchanged}"


def normalise(changes: Iterable[Change], zone: str | dns.name.Name) -> list[Change]:
    """Every change made absolute in ``zone``; ConfigurationError if two touch the same set."""
    origin = zone if isinstance(zone, dns.name.Name) else zone_name(zone)
    result = [c.in_zone(origin) for c in changes]
    seen: set[tuple[str, str]] = set()
    for change in result:
        key = (change.record.name, change.record.rtype)
        if key in seen:
            raise ConfigurationError(f"two changes to {key[0]} {key[1]} in one update")
        seen.add(key)
    return result


def in_zone_targets(change: Change, zone: dns.name.Name) -> list[dns.name.Name]:
    """The MX exchanges and SRV targets inside ``zone`` that a create/replace points to."""
    if change.action == "delete" or change.record.rtype not in ("MX", "SRV"):
        return []
    targets: list[dns.name.Name] = []
    for rdata in change.record.rdatas():
        if isinstance(rdata, dns.rdtypes.ANY.MX.MX):
            target = rdata.exchange
        elif isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
            target = rdata.target
        else:  # pragma: no cover - rtype checked above
            continue
        target = target.canonicalize()
        if target != dns.name.root and target.is_subdomain(zone) and target not in targets:
            targets.append(target)
    return targets


def check_targets(
    changes: Sequence[Change],
    zone: dns.name.Name,
    has_records: Callable[[dns.name.Name, str], bool],
) -> None:
    """Refuse MX/SRV changes whose in-zone target will have no A or AAAA record.

    A target is fine if the same update creates or replaces an A/AAAA record at it, or if
    ``has_records(target, "A")`` (or ``"AAAA"``; a lookup on the primary) finds one that the update
    does not delete. BIND refuses such an update anyway ("has no address records"); checking first
    gives a clear message naming the target. ``changes`` must be normalised.
    """
    added: set[str] = set()
    deleted: set[tuple[str, str]] = set()
    for c in changes:
        if c.record.rtype in ("A", "AAAA"):
            if c.action == "delete":
                deleted.add((c.record.name, c.record.rtype))
            else:
                added.add(c.record.name)
    for change in changes:
        for target in in_zone_targets(change, zone):
            text = target.to_text()
            if text in added or any(
                (text, rtype) not in deleted and has_records(target, rtype)
                for rtype in ("A", "AAAA")
            ):
                continue
            raise ConfigurationError(
                f"{change.record.rtype} {change.record.name} points to {text}, which has no A or"
                f" AAAA record: add one in the same update"
            )
