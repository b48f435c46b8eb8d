"""The ``siprec-backup`` command line.

Every command works without a Prefect server except ``demo`` and the ``--storage-block`` options,
which load Prefect blocks. Errors are one line on stderr and exit status 1, never a traceback
(set SIPREC_BACKUP_DEBUG=1 to see one).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, BinaryIO, Self

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from siprec_backup.backup_set import BackupSet, find_backup_set, list_backup_sets, sort_sources
from siprec_backup.catalog import find_backup, list_backups, read_manifest
from siprec_backup.cli_failover import cutover_command, failover_command, switchover_command
from siprec_backup.cli_levers import blocks_app, dns_app, lb_app, ssh_app
from siprec_backup.errors import (
    BackupSetIncompleteError,
    ConfigurationError,
    NotFoundError,
    SiprecBackupError,
    VerificationFailedError,
)
from siprec_backup.keys import rotate_keys
from siprec_backup.lab.cli import lab_app
from siprec_backup.manifest import Manifest, StoredObject
from siprec_backup.metrics import write_textfile
from siprec_backup.metrics_config import (
    MetricsCollector,
    MetricsConfig,
    StoreSource,
    load_config,
    parse_listen,
    serve_until_stopped,
)
from siprec_backup.recordings import run_recordings_restore
from siprec_backup.restore import ReadProgress, RestoreResult, run_restore
from siprec_backup.retention import RetentionPolicy, apply_retention, plan_retention
from siprec_backup.sources.base import RestoreTarget
from siprec_backup.storage import LocalStore, ObjectStore, open_store_url
from siprec_backup.stream import Keyring, MasterKey, read_header, unseal
from siprec_backup.targets import recordings_dir, restore_target
from siprec_backup.verify.config import VerificationConfig
from siprec_backup.verify.report import record_verification
from siprec_backup.verify.verifier import SetVerifier

KEY_ENV = "SIPREC_BACKUP_KEY"
NEW_KEY_ENV = "SIPREC_BACKUP_NEW_KEY"

app = typer.Typer(
    help="Encrypted, verifiable backups of SIPREC recording platforms.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
backup_app = typer.Typer(help="Inspect and prune the backup catalog.", no_args_is_help=True)
keys_app = typer.Typer(help="Generate and rotate master keys.", no_args_is_help=True)
app.add_typer(lab_app, name="lab", help="Start, inspect and stop the throwaway lab.")
app.add_typer(backup_app, name="backup")
app.add_typer(keys_app, name="keys")
app.add_typer(blocks_app, name="blocks")
app.add_typer(lb_app, name="lb")
app.add_typer(dns_app, name="dns")
app.add_typer(ssh_app, name="ssh")
app.command("failover")(failover_command)
app.command("switchover")(switchover_command)
app.command("cutover")(cutover_command)

StoreDirOption = Annotated[
    Path | None, typer.Option(help="A local store directory (no Prefect needed).")
]
StorageBlockOption = Annotated[str | None, typer.Option(help="A storage block name.")]
PrefixOption = Annotated[str | None, typer.Option(help="Key prefix (default: the block's).")]
ClusterFilter = Annotated[str, typer.Option(help="Only this cluster.")]
SourceFilter = Annotated[str, typer.Option(help="Only this source.")]
KeyFileOption = Annotated[
    Path | None, typer.Option(help=f"File holding the master key (else ${KEY_ENV}).")
]


@app.command()
def demo(
    lab_dir: Annotated[Path | None, typer.Option("--dir", help="Lab directory.")] = None,
    scale: Annotated[int, typer.Option(help="Seed data size in MB.")] = 50,
) -> None:
    """Run the main job end to end on the lab: backup via the nightly deployment, then restore."""
    from deployments.demo import run_demo  # Prefect is needed here only

    run_demo(lab_dir, scale_mb=scale)


StoreUrlOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="A store URL (no Prefect needed): /path, s3://bucket/prefix, gs://..., azure://...; "
        "credentials from the environment.",
    ),
]


def _store(
    store_dir: Path | None, storage_block: str | None, store_url: str | None = None
) -> tuple[ObjectStore, str]:
    if sum(x is not None for x in (store_dir, storage_block, store_url)) != 1:
        raise ConfigurationError("give exactly one of --store, --store-dir or --storage-block")
    if store_url is not None:
        return open_store_url(store_url)
    if store_dir is not None:
        if not store_dir.is_dir():
            raise NotFoundError(f"store directory {store_dir} does not exist")
        return LocalStore(store_dir), ""
    from blocks.storage import load_store  # needs the Prefect server

    assert storage_block is not None
    return load_store(storage_block)


@backup_app.command("list")
def backup_list(
    store_dir: StoreDirOption = None,
    storage_block: StorageBlockOption = None,
    store_url: StoreUrlOption = None,
    prefix: PrefixOption = None,
    cluster: ClusterFilter = "",
    source: SourceFilter = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every backup in a store: id, time, size, status, verified."""
    store, block_prefix = _store(store_dir, storage_block, store_url)
    entries = list_backups(
        store, prefix if prefix is not None else block_prefix, cluster=cluster, source=source
    )
    rows = [entry.row() for entry in entries]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no backups in {store.describe()}")
        return
    _print_table(rows)


