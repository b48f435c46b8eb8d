"""Redis: an RDB snapshot taken over the replication protocol, restored into a running server or
into an RDB file.

Backup: we connect like a replica (``AUTH``, ``REPLCONF capa eof``, ``REPLCONF rdb-only 1``,
``PSYNC ? -1``) and the master sends one RDB snapshot, either disk-based (``$<len>``) or diskless
(``$EOF:<40-byte mark>`` ... mark). The dump stream is exactly the RDB bytes; an
:class:`~siprec_backup.sources.rdb.RdbCounter` counts the keys of every logical database as they
pass. No file access to the server is needed, and a replica can be backed up as well as a primary.

Restore, two modes. Both write the RDB once to a private file while an ``RdbCounter`` counts its
keys (:class:`RdbWriter`), so the file is never read twice:

- into a running server (:class:`RedisTarget`): a scratch ``redis-server`` listening on a unix
  socket only loads the file (which also verifies its checksum), and every key is copied to the
  target with ``DUMP``/``PTTL`` and ``RESTORE`` in bounded pipelined batches. Correct for a live
  server, but much slower than loading a file;
- into an RDB file (:class:`RdbFileTarget`) that a ``redis-server`` then starts from, as an
  operator rebuilds a server from ``redis-cli --rdb`` dumps: the fast path, no server involved.

Passwords go over the connection only, never on a command line, and never into messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import redis

from siprec_backup.errors import (
    ConfigurationError,
    RestoreError,
    SourceError,
    SourceUnavailableError,
    TargetNotEmptyError,
)
from siprec_backup.sources.base import DumpFacts
from siprec_backup.sources.rdb import RdbCounter, RdbFormatError, RdbSummary

log = logging.getLogger(__name__)

_EOF_MARK_LEN = 40
_MAX_LINE = 4096
#: Keys copied per pipelined round trip by the restore.
RESTORE_BATCH = 500
#: Bytes of DUMP payloads buffered per batch at most (big values go in smaller batches).
RESTORE_BATCH_BYTES = 32 << 20
_LOG_TAIL = 4000
_RCVBUF = 4 << 20


@dataclass(frozen=True)
class RedisTarget:
    """How to reach one Redis server. `password` is never shown by repr()."""

    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    redis_server_bin: str | None = None
    connect_timeout: float = 10.0
    #: How long a read may wait during the transfer (the master sends keep-alives every second).
    read_timeout: float = 120.0
    #: Keys the last restore found already expired, per database (see restored_counts).
    _expired: dict[str, int] = field(default_factory=dict, repr=False, compare=False, hash=False)

    kind = "redis"

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigurationError("Redis host is empty")
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"invalid Redis port {self.port}")

    def describe(self) -> str:
        user = f"{self.username}@" if self.username else ""
        scheme = "rediss" if self.tls else "redis"
        return f"Redis {scheme}://{user}{self.host}:{self.port}"

    # --- connections --------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (system CAs, hostname checked) when `tls` is set."""
        return ssl.create_default_context() if self.tls else None

    def client(self, db: int = 0) -> redis.Redis:
        """A redis-py client of database `db` (commands, not the replication link)."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            db=db,
            username=self.username,
            password=self.password,
            ssl=self.tls,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.read_timeout,
        )

    def ping(self, db: int = 0) -> redis.Redis:
        """A connected client; SourceUnavailableError / SourceError (auth) if that fails."""
        client = self.client(db)
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            client.close()
            raise SourceError(
                f"authentication to {self.describe()} failed: {_first_line(exc)}"
            ) from None
        except redis.ResponseError as exc:
            client.close()
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise SourceError(
                    f"authentication to {self.describe()} failed: {_first_line(exc)}"
                ) from None
            raise SourceError(f"{self.describe()}: {_first_line(exc)}") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            client.close()
            raise SourceUnavailableError(
                f"cannot connect to {self.describe()}: {_first_line(exc)}"
            ) from None
        return client

    # --- restore target -----------------------------------------------------------------------

    def key_counts(self) -> dict[str, int]:
        """Keys per non-empty database (INFO keyspace)."""
        client = self.ping()
        try:
            keyspace = cast(dict[str, Any], client.info("keyspace"))
        finally:
            client.close()
        return {db: int(v["keys"]) for db, v in keyspace.items() if int(v.get("keys", 0))}

    def prepare(self, *, overwrite: bool) -> None:
        """Refuse a target whose databases hold keys, unless `overwrite`."""
        counts = self.key_counts()
        if counts and not overwrite:
            held = ", ".join(f"{db}={n}" for db, n in sorted(counts.items()))
            raise TargetNotEmptyError(
                f"target {self.describe()} is not empty ({held} keys); "
                "restore into an empty Redis or allow overwrite"
            )

    def open_restore(self, *, overwrite: bool) -> RedisRestore:
        return RedisRestore(self, overwrite=overwrite)

    def restored_counts(self, tables: dict[str, int]) -> dict[str, int]:
        """DBSIZE of every ``dbN`` in `tables`, plus the keys the last restore found already
        expired (their TTL passed between backup and restore: they cannot be restored)."""
        counts: dict[str, int] = {}
        for name in tables:
            client = self.ping(db_index(name))
            try:
                counts[name] = int(cast(int, client.dbsize())) + self._expired.get(name, 0)
            finally:
                client.close()
        return counts

    def server_bin(self) -> str:
        """The redis-server used for the restore's scratch server."""
        if self.redis_server_bin:
            if not os.access(self.redis_server_bin, os.X_OK):
                raise ConfigurationError(f"redis-server not executable: {self.redis_server_bin}")
            return self.redis_server_bin
        found = shutil.which("redis-server")
        if not found:
            raise ConfigurationError(
                "redis-server not found: install redis-server or set redis_server_bin"
            )
        return found


