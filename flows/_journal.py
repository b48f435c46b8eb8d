"""The journal of the runbook flows: a small Prefect variable per cluster saying how the last
failover, switchover or cutover ended (or that it is still running, which after a crash means
it stopped half-way), read by the next run before it changes anything.

Writing a variable usually takes 30 ms but sometimes 2 s (the server's database is busy), so
during a run the journal is written from a background thread: the steps never wait for it.
:func:`write_journal` with ``wait=True`` (at the start and at the end of a run) first lets the
background writes finish (and their thread stop), then writes synchronously.
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
    """A background thread writing the latest journal submitted (older ones are skipped). The
    thread lives for one run: it carries that run's Prefect context, and :meth:`close` (at the
    run's end) lets it finish and stop."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._pending: tuple[str, dict[str, Any]] | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def submit(self, name: str, journal: dict[str, Any]) -> None:
        with self._cv:
            self._pending = (name, journal)
            if self._thread is None:
                # The thread needs this run's Prefect settings and client (context variables).
                context = contextvars.copy_context()
                self._closing = False
                self._thread = threading.Thread(target=context.run, args=(self._loop,), daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Wait until the last journal submitted is written, then stop the thread."""
        with self._cv:
            thread = self._thread
            self._closing = True
            self._cv.notify_all()
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending is not None or self._closing)
                if self._pending is None:  # closing, nothing left
                    self._thread = None
                    return
                name, journal = self._pending
                self._pending = None
            try:
                Variable.set(name, journal, overwrite=True)
            except Exception as exc:  # a lost update is noted, the run goes on
                log.warning("could not update the journal %s: %s", name, exc)


_WRITER = _Writer()


def write_journal(audit: FailoverAudit, *, wait: bool = True) -> None:
    """Record ``audit``'s journal: at once (``wait``) or in the background."""
    name = journal_name(audit.cluster, audit.mode)
    if not wait:
        _WRITER.submit(name, audit.journal())
        return
    _WRITER.close()
    Variable.set(name, audit.journal(), overwrite=True)