@backup_app.command("sets")
def backup_sets(
    cluster: Annotated[str, typer.Option(help="The platform (cluster) name.")],
    store_dir: StoreDirOption = None,
    storage_block: StorageBlockOption = None,
    store_url: StoreUrlOption = None,
    prefix: PrefixOption = None,
) -> None:
    """List a platform's backup sets: which backup of each source belongs to which set."""
    store, block_prefix = _store(store_dir, storage_block, store_url)
    sets = list_backup_sets(store, prefix if prefix is not None else block_prefix, cluster)
    if not sets:
        typer.echo(f"no backup sets of {cluster} in {store.describe()}")
        return
    _print_table(
        [
            {
                "set_id": s.set_id,
                "status": s.status,
                "finished_at": s.finished_at.isoformat(timespec="seconds"),
                **{m.source: m.backup_id or "FAILED" for m in s.members},
            }
            for s in sets
        ]
    )


RESTORE_TARGET_HELP = (
    "With --source: one target. With --set: NAME=TARGET, once per source of the set. A target "
    "is postgresql://user@host:port/db, mysql://user@host:port/db (db optional), "
    "redis://host:port (a running server) or /path/to/dump.rdb (an RDB file to start a "
    "redis-server from; also file:///path), or a directory (recordings); passwords from "
    "$PGPASSWORD, $MYSQL_PWD, $REDISCLI_AUTH, never in the URL."
)
#: What each kind's restore counts, for the summary table.
_COUNTED = {"postgres": "rows", "mysql": "rows", "redis": "keys", "recordings": "files"}


