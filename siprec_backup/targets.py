"""Restore targets named by a URL, for the break-glass CLI (no Prefect, no blocks).

- ``postgresql://user@host:5432/dbname?sslmode=require`` (password from ``$PGPASSWORD``)
- ``mysql://user@host:3306/dbname`` (password from ``$MYSQL_PWD``; the database name is where a
  single-database backup is restored, optional otherwise)
- ``redis://[user@]host:6379`` or ``rediss://`` for TLS (password from ``$REDISCLI_AUTH``): the
  keys are copied into that running server
- ``file:///path/to/dump.rdb`` or an absolute path ending in ``.rdb``, for Redis: an RDB file to
  start a redis-server from (the fast path: no server involved in the restore)
- a directory, as a path or ``file:///path``, for recordings

Passwords are refused inside the URL: a command line is visible to every user of the machine
(``ps``), the environment of a process is not.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from siprec_backup.errors import ConfigurationError
from siprec_backup.sources.base import RestoreTarget
from siprec_backup.sources.mysql import MySQLTarget
from siprec_backup.sources.postgres import PostgresTarget
from siprec_backup.sources.redis import RdbFileTarget, RedisTarget

#: Where each kind's password comes from (the variables the native clients read too).
PASSWORD_ENV = {"postgres": "PGPASSWORD", "mysql": "MYSQL_PWD", "redis": "REDISCLI_AUTH"}
_SCHEMES = {
    "postgres": ("postgresql", "postgres"),
    "mysql": ("mysql", "mariadb"),
    "redis": ("redis", "rediss"),
}
_DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306, "redis": 6379}


def recordings_dir(url: str) -> Path:
    """The directory a recordings backup is restored into."""
    parts = urlsplit(url)
    if parts.scheme not in ("", "file"):
        raise ConfigurationError(
            f"a recordings backup restores into a directory, not a {parts.scheme}:// target"
        )
    path = Path(unquote(parts.path) if parts.scheme == "file" else url)
    if not path.is_absolute():
        path = Path.cwd() / path
    return path


def rdb_file(url: str) -> Path | None:
    """The RDB file a Redis backup is restored into, if `url` names one: ``file:///...`` or an
    absolute path ending in ``.rdb``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
        if parts.netloc not in ("", "localhost") or not path.is_absolute():
            raise ConfigurationError(f"an RDB target is file:///absolute/path.rdb, not {url!r}")
        return path
    if url.startswith("/") and url.endswith(".rdb"):
        return Path(url)
    return None


def restore_target(kind: str, url: str) -> RestoreTarget:
    """The restore target of a streamed backup of `kind` named by `url`."""
    if kind not in _SCHEMES:
        raise ConfigurationError(f"no URL target for {kind} backups")
    if kind == "redis" and (rdb := rdb_file(url)) is not None:
        return RdbFileTarget(rdb)
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES[kind]:
        expected = " or ".join(f"{s}://" for s in _SCHEMES[kind])
        raise ConfigurationError(f"a {kind} backup restores into a {expected} URL, not {url!r}")
    if parts.password is not None:
        raise ConfigurationError(
            f"put the password in ${PASSWORD_ENV[kind]}, not in the target URL "
            "(command lines are visible to every user of the machine)"
        )
    if not parts.hostname:
        raise ConfigurationError(f"the target URL names no host: {url!r}")
    try:
        port = parts.port or _DEFAULT_PORTS[kind]
    except ValueError:
        raise ConfigurationError(f"invalid port in the target URL {url!r}") from None
    user = unquote(parts.username) if parts.username else None
    password = os.environ.get(PASSWORD_ENV[kind]) or None
    database = unquote(parts.path.lstrip("/")) or None
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if kind == "postgres":
        if not user or not database:
            raise ConfigurationError("a postgresql:// target needs a user and a database name")
        return PostgresTarget(
            host=parts.hostname,
            port=port,
            user=user,
            dbname=database,
            password=password,
            sslmode=options.get("sslmode", "prefer"),
        )
    if kind == "mysql":
        if not user:
            raise ConfigurationError("a mysql:// target needs a user")
        return MySQLTarget(
            host=parts.hostname, port=port, user=user, password=password, database=database
        )
    if database:
        raise ConfigurationError("a redis:// target takes no database: every database is restored")
    return RedisTarget(
        host=parts.hostname,
        port=port,
        username=user,
        password=password,
        tls=parts.scheme == "rediss",
    )
