"""A scratch Redis server: ``redis-server`` from the lab's lookup, no persistence, its password
(``requirepass``) in a 0600 config file, never on the command line.

A restore writes the backup as an RDB file into the scratch directory (the fast path of
:class:`~siprec_backup.sources.redis.RdbFileTarget`); proving it restarts the server on that
file, so that the counts come from a server that loaded it (which also verifies its checksum).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from siprec_backup.errors import ConfigurationError, LabError, RestoreError, SiprecBackupError
from siprec_backup.lab import _process
from siprec_backup.lab import redis as lab_redis
from siprec_backup.manifest import Manifest
from siprec_backup.scratch._common import (
    LOG_LINES,
    StartedServer,
    find_tool,
    lab_lookup,
    private_dir,
    redact,
    write_secret_file,
)
from siprec_backup.sources.redis import RdbFileTarget, RedisTarget, db_index

log = logging.getLogger("siprec_backup.scratch")

#: Readiness polling already retries; redis-py's default retry backs off for seconds.
_NO_RETRY = Retry(NoBackoff(), 0)
#: The RDB file a restore writes in the scratch directory and the server restarts from.
RDB_NAME = "restore.rdb"
#: How long the restarted server may take to load the restored RDB.
LOAD_TIMEOUT = 3600.0
#: Redis 7 logs what loading dropped: keys expired (and empty keys skipped, since 7.0.x).
_DONE_LOADING = re.compile(
    r"Done loading RDB, keys loaded: (\d+), keys expired: (\d+)(?:, empty keys skipped: (\d+))?"
)


def no_sql(where: str) -> NoReturn:
    """Redis has no SQL: a check query on it is a configuration mistake."""
    raise ConfigurationError(f"SQL checks need a database: {where} is a Redis server")


class RedisScratch(StartedServer):
    """A redis-server of our own, empty until a restore."""

    kind = "redis"
    label = "Redis"

    def __init__(self, directory: Path, server: Path) -> None:
        super().__init__(directory)
        self.server = server

    @property
    def rdb(self) -> Path:
        """The RDB file restores write and the server starts from."""
        return self.directory / RDB_NAME

    def start(self, timeout: float) -> None:
        """Write the config file, start redis-server and wait until it answers PING."""
        write_secret_file(self.directory / "redis.conf", f'requirepass "{self._password}"\n', None)
        self.spawn(self._argv(), self._answers, timeout=timeout)

    def _argv(self, databases: int = 16) -> list[str | Path]:
        return [
            self.server,
            self.directory / "redis.conf",
            *("--port", str(self.port), "--bind", self.host, "--protected-mode", "yes"),
            *("--dir", self.directory, "--dbfilename", RDB_NAME, "--databases", str(databases)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        ]

    def _client(self) -> redis.Redis:
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self._password,
            socket_timeout=2,
            retry=_NO_RETRY,
        )

    def _info(self, section: str) -> dict[str, Any] | None:
        """One INFO section, or None while the server does not answer."""
        try:
            with self._client() as client:
                return cast(dict[str, Any], client.info(section))
        except (redis.RedisError, SiprecBackupError):
            return None

    def _answers(self) -> bool:
        info = self._info("server")
        if info is not None:
            self.version = str(info.get("redis_version", ""))
        return info is not None

    def _loaded(self) -> bool:
        info = self._info("persistence")
        return info is not None and int(info.get("loading", 1)) == 0

    def target(self) -> RedisTarget:
        """The engine's view of this server (carries the password; repr hides it)."""
        return RedisTarget(
            host=self.host,
            port=self.port,
            password=self._password,
            redis_server_bin=str(self.server),
            connect_timeout=2.0,
        )

    def restore_target(self, manifest: Manifest) -> ScratchRdbTarget:
        """An RDB file in the scratch directory (a previous restore's file removed)."""
        self.rdb.unlink(missing_ok=True)
        return ScratchRdbTarget(self)

    def load_rdb(self, databases: int) -> tuple[dict[str, int], int | None]:
        """Restart the server on the restored RDB and wait until it has loaded it: keys per
        non-empty database (INFO keyspace) and the keys loading dropped (expired, or empty),
        None if the log does not say. RestoreError with the log's end if it cannot load it."""
        if self._proc is not None:
            _process.stop_process(self._proc.pid, self._ticks, sig=self.stop_signal)
            self._proc.wait()
        started = time.monotonic()
        try:
            self.spawn(self._argv(databases), self._loaded, timeout=LOAD_TIMEOUT)
        except (LabError, OSError):
            raise RestoreError(self._load_error()) from None
        log.info("%s loaded the RDB in %.2f s", self.describe(), time.monotonic() - started)
        with self.target().ping() as client:
            keyspace = cast(dict[str, Any], client.info("keyspace"))
        keys = {db: int(v["keys"]) for db, v in keyspace.items() if int(v.get("keys", 0))}
        return keys, self._dropped_by_loading()

    def _dropped_by_loading(self) -> int | None:
        found = _DONE_LOADING.findall(_process.tail(self.log, 60))
        if not found:
            return None
        _, expired, empty = found[-1]
        return int(expired) + int(empty or 0)

    def _load_error(self) -> str:
        lines = [ln.strip() for ln in _process.tail(self.log, 40).splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("$ ")]
        wanted = [ln for ln in lines if " # " in ln] or lines
        code = self._proc.poll() if self._proc is not None else None
        what = f"exit {code}" if code is not None else f"not loaded after {LOAD_TIMEOUT:.0f} s"
        tail = " | ".join(wanted[-LOG_LINES:]) or "no log"
        return redact(
            f"{self.describe()} could not load the restored RDB ({what}): {tail}", self._password
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Refused: ConfigurationError."""
        no_sql(self.describe())

    def iter_query(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """Refused: ConfigurationError."""
        no_sql(self.describe())


class ScratchRdbTarget(RdbFileTarget):
    """The scratch server's RDB file: the restore writes it (no scan: the server counts),
    :meth:`restored_counts` restarts the server on it and counts what the server loaded."""

    scan = False

    def __init__(self, scratch: RedisScratch) -> None:
        super().__init__(scratch.rdb)
        self._scratch = scratch

    def describe(self) -> str:
        return f"{self._scratch.describe()} (through an RDB file)"

    def restored_counts(self, tables: dict[str, int]) -> dict[str, int]:
        """Keys per ``dbN`` of `tables` in the server that loaded the file, plus the keys it
        dropped while loading when its own log accounts for exactly the keys missing against
        `tables` (they expired since the backup): a warning gives their number."""
        if self.counted is None:
            raise RestoreError(f"no restore into {self.path} has finished")
        databases = max([16] + [db_index(db) + 1 for db in tables])
        loaded, dropped = self._scratch.load_rdb(databases)
        missing = {db: n - loaded.get(db, 0) for db, n in tables.items() if n > loaded.get(db, 0)}
        if dropped and dropped == sum(missing.values()):
            log.warning("%d keys of the RDB had expired: the server dropped them", dropped)
            loaded = {db: loaded.get(db, 0) + missing.get(db, 0) for db in {*loaded, *missing}}
        return {name: loaded.get(name, 0) for name in tables}


def start(work_dir: Path, *, timeout: float, bin_dir: Path | None) -> RedisScratch:
    """Start a scratch Redis server under a new directory in ``work_dir``."""
    if bin_dir is None:
        server = lab_lookup("redis", lab_redis.find_redis_server)
    else:
        server = find_tool("redis", bin_dir, "redis-server")
    deadline = time.monotonic() + timeout
    instance = RedisScratch(private_dir("redis", work_dir, None), server)
    with instance.starting():
        instance.start(max(1.0, deadline - time.monotonic()))
    return instance
