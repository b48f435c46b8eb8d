"""Master-key rotation over a store's catalog: re-wrap every object's data key, never re-encrypt.

For each complete backup that has an object wrapped by a key other than the new one, each such
object is copied by :func:`siprec_backup.stream.rewrap` (new header, chunks byte for byte) into a
NEW object key, the copy is read back and checked, then the manifest is rewritten (one atomic
put) to point at the copies, and only then are the old objects deleted.

Naming: the new object is the old name with the new key id before ``.sbk``:
``data.sbk`` -> ``data.<key>.sbk``, and ``data.<old-key>.sbk`` -> ``data.<new-key>.sbk`` on a
later rotation. ``<key>`` is the key id made safe for any store (letters, digits, ``_`` and
``-``; anything else, or a long id, gets a short hash of the id appended).

Crash safety: the manifest always names objects that exist and open with a key in the keyring:
before its rewrite, the old objects (still there); after it, the verified copies. A crash leaves
at worst an unreferenced copy (rewritten by the rerun) or an unreferenced old object (deleted by
the rerun), so running the rotation again finishes the job; a finished rotation reruns as a no-op.
Unreferenced ``.sbk`` objects in a complete backup's directory are such leftovers: the manifest
lists every object a backup wrote.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from siprec_backup.catalog import list_backups
from siprec_backup.errors import ConfigurationError, IntegrityError, WrongKeyError
from siprec_backup.manifest import MANIFEST_NAME, Manifest, StoredObject, backup_prefix
from siprec_backup.storage import ObjectStore
from siprec_backup.stream import DecryptingReader, Keyring, MasterKey, read_header, rewrap

log = logging.getLogger(__name__)

SUFFIX = ".sbk"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
_COPY_BLOCK = 1 << 20


def key_suffix(key_id: str) -> str:
    """The key id as it appears in object names (safe in every store's keys)."""
    safe = _SAFE.sub("-", key_id).strip("-")[:40]
    if safe != key_id or not safe:
        safe = f"{safe}-{hashlib.sha256(key_id.encode()).hexdigest()[:8]}".lstrip("-")
    return safe


def rotated_name(object_key: str, old_key_id: str, new_key_id: str) -> str:
    """``.../data.sbk`` or ``.../data.<old>.sbk`` -> ``.../data.<new>.sbk``."""
    stem = object_key.removesuffix(SUFFIX)
    stem = stem.removesuffix("." + key_suffix(old_key_id))
    new = f"{stem}.{key_suffix(new_key_id)}{SUFFIX}"
    if new == object_key:
        raise ConfigurationError(
            f"rotating {object_key} from key {old_key_id!r} to {new_key_id!r} would keep its name"
        )
    return new


@dataclass(frozen=True)
class RotatedBackup:
    """One backup the rotation re-wrapped (or, in a dry run, would re-wrap)."""

    cluster: str
    source: str
    backup_id: str
    old_key_ids: tuple[str, ...]
    objects: tuple[tuple[str, str], ...]  # (old key, new key) per re-wrapped object
    bytes: int


@dataclass
class RotationReport:
    """What :func:`rotate_keys` did: rotated backups, those already done, leftovers removed."""

    new_key_id: str
    dry_run: bool
    rotated: list[RotatedBackup] = field(default_factory=list)
    already_current: list[str] = field(default_factory=list)
    leftovers_deleted: list[str] = field(default_factory=list)
    skipped_incomplete: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would re-wrap" if self.dry_run else "re-wrapped"
        objects = sum(len(r.objects) for r in self.rotated)
        size = sum(r.bytes for r in self.rotated)
        return (
            f"{verb} {objects} objects ({size:,} bytes) in {len(self.rotated)} backups to key "
            f"{self.new_key_id!r}; {len(self.already_current)} backups already on it; "
            f"{len(self.leftovers_deleted)} leftover objects removed"
        )


def rotate_keys(
    store: ObjectStore,
    prefix: str,
    keyring: Keyring,
    new_key: MasterKey,
    *,
    cluster: str = "",
    source: str = "",
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RotationReport:
    """Re-wrap every complete backup's objects under `new_key`; idempotent and crash-safe.

    `keyring` must hold every old key the backups name (checked before anything is written:
    WrongKeyError lists the missing key ids). Incomplete backups are left alone.
    """
    if new_key.key_id in keyring and keyring.get(new_key.key_id) != new_key:
        raise ConfigurationError(
            f"the keyring holds a different key under the new key id {new_key.key_id!r}"
        )
    entries = list_backups(store, prefix, cluster=cluster, source=source)
    report = RotationReport(new_key.key_id, dry_run)
    manifests: list[Manifest] = []
    for entry in entries:
        if entry.manifest is None:
            report.skipped_incomplete.append(entry.backup_id)
        else:
            manifests.append(entry.manifest)
    _check_keys_available(manifests, keyring, new_key)
    for manifest in manifests:
        stale = [o for o in manifest.objects if o.key_id != new_key.key_id]
        if not stale:
            report.already_current.append(manifest.backup_id)
            if not dry_run:
                report.leftovers_deleted += _delete_leftovers(store, prefix, manifest)
            continue
        rotated = RotatedBackup(
            manifest.cluster,
            manifest.source,
            manifest.backup_id,
            tuple(sorted({o.key_id for o in stale})),
            tuple((o.key, rotated_name(o.key, o.key_id, new_key.key_id)) for o in stale),
            sum(o.ciphertext_bytes for o in stale),
        )
        if not dry_run:
            _rotate_backup(store, prefix, manifest, keyring, new_key)
            report.leftovers_deleted += _delete_leftovers(
                store, prefix, read_current(store, prefix, manifest)
            )
        report.rotated.append(rotated)
        if progress is not None:
            progress(f"{manifest.cluster}/{manifest.source} {manifest.backup_id}")
    log.info("key rotation: %s", report.summary())
    return report


def read_current(store: ObjectStore, prefix: str, manifest: Manifest) -> Manifest:
    """The manifest as stored now."""
    key = _manifest_key(prefix, manifest)
    return Manifest.from_json(store.get_bytes(key), where=key)


def _manifest_key(prefix: str, manifest: Manifest) -> str:
    return (
        backup_prefix(prefix, manifest.cluster, manifest.source, manifest.backup_id) + MANIFEST_NAME
    )


def _check_keys_available(manifests: list[Manifest], keyring: Keyring, new_key: MasterKey) -> None:
    needed: dict[str, list[str]] = {}
    for manifest in manifests:
        for obj in manifest.objects:
            if obj.key_id != new_key.key_id and obj.key_id not in keyring:
                needed.setdefault(obj.key_id, []).append(manifest.backup_id)
    if needed:
        parts = [
            f"{key_id!r} (backup {ids[0]}{f' and {len(ids) - 1} more' if len(ids) > 1 else ''})"
            for key_id, ids in sorted(needed.items())
        ]
        available = ", ".join(repr(k) for k in keyring.key_ids) or "none"
        raise WrongKeyError(
            f"key rotation needs master key {', '.join(parts)}, not in the keyring "
            f"(available: {available})"
        )


def _rotate_backup(
    store: ObjectStore, prefix: str, manifest: Manifest, keyring: Keyring, new_key: MasterKey
) -> None:
    """Copy each stale object under a new name, verify, then switch the manifest, then delete."""
    replaced: dict[str, StoredObject] = {}
    for obj in manifest.objects:
        if obj.key_id == new_key.key_id:
            continue
        new_name = rotated_name(obj.key, obj.key_id, new_key.key_id)
        replaced[obj.key] = _rewrap_object(store, obj, new_name, keyring, new_key)
    updated = manifest.model_copy(
        update={
            "object": replaced.get(manifest.object.key, manifest.object),
            "extra_objects": {
                role: replaced.get(obj.key, obj) for role, obj in manifest.extra_objects.items()
            },
        }
    )
    # One atomic put: before it the manifest names the old objects, after it the new ones.
    store.put_bytes(_manifest_key(prefix, manifest), updated.to_json())
    for old_key in replaced:
        store.delete(old_key)
    log.info(
        "backup %s of %s/%s: %d objects re-wrapped under key %r",
        manifest.backup_id,
        manifest.cluster,
        manifest.source,
        len(replaced),
        new_key.key_id,
    )


class _Tap:
    """Counts and sha256-hashes bytes passing through, and separately those after the first
    `skip` bytes (a stream's chunks after its header). Used around readers and writers."""

    def __init__(self, inner: object | None = None, skip: int = 0) -> None:
        self._inner = inner
        self._skip = skip
        self.count = 0
        self.sha256 = hashlib.sha256()
        self.body_sha256 = hashlib.sha256()

    def _account(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        if self.count + len(view) > self._skip:
            self.body_sha256.update(view[max(self._skip - self.count, 0) :])
        self.count += len(view)

    def read(self, size: int = -1) -> bytes:
        data = cast(BinaryIO, self._inner).read(size)
        self._account(data)
        return data

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._account(data)
        if self._inner is not None:
            cast(BinaryIO, self._inner).write(data)
        return memoryview(data).nbytes


def _rewrap_object(
    store: ObjectStore, obj: StoredObject, new_name: str, keyring: Keyring, new_key: MasterKey
) -> StoredObject:
    """Re-wrap `obj` into `new_name`, check old and new bytes, and describe the new object."""
    with store.open_reader(obj.key) as reader:
        old_header_size = read_header(reader).size
    with store.open_reader(obj.key) as reader, store.open_writer(new_name) as writer:
        old = _Tap(reader, skip=old_header_size)
        out = _Tap(writer)
        try:
            rewrap(cast(BinaryIO, old), cast(BinaryIO, out), keyring, new_key)
        except WrongKeyError as exc:
            raise WrongKeyError(f"{obj.key}: {exc}") from None
        if (old.count, old.sha256.hexdigest()) != (obj.ciphertext_bytes, obj.ciphertext_sha256):
            raise IntegrityError(
                f"{obj.key} does not match its manifest (size or sha256): not rotating it"
            )
        writer.commit()
    # Read the copy back: its header must open with the new key alone, its chunks be the old ones.
    with store.open_reader(new_name) as reader:
        header = DecryptingReader(reader, Keyring([new_key])).header
        body = _Tap(reader)
        while body.read(_COPY_BLOCK):
            pass
    if header.key_id != new_key.key_id or body.sha256.digest() != old.body_sha256.digest():
        raise IntegrityError(f"{new_name}: the re-wrapped copy of {obj.key} does not verify")
    return obj.model_copy(
        update={
            "key": new_name,
            "key_id": new_key.key_id,
            "ciphertext_bytes": out.count,
            "ciphertext_sha256": out.sha256.hexdigest(),
        }
    )


def _delete_leftovers(store: ObjectStore, prefix: str, manifest: Manifest) -> list[str]:
    """Delete ``.sbk`` objects of a complete backup that its manifest does not name: copies or
    originals left by an interrupted rotation."""
    referenced = {o.key for o in manifest.objects}
    base = backup_prefix(prefix, manifest.cluster, manifest.source, manifest.backup_id)
    leftovers = [
        info.key
        for info in store.list(base)
        if info.key.endswith(SUFFIX) and info.key not in referenced
    ]
    for key in leftovers:
        store.delete(key)
        log.info("removed %s, left over by an interrupted key rotation", key)
    return leftovers
