"""The verification report, its catalog marks and the drill's sample: pure code, no server."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks.platform import Platform, PlatformSource
from siprec_backup.backup_set import BackupSet, SetMember
from siprec_backup.catalog import list_backups
from siprec_backup.storage import LocalStore
from siprec_backup.verify.config import RecordingReferences, SqlCheck, VerificationConfig
from siprec_backup.verify.report import (
    Check,
    PartResult,
    VerificationReport,
    read_report,
    record_verification,
)
from siprec_backup.verify.verifier import pick_older_sets
from tests.unit.test_manifest_catalog import _manifest, _store_backup

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def _report(*, fail: bool = False) -> VerificationReport:
    db = PartResult(
        source="db",
        kind="postgres",
        backup_id="20261126T020000Z-aaaaaa",
        restore_seconds=4.0,
        plaintext_bytes=8_000_000,
        checks=[
            Check(
                part="db",
                name="rows siprec.recordings",
                passed=not fail,
                expected="150",
                actual="149" if fail else "150",
            ),
        ],
    )
    return VerificationReport(
        cluster="lab",
        set_id="20261126T020000Z-set111",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=9),
        parts=[db],
        platform_checks=[
            Check(part="platform", name="x | y", passed=True, expected="0", actual="0")
        ],
    )


def test_a_passing_report_says_verified_with_its_recovery_time() -> None:
    report = _report()
    assert report.passed
    assert report.summary() == (
        "backup set 20261126T020000Z-set111 of lab verified: 2 checks passed, restored in 9.0 s"
    )
    md = report.markdown()
    assert "): VERIFIED" in md and "Failed checks" not in md
    assert "| db | 20261126T020000Z-aaaaaa | 0.0 | 4.0 | 8,000,000 | 2.0 | pass |" in md
    assert "x \\| y" in md  # a pipe inside a cell does not break the table


def test_a_failing_report_names_each_check_with_expected_and_actual() -> None:
    report = _report(fail=True)
    assert not report.passed
    assert "db: rows siprec.recordings (expected 150, got 149)" in report.summary()
    assert "| db | rows siprec.recordings | 150 | 149 |" in report.markdown()
    assert report.timing_rows()[-1]["result"] == "FAIL"


def test_a_report_without_parts_or_checks_never_passes() -> None:
    empty = VerificationReport(cluster="c1", set_id="s", started_at=T0, finished_at=T0, parts=[])
    assert not empty.passed
    assert not PartResult(source="db", kind="postgres", backup_id="b").passed


@pytest.mark.parametrize("fail", [False, True])
def test_recording_marks_the_backups_in_the_catalog(tmp_path: Path, fail: bool) -> None:
    store = LocalStore(tmp_path)
    _store_backup(store, _manifest("20261126T020000Z-aaaaaa"))
    _store_backup(store, _manifest("20261125T020000Z-bbbbbb"))
    report = _report(fail=fail)
    key = record_verification(store, "p", report)
    assert key == "p/lab/_verifications/20261126T020000Z-set111.json"
    assert read_report(store, "p", "lab", report.set_id) == report
    entries = {e.backup_id: e for e in list_backups(store, "p")}
    assert len(entries) == 2  # the report is not a backup
    newest, older = entries["20261126T020000Z-aaaaaa"], entries["20261125T020000Z-bbbbbb"]
    assert newest.verified is not fail
    assert newest.row()["verified"] == ("FAILED " if fail else "") + "2026-11-26 03:00"
    assert not older.verified and older.row()["verified"] == "no"


def test_the_drill_samples_older_complete_sets_only() -> None:
    def backup_set(set_id: str, status: str = "complete") -> BackupSet:
        member = SetMember(
            source="db", kind="postgres", backup_id=None if status != "complete" else "b"
        )
        return BackupSet(
            set_id=set_id,
            cluster="c1",
            started_at=T0,
            finished_at=T0,
            members=[member],
            status=status,
        )

    sets = [backup_set("s1"), backup_set("s2", "partial"), backup_set("s3"), backup_set("s4")]
    assert [s.set_id for s in pick_older_sets(sets, 5)] == ["s1", "s3"]
    assert len(pick_older_sets(sets, 1, random.Random(1))) == 1
    assert pick_older_sets(sets[-1:], 3) == []


def test_the_platform_block_refuses_checks_on_an_unknown_database() -> None:
    sources = [
        PlatformSource(name="db", kind="postgres", block="b"),
        PlatformSource(name="rec", kind="recordings", block="r"),
    ]
    ok = VerificationConfig(
        checks=[SqlCheck(name="n", source="db", sql="SELECT 1", expected="1")],
        references=RecordingReferences(source="db"),
    )
    Platform(cluster="c1", storage="s", key="k", sources=sources, verification=ok)
    bad = VerificationConfig(references=RecordingReferences(source="rec"))
    with pytest.raises(ValueError, match="verification names rec, not a database source"):
        Platform(cluster="c1", storage="s", key="k", sources=sources, verification=bad)
