"""DNS levers: change records on a zone and verify them on every nameserver.

Every lever is a :class:`DnsZone` (the cloud ones an :class:`ApiDnsZone`): plans without sending,
changes, TTLs lowered and restored around a cutover. :class:`BindDns` sends TSIG-signed RFC 2136
updates (BIND, Knot, PowerDNS...); :func:`wait_for_propagation` asks each authoritative
nameserver directly until all serve the change.
"""

from siprec_backup.dns.base import ApiDnsZone, DnsZone, TtlChange, UpdateResult
from siprec_backup.dns.bind import TSIG_ALGORITHMS, BindDns
from siprec_backup.dns.propagation import (
    Nameserver,
    NameserverState,
    PropagationResult,
    check_nameserver,
    discover_nameservers,
    wait_for_propagation,
)
from siprec_backup.dns.records import (
    RTYPES,
    Change,
    RecordSet,
    check_targets,
    normalise,
    plan_line,
)

__all__ = [
    "RTYPES",
    "TSIG_ALGORITHMS",
    "ApiDnsZone",
    "BindDns",
    "Change",
    "DnsZone",
    "Nameserver",
    "NameserverState",
    "PropagationResult",
    "RecordSet",
    "TtlChange",
    "UpdateResult",
    "check_nameserver",
    "check_targets",
    "discover_nameservers",
    "normalise",
    "plan_line",
    "wait_for_propagation",
]
