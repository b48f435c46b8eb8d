"""The one error tree of siprec-backup.

Every error the engine raises derives from :class:`SiprecBackupError`, so the CLI and the flows can
turn any of them into one clear line. The tree (httpx's ``_exceptions.py`` is the model)::

    SiprecBackupError
    ├── ConfigurationError        bad block fields, bad CLI options, unknown names
    ├── SourceError               a database or file source failed (pg_dump exited non-zero...)
    │   └── SourceUnavailableError     the source cannot be reached at all
    ├── StorageError
    │   ├── TransientStorageError may succeed if retried (I/O hiccup, throttling)
    │   └── PermanentStorageError will not succeed if retried (permissions, limits, bad path)
    ├── NotFoundError             an unknown backup id, a missing object or manifest
    ├── IntegrityError            the data is not what was written
    │   ├── WrongKeyError         no key in the keyring opens this object
    │   ├── TamperedError         a tag, a header or a chunk order does not verify
    │   ├── TruncatedError        the stream ends without a valid final chunk
    │   └── ManifestMismatchError a restore does not match its manifest (sizes, hashes, rows)
    ├── RestoreError              a restore could not complete
    │   ├── TargetNotEmptyError   refusing to overwrite a non-empty target
    │   ├── ScratchStartError     a throwaway verification server could not start
    │   └── ScratchQueryError     a check query on a scratch server failed
    ├── VerificationFailedError   a restore verification found at least one failed check
    ├── BackupSetIncompleteError  a platform backup in which at least one source failed
    ├── StaleBackupsError         a source's newest complete backup is too old, or missing
    ├── RemoteError               an SSH connection, command or transfer failed (carries the host)
    │   ├── HostKeyError          the host key is unknown or changed: refused, never added
    │   ├── RemoteAuthError       the server refused our key
    │   ├── CommandFailedError    a remote command exited non-zero (host, command, exit status)
    │   └── CommandTimeoutError   a remote command ran past its timeout and was stopped
    ├── LoadBalancerError         a load balancer could not be reached or refused a request
    │   └── DrainTimeoutError     a server still had sessions when the drain deadline passed
    ├── DnsError                  a DNS query or update failed
    │   ├── DnsUpdateRefusedError the server refused an update (TSIG key, NOTAUTH, REFUSED...)
    │   └── PropagationError      a nameserver still disagreed when the deadline passed
    ├── CloudProviderError        a cloud API call failed (provider, service, code, message)
    │   ├── CloudLoadBalancerError     ... of a cloud load balancer (also a LoadBalancerError)
    │   └── CloudDnsError              ... of a cloud DNS zone (also a DnsError)
    ├── FailoverError             a failover step failed on a database node (carries the node)
    │   ├── SafetyRefusalError    refused on purpose: lag gate, no healthy candidate, bad topology
    │   ├── FailoverLockedError   another failover of the same cluster holds the lock
    │   └── IncompleteFailoverError  an earlier run stopped half-way: read its report first
    └── LabError                  the throwaway lab could not start or stop a server

Messages never contain secrets: callers pass host, port, user and database names, never passwords
or key material.
"""

from __future__ import annotations


class SiprecBackupError(Exception):
    """Base class of every error siprec-backup raises on purpose."""


class ConfigurationError(SiprecBackupError):
    """A setting is missing or invalid: fix the block, the option or the environment."""


class SourceError(SiprecBackupError):
    """Reading a source (a database dump, a file tree) failed."""


class SourceUnavailableError(SourceError):
    """The source could not be reached (connection refused, authentication failed)."""


class StorageError(SiprecBackupError):
    """Writing to or reading from a store failed."""


class TransientStorageError(StorageError):
    """A storage failure that may succeed if retried; the only storage error tasks retry."""


class PermanentStorageError(StorageError):
    """A storage failure that retrying cannot fix (permissions, limits, a bad location)."""


class NotFoundError(SiprecBackupError):
    """A backup, an object or a manifest that was asked for does not exist."""


class IntegrityError(SiprecBackupError):
    """The bytes read back are not the bytes that were written."""


class WrongKeyError(IntegrityError):
    """No master key available opens this object's data key."""


class TamperedError(IntegrityError):
    """A header, a chunk tag or the chunk order failed authentication."""


class TruncatedError(IntegrityError):
    """The stream ended before a valid final chunk."""


class ManifestMismatchError(IntegrityError):
    """Restored data does not match what the manifest recorded."""


class RestoreError(SiprecBackupError):
    """A restore could not be completed."""


class TargetNotEmptyError(RestoreError):
    """The restore target already holds data and overwriting was not allowed."""


class ScratchStartError(RestoreError):
    """A throwaway server for restore verification did not start (binary missing, port taken,
    crashed, not ready in time); nothing it created is left behind."""


class ScratchQueryError(RestoreError):
    """A check query on a scratch server failed; the message is the server's, on one line."""


class VerificationFailedError(SiprecBackupError):
    """A restore verification ran and at least one check failed (the report names each)."""


class BackupSetIncompleteError(SiprecBackupError):
    """A platform backup finished with at least one source failed (the set is partial)."""