@app.command()
def restore(
    to: Annotated[list[str], typer.Option(metavar="TARGET", help=RESTORE_TARGET_HELP)],
    cluster: Annotated[str, typer.Option(help="Cluster name the backups were made under.")],
    source: Annotated[
        str | None, typer.Option(help="Restore one source's backup (with one --to URL).")
    ] = None,
    set_id: Annotated[
        str | None,
        typer.Option(
            "--set",
            metavar="SET_ID",
            help="Restore every source of a backup set, in set order (databases, Redis, "
            "recordings), with --to NAME=TARGET per source. 'latest' is the newest complete "
            "set; `siprec-backup backup sets` lists them.",
        ),
    ] = None,
    backup_id: Annotated[
        str | None, typer.Option(help="With --source: a backup id (default: the latest).")
    ] = None,
    allow_partial: Annotated[
        bool,
        typer.Option(help="With --set: restore a partial set, skipping its failed sources."),
    ] = False,
    store_url: StoreUrlOption = None,
    store_dir: StoreDirOption = None,
    storage_block: StorageBlockOption = None,
    prefix: PrefixOption = None,
    key_file: KeyFileOption = None,
    overwrite: Annotated[bool, typer.Option(help="Allow a target that holds data.")] = False,
    progress: Annotated[
        bool,
        typer.Option(
            help="A progress bar on stderr (on a terminal; otherwise one line per source)."
        ),
    ] = True,
) -> None:
    """Restore one backup (--source) or a whole backup set (--set), with no Prefect server.

    The break-glass path. Sizes, sha256 and every count (rows, keys, files) are proven.

    With --set, every target is checked before anything is restored.

    A summary table (counts in the backup and restored, bytes, seconds, MB/s) ends on stdout.
    """
    if (source is None) == (set_id is None):
        raise ConfigurationError("give exactly one of --source (one backup) or --set (a set)")
    store, block_prefix = _store(store_dir, storage_block, store_url)
    where = prefix if prefix is not None else block_prefix
    if source is not None:
        if len(to) != 1:
            raise ConfigurationError("--source takes exactly one --to target")
        manifest = find_backup(store, where, cluster, source, backup_id or "latest")
        jobs = [_restore_job(store, where, source, manifest, to[0])]
    else:
        assert set_id is not None
        if backup_id is not None:
            raise ConfigurationError("--backup-id goes with --source: a set names its backups")
        backup_set, jobs = _set_jobs(store, where, cluster, set_id, to, allow_partial)
    key_text = _read_key_text(key_file)
    objects = [obj for job in jobs for obj in (*job.manifest.objects, *job.reads)]
    keys = Keyring([MasterKey.from_text(k, key_text) for k in _key_ids(objects)])
    display = _BarDisplay() if progress and sys.stderr.isatty() else _LineDisplay()
    results = _run_restores(store, where, jobs, keys, display, overwrite=overwrite)
    if source is not None:
        _print_single(cluster, jobs[0].manifest, results[0])
    _print_table([_summary_row(job, result) for job, result in zip(jobs, results, strict=True)])
    if set_id is not None:
        typer.echo(
            f"restored backup set {backup_set.set_id} of {cluster}: {len(jobs)} of "
            f"{len(backup_set.members)} sources, every count matches its manifest"
        )


def _print_single(cluster: str, manifest: Manifest, result: RestoreResult) -> None:
    """The single-source form's report: one line, then each table's counts."""
    typer.echo(
        f"restored {manifest.source_kind} backup {result.backup_id} of {cluster}/"
        f"{manifest.source} into {result.target}: {result.plaintext_bytes:,} bytes in "
        f"{result.seconds:.1f} s"
    )
    _print_table(
        [
            {"name": name, "in_backup": f"{count:,}", "restored": f"{result.tables[name]:,}"}
            for name, count in manifest.tables.items()
        ]
    )


@dataclass(frozen=True)
class _RestoreJob:
    """One source to restore: its backup, its parsed target, the objects the restore reads."""

    name: str
    manifest: Manifest
    target: RestoreTarget | Path
    reads: list[StoredObject]

    @property
    def read_bytes(self) -> int:
        return sum(obj.ciphertext_bytes for obj in self.reads)

    def describe_target(self) -> str:
        return str(self.target) if isinstance(self.target, Path) else self.target.describe()


def _restore_job(
    store: ObjectStore, prefix: str, name: str, manifest: Manifest, to: str
) -> _RestoreJob:
    """Parse `to` for the backup's kind (a one-line error if it does not fit) and list the
    objects the restore streams: the data object, or the packs of a recordings backup and of
    the backups it depends on (a base pack that holds no file of this backup is not read, so
    the byte total of an incremental recordings restore is an upper bound)."""
    if manifest.source_kind != "recordings":
        target = restore_target(manifest.source_kind, to)
        return _RestoreJob(name, manifest, target, [manifest.object])
    bases = [
        read_manifest(store, prefix, manifest.cluster, manifest.source, backup_id)
        for backup_id in manifest.depends_on
    ]
    packs = [
        obj
        for m in (manifest, *bases)
        for role, obj in (("data", m.object), *m.extra_objects.items())
        if role != "index"
    ]
    return _RestoreJob(name, manifest, recordings_dir(to), packs)


