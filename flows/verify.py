"""Restore verification flows: prove that a backup set restores (`verify-restore`), and the
scheduled drill that proves the newest set and a random sample of older ones (`restore-drill`).

Each verification restores every part of the set into throwaway servers the flow starts and
removes itself, runs every check (see siprec_backup/verify/verifier.py), records the result in
the catalog (the backups become verified, with a date), publishes a markdown report and a table
of checks, and emits ``siprec.verification.passed`` or ``siprec.verification.failed`` (resource
``siprec.backup-set.<cluster>.<set-id>``) for automations and alerting. A failed check fails the
run, naming each check with expected vs actual.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from blocks.encryption_key import EncryptionKey
from blocks.loading import load_block
from blocks.platform import Platform
from blocks.sources import load_restore_target
from blocks.storage import load_store
from flows._logging import set_log_level
from siprec_backup.backup_set import list_backup_sets
from siprec_backup.errors import VerificationFailedError
from siprec_backup.verify.config import SqlCheck, VerificationConfig
from siprec_backup.verify.report import VerificationReport
from siprec_backup.verify.verifier import SetVerifier, pick_older_sets
from tasks.backup_set import load_backup_set
from tasks.progress import artifact_key
from tasks.verify import save_verification, verify_part, verify_platform_checks


def emit_verification_event(report: VerificationReport) -> None:
    """``siprec.verification.passed`` / ``.failed`` with the failed checks and the times."""
    emit_event(
        event=f"siprec.verification.{'passed' if report.passed else 'failed'}",
        resource={
            "prefect.resource.id": f"siprec.backup-set.{report.cluster}.{report.set_id}",
            "prefect.resource.name": f"{report.cluster} {report.set_id}",
            "siprec.cluster": report.cluster,
        },
        payload={
            "summary": report.summary(),
            "checks": len(report.checks),
            "failed": [c.model_dump() for c in report.failed],
            "restore_seconds": round(report.total_seconds, 1),
            "parts": {p.source: round(p.restore_seconds, 1) for p in report.parts},
        },
    )


@flow(name="verify-restore", flow_run_name="verify-restore-{platform}-{set_id}")
def verify_restore(
    platform: str,
    set_id: str = "latest",
    storage: str | None = None,
    checks: list[SqlCheck] | None = None,
    work_dir: str | None = None,
    log_level: str = "INFO",
) -> VerificationReport:
    """Restore every part of a backup set into throwaway servers and prove it, check by check.

    Args:
        platform: Name of the platform block.
        set_id: A backup set id, or "latest" for the newest complete set.
        storage: Verify the copy in this storage block instead of the platform's.
        checks: More SQL checks, added to the platform block's: each names a database source, a
            query returning one value, and the expected value (compared as text).
        work_dir: Where the scratch servers and restored recordings live while the flow runs
            (default: the system's temporary directory); needs room for the restored data.
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    logger = get_run_logger()
    config = load_block(Platform, platform)
    store_name = storage or config.storage
    backup_set = load_backup_set(store_name, config.cluster, set_id)
    store, prefix = load_store(store_name)
    keys = load_block(EncryptionKey, config.key).keyring()
    verification = VerificationConfig(
        checks=[*config.verification.checks, *(checks or [])],
        references=config.verification.references,
    )
    scratch = {
        s.name: load_restore_target(s.kind, s.scratch)
        for s in config.sources
        if s.scratch and s.kind != "recordings"
    }
    logger.info("verifying backup set %s of %s", backup_set.set_id, config.cluster)
    with SetVerifier(
        store,
        prefix,
        backup_set,
        keys,
        work_dir=Path(work_dir) if work_dir else None,
        config=verification,
        scratch_targets=scratch,
    ) as verifier:
        for member in verifier.members():
            verify_part(verifier, member)
        verify_platform_checks(verifier)
        report = verifier.report()
    save_verification(store_name, report)
    key = artifact_key("verification", config.cluster)
    create_markdown_artifact(
        report.markdown(), key=key, description=f"Restore verification of {report.set_id}"
    )
    create_table_artifact(
        [c.row() for c in report.checks],
        key=f"{key}-checks",
        description=f"Checks of the restore verification of {report.set_id}",
    )
    emit_verification_event(report)
    if not report.passed:
        raise VerificationFailedError(report.summary())
    logger.info(report.summary())
    return report


@flow(name="restore-drill", flow_run_name="restore-drill-{platform}")
def restore_drill(
    platform: str,
    sample_older: int = 1,
    work_dir: str | None = None,
    log_level: str = "INFO",
) -> list[VerificationReport]:
    """The scheduled drill: verify the newest complete backup set and `sample_older` random
    older complete sets, each as its own verify-restore run.

    Args:
        platform: Name of the platform block.
        sample_older: How many random older complete sets to verify as well.
        work_dir: Where the scratch servers and restored recordings live (see verify-restore).
        log_level: DEBUG, INFO, WARNING or ERROR.
    """
    set_log_level(log_level)
    config = load_block(Platform, platform)
    store, prefix = load_store(config.storage)
    sample = pick_older_sets(list_backup_sets(store, prefix, config.cluster), sample_older)
    chosen = ["latest", *(s.set_id for s in sample)]
    get_run_logger().info("drill of %s: verifying %s", config.cluster, ", ".join(chosen))
    reports, failed = [], []
    for set_id in chosen:
        state = verify_restore(
            platform=platform,
            set_id=set_id,
            work_dir=work_dir,
            log_level=log_level,
            return_state=True,
        )
        if state.is_completed():
            reports.append(state.result())
        else:
            failed.append(f"{set_id}: {state.message}")
    if failed:
        raise VerificationFailedError(
            f"restore drill of {config.cluster}: {len(failed)} of {len(chosen)} sets failed "
            f"verification ({'; '.join(failed)})"
        )
    return reports
