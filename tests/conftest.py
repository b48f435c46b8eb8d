"""Shared fixtures: one lab (real PostgreSQL 15 primary + replica, Prefect server + worker) per
test session, in a fresh directory under the system temp dir.

The directory is not pytest's ``tmp_path`` because that lives under a 0700 directory the
``postgres`` account cannot traverse. A lab that cannot start fails the session's lab tests with
the reason (a missing server binary included): they are never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siprec_backup.errors import LabError
from siprec_backup.lab import Lab, LabState

_LAB_TIMINGS: dict[str, float] = {}


def new_lab_dir(prefix: str = "siprec-lab-test-") -> Path:
    """A fresh, empty directory for a lab (under $TMPDIR or /tmp)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def lab() -> Iterator[LabState]:
    """The session's lab; ``PREFECT_API_URL`` points at its Prefect server while it runs."""
    the_lab = Lab(new_lab_dir())
    t0 = time.monotonic()
    try:
        state = the_lab.up()
    except LabError as exc:
        with contextlib.suppress(LabError):
            the_lab.down(keep=True)
        where = "in CI" if os.environ.get("CI") == "true" else "locally"
        pytest.fail(f"the lab could not start {where}: {exc}", pytrace=False)
    _LAB_TIMINGS["up"] = time.monotonic() - t0
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = state.prefect_api_url
    try:
        yield state
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        t1 = time.monotonic()
        the_lab.down()
        _LAB_TIMINGS["down"] = time.monotonic() - t1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report how long the session's lab took to start and stop."""
    if _LAB_TIMINGS:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in _LAB_TIMINGS.items())
        terminalreporter.write_line(f"lab: {parts}")