def _set_jobs(
    store: ObjectStore, prefix: str, cluster: str, set_id: str, to: list[str], allow_partial: bool
) -> tuple[BackupSet, list[_RestoreJob]]:
    """The set and its restores in set order, every target parsed before any restore."""
    backup_set = find_backup_set(store, prefix, cluster, set_id)
    members = [
        backup_set.member(name)
        for name, _kind in sort_sources([(m.source, m.kind) for m in backup_set.members])
    ]
    failed = [m.source for m in members if m.backup_id is None]
    if failed and not allow_partial:
        raise BackupSetIncompleteError(
            f"backup set {backup_set.set_id} is partial (no backup of {', '.join(failed)}); "
            "pass --allow-partial to restore its other sources"
        )
    targets = _named_targets(to)
    unknown = sorted(set(targets) - {m.source for m in members})
    if unknown:
        raise ConfigurationError(
            f"backup set {backup_set.set_id} has no source {', '.join(unknown)} "
            f"(its sources: {', '.join(m.source for m in members)})"
        )
    missing = [m.source for m in members if m.backup_id and m.source not in targets]
    if missing:
        raise ConfigurationError(
            f"no --to for {', '.join(missing)} of backup set {backup_set.set_id}: "
            "give --to NAME=TARGET for every source"
        )
    jobs = []
    for member in members:
        if member.backup_id is None:
            typer.echo(
                f"warning: skipping {member.source}: it failed in backup set "
                f"{backup_set.set_id} ({member.error or 'no backup'})",
                err=True,
            )
            continue
        manifest = read_manifest(store, prefix, cluster, member.source, member.backup_id)
        try:
            job = _restore_job(store, prefix, member.source, manifest, targets[member.source])
        except ConfigurationError as exc:
            raise ConfigurationError(f"--to {member.source}: {exc}") from None
        jobs.append(job)
    return backup_set, jobs


def _named_targets(pairs: list[str]) -> dict[str, str]:
    """NAME=TARGET options as a dict (a one-line error for a malformed or repeated one)."""
    targets: dict[str, str] = {}
    for pair in pairs:
        name, sep, target = pair.partition("=")
        if not sep or not name or not target or "/" in name or ":" in name:
            raise ConfigurationError(f"with --set, --to takes NAME=TARGET, got {pair!r}")
        if name in targets:
            raise ConfigurationError(f"--to names {name} twice")
        targets[name] = target
    return targets


def _run_restores(
    store: ObjectStore,
    prefix: str,
    jobs: list[_RestoreJob],
    keys: Keyring,
    display: _BarDisplay | _LineDisplay,
    *,
    overwrite: bool,
) -> list[RestoreResult]:
    """Restore each job in order, reporting progress; the first failure stops the rest."""
    results = []
    with display:
        for job in jobs:
            advance = display.start(job)
            if isinstance(job.target, Path):
                result = run_recordings_restore(
                    store,
                    prefix,
                    job.manifest,
                    keys,
                    job.target,
                    overwrite=overwrite,
                    progress=advance,
                )
            else:
                result = run_restore(
                    store, job.manifest, keys, job.target, overwrite=overwrite, progress=advance
                )
            display.done(job, result)
            results.append(result)
    return results


