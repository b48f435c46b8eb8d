"""Verification tasks: one per restored part, one for the cross-part checks, one to record the
result in the catalog. Each part is its own task run, so the UI shows which one failed and how
long it took."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.storage import load_store
from siprec_backup.backup_set import SetMember
from siprec_backup.verify.report import Check, PartResult, VerificationReport, record_verification
from siprec_backup.verify.verifier import SetVerifier
from tasks.policies import RETRY_DELAYS, retry_transient_storage_errors


def _log_checks(checks: list[Check]) -> None:
    logger = get_run_logger()
    for check in checks:
        if check.passed:
            logger.info("pass  %s: %s (%s)", check.part, check.name, check.actual)
        else:
            logger.error(
                "FAIL  %s: %s: expected %s, got %s",
                check.part,
                check.name,
                check.expected,
                check.actual,
            )


@task(name="verify-part", task_run_name="verify-{member.source}", cache_policy=NO_CACHE)
def verify_part(verifier: SetVerifier, member: SetMember) -> PartResult:
    """Restore one member of the set into its scratch instance and check it."""
    part = verifier.verify_member(member)
    get_run_logger().info(
        "[%s %s] restored into %s in %.1f s (scratch start %.1f s)",
        member.backup_id,
        member.source,
        part.target or "nothing",
        part.restore_seconds,
        part.scratch_seconds,
    )
    _log_checks(part.checks)
    return part


@task(name="verify-platform-checks", cache_policy=NO_CACHE)
def verify_platform_checks(verifier: SetVerifier) -> list[Check]:
    """Recording references against the restored database, and the user's SQL checks."""
    checks = verifier.check_platform()
    _log_checks(checks)
    return checks


@task(
    name="record-verification",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_transient_storage_errors,
    cache_policy=NO_CACHE,
)
def save_verification(storage: str, report: VerificationReport) -> str:
    """Store the report and mark the set's backups verified (or failed) in the catalog."""
    store, prefix = load_store(storage)
    return record_verification(store, prefix, report)