def db_index(name: str) -> int:
    """The number of a ``dbN`` database name; RestoreError for any other name."""
    if not name.startswith("db") or not name[2:].isdigit():
        raise RestoreError(f"{name!r} is not a Redis database name (dbN)")
    return int(name[2:])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- the replication link ---------------------------------------------------------------------


class _ReplicationLink:
    """A raw socket to the master speaking just enough RESP for the handshake."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self._buf = b""
        try:
            raw = socket.create_connection(
                (target.host, target.port), timeout=target.connect_timeout
            )
            # Larger receive buffer: fewer, bigger chunks for the pipeline and the scanner.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        except OSError as exc:
            raise SourceUnavailableError(
                f"cannot connect to {target.describe()}: {exc.strerror or exc}"
            ) from None
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            context = target.ssl_context()
            self.sock: socket.socket = (
                context.wrap_socket(raw, server_hostname=target.host) if context else raw
            )
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise SourceUnavailableError(
                f"TLS handshake with {target.describe()} failed: {exc}"
            ) from None
        self.sock.settimeout(target.read_timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, *args: str) -> None:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        try:
            self.sock.sendall(b"".join(parts))
        except OSError as exc:
            raise SourceError(f"{self.target.describe()}: connection lost: {exc}") from None

    def _recv(self, size: int) -> bytes:
        try:
            data = self.sock.recv(size)
        except TimeoutError:
            raise SourceError(
                f"{self.target.describe()}: no data for {self.target.read_timeout:.0f} s"
            ) from None
        except OSError as exc:
            raise SourceError(f"{self.target.describe()}: connection lost: {exc}") from None
        return data

    def line(self, *, skip_keepalives: bool = False) -> bytes:
        """One CRLF-terminated line (without the CRLF); bare newlines are master keep-alives."""
        while True:
            while skip_keepalives and self._buf[:1] == b"\n":
                self._buf = self._buf[1:]
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line, self._buf = self._buf[:end], self._buf[end + 2 :]
                return line
            if len(self._buf) > _MAX_LINE:
                raise SourceError(f"{self.target.describe()}: protocol error (line too long)")
            data = self._recv(_MAX_LINE)
            if not data:
                raise SourceError(
                    f"{self.target.describe()} closed the connection during the handshake"
                )
            self._buf += data

    def command(self, *args: str) -> bytes:
        """Send a command and return its simple reply (``+...``); SourceError on ``-ERR``."""
        self.send(*args)
        reply = self.line()
        if reply.startswith(b"-"):
            raise _ReplyError(reply[1:].decode(errors="replace"))
        if reply.startswith(b"$"):  # a bulk string (INFO)
            size = int(reply[1:])
            return self.read_exact(size + 2)[:-2] if size >= 0 else b""
        return reply

    def read_exact(self, size: int) -> bytes:
        parts = [self._buf[:size]]
        got = len(parts[0])
        self._buf = self._buf[size:]
        while got < size:
            data = self._recv(min(size - got, 1 << 20))
            if not data:
                raise SourceError(f"{self.target.describe()} closed the connection")
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def take_buffered(self, limit: int) -> bytes:
        """Bytes already received past the last line (the start of the payload)."""
        data, self._buf = self._buf[:limit], self._buf[limit:]
        return data

    def recv(self, size: int) -> bytes:
        return self._recv(size)


class _ReplyError(Exception):
    """An error reply (``-ERR ...``) from the server."""


class RdbStream:
    """The RDB payload of a full resync as a read() stream, counted by an RdbCounter."""

    def __init__(self, link: _ReplicationLink, header: bytes, counter: RdbCounter) -> None:
        self._link = link
        self._counter = counter
        self.bytes = 0
        self.done = False
        if header.startswith(b"EOF:"):
            self.mode = "diskless"
            self._mark = header[4:]
            if len(self._mark) != _EOF_MARK_LEN:
                raise SourceError(f"{link.target.describe()}: bad EOF mark in the sync header")
            self._remaining = -1
        else:
            self.mode = "disk"
            self._mark = b""
            self._remaining = int(header)
        self._tail = b""  # diskless: the last bytes, which may be the start of the mark

    def _receive(self, size: int) -> bytes:
        data = self._link.take_buffered(size)
        if data:
            return data
        data = self._link.recv(size)
        if not data:
            what = (
                f"after {self.bytes} of {self._remaining + self.bytes} bytes"
                if self.mode == "disk"
                else f"after {self.bytes} bytes, before the end mark"
            )
            raise SourceError(
                f"{self._link.target.describe()} closed the replication link mid-transfer "
                f"({what}); the master may have hit its client-output-buffer-limit for "
                "replicas, restarted, or the connection was killed"
            )
        return data

    def read(self, size: int = -1) -> bytes:
        if self.done:
            return b""
        size = 1 << 20 if size is None or size < 0 else max(size, 1)
        if self.mode == "disk":
            if self._remaining == 0:
                self.done = True
                return b""
            data = self._receive(min(size, self._remaining))
            self._remaining -= len(data)
        else:
            # The last 40 bytes may be (the start of) the end mark: hold them back until more
            # bytes arrive; an empty return would mean end of stream, so keep reading.
            data = self._tail + self._receive(size)
            while not data.endswith(self._mark) and len(data) <= _EOF_MARK_LEN:
                data += self._receive(size)
            if data.endswith(self._mark):
                data = data[:-_EOF_MARK_LEN]
                self.done = True
                self._tail = b""
            else:
                data, self._tail = data[:-_EOF_MARK_LEN], data[-_EOF_MARK_LEN:]
        self.bytes += len(data)
        self._counter.feed(data)
        return data

    def readable(self) -> bool:
        return True


class RedisDump:
    """One full-resync transfer in progress; `finish` returns the facts of the snapshot."""

    def __init__(self, stream: RdbStream, counter: RdbCounter, info: dict[str, Any]) -> None:
        self.stream = cast(BinaryIO, stream)
        self._rdb = stream
        self._counter = counter
        self._info = info

    def finish(self) -> DumpFacts:
        """Check the transfer ended cleanly and the RDB scanned to its EOF opcode."""
        rdb = self._rdb
        if not rdb.done:
            raise SourceError(f"RDB transfer stopped early after {rdb.bytes} bytes")
        try:
            summary = self._counter.result()
        except RdbFormatError as exc:
            raise SourceError(f"the RDB snapshot is not valid: {exc}") from None
        if summary.bytes_scanned != rdb.bytes:
            raise SourceError(
                f"the RDB snapshot ends at byte {summary.bytes_scanned} but "
                f"{rdb.bytes} bytes were sent"
            )
        if summary.module_keys:
            log.warning(
                "the RDB holds %d keys of module types: they are backed up, but restoring them "
                "needs a redis-server with the same modules",
                summary.module_keys,
            )
        info = dict(self._info)
        info.update(
            rdb_bytes=rdb.bytes,
            rdb_version=summary.rdb_version,
            transfer_mode=rdb.mode,
            rdb_aux=summary.aux,
            module_keys=summary.module_keys,
            functions=summary.functions,
        )
        return DumpFacts(source_info=info, tables=dict(sorted(summary.keys.items())))


@dataclass(frozen=True)
class RedisSource:
    """A Redis server (primary or replica) to back up as one RDB snapshot."""

    target: RedisTarget
    kind: str = "redis"

    def describe(self) -> str:
        return self.target.describe()

    def estimate_bytes(self) -> int | None:
        """The server's used memory: an RDB is usually smaller, a rough progress bound."""
        client = self.target.ping()
        try:
            memory = cast(dict[str, Any], client.info("memory"))
        finally:
            client.close()
        return int(memory.get("used_memory_dataset", memory.get("used_memory", 0))) or None

    @contextmanager
    def open_dump(self) -> Iterator[RedisDump]:
        target = self.target
        link = _ReplicationLink(target)
        counter: RdbCounter | None = None
        try:
            self._authenticate(link)
            info = self._server_info(link)
            try:
                link.command("REPLCONF", "capa", "eof", "capa", "psync2")
            except _ReplyError as exc:
                raise SourceError(f"{target.describe()} refused REPLCONF: {exc}") from None
            with contextlib.suppress(_ReplyError):  # Redis < 7.0: no rdb-only, still fine
                link.command("REPLCONF", "rdb-only", "1")
            link.send("PSYNC", "?", "-1")
            reply = link.line(skip_keepalives=True)
            if not reply.startswith(b"+FULLRESYNC"):
                text = reply.decode(errors="replace").lstrip("-+")
                raise SourceError(f"{target.describe()} refused the snapshot (PSYNC): {text}")
            parts = reply.decode().split()
            if len(parts) != 3:
                raise SourceError(f"{target.describe()}: unexpected PSYNC reply {reply[:80]!r}")
            info["replid"], info["replication_offset"] = parts[1], int(parts[2])
            header = link.line(skip_keepalives=True)
            if header.startswith(b"-"):
                raise SourceError(
                    f"{target.describe()} failed to produce the snapshot: "
                    f"{header[1:].decode(errors='replace')}"
                )
            if not header.startswith(b"$"):
                raise SourceError(f"{target.describe()}: unexpected sync header {header[:80]!r}")
            counter = RdbCounter()
            stream = RdbStream(link, header[1:], counter)
            log.info("RDB transfer from %s started (%s)", target.describe(), stream.mode)
            yield RedisDump(stream, counter, info)
        finally:
            link.close()  # right after the payload: the master frees the replica slot
            if counter is not None:
                counter.close()

    def _authenticate(self, link: _ReplicationLink) -> None:
        target = self.target
        if target.password is None:
            return
        args = ["AUTH", target.password]
        if target.username:
            args.insert(1, target.username)
        try:
            link.command(*args)
        except _ReplyError as exc:
            reason = str(exc).split(" ", 1)[0]  # WRONGPASS / ERR: never echo arguments
            raise SourceError(
                f"authentication to {target.describe()} failed ({reason}): check the user "
                "and password"
            ) from None

    def _server_info(self, link: _ReplicationLink) -> dict[str, Any]:
        target = self.target
        try:
            text = link.command("INFO", "server").decode(errors="replace")
            replication = link.command("INFO", "replication").decode(errors="replace")
        except _ReplyError as exc:
            message = str(exc)
            if message.startswith("NOAUTH"):
                raise SourceError(
                    f"authentication to {target.describe()} failed: the server requires a "
                    "password and none is configured"
                ) from None
            raise SourceError(f"{target.describe()}: INFO failed: {message}") from None
        fields = dict(
            line.split(":", 1) for line in (text + replication).splitlines() if ":" in line
        )
        return {
            "host": target.host,
            "port": target.port,
            "redis_version": fields.get("redis_version", "unknown"),
            "role": fields.get("role", "unknown"),
        }


