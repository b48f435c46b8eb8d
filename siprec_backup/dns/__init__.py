"""DNS levers: change records on a zone's primary and verify them on every nameserver.

:class:`BindDns` sends TSIG-signed RFC 2136 updates (BIND, Knot, PowerDNS...) built from
:class:`Change` objects, prints plans without sending, and lowers/restores TTLs around a planned
cutover; :func:`wait_for_propagation` asks each authoritative nameserver directly until all serve
the change.
"""

from siprec_backup.dns.bind import TSIG_ALGORITHMS, BindDns, TtlChange, UpdateResult
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
    "BindDns",
    "Change",
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
