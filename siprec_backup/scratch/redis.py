"""A scratch Redis server: ``redis-server`` from the lab's lookup, no persistence, its password
(``requirepass``) in a 0600 config file, never on the command line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from siprec_backup.errors import ConfigurationError, SiprecBackupError
from siprec_backup.lab import redis as lab_redis
from siprec_backup.manifest import Manifest
from siprec_backup.scratch._common import (
    StartedServer,
    find_tool,
    lab_lookup,
    private_dir,
    write_secret_file,
)
from siprec_backup.sources.redis import RedisTarget

#: Readiness polling already retries; redis-py's default retry backs off for seconds.
_NO_RETRY = Retry(NoBackoff(), 0)


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

    def start(self, timeout: float) -> None:
        """Write the config file, start redis-server and wait until it answers PING."""
        conf = self.directory / "redis.conf"
        write_secret_file(conf, f'requirepass "{self._password}"\n', None)
        self.spawn(
            [
                self.server,
                conf,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--dir",
                self.directory,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            self._answers,
            timeout=timeout,
        )

    def _answers(self) -> bool:
        client = redis.Redis(
            host=self.host,
            port=self.port,
            password=self._password,
            socket_timeout=2,
            retry=_NO_RETRY,
        )
        try:
            with client:
                info = cast(dict[str, Any], client.info("server"))
        except (redis.RedisError, SiprecBackupError):
            return False
        self.version = str(info.get("redis_version", ""))
        return True

    def target(self) -> RedisTarget:
        """The engine's view of this server (carries the password; repr hides it)."""
        return RedisTarget(
            host=self.host,
            port=self.port,
            password=self._password,
            redis_server_bin=str(self.server),
            connect_timeout=2.0,
        )

    def restore_target(self, manifest: Manifest) -> RedisTarget:
        """The server, emptied (FLUSHALL) in case a previous restore filled it."""
        target = self.target()
        with target.ping() as client:
            client.flushall()
        return target

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Refused: ConfigurationError."""
        no_sql(self.describe())

    def iter_query(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """Refused: ConfigurationError."""
        no_sql(self.describe())


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
