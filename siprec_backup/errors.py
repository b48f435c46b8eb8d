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
