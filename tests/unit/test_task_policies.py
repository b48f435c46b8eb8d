"""Tasks retry transient storage failures only."""

from __future__ import annotations

import pytest
from prefect.states import Completed, Failed

from siprec_backup.errors import (
    PermanentStorageError,
    SourceUnavailableError,
    TamperedError,
    TransientStorageError,
)
from tasks.backup import stream_backup
from tasks.policies import RETRY_DELAYS, retry_transient_storage_errors


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (TransientStorageError("connection reset"), True),
        (PermanentStorageError("access denied"), False),
        (SourceUnavailableError("cannot connect"), False),
        (TamperedError("bad tag"), False),
        (ValueError("bug"), False),
    ],
)
def test_only_transient_storage_errors_are_retried(error: Exception, retried: bool) -> None:
    state = Failed(data=error)
    assert retry_transient_storage_errors(None, None, state) is retried  # type: ignore[arg-type]


def test_completed_state_is_not_retried() -> None:
    assert retry_transient_storage_errors(None, None, Completed(data=1)) is False  # type: ignore[arg-type]


def test_backup_task_uses_the_policy() -> None:
    assert stream_backup.retries == len(RETRY_DELAYS)
    assert stream_backup.retry_condition_fn is retry_transient_storage_errors
