"""Throwaway servers that restore verification restores into (no Prefect).

:func:`start_scratch` starts a brand-new PostgreSQL cluster, MariaDB server or Redis server from
the lab's binaries in a private directory on a free 127.0.0.1 port, with a fresh random password
(carried by the targets it returns, never logged); ``close()`` stops it and deletes every file.
:func:`existing_scratch` uses a server the operator configured instead, for flows that run far
from the binaries. Both give a :class:`ScratchInstance`: an empty restore target per backup, and
read-only queries on what was restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from siprec_backup.errors import ConfigurationError, ScratchQueryError, ScratchStartError
from siprec_backup.scratch import mysql, postgres, redis
from siprec_backup.scratch._common import ScratchInstance, claim, sweep_abandoned
from siprec_backup.scratch.existing import existing_scratch

#: How each kind starts: (work_dir, *, timeout, bin_dir) -> instance.
_STARTERS: dict[str, Callable[..., ScratchInstance]] = {
    "postgres": postgres.start,
    "mysql": mysql.start,
    "redis": redis.start,
}
KINDS = tuple(_STARTERS)


def start_scratch(
    kind: str, work_dir: Path, *, timeout: float = 60.0, bin_dir: Path | None = None
) -> ScratchInstance:
    """Start a new throwaway server of ``kind`` (postgres, mysql, redis) under ``work_dir``;
    ``bin_dir`` overrides the lab's binary lookup. ScratchStartError (one line, nothing left
    behind) if it does not come up within ``timeout`` seconds."""
    starter = _STARTERS.get(kind)
    if starter is None:
        raise ConfigurationError(
            f"unknown scratch server kind {kind!r}; expected {', '.join(KINDS)}"
        )
    return starter(Path(work_dir), timeout=timeout, bin_dir=bin_dir)


@contextmanager
def scratch_server(
    kind: str, work_dir: Path, *, timeout: float = 60.0, bin_dir: Path | None = None
) -> Iterator[ScratchInstance]:
    """:func:`start_scratch` as a context manager: the server is closed in every case."""
    instance = start_scratch(kind, work_dir, timeout=timeout, bin_dir=bin_dir)
    try:
        yield instance
    finally:
        instance.close()


__all__ = [
    "KINDS",
    "ScratchInstance",
    "ScratchQueryError",
    "ScratchStartError",
    "claim",
    "existing_scratch",
    "scratch_server",
    "start_scratch",
    "sweep_abandoned",
]
