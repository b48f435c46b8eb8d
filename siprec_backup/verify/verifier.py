"""Proof that a backup set restores: each part into a scratch instance, then every check.

What: :class:`SetVerifier` restores each member of a backup set into a throwaway server it starts
(or into a scratch server the operator named), and turns every fact it can prove into a
:class:`Check`: the stream authenticates end to end and matches the manifest's sizes and sha256;
the load tool succeeds; every row / key / file count equals the manifest's; every recording's
sha256 matches and every metadata document parses; every recording the restored database
references exists in the restored set and every restored recording is referenced; the user's SQL
checks return what they expect. It records the time each part took (the recovery time).

Why checks instead of exceptions: a verification must report every failure with expected vs
actual, not stop at the first; and it must never leave a scratch server behind, so
:meth:`SetVerifier.close` (or the ``with`` block) stops them whatever happened.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from siprec_backup.backup_set import BackupSet, SetMember, sort_sources
from siprec_backup.catalog import read_manifest
from siprec_backup.errors import (
    IntegrityError,
    NotFoundError,
    RestoreError,
    SiprecBackupError,
    StorageError,
)
from siprec_backup.manifest import Manifest
from siprec_backup.recordings import run_recordings_restore
from siprec_backup.recordings.metadata import MetadataError, parse_metadata_file
from siprec_backup.restore import stream_differences
from siprec_backup.scratch import (
    ScratchInstance,
    claim,
    existing_scratch,
    start_scratch,
    sweep_abandoned,
)
from siprec_backup.sources.base import RestoreTarget
from siprec_backup.storage import ObjectStore
from siprec_backup.stream import Keyring, MasterKey, StreamStats, unseal
from siprec_backup.verify.config import SqlCheck, VerificationConfig
from siprec_backup.verify.report import MAX_LISTED, Check, PartResult, VerificationReport

log = logging.getLogger(__name__)

PLATFORM = "platform"
#: Work directories are named so; one whose owner died is swept by the next verification.
WORK_PREFIX = "siprec-verify-"
#: What each kind's load step is called in the report.
LOAD_CHECK = {
    "postgres": "pg_restore succeeds",
    "mysql": "SQL load succeeds",
    "redis": "RDB complete and valid",
}
COUNT_NOUN = {"postgres": "rows", "mysql": "rows", "redis": "keys"}


class SetVerifier:
    """Restores and checks one backup set; use as a context manager (scratch servers stop)."""

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        backup_set: BackupSet,
        keys: Keyring | MasterKey,
        *,
        work_dir: Path | None = None,
        config: VerificationConfig | None = None,
        scratch_targets: Mapping[str, RestoreTarget] | None = None,
    ) -> None:
        """`scratch_targets` names, per source, a scratch server to use instead of starting one
        (a fresh database is created there and dropped afterwards)."""
        self.store = store
        self.prefix = prefix
        self.backup_set = backup_set
        self.keys = keys
        self.config = config or VerificationConfig()
        self._scratch_targets = dict(scratch_targets or {})
        base = Path(work_dir) if work_dir else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        sweep_abandoned(base, f"{WORK_PREFIX}*")
        self.work_dir = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=base))
        claim(self.work_dir)
        # Scratch servers run as their own accounts (postgres, mysql) when we are root: they
        # must traverse this directory, but not list it (restored recordings live here).
        os.chmod(self.work_dir, 0o711)  # noqa: S103 - traverse only, no listing
        self.started_at = datetime.now(UTC)
        self.parts: list[PartResult] = []
        self.platform_checks: list[Check] = []
        self._instances: dict[str, ScratchInstance] = {}
        self._recordings: dict[str, Path] = {}

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> SetVerifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every scratch server and remove the work directory (idempotent)."""
        instances, self._instances = self._instances, {}
        for instance in instances.values():
            instance.close()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    # --- the steps --------------------------------------------------------------------------

    def members(self) -> list[SetMember]:
        """The set's members in restore order: databases, Redis, then recordings."""
        order = sort_sources([(m.source, m.kind) for m in self.backup_set.members])
        return [self.backup_set.member(name) for name, _ in order]

    def verify_member(self, member: SetMember) -> PartResult:
        """Restore one member into its scratch instance (or directory) and check it."""
        part = PartResult(source=member.source, kind=member.kind, backup_id=member.backup_id)
        self.parts.append(part)
        if member.backup_id is None:
            part.checks.append(
                _fail(part, "backup present in the set", "a backup", member.error or "none")
            )
            return part
        try:
            manifest = read_manifest(
                self.store, self.prefix, self.backup_set.cluster, member.source, member.backup_id
            )
        except SiprecBackupError as exc:
            part.checks.append(_fail(part, "manifest readable", "a valid manifest", str(exc)))
            return part
        if manifest.source_kind == "recordings":
            self._verify_recordings(part, manifest)
        else:
            self._verify_streamed(part, manifest)
        log.info(
            "verify %s %s: %s",
            member.source,
            member.backup_id,
            "pass"
            if part.passed
            else "FAIL: " + ", ".join(c.name for c in part.checks if not c.passed),
        )
        return part

    def check_platform(self) -> list[Check]:
        """The checks across parts: recording references and the user's SQL checks."""
        if self.config.references is not None:
            self.platform_checks += self._check_references()
        self.platform_checks += [self._run_sql_check(check) for check in self.config.checks]
        return self.platform_checks

    def report(self) -> VerificationReport:
        return VerificationReport(
            cluster=self.backup_set.cluster,
            set_id=self.backup_set.set_id,
            started_at=self.started_at,
            finished_at=datetime.now(UTC),
            parts=self.parts,
            platform_checks=self.platform_checks,
        )

    def run(self) -> VerificationReport:
        """Every step in order, then the report (the scratch servers still run until close)."""
        for member in self.members():
            self.verify_member(member)
        self.check_platform()
        return self.report()

    # --- streamed sources (PostgreSQL, MySQL, Redis) ----------------------------------------

    def _verify_streamed(self, part: PartResult, manifest: Manifest) -> None:
        started = time.monotonic()
        try:
            instance = self._scratch(part.source, manifest.source_kind)
        except SiprecBackupError as exc:
            part.checks.append(
                _fail(part, "scratch instance starts", f"a scratch {part.kind} server", str(exc))
            )
            return
        part.scratch_seconds = time.monotonic() - started
        part.target = instance.describe()
        started = time.monotonic()
        try:
            target = instance.restore_target(manifest)
            stats = self._load(part, manifest, target)
            if stats is not None:
                restored = target.restored_counts(manifest.tables)
                noun = COUNT_NOUN[part.kind]
                part.checks += [
                    _check(part, f"{noun} {name}", str(count), str(restored.get(name, "missing")))
                    for name, count in sorted(manifest.tables.items())
                ]
                part.plaintext_bytes = stats.plaintext_bytes
        except SiprecBackupError as exc:
            part.checks.append(_fail(part, "restore completes", "no error", str(exc)))
        part.restore_seconds = time.monotonic() - started

    def _load(
        self, part: PartResult, manifest: Manifest, target: RestoreTarget
    ) -> StreamStats | None:
        """Stream the object into the target's load tool; the stream and load checks."""
        stream_name, load_name = "stream authenticates end to end", LOAD_CHECK[part.kind]
        target.prepare(overwrite=False)
        restore = target.open_restore(overwrite=False)
        stats: StreamStats | None = None
        try:
            try:
                with self.store.open_reader(manifest.object.key) as reader:
                    stats = unseal(reader, restore.stdin, self.keys)
            except BrokenPipeError:
                part.checks.append(_fail(part, load_name, "exit 0", str(restore.died())))
                return None
            except (IntegrityError, NotFoundError, StorageError) as exc:
                part.checks.append(_fail(part, stream_name, "every chunk authentic", str(exc)))
                return None
            part.checks.append(
                _check(part, stream_name, "every chunk authentic", "every chunk authentic")
            )
            try:
                restore.finish()
            except RestoreError as exc:
                part.checks.append(_fail(part, load_name, "exit 0", str(exc)))
                return None
            part.checks.append(_check(part, load_name, "exit 0", "exit 0"))
        finally:
            restore.close()
        differences = stream_differences(manifest.object, stats)
        part.checks.append(
            _check(
                part,
                "stream matches the manifest (sizes, sha256)",
                "identical",
                "; ".join(differences) or "identical",
            )
        )
        return None if differences else stats

    # --- recordings -------------------------------------------------------------------------

    def _verify_recordings(self, part: PartResult, manifest: Manifest) -> None:
        target = self.work_dir / "recordings" / part.source
        part.target = "a scratch directory"
        started = time.monotonic()
        expected = f"{manifest.tables.get('files', 0):,} files, each sha256 as indexed"
        try:
            result = run_recordings_restore(self.store, self.prefix, manifest, self.keys, target)
        except SiprecBackupError as exc:
            part.checks.append(
                _fail(part, "every recording restores with its sha256", expected, str(exc))
            )
        else:
            part.plaintext_bytes = result.plaintext_bytes
            part.checks.append(
                _check(
                    part,
                    "every recording restores with its sha256",
                    expected,
                    f"{result.tables['files']:,} files, each sha256 as indexed",
                )
            )
            part.checks.append(self._check_metadata(part, target, manifest))
            self._recordings[part.source] = target
        part.restore_seconds = time.monotonic() - started

    def _check_metadata(self, part: PartResult, root: Path, manifest: Manifest) -> Check:
        """Every restored metadata document parses as RFC 7865 XML."""
        documents, bad = 0, []
        for path in _files(root):
            if not path.lower().endswith(".xml"):
                continue
            documents += 1
            try:
                parse_metadata_file(root / path, where=path)
            except MetadataError as exc:
                bad.append(str(exc))
        expected = f"{manifest.tables.get('metadata_xml', documents):,} documents parse"
        actual = f"{documents - len(bad):,} documents parse"
        if bad:
            actual += f"; {len(bad):,} do not: " + _listed(bad, len(bad))
        return _check(part, "every metadata XML parses", expected, actual, passed=not bad)

    # --- platform checks --------------------------------------------------------------------

    def _check_references(self) -> list[Check]:
        refs = self.config.references
        assert refs is not None
        names = (
            f"every recording {refs.source} references is restored",
            f"every restored recording is referenced by {refs.source}",
        )
        instance = self._instances.get(refs.source)
        if instance is None or not self._recordings:
            why = "not run: " + (
                f"{refs.source} did not restore" if instance is None else "no recordings restored"
            )
            return [_platform(name, "checked", why) for name in names]
        files: set[str] = set()
        for root in self._recordings.values():
            files.update(_files(root))
        referenced: set[str] = set()
        missing: list[str] = []
        missing_count = 0
        try:
            for row in instance.iter_query(refs.sql):
                row_id, path = row[0], str(row[1])
                referenced.add(path)
                if path not in files:
                    missing_count += 1
                    if len(missing) < MAX_LISTED:
                        missing.append(f"id {row_id} ({path})")
        except SiprecBackupError as exc:
            return [_platform(name, "checked", f"references query failed: {exc}") for name in names]
        unreferenced = sorted(files - referenced)
        return [
            _platform(names[0], "0 missing", _orphans("missing", missing, missing_count)),
            _platform(
                names[1],
                "0 unreferenced",
                _orphans("unreferenced", unreferenced[:MAX_LISTED], len(unreferenced)),
            ),
        ]

    def _run_sql_check(self, check: SqlCheck) -> Check:
        name, expected = check.name, check.expected
        instance = self._instances.get(check.source)
        if instance is None:
            return _platform(name, expected, f"not run: no restored database for {check.source}")
        try:
            rows = instance.query(check.sql)
        except SiprecBackupError as exc:
            return _platform(name, expected, f"query failed: {exc}")
        if len(rows) != 1 or len(rows[0]) != 1:
            shape = f"{len(rows)} rows" + (f" of {len(rows[0])} columns" if rows else "")
            return _platform(name, expected, f"{shape} (expected one value)")
        return _platform(name, expected, "NULL" if rows[0][0] is None else str(rows[0][0]))

    # --- scratch servers --------------------------------------------------------------------

    def _scratch(self, source: str, kind: str) -> ScratchInstance:
        """The scratch instance of `source`: the operator's scratch server, or a new one."""
        if source not in self._instances:
            named = self._scratch_targets.get(source)
            if named is not None:
                instance = existing_scratch(named)
            else:
                instance = start_scratch(kind, self.work_dir)
            self._instances[source] = instance
        return self._instances[source]


