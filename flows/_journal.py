"""The journal of the runbook flows: a small Prefect variable per cluster saying how the last
failover, switchover or cutover ended (or that it is still running, which after a crash means
it stopped half-way), read by the next run before it changes anything.

Writing a variable usually takes 30 ms but sometimes 2 s (the server's database is busy), so
during a run the journal is written from a background thread: the steps never wait for it.
:func:`write_journal` with ``wait=True`` (at the start and at the end of a run) first lets the
background writes finish, then writes synchronously.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
from typing import Any

from prefect.variables import Variable

from siprec_backup.failover import FailoverAudit

log = logging.getLogger(__name__)


def slug(cluster: str) -> str:
    """``cluster`` as lowercase letters, digits and dashes (Prefect names and keys)."""
    return re.sub(r"[^a-z0-9-]+", "-", cluster.lower()).strip("-") or "cluster"


def journal_name(cluster: str, mode: str = "failover") -> str:
    """The Prefect variable holding the last run's journal: failover and switchover of a
    cluster share one (they share the lock); a blue-green cutover has its own."""
    family = "cutover" if mode == "blue-green" else "failover"
    return f"{family}_journal_{slug(cluster).replace('-', '_')}"


def read_journal(cluster: str, mode: str = "failover") -> dict[str, Any] | None:
    value = Variable.get(journal_name(cluster, mode), default=None)
    return value if isinstance(value, dict) else None


class _Writer:
    """One background thread writing the latest journal submitted (older ones are skipped)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._pending: tuple[str, dict[str, Any]] | None = None
        self._busy = False
        self._thread: threading.Thread | None = None

    def submit(self, name: str, journal: dict[str, Any]) -> None:
        with self._cv:
            self._pending = (name, journal)
            if self._thread is None or not self._thread.is_alive():
                # The thread needs this run's Prefect settings (a context variable).
                context = contextvars.copy_context()
                self._thread = threading.Thread(target=context.run, args=(self._loop,), daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def flush(self, timeout: float = 30.0) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                if not self._cv.wait_for(lambda: self._pending is not None, timeout=60):
                    self._thread = None
                    return
                assert self._pending is not None
                name, journal = self._pending
                self._pending, self._busy = None, True
            try:
                Variable.set(name, journal, overwrite=True)
            except Exception as exc:  # a lost update is noted, the run goes on
                log.warning("could not update the journal %s: %s", name, exc)
            with self._cv:
                self._busy = False
                self._cv.notify_all()


_WRITER = _Writer()


def write_journal(audit: FailoverAudit, *, wait: bool = True) -> None:
    """Record ``audit``'s journal: at once (``wait``) or in the background."""
    name = journal_name(audit.cluster, audit.mode)
    if not wait:
        _WRITER.submit(name, audit.journal())
        return
    _WRITER.flush()
    Variable.set(name, audit.journal(), overwrite=True)