class _LineDisplay:
    """Progress off a terminal (or with --no-progress): one stderr line per source when it
    starts and when it ends."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def start(self, job: _RestoreJob) -> ReadProgress | None:
        typer.echo(
            f"restoring {job.name}: {job.manifest.source_kind} backup {job.manifest.backup_id}, "
            f"{job.read_bytes:,} bytes to read, into {job.describe_target()}",
            err=True,
        )
        return None

    def done(self, job: _RestoreJob, result: RestoreResult) -> None:
        typer.echo(
            f"restored {job.name}: {result.plaintext_bytes:,} bytes in {result.seconds:.1f} s, "
            "every count matches",
            err=True,
        )


class _BarDisplay:
    """A rich progress bar per source on stderr: bytes read of the total, rate, ETA."""

    def __init__(self) -> None:
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.stop()

    def start(self, job: _RestoreJob) -> ReadProgress:
        task = self._bar.add_task(f"{job.name} ({job.manifest.source_kind})", total=job.read_bytes)
        self._task = task
        return lambda size: self._bar.advance(task, size)

    def done(self, job: _RestoreJob, result: RestoreResult) -> None:
        assert self._task is not None
        self._bar.update(
            self._task,
            completed=job.read_bytes,
            description=f"{job.name} ({job.manifest.source_kind}) verified",
        )


def _summary_row(job: _RestoreJob, result: RestoreResult) -> dict[str, str]:
    """One source's row of the final table: what the backup counted and what was restored."""
    kind = job.manifest.source_kind
    return {
        "source": job.name,
        "kind": kind,
        "backup_id": result.backup_id,
        "counts": _COUNTED.get(kind, "items"),
        "in_backup": f"{_total_count(kind, job.manifest.tables):,}",
        "restored": f"{_total_count(kind, result.tables):,}",
        "bytes": f"{result.plaintext_bytes:,}",
        "seconds": f"{result.seconds:.1f}",
        "mb/s": f"{result.bytes_per_second / 1e6:.1f}",
    }


def _total_count(kind: str, tables: dict[str, int]) -> int:
    """Rows or keys summed over tables or databases; for recordings, the files."""
    return tables.get("files", 0) if kind == "recordings" else sum(tables.values())


def _key_ids(objects: list[StoredObject]) -> list[str]:
    """The key ids the objects name: one key file opens them all (the same key)."""
    return sorted({obj.key_id for obj in objects})


