"""Retry policy shared by the tasks: retry transient storage failures only."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import State, TaskRun

from siprec_backup.errors import TransientStorageError

#: Delays between attempts (seconds); jitter spreads simultaneous retries.
RETRY_DELAYS: list[float] = [10, 30, 90]


def retry_transient_storage_errors(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry when the failure was a TransientStorageError; anything else fails at once."""
    try:
        state.result()
    except TransientStorageError:
        return True
    except BaseException:
        return False
    return False
