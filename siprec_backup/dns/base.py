"""What every DNS lever offers, so the failover, switchover and blue-green flows change records
the same way on BIND, Route53, Cloud DNS, Azure DNS and Cloudflare.

:class:`DnsZone` holds what is the same everywhere: plans against what the zone holds now, TTLs
lowered before a cutover and restored after it, validation before anything is sent.
:class:`ApiDnsZone` adds what the cloud zones share: a change is sent through the provider's API,
waited on until the provider says it is done, checked back through the API, and then (when
``nameservers`` are given) asked of each nameserver directly.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import dns.name

from siprec_backup.dns.propagation import (
    Nameserver,
    NameserverState,
    PropagationResult,
    wait_for_propagation,
)
from siprec_backup.dns.records import Change, RecordSet, check_targets, normalise, plan_line
from siprec_backup.errors import (
    CONFIGURATION,
    CONFLICT,
    PROVIDER,
    CloudDnsError,
    DnsError,
    PropagationError,
)


@dataclass(frozen=True)
class UpdateResult:
    """An applied change: the zone's serial right after it (0 where the provider keeps none),
    the time it took, and the provider's change id and status where it has them."""

    zone: str
    changes: tuple[Change, ...]
    serial: int
    seconds: float
    change_id: str = ""
    status: str = ""

    @property
    def expected(self) -> tuple[RecordSet, ...]:
        """What every nameserver must serve once the update has propagated."""
        return tuple(c.expected for c in self.changes)


@dataclass(frozen=True)
class TtlChange:
    """A TTL set by :meth:`DnsZone.lower_ttl` or :meth:`DnsZone.restore_ttl`.

    ``update`` is None when nothing had to change (the TTL was already low enough, or equal).
    """

    record: RecordSet
    previous_ttl: int
    update: UpdateResult | None


class DnsZone(ABC):
    """One zone: read record sets, plan and apply changes, manage TTLs, verify propagation.

    Subclasses set ``zone`` (absolute text) and ``_origin`` (its dnspython name).
    """

    zone: str
    _origin: dns.name.Name

    @abstractmethod
    def describe(self) -> str:
        """A short, secret-free description for logs and audit records."""

    @abstractmethod
    def lookup(self, name: str, rtype: str) -> RecordSet:
        """The record set ``name``/``rtype`` as the zone holds it (no values if absent)."""

    @abstractmethod
    def apply(self, changes: Sequence[Change]) -> UpdateResult:
        """Send the changes (atomically where the provider can); ConfigurationError or the
        provider's DnsError before or instead of a partial change where it cannot."""

    @abstractmethod
    def wait_propagated(
        self, result: UpdateResult, *, deadline: float = 60.0, interval: float = 0.1
    ) -> PropagationResult:
        """Wait until ``result``'s records are served; PropagationError after ``deadline``."""

    @abstractmethod
    def _set_ttl(self, current: RecordSet, ttl: int) -> TtlChange:
        """Set ``current``'s TTL to ``ttl``, keeping its values."""

    def serial(self) -> int:
        """The zone's SOA serial (0 where the provider keeps none)."""
        return 0

    def plan(self, changes: Sequence[Change]) -> list[str]:
        """One line per change against what the zone holds now; sends nothing.

        ``replace db.siprec.lab. 60 A 10.0.0.1 -> 10.0.0.2``, ``create ...``, ``delete ...``.
        Raises ConfigurationError as :meth:`apply` would (bad names, an MX/SRV target without an
        address record).
        """
        normal = self._prepare(changes)
        return [plan_line(c, self.lookup(c.record.name, c.record.rtype)) for c in normal]

    def lower_ttl(self, name: str, rtype: str, ttl: int) -> TtlChange:
        """Lower the TTL of an existing record set ahead of a planned cutover, keeping its
        values; ``previous_ttl`` is what :meth:`restore_ttl` puts back afterwards. A TTL already
        at or below ``ttl`` is left alone."""
        current = self._existing(name, rtype)
        if current.ttl <= ttl:
            return TtlChange(current, current.ttl, None)
        return self._set_ttl(current, ttl)

    def restore_ttl(self, name: str, rtype: str, ttl: int) -> TtlChange:
        """Set the TTL of an existing record set back to ``ttl``, keeping its values (which may
        have changed during the cutover)."""
        current = self._existing(name, rtype)
        if current.ttl == ttl:
            return TtlChange(current, current.ttl, None)
        return self._set_ttl(current, ttl)

    def _existing(self, name: str, rtype: str) -> RecordSet:
        current = self.lookup(name, rtype)
        if not current.present:
            raise self._error(f"{current.name} has no {current.rtype} record in {self.describe()}")
        return current

    def _error(self, message: str, code: str = CONFIGURATION) -> DnsError:
        """This lever's error for ``message`` (a cloud zone's carries ``code``)."""
        return DnsError(message)

    def _prepare(self, changes: Sequence[Change]) -> list[Change]:
        """The changes made absolute and validated (targets of MX/SRV/CNAME in the zone exist)."""
        normal = normalise(changes, self._origin)
        check_targets(
            normal,
            self._origin,
            lambda target, rtype: self.lookup(target.to_text(), rtype).present,
        )
        return normal