def _print_table(rows: list[dict[str, str]]) -> None:
    """Rows as aligned columns under an upper-case header."""
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    typer.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        typer.echo("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())


@backup_app.command("prune")
def backup_prune(
    store_dir: StoreDirOption = None,
    storage_block: StorageBlockOption = None,
    store_url: StoreUrlOption = None,
    prefix: PrefixOption = None,
    cluster: ClusterFilter = "",
    source: SourceFilter = "",
    keep_last: Annotated[int, typer.Option(help="Keep the N newest backups.")] = 0,
    keep_daily: Annotated[int, typer.Option(help="Newest backup of each of N days.")] = 0,
    keep_weekly: Annotated[int, typer.Option(help="Newest backup of each of N weeks.")] = 0,
    keep_monthly: Annotated[int, typer.Option(help="Newest backup of each of N months.")] = 0,
    max_age_days: Annotated[
        float | None, typer.Option(help="Delete backups older than this (not bases, not newest).")
    ] = None,
    incomplete_after_hours: Annotated[
        float, typer.Option(help="Delete interrupted backups idle this long.")
    ] = 24,
    dry_run: Annotated[bool, typer.Option(help="Print the plan, delete nothing.")] = False,
) -> None:
    """Apply a retention policy: print the plan (KEEP/DELETE and why), then delete.

    The newest complete backup of each source and every base of a kept backup are always kept.
    """
    policy = RetentionPolicy.build(
        keep_last=keep_last,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        max_age_days=max_age_days,
        incomplete_after_hours=incomplete_after_hours,
    )
    store, block_prefix = _store(store_dir, storage_block, store_url)
    root = prefix if prefix is not None else block_prefix
    entries = list_backups(store, root, cluster=cluster, source=source)
    plan = plan_retention(entries, policy, datetime.now(UTC))
    if not plan.decisions:
        typer.echo(f"no backups in {store.describe()}")
        return
    _print_table(plan.rows())
    for warning in plan.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if dry_run:
        typer.echo(f"dry run: {plan.summary()}; nothing deleted")
        return
    for backup_id in apply_retention(store, root, plan):
        typer.echo(f"deleted {backup_id}")
    typer.echo(plan.summary().replace("to delete", "deleted"))


@app.command()
def verify(
    cluster: Annotated[str, typer.Option(help="Cluster (platform) name of the backup set.")],
    set_id: Annotated[str, typer.Option("--set", help="A backup set id, or 'latest'.")] = "latest",
    store_url: StoreUrlOption = None,
    store_dir: StoreDirOption = None,
    storage_block: StorageBlockOption = None,
    prefix: PrefixOption = None,
    key_file: KeyFileOption = None,
    checks_file: Annotated[
        Path | None,
        typer.Option(
            "--checks",
            help="YAML or JSON file: SQL checks and the recordings references query, in the "
            "shape of the platform block's verification field (docs/VERIFICATION.md).",
        ),
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(help="Where scratch servers and restored recordings live (default: /tmp)."),
    ] = None,
    record: Annotated[
        bool, typer.Option(help="Write the result into the catalog (the backups' verified mark).")
    ] = True,
) -> None:
    """Prove that a backup set restores, with no Prefect server: every part into a throwaway
    server started from the local binaries, then every check (authentication, load, counts,
    sha256, metadata XML, recording references, SQL checks) and the recovery time. Exits 1 and
    names each failed check if any fails."""
    store, block_prefix = _store(store_dir, storage_block, store_url)
    where = prefix if prefix is not None else block_prefix
    backup_set = find_backup_set(store, where, cluster, set_id)
    key_text = _read_key_text(key_file)
    key_ids: set[str] = set()
    for member in backup_set.members:
        if member.backup_id is not None:
            try:
                manifest = read_manifest(store, where, cluster, member.source, member.backup_id)
            except SiprecBackupError:
                continue  # the verification reports it as a failed check
            key_ids.update(_key_ids(manifest.objects))
    keys = Keyring([MasterKey.from_text(k, key_text) for k in sorted(key_ids)])
    config = _verification_config(checks_file)
    with SetVerifier(store, where, backup_set, keys, work_dir=work_dir, config=config) as verifier:
        for member in verifier.members():
            typer.echo(f"verifying {member.source} ({member.kind}) ...", err=True)
            verifier.verify_member(member)
        verifier.check_platform()
        report = verifier.report()
    _print_table([c.row() for c in report.checks])
    typer.echo("")
    _print_table(report.timing_rows())
    if record:
        typer.echo(f"recorded in {record_verification(store, where, report)}")
    if not report.passed:
        raise VerificationFailedError(report.summary())
    typer.echo(report.summary())


def _verification_config(path: Path | None) -> VerificationConfig:
    if path is None:
        return VerificationConfig()
    try:
        with path.open() as handle:
            data = yaml.safe_load(handle)
        return VerificationConfig.model_validate(data or {})
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "document"
        raise ConfigurationError(f"{path}: {field}: {first['msg']}") from None


def _read_key_text(key_file: Path | None, env: str = KEY_ENV, option: str = "--key-file") -> str:
    if key_file is not None:
        try:
            return key_file.read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read key file {key_file}: {exc.strerror}") from None
    text = os.environ.get(env)
    if not text:
        raise ConfigurationError(f"no key: pass {option} or set {env}")
    return text


@keys_app.command("generate")
def keys_generate(
    key_id: Annotated[str, typer.Option(help="Id of the new key, written into backup headers.")],
    out: Annotated[Path, typer.Option(help="File to create (mode 0600; never overwritten).")],
) -> None:
    """Generate a random 256-bit master key into a new 0600 file (64 hex characters)."""
    key = MasterKey.generate(key_id)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{out} already exists: refusing to overwrite a key") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot create key file {out}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(key.material.hex() + "\n")
    typer.echo(f"wrote master key {key_id!r} to {out} (mode 0600); keep a copy outside Prefect")


@keys_app.command("rotate")
def keys_rotate(
    new_key_id: Annotated[str, typer.Option(help="Id of the new master key.")],
    store_dir: StoreDirOption = None,
    storage_block: StorageBlockOption = None,
    store_url: StoreUrlOption = None,
    prefix: PrefixOption = None,
    old_key_file: Annotated[
        Path | None, typer.Option(help=f"File holding the old master key (else ${KEY_ENV}).")
    ] = None,
    old_key_id: Annotated[
        str | None,
        typer.Option(help="Id of the old key (default: the one other key id the store uses)."),
    ] = None,
    also_key_file: Annotated[
        list[str] | None,
        typer.Option(help="Another old key as ID=FILE (repeatable), for older backups."),
    ] = None,
    new_key_file: Annotated[
        Path | None, typer.Option(help=f"File holding the new master key (else ${NEW_KEY_ENV}).")
    ] = None,
    cluster: ClusterFilter = "",
    source: SourceFilter = "",
    dry_run: Annotated[bool, typer.Option(help="List what would be re-wrapped.")] = False,
) -> None:
    """Re-wrap every backup's data keys under a new master key (no re-encryption).

    Safe to interrupt and rerun: a rerun finishes the job. Afterwards the old key is no longer
    needed to restore any backup of the store.
    """
    new_key = MasterKey.from_text(
        new_key_id, _read_key_text(new_key_file, NEW_KEY_ENV, "--new-key-file")
    )
    extra = [_key_from_pair(pair) for pair in also_key_file or []]
    store, block_prefix = _store(store_dir, storage_block, store_url)
    root = prefix if prefix is not None else block_prefix
    keys = list(extra)
    if old_key_id is None:
        old_key_id = _only_old_key_id(store, root, cluster, source, new_key, extra)
    if old_key_id is not None:
        keys.append(
            MasterKey.from_text(old_key_id, _read_key_text(old_key_file, option="--old-key-file"))
        )
    report = rotate_keys(
        store,
        root,
        Keyring(keys),
        new_key,
        cluster=cluster,
        source=source,
        dry_run=dry_run,
    )
    verb = "would re-wrap" if dry_run else "re-wrapped"
    for done in report.rotated:
        old = ", ".join(repr(k) for k in done.old_key_ids)
        typer.echo(
            f"{verb} {done.cluster}/{done.source} {done.backup_id}: "
            f"{len(done.objects)} objects, {old} -> {new_key.key_id!r}"
        )
    for leftover in report.leftovers_deleted:
        typer.echo(f"removed leftover {leftover}")
    typer.echo(report.summary())


def _key_from_pair(pair: str) -> MasterKey:
    key_id, sep, path = pair.partition("=")
    if not sep or not key_id or not path:
        raise ConfigurationError(f"--also-key-file takes ID=FILE, got {pair!r}")
    return MasterKey.from_text(key_id, _read_key_text(Path(path)))


def _only_old_key_id(
    store: ObjectStore,
    prefix: str,
    cluster: str,
    source: str,
    new_key: MasterKey,
    extra: list[MasterKey],
) -> str | None:
    """The one key id, other than the new and the --also ones, that the backups use."""
    known = {new_key.key_id, *(k.key_id for k in extra)}
    used = {
        obj.key_id
        for entry in list_backups(store, prefix, cluster=cluster, source=source)
        if entry.manifest is not None
        for obj in entry.manifest.objects
    }
    candidates = sorted(used - known)
    if len(candidates) > 1:
        raise ConfigurationError(
            "the backups use several old keys ("
            + ", ".join(repr(k) for k in candidates)
            + "): pass --old-key-id and --also-key-file ID=FILE for the others"
        )
    return candidates[0] if candidates else None


@app.command()
def decrypt(
    obj: Annotated[
        Path, typer.Argument(metavar="OBJECT", help="Backup object file, or - for stdin.")
    ],
    key_file: KeyFileOption = None,
    key_id: Annotated[
        str | None, typer.Option(help="Key id (default: read from the object's header).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    raw: Annotated[bool, typer.Option(help="Do not decompress (emit the zstd stream).")] = False,
) -> None:
    """Decrypt one backup object with no Prefect server: the break-glass path.

    The output of a PostgreSQL backup is a pg_dump custom-format archive:
    `siprec-backup decrypt data.sbk --key-file master.key | pg_restore -d DB`.
    """
    key_text = _read_key_text(key_file)
    with _open_input(obj) as source:
        if key_id is None:
            if not source.seekable():
                raise ConfigurationError("reading from a pipe: pass --key-id")
            key_id = read_header(source).key_id
            source.seek(0)
        key = MasterKey.from_text(key_id, key_text)
        if output is None:
            unseal(source, sys.stdout.buffer, key, decompress=not raw)
            return
        partial = output.with_name(f".{output.name}.partial")
        try:
            with open(partial, "wb") as sink:
                unseal(source, sink, key, decompress=not raw)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)


def _open_input(obj: Path) -> BinaryIO:
    if str(obj) == "-":
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    try:
        return open(obj, "rb")
    except FileNotFoundError:
        raise NotFoundError(f"no such object file: {obj}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot open {obj}: {exc.strerror}") from None


@app.command()
def metrics(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file: stores, clusters, thresholds.")
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option(
            help="Instead of --config: a Platform block, its replication cluster blocks and its "
            "storage block (needs the Prefect server)."
        ),
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="Serve GET /metrics on HOST:PORT, e.g. 127.0.0.1:9187.")
    ] = None,
    textfile: Annotated[
        Path | None,
        typer.Option(help="Write once, atomically, for node_exporter's textfile collector."),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Print once to stdout.")] = False,
    catalog_ttl: Annotated[
        float, typer.Option(help="With --listen: seconds a catalog read is reused.")
    ] = 300.0,
) -> None:
    """Prometheus metrics: replication lag and status per node, backup and restore-verification
    figures per source (docs/configuration.md, "Metrics"). No Prefect needed with --config."""
    if (config is None) == (platform is None):
        raise ConfigurationError("give exactly one of --config or --platform")
    if sum((listen is not None, textfile is not None, once)) != 1:
        raise ConfigurationError("give exactly one of --listen, --textfile or --once")
    if textfile is not None and textfile.suffix != ".prom":
        raise ConfigurationError(f"--textfile {textfile}: node_exporter reads only *.prom files")
    address = parse_listen(listen) if listen is not None else None
    collector = MetricsCollector(
        load_config(config) if config is not None else _platform_metrics(str(platform)),
        catalog_ttl=catalog_ttl,
        warn=lambda line: typer.echo(f"warning: {line}", err=True),
    )
    if address is not None:
        serve_until_stopped(
            collector, *address, announce=lambda url: typer.echo(f"serving {url}", err=True)
        )
    elif textfile is not None:
        write_textfile(collector.collect(), textfile)
    else:
        typer.echo(collector.collect(), nl=False)


def _platform_metrics(name: str) -> MetricsConfig:
    """What ``metrics --platform`` reads: the clusters of Platform block `name` and its store."""
    from blocks.replication import load_monitored  # needs the Prefect server
    from blocks.storage import load_store

    [monitored] = load_monitored([name])
    store, prefix = load_store(monitored.platform.storage)
    clusters = monitored.clusters
    return MetricsConfig(
        nodes=[node for cluster in clusters for node in cluster.nodes],
        thresholds={c.config.cluster: c.config.thresholds() for c in clusters},
        stores=[StoreSource(monitored.platform.storage, store, prefix, monitored.platform.cluster)],
        timeout=max((c.config.timeout_seconds for c in clusters), default=5.0),
    )


def main() -> None:
    """Entry point: one clear line and exit 1 on any error."""
    try:
        app()
    except SiprecBackupError as exc:
        _fail(str(exc))
    except BrokenPipeError:
        _fail("output closed early (broken pipe)")
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as exc:
        if os.environ.get("SIPREC_BACKUP_DEBUG"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc}")


def _fail(message: str) -> None:
    sys.stderr.write(f"siprec-backup: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)