def pick_older_sets(
    sets: Sequence[BackupSet], count: int, rng: random.Random | None = None
) -> list[BackupSet]:
    """`count` random complete sets other than the newest complete one (a drill's sample)."""
    complete = [s for s in sets if s.status == "complete"]
    older = sorted(complete, key=lambda s: s.set_id)[:-1]
    return sorted(
        (rng or random.Random()).sample(older, min(count, len(older))),  # noqa: S311 - a sample
        key=lambda s: s.set_id,
    )


def _files(root: Path) -> list[str]:
    """Every file under `root`, as a path relative to it with '/' separators."""
    found = []
    for directory, _dirs, names in os.walk(root):
        rel = Path(directory).relative_to(root).as_posix()
        found += [name if rel == "." else f"{rel}/{name}" for name in names]
    return found


def _listed(items: list[str], total: int) -> str:
    """The first MAX_LISTED items, and how many more."""
    more = total - min(len(items), MAX_LISTED)
    return ", ".join(items[:MAX_LISTED]) + (f" and {more:,} more" if more > 0 else "")


def _orphans(what: str, listed: list[str], total: int) -> str:
    return f"0 {what}" if not total else f"{total:,} {what}: {_listed(listed, total)}"


def _check(
    part: PartResult, name: str, expected: str, actual: str, *, passed: bool | None = None
) -> Check:
    """A check that passes when `actual` equals `expected` (or as `passed` says)."""
    ok = expected == actual if passed is None else passed
    return Check(part=part.source, name=name, passed=ok, expected=expected, actual=actual)


def _fail(part: PartResult, name: str, expected: str, actual: str) -> Check:
    return _check(part, name, expected, actual, passed=False)


def _platform(name: str, expected: str, actual: str, *, passed: bool | None = None) -> Check:
    ok = expected == actual if passed is None else passed
    return Check(part=PLATFORM, name=name, passed=ok, expected=expected, actual=actual)