class ApiDnsZone(DnsZone):
    """A zone behind a cloud provider's API (Route53, Cloud DNS, Azure DNS, Cloudflare).

    A subclass sets ``provider``, ``service``, ``nameservers`` (``host:port`` to verify on;
    empty: through the API only) and ``timeout``, and implements :meth:`lookup` and
    :meth:`_send`; one whose changes are asynchronous also sets ``done_status`` and
    ``poll_interval`` and implements :meth:`_change_status`.
    """

    provider: str
    service: str
    nameservers: Sequence[str]
    #: Timeout of each direct nameserver query, in seconds.
    timeout: float
    #: The status a change reaches once applied ("INSYNC", "done"); empty: changes are
    #: applied when the call returns.
    done_status: str = ""
    #: Seconds between change status polls.
    poll_interval: float = 1.0

    @abstractmethod
    def _send(self, changes: Sequence[tuple[Change, RecordSet]], comment: str) -> tuple[str, str]:
        """Send validated changes, each with the record set the zone holds now; the provider's
        change id and status ("" where it has none, or where nothing had to be sent)."""

    def _applied(self, changes: Sequence[tuple[Change, RecordSet]], comment: str) -> UpdateResult:
        """:meth:`_send` the changes, timed; what was applied."""
        start = time.monotonic()
        change_id, status = self._send(changes, comment)
        return UpdateResult(
            zone=self.zone,
            changes=tuple(change for change, _ in changes),
            serial=0,
            seconds=time.monotonic() - start,
            change_id=change_id,
            status=status,
        )

    def _change_status(self, change_id: str) -> str:
        """The provider's status of change ``change_id`` (asynchronous providers only)."""
        raise NotImplementedError

    def wait_done(self, result: UpdateResult, *, deadline: float = 120.0) -> float:
        """Poll the change until it reaches ``done_status``; the seconds waited
        (PropagationError after ``deadline`` seconds)."""
        start = time.monotonic()
        status = result.status
        if not self.done_status or not result.change_id:
            return 0.0
        while status != self.done_status:
            elapsed = time.monotonic() - start
            if elapsed >= deadline:
                raise PropagationError(
                    f"{self.describe()}: change {result.change_id} still {status} after"
                    f" {deadline:g} s",
                    disagreeing=[f"{self.service}:{result.change_id}"],
                )
            time.sleep(min(self.poll_interval, max(0.0, deadline - elapsed)))
            status = self._change_status(result.change_id)
        return time.monotonic() - start

    def _error(self, message: str, code: str = CONFIGURATION) -> CloudDnsError:
        return CloudDnsError(message, provider=self.provider, service=self.service, code=code)

    def apply(self, changes: Sequence[Change]) -> UpdateResult:
        """Send the changes; CloudDnsError "conflict" if a create finds its record set already
        there, "configuration" for invalid changes (nothing is sent in either case)."""
        normal = self._prepare(changes)
        if not normal:
            raise self._error("no DNS changes to apply")
        paired = []
        for change in normal:
            current = self.lookup(change.record.name, change.record.rtype)
            if change.action == "create" and current.present:
                raise self._error(
                    f"create {change.record.name} {change.record.rtype}: exists as"
                    f" {current.describe()}",
                    CONFLICT,
                )
            paired.append((change, current))
        return self._applied(paired, "siprec-backup DNS lever")

    def _set_ttl(self, current: RecordSet, ttl: int) -> TtlChange:
        target = RecordSet(current.name, current.rtype, ttl, current.values)
        result = self._applied([(Change("replace", target), current)], "siprec-backup TTL")
        return TtlChange(target, current.ttl, result)

    def authoritative_nameservers(self) -> list[Nameserver]:
        """The configured ``nameservers`` (the provider's own are checked through the API)."""
        return [Nameserver.parse(text) for text in self.nameservers]

    def wait_propagated(
        self, result: UpdateResult, *, deadline: float = 120.0, interval: float = 0.1
    ) -> PropagationResult:
        """Wait until the provider has applied ``result``, check every expected record set
        through the API, then (with ``nameservers``) wait until each serves them; all within
        ``deadline`` seconds."""
        start = time.monotonic()
        self.wait_done(result, deadline=deadline)
        expected = tuple(r.in_zone(self._origin) for r in result.expected)
        self._verify_api(expected)
        states: tuple[NameserverState, ...] = ()
        if self.nameservers:
            states = wait_for_propagation(
                self.authoritative_nameservers(),
                self.zone,
                self._served_by_nameservers(expected),
                min_serial=0,
                deadline=max(0.0, deadline - (time.monotonic() - start)),
                interval=interval,
                timeout=min(self.timeout, 2.0),
            ).nameservers
        return PropagationResult(
            zone=self.zone,
            min_serial=0,
            expected=expected,
            nameservers=states,
            seconds=time.monotonic() - start,
        )

    def _served_by_nameservers(self, expected: tuple[RecordSet, ...]) -> tuple[RecordSet, ...]:
        """What the nameservers must answer (a provider that answers something else for some
        records, such as Cloudflare's proxied ones, leaves those out)."""
        return expected

    def _verify_api(self, expected: Sequence[RecordSet]) -> None:
        wrong = []
        for want in expected:
            have = self.lookup(want.name, want.rtype)
            if have.values != want.values or (want.present and have.ttl != want.ttl):
                wrong.append(f"holds {have.describe()}, expected {want.describe()}")
        if wrong:
            raise self._error(f"{self.describe()} after the change: {'; '.join(wrong)}", PROVIDER)