# --- restore ----------------------------------------------------------------------------------


class RdbWriter:
    """The ``stdin`` of the restores: writes the RDB to a new private file (0600) and, when
    `scan` is set, feeds the same bytes to an :class:`RdbCounter`, which counts the keys per
    database in its own thread with bounded memory, so that the file is never read back. (The
    scanner is pure Python, slower than the write: a restore whose server loads the file and
    counts the keys itself goes without it.)"""

    def __init__(self, path: Path, where: str, *, scan: bool = True) -> None:
        self.path = path
        self._where = where
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise TargetNotEmptyError(
                f"{path} exists: another restore is writing it, or one was interrupted (remove it)"
            ) from None
        except OSError as exc:
            raise RestoreError(f"cannot create {path}: {exc.strerror or exc}") from None
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._counter = RdbCounter() if scan else None
        self.bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write all of `data` (the counter keeps a copy: callers reuse their buffers)."""
        chunk = bytes(data) if self._counter is not None else data
        view = memoryview(chunk)
        try:
            while view:
                view = view[self._file.write(view) :]
        except OSError as exc:
            raise RestoreError(f"writing {self.path} failed: {exc.strerror or exc}") from None
        if self._counter is not None:
            self._counter.feed(cast(bytes, chunk))
        self.bytes += len(chunk)
        return len(chunk)

    def flush(self) -> None:
        """Nothing buffered here (the file is unbuffered)."""

    def finish(self, *, durable: bool) -> RdbSummary | None:
        """Close the file (fsync'ed first if `durable`) and return the scan of what was written
        (None without a scan); RestoreError if the scan finds it is not one complete RDB."""
        try:
            if durable:
                os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            raise RestoreError(f"writing {self.path} failed: {exc.strerror or exc}") from None
        if self._counter is None:
            return None
        try:
            summary = self._counter.result()
        except RdbFormatError as exc:
            raise RestoreError(f"the backup is not a valid RDB: {exc}") from None
        if summary.bytes_scanned != self.bytes:
            raise RestoreError(
                f"the backup is not a valid RDB: it ends at byte {summary.bytes_scanned} of "
                f"{self.bytes}"
            )
        return summary

    def died(self) -> RestoreError:
        """Writing a local file does not break like a pipe; this reports a failed write."""
        return RestoreError(f"writing the RDB for {self._where} failed")

    def close(self) -> None:
        """Close the file and end the counter's input (idempotent; the file stays)."""
        with contextlib.suppress(OSError):
            self._file.close()
        if self._counter is not None:
            self._counter.close()


class RdbFileTarget:
    """An RDB file that a redis-server will start from (``--dir``/``--dbfilename``): the fast
    restore, no server involved. The file is written as ``<path>.tmp`` (0600, owned by the
    restoring user: give it to the server's account before starting it) and renamed into place
    when complete, so `path` never holds a partial RDB."""

    kind = "redis"
    #: Count the keys as the RDB is written (the file's own proof; a subclass whose server
    #: loads the file counts them there instead, faster).
    scan = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        #: Keys per database of the last finished restore, as the RDB counted them.
        self.counted: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"RdbFileTarget({str(self.path)!r})"

    def describe(self) -> str:
        return f"Redis RDB file {self.path}"

    def prepare(self, *, overwrite: bool) -> None:
        """Refuse an existing file unless `overwrite`; the directory must exist."""
        if not self.path.parent.is_dir():
            raise ConfigurationError(f"directory {self.path.parent} does not exist")
        if self.path.is_dir():
            raise ConfigurationError(f"{self.path} is a directory, not an RDB file")
        if self.path.exists() and not overwrite:
            raise TargetNotEmptyError(
                f"target {self.path} already exists; choose a new file or allow overwrite"
            )

    def open_restore(self, *, overwrite: bool) -> RdbFileRestore:
        return RdbFileRestore(self, overwrite=overwrite)

    def restored_counts(self, tables: dict[str, int]) -> dict[str, int]:
        """Keys per ``dbN`` of `tables` in the restored RDB, as its own records count them.

        Like the backup's count, this includes keys whose TTL has passed: a server drops those
        when it loads the file (a file cannot prove more than what it holds)."""
        if self.counted is None:
            raise RestoreError(f"no restore into {self.path} has finished")
        counts: dict[str, int] = {}
        for name in tables:
            db_index(name)  # a one-line error for a name that is not dbN
            counts[name] = self.counted.get(name, 0)
        return counts


class RdbFileRestore:
    """Writes ``<path>.tmp`` and renames it to the target's path once it is a complete RDB."""

    def __init__(self, target: RdbFileTarget, *, overwrite: bool) -> None:
        self._target = target
        self._overwrite = overwrite
        self._tmp = target.path.with_name(target.path.name + ".tmp")
        self._writer = RdbWriter(self._tmp, target.describe(), scan=target.scan)
        self.stdin = cast(BinaryIO, self._writer)
        self._done = False

    def finish(self) -> None:
        """Close and fsync the file, check it is one whole RDB, rename it into place."""
        summary = self._writer.finish(durable=True)
        path = self._target.path
        if path.exists() and not self._overwrite:
            raise TargetNotEmptyError(f"target {path} appeared during the restore; not replaced")
        try:
            os.replace(self._tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise RestoreError(f"cannot move the RDB into {path}: {exc.strerror or exc}") from None
        self._done = True
        self._target.counted = dict(summary.keys) if summary is not None else {}

    def died(self) -> RestoreError:
        return self._writer.died()

    def close(self) -> None:
        """Remove the partial file unless the restore finished."""
        self._writer.close()
        if not self._done:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RedisRestore:
    """Collects the RDB in a private file; `finish` loads it into a scratch redis-server and
    copies every key to the target (see the module docstring)."""

    def __init__(self, target: RedisTarget, *, overwrite: bool) -> None:
        self._target = target
        self._overwrite = overwrite
        self._server = target.server_bin()
        self._dir = Path(tempfile.mkdtemp(prefix="siprec-redis-restore-"))  # 0700
        self._rdb = self._dir / "restore.rdb"
        self._writer = RdbWriter(self._rdb, target.describe())
        self.stdin = cast(BinaryIO, self._writer)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def _log(self) -> Path:
        return self._dir / "scratch.log"

    def finish(self) -> None:
        """Load the RDB in a scratch server, then copy its keys; RestoreError on failure."""
        summary = self._writer.finish(durable=False)
        assert summary is not None  # this writer scans
        expected = summary.keys
        databases = max([16] + [int(db[2:]) + 1 for db in expected])
        self._start_scratch(databases)
        self._copy_functions()
        copied = self._copy_keys(expected)
        self._target._expired.clear()
        for db, n in expected.items():
            gone = n - copied.get(db, 0)
            if gone:
                log.warning("%s: %d keys had expired before the restore (not restored)", db, gone)
                self._target._expired[db] = gone

    def died(self) -> RestoreError:
        return self._writer.died()

    def close(self) -> None:
        """Stop the scratch server and delete the RDB file (also after a failure)."""
        self._writer.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    # --- scratch server ---

    @property
    def _socket(self) -> Path:
        return self._dir / "scratch.sock"

    def _scratch(self, db: int = 0) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self._socket), db=db, socket_timeout=60)

    def _start_scratch(self, databases: int) -> None:
        sock = self._socket
        args = [
            self._server,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self._dir),
            "--dbfilename",
            self._rdb.name,
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self._log),
            "--daemonize",
            "no",
            "--databases",
            str(databases),
        ]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 3600
        while True:
            if self._proc.poll() is not None:
                raise RestoreError(
                    f"the scratch redis-server could not load the backup (exit "
                    f"{self._proc.returncode}): {self._log_tail()}"
                )
            try:
                with self._scratch() as client:
                    if int(cast(dict[str, Any], client.info("persistence"))["loading"]) == 0:
                        return
            except (redis.ConnectionError, redis.BusyLoadingError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RestoreError("the scratch redis-server did not load the backup in 1 h")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            with self._log.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _LOG_TAIL))
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        wanted = [line for line in lines if "#" in line or "Internal error" in line]
        return " | ".join((wanted or lines)[-3:]) or "no log"

    # --- copying ---

    def _target_client(self, db: int) -> redis.Redis:
        try:
            return self._target.ping(db)
        except SourceError as exc:
            raise RestoreError(str(exc)) from None

    def _copy_functions(self) -> None:
        """Function libraries (Redis 7) travel in the RDB too: FUNCTION DUMP / RESTORE them."""
        with self._scratch() as scratch:
            try:
                if not scratch.function_list():
                    return
                payload = cast(bytes, scratch.function_dump())
            except redis.ResponseError:  # Redis < 7: no functions
                return
        target = self._target_client(0)
        try:
            policy = "REPLACE" if self._overwrite else "APPEND"
            target.function_restore(cast(str, payload), policy)  # bytes work; stubs say str
        except redis.ResponseError as exc:
            raise RestoreError(
                f"restoring functions into {self._target.describe()} failed: {exc}"
            ) from None
        finally:
            target.close()

    def _copy_keys(self, expected: dict[str, int]) -> dict[str, int]:
        """Copy every key of every database named in `expected`; keys copied per database.

        With `overwrite`, each of those target databases is emptied first, so that the restored
        database holds exactly the backup (and its key count can be proved)."""
        copied: dict[str, int] = {}
        for name in expected:
            db = int(name[2:])
            target = self._target_client(db)
            try:
                with self._scratch(db) as scratch:
                    if self._overwrite:
                        target.flushdb()
                    copied[name] = self._copy_db(scratch, target)
            finally:
                target.close()
        return copied

    def _copy_db(self, scratch: redis.Redis, target: redis.Redis) -> int:
        count = 0
        cursor = 0
        while True:
            cursor, keys = cast(tuple[int, list[bytes]], scratch.scan(cursor, count=RESTORE_BATCH))
            for start in range(0, len(keys), RESTORE_BATCH):
                count += self._copy_batch(scratch, target, keys[start : start + RESTORE_BATCH])
            if cursor == 0:
                return count

    def _copy_batch(self, scratch: redis.Redis, target: redis.Redis, keys: list[bytes]) -> int:
        read = scratch.pipeline(transaction=False)
        for key in keys:
            read.dump(key)
            read.pttl(key)
        replies = read.execute()
        write = target.pipeline(transaction=False)
        pending = 0
        buffered = 0
        count = 0
        for i, key in enumerate(keys):
            payload, ttl = replies[2 * i], int(replies[2 * i + 1])
            if payload is None or ttl == -2:  # expired since the scratch server loaded
                continue
            write.restore(key, max(ttl, 0), payload, replace=self._overwrite)
            pending += 1
            buffered += len(payload)
            if buffered >= RESTORE_BATCH_BYTES:
                count += self._flush(write, pending)
                pending = buffered = 0
        if pending:
            count += self._flush(write, pending)
        return count

    def _flush(self, write: Any, pending: int) -> int:
        try:
            results = write.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise RestoreError(f"RESTORE into {self._target.describe()} failed: {exc}") from None
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise RestoreError(
                f"RESTORE into {self._target.describe()} failed for {len(errors)} keys: "
                f"{_first_line(errors[0])}"
            )
        return pending