class StaleBackupsError(SiprecBackupError):
    """At least one source has no recent enough complete backup."""


class LabError(SiprecBackupError):
    """A lab server could not be started, reached or stopped."""


class RemoteError(SiprecBackupError):
    """An SSH connection, command or file transfer failed; ``host`` names the machine."""

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(message)
        self.host = host


class HostKeyError(RemoteError):
    """The server's host key is not in the configured known_hosts, or differs from it."""


class RemoteAuthError(RemoteError):
    """The server refused authentication with the configured key."""


class CommandFailedError(RemoteError):
    """A remote command exited non-zero; the stderr tail is kept for the report."""

    def __init__(
        self, message: str, *, host: str, command: str, exit_status: int, stderr_tail: str = ""
    ) -> None:
        super().__init__(message, host=host)
        self.command = command
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail


class CommandTimeoutError(RemoteError):
    """A remote command did not finish within its timeout; its channel was closed."""


class LoadBalancerError(SiprecBackupError):
    """A load balancer could not be reached, or refused or failed a request."""


class DrainTimeoutError(LoadBalancerError):
    """A drained server still had current sessions when the deadline passed."""


class DnsError(SiprecBackupError):
    """A DNS query or dynamic update failed."""


class DnsUpdateRefusedError(DnsError):
    """The primary refused an update (bad TSIG key, NOTAUTH, REFUSED, a failed prerequisite);
    ``rcode`` is the response or TSIG error code (``"BADSIG"``, ``"YXRRSET"``...), ``zone`` the
    zone."""

    def __init__(self, message: str, *, zone: str = "", rcode: str = "") -> None:
        super().__init__(message)
        self.zone = zone
        self.rcode = rcode


class PropagationError(DnsError):
    """Not every authoritative nameserver served the expected records by the deadline."""

    def __init__(self, message: str, *, disagreeing: list[str]) -> None:
        super().__init__(message)
        self.disagreeing = disagreeing


class FailoverError(SiprecBackupError):
    """A failover, switchover or cutover step failed; ``node`` names the server concerned."""

    def __init__(self, message: str, *, node: str = "") -> None:
        super().__init__(f"{node}: {message}" if node else message)
        self.node = node


class SafetyRefusalError(FailoverError):
    """Refused on purpose before anything changed: the lag gate, no healthy candidate, a
    topology that does not match the configuration."""


class FailoverLockedError(FailoverError):
    """Another failover of the same cluster is running (the per-cluster lock is held)."""


class IncompleteFailoverError(FailoverError):
    """An earlier failover run of the cluster stopped half-way; its journal says where."""


# -- cloud providers --------------------------------------------------------------------------
#: What a cloud provider error's ``code`` says to do: install the extra the message names; fix the
#: block (unknown zone, target group, bad input); fix the credentials the provider refused; wait
#: (throttling: retried with bounded backoff before it is raised); look again (the resource
#: changed or already exists); retry later (endpoint unreachable, a 5xx); anything else.
MISSING_SDK = "missing-sdk"
CONFIGURATION = "configuration"
AUTH = "auth"
THROTTLING = "throttling"
CONFLICT = "conflict"
UNAVAILABLE = "unavailable"
PROVIDER = "provider"
CLOUD_ERROR_CODES = (MISSING_SDK, CONFIGURATION, AUTH, THROTTLING, CONFLICT, UNAVAILABLE, PROVIDER)


class CloudProviderError(SiprecBackupError):
    """A cloud provider call failed: ``provider`` (``"aws"``), ``service`` (``"route53"``),
    ``code`` (one of :data:`CLOUD_ERROR_CODES`), ``message`` (the provider's words, secret-free)
    and ``provider_code`` (the provider's own error code, ``"Throttling"``) when it gave one."""

    def __init__(
        self, message: str, *, provider: str, service: str, code: str, provider_code: str = ""
    ) -> None:
        detail = f" [{provider_code}]" if provider_code else ""
        super().__init__(f"{provider} {service}: {code}{detail}: {message}")
        self.provider = provider
        self.service = service
        self.code = code
        self.message = message
        self.provider_code = provider_code

    @property
    def retryable(self) -> bool:
        """Whether retrying later may succeed (throttling only: the backoff retries it)."""
        return self.code == THROTTLING

    def with_detail(self, detail: str) -> CloudProviderError:
        """The same error (same class, provider, service and codes) with ``detail`` appended
        to its message."""
        return type(self)(
            f"{self.message} {detail}",
            provider=self.provider,
            service=self.service,
            code=self.code,
            provider_code=self.provider_code,
        )


class CloudLoadBalancerError(CloudProviderError, LoadBalancerError):
    """A cloud load balancer call failed (ELBv2, GCP backend services, Azure LB): a
    :class:`LoadBalancerError`, so flows handle it like any load balancer's."""


class CloudDnsError(CloudProviderError, DnsError):
    """A cloud DNS call failed (Route53, Cloud DNS, Azure DNS, Cloudflare): a :class:`DnsError`,
    so flows handle it like BIND's."""
