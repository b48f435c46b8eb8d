"""Where a lever runs its commands and writes its files: on this machine or over SSH.

The nginx lever (and any later one that edits a file and runs a binary on a host) takes a
:class:`CommandRunner`, so the same code works locally and on a remote nginx host.
:class:`LocalRunner` is this machine; the SSH runner lives in :mod:`siprec_backup.remote.ssh`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: How much of a command's stdout/stderr a result keeps (the tail), in characters.
TAIL_CHARS = 8_192


@dataclass(frozen=True)
class RunResult:
    """How a command ended: its exit status and the tails of its output."""

    exit_status: int
    stdout_tail: str
    stderr_tail: str


class CommandRunner(Protocol):
    """Runs commands and reads/writes small text files on one host."""

    @property
    def host(self) -> str:
        """The host's name for messages and audit records (``localhost`` for this machine)."""
        ...

    def run(self, argv: Sequence[str], *, timeout: float) -> RunResult:
        """Run ``argv`` (no shell) and wait at most ``timeout`` seconds."""
        ...

    def read_text(self, path: str) -> str:
        """The content of a small text file (a config include), or "" if it does not exist."""
        ...

    def write_text(self, path: str, text: str) -> None:
        """Replace a small text file atomically (temporary file, fsync, rename)."""
        ...


class LocalRunner:
    """:class:`CommandRunner` for this machine."""

    host = "localhost"

    def run(self, argv: Sequence[str], *, timeout: float) -> RunResult:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
        return RunResult(proc.returncode, proc.stdout[-TAIL_CHARS:], proc.stderr[-TAIL_CHARS:])

    def read_text(self, path: str) -> str:
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return ""

    def write_text(self, path: str, text: str) -> None:
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            if target.exists():
                os.chmod(tmp, target.stat().st_mode & 0o7777)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
