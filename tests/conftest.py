"""Shared fixtures: one lab (real PostgreSQL 15 primary + replica, Prefect server + worker) per
test session, in a fresh directory under the system temp dir (``lab``), and the same lab with
seed data for the engine tests (``seeded_lab``).

The directory is not pytest's ``tmp_path`` because that lives under a 0700 directory the
``postgres`` account cannot traverse. A lab that cannot start fails the session's lab tests with
the reason (a missing server binary included): they are never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from siprec_backup.errors import LabError
from siprec_backup.lab import Lab, LabState, fill, row_counts
from siprec_backup.lab.lab import SERVICES
from siprec_backup.sources.postgres import PostgresTarget

#: Size of the seed data the engine tests back up and restore (MiB).
SEED_MB = 8

_LAB_TIMINGS: dict[str, float] = {}


def new_lab_dir(prefix: str = "siprec-lab-test-") -> Path:
    """A fresh, empty directory for a lab (under $TMPDIR or /tmp)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def lab_services() -> Lab:
    """The lab of this session: every server, or while developing only the servers (or groups)
    named in ``$SIPREC_LAB_SERVICES`` (comma-separated), e.g. ``postgres,redis``. CI sets none."""
    wanted = {n.strip() for n in os.environ.get("SIPREC_LAB_SERVICES", "").split(",") if n.strip()}
    if not wanted:
        return Lab(new_lab_dir())
    return Lab(new_lab_dir(), services=[s for s in SERVICES if {s.name, s.group} & wanted])


@pytest.fixture(scope="session")
def lab() -> Iterator[LabState]:
    """The session's lab; Prefect clients in this process and its children use its server."""
    the_lab = lab_services()
    t0 = time.monotonic()
    try:
        state = the_lab.up()
    except LabError as exc:
        with contextlib.suppress(LabError):
            the_lab.down(keep=True)
        where = "in CI" if os.environ.get("CI") == "true" else "locally"
        pytest.fail(f"the lab could not start {where}: {exc}", pytrace=False)
    _LAB_TIMINGS["up"] = time.monotonic() - t0
    api_url = state.prefect_api_url if "prefect-server" in state.services else ""
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with _prefect_settings(api_url):
            try:
                yield state
            finally:
                drain_prefect()
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        t1 = time.monotonic()
        the_lab.down()
        _LAB_TIMINGS["down"] = time.monotonic() - t1


@contextlib.contextmanager
def _prefect_settings(api_url: str) -> Iterator[None]:
    """Point an already imported Prefect at the lab: Prefect reads the environment once, at
    import (test modules import it during collection), so setting the variable is not enough."""
    if "prefect" not in sys.modules:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


def drain_prefect() -> None:
    """Send Prefect's queued logs and events now: tests search the server for them, and at the
    end of the session the lab server must still run (otherwise, with PREFECT_API_URL gone,
    Prefect starts a temporary server at interpreter exit to send them)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    def drain() -> None:  # in a thread of its own: drain_all blocks only where no loop runs
        for service in (APILogWorker, EventsWorker):
            with contextlib.suppress(Exception):
                service.drain_all(timeout=30)

    thread = threading.Thread(target=drain, name="drain-prefect")
    thread.start()
    thread.join()


@dataclass(frozen=True)
class SeededLab:
    """The session's lab with seed data, as the engine tests (no Prefect) use it."""

    state: LabState

    @property
    def tables(self) -> dict[str, int]:
        """Current exact row count per ``siprec.<table>``, keyed like a manifest's tables."""
        counts = row_counts(self.state.postgres().conninfo())
        return {f"siprec.{table}": n for table, n in counts.items()}

    def app_target(self, dbname: str | None = None) -> PostgresTarget:
        """The primary's application database, as the password-authenticated app role."""
        return self.state.postgres().target(dbname)

    def superuser_conninfo(self, dbname: str | None = None) -> str:
        """The primary as the trusted superuser (lab administration)."""
        return self.state.postgres().conninfo(superuser=True, dbname=dbname)

    def scratch(self, name: str) -> PostgresTarget:
        """A fresh, empty database ``name`` owned by the app role (dropped first if present)."""
        return self.state.postgres().fresh_database(name)


@pytest.fixture(scope="session")
def seeded_lab(lab: LabState) -> SeededLab:
    """The session's lab with at least ``SEED_MB`` MiB of SIPREC data in the primary."""
    fill(lab.postgres().conninfo(), SEED_MB)
    return SeededLab(lab)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report how long the session's lab took to start and stop."""
    if _LAB_TIMINGS:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in _LAB_TIMINGS.items())
        terminalreporter.write_line(f"lab: {parts}")


CLI = str(Path(sys.executable).with_name("siprec-backup"))


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``siprec-backup`` as an operator would, with no Prefect or siprec-backup settings
    inherited from the test process (only `env`): what it needs must come from its arguments."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIPREC_"))}
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=timeout,
        check=False,
    )


# -- a local HTTP receiver for alert channels ----------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A threaded HTTP server that records POSTs and answers with the statuses queued."""

    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(Received(self.path, dict(self.headers.items()), body))
            status = state.statuses.pop(0) if state.statuses else 202
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)
