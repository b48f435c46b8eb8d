"""The verification report: every check with expected vs actual, the restore times, and its
record in the catalog.

A report is stored twice: in full under ``<prefix>/<cluster>/_verifications/<set-id>.json``, and as
a short :class:`BackupVerification` in each verified backup's directory (``verification.json``),
which the catalog reads to show a backup as verified (or failed) with a date.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from siprec_backup.errors import IntegrityError
from siprec_backup.manifest import backup_prefix
from siprec_backup.storage import ObjectStore

REPORT_FORMAT = "siprec-backup-verification/1"
VERIFICATION_NAME = "verification.json"
VERIFICATIONS_DIR = "_verifications"
#: Orphans listed by id in a check's "actual"; the rest are counted.
MAX_LISTED = 20


class Check(BaseModel):
    """One proven (or disproven) fact about a restored part."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    part: str = Field(description="The source name, or 'platform' for cross-part checks.")
    name: str
    passed: bool
    expected: str = ""
    actual: str = ""

    def row(self) -> dict[str, str]:
        return {
            "part": self.part,
            "check": self.name,
            "result": "pass" if self.passed else "FAIL",
            "expected": self.expected,
            "actual": self.actual,
        }


class PartResult(BaseModel):
    """One source's backup restored into a scratch instance, and its checks."""

    model_config = ConfigDict(extra="forbid")

    source: str
    kind: str
    backup_id: str | None
    target: str = ""
    scratch_seconds: float = 0.0
    restore_seconds: float = 0.0
    plaintext_bytes: int = 0
    checks: list[Check] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def bytes_per_second(self) -> float:
        return self.plaintext_bytes / self.restore_seconds if self.restore_seconds > 0 else 0.0


class VerificationReport(BaseModel):
    """A backup set's verification: the parts, the platform checks, the times."""

    model_config = ConfigDict(extra="forbid")

    format: str = REPORT_FORMAT
    cluster: str
    set_id: str
    started_at: datetime
    finished_at: datetime
    parts: list[PartResult]
    platform_checks: list[Check] = Field(default_factory=list)

    @property
    def checks(self) -> list[Check]:
        return [c for part in self.parts for c in part.checks] + self.platform_checks

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return bool(self.parts) and all(p.passed for p in self.parts) and not self.failed

    @property
    def total_seconds(self) -> float:
        """The recovery time: from the first scratch start to the last check."""
        return (self.finished_at - self.started_at).total_seconds()

    def summary(self) -> str:
        """One line: verified, or which checks failed."""
        if self.passed:
            return (
                f"backup set {self.set_id} of {self.cluster} verified: {len(self.checks)} checks "
                f"passed, restored in {self.total_seconds:.1f} s"
            )
        failed = self.failed
        names = "; ".join(
            f"{c.part}: {c.name} (expected {c.expected or '-'}, got {c.actual or '-'})"
            for c in failed[:5]
        )
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        return f"backup set {self.set_id} of {self.cluster} FAILED verification: {names}{more}"

    def timing_rows(self) -> list[dict[str, str]]:
        """The recovery time of each part and in total."""
        rows = [
            {
                "part": p.source,
                "backup_id": p.backup_id or "-",
                "scratch_start_s": f"{p.scratch_seconds:.1f}",
                "restore_s": f"{p.restore_seconds:.1f}",
                "bytes": f"{p.plaintext_bytes:,}",
                "mb_per_s": f"{p.bytes_per_second / 1e6:.1f}",
                "result": "pass" if p.passed else "FAIL",
            }
            for p in self.parts
        ]
        rows.append(
            {
                "part": "total",
                "backup_id": self.set_id,
                "scratch_start_s": f"{sum(p.scratch_seconds for p in self.parts):.1f}",
                "restore_s": f"{self.total_seconds:.1f}",
                "bytes": f"{sum(p.plaintext_bytes for p in self.parts):,}",
                "mb_per_s": "",
                "result": "pass" if self.passed else "FAIL",
            }
        )
        return rows

    def markdown(self) -> str:
        """A readable report for the Prefect UI."""
        verdict = "VERIFIED" if self.passed else "FAILED"
        lines = [
            f"# Restore verification of `{self.set_id}` ({self.cluster}): {verdict}",
            "",
            f"Started {self.started_at:%Y-%m-%d %H:%M:%S} UTC; restored and checked in "
            f"{self.total_seconds:.1f} s (recovery time, scratch starts included). "
            f"{len(self.checks)} checks, {len(self.failed)} failed.",
            "",
        ]
        if self.failed:
            lines += [
                "## Failed checks",
                "",
                "| Part | Check | Expected | Actual |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {c.part} | {_cell(c.name)} | {_cell(c.expected)} | {_cell(c.actual)} |"
                for c in self.failed
            ]
            lines.append("")
        lines += [
            "## Recovery time per part",
            "",
            "| Part | Backup | Scratch start (s) | Restore (s) | Bytes | MB/s | Result |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            "| " + " | ".join(_cell(v) for v in row.values()) + " |" for row in self.timing_rows()
        ]
        lines += ["", "## Checks", "", "| Part | Check | Result | Detail |", "|---|---|---|---|"]
        lines += [
            f"| {c.part} | {_cell(c.name)} | {'pass' if c.passed else '**FAIL**'} | "
            + _cell(c.actual if c.passed else f"expected {c.expected}, got {c.actual}")
            + " |"
            for c in self.checks
        ]
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Table-safe markdown: no pipes or newlines inside a cell."""
    return text.replace("|", "\\|").replace("\n", " ") or "-"


class BackupVerification(BaseModel):
    """What the catalog shows of a backup's latest verification."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = REPORT_FORMAT
    set_id: str
    verified_at: datetime
    passed: bool
    failed_checks: list[str] = Field(default_factory=list)
    restore_seconds: float = 0.0


def report_key(prefix: str, cluster: str, set_id: str) -> str:
    return f"{backup_prefix(prefix, cluster, VERIFICATIONS_DIR)}{set_id}.json"


def record_verification(store: ObjectStore, prefix: str, report: VerificationReport) -> str:
    """Store the full report and mark each part's backup verified (or failed); returns the
    report's key. The marks are written after the report, so a mark always has its report."""
    key = report_key(prefix, report.cluster, report.set_id)
    store.put_bytes(key, report.model_dump_json(indent=2).encode())
    for part in report.parts:
        if part.backup_id is None:
            continue
        mark = BackupVerification(
            set_id=report.set_id,
            verified_at=report.finished_at,
            passed=part.passed and report.passed,
            failed_checks=[f"{c.part}: {c.name}" for c in report.failed],
            restore_seconds=part.restore_seconds,
        )
        where = backup_prefix(prefix, report.cluster, part.source, part.backup_id)
        store.put_bytes(where + VERIFICATION_NAME, mark.model_dump_json(indent=2).encode())
    return key


def read_verification(data: bytes, where: str) -> BackupVerification:
    try:
        return BackupVerification.model_validate_json(data)
    except ValidationError as exc:
        raise IntegrityError(f"{where} is invalid: {exc.errors()[0]['msg']}") from None


def read_report(store: ObjectStore, prefix: str, cluster: str, set_id: str) -> VerificationReport:
    key = report_key(prefix, cluster, set_id)
    try:
        return VerificationReport.model_validate_json(store.get_bytes(key))
    except ValidationError as exc:
        raise IntegrityError(f"{key} is invalid: {exc.errors()[0]['msg']}") from None
