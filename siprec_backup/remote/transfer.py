"""File transfer over SFTP, both ways, streamed in bounded chunks and checked end to end.

The sha256 of the bytes is computed while streaming on this side and compared with
``sha256sum`` run on the remote side. The destination appears only complete and verified: an
upload goes to a temporary name in the target directory and is renamed over the target; a
download goes to a temporary local file renamed likewise. On a mismatch or any failure the
partial file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import secrets
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from siprec_backup.errors import RemoteError

if TYPE_CHECKING:
    from siprec_backup.remote.ssh import SshClient

#: Bytes per local read and SFTP write.
CHUNK_BYTES = 256 * 1024
#: SFTP read request size (paramiko's maximum) and how many are in flight per batch.
READ_REQUEST_BYTES = 32 * 1024
READ_BATCH_REQUESTS = 128
#: ``read_text`` refuses files larger than this (config includes are small).
MAX_TEXT_BYTES = 1024 * 1024
#: How long the remote ``sha256sum`` may take (8 GiB at ~100 MB/s).
CHECKSUM_TIMEOUT = 600.0

_SHA256_LINE = re.compile(r"^\\?([0-9a-f]{64}) ")


@dataclass(frozen=True)
class Transfer:
    """A finished, verified transfer: size, sha256 (hex) and wall time."""

    bytes: int
    sha256: str
    seconds: float

    @property
    def mib_per_second(self) -> float:
        """Throughput in MiB/s."""
        return self.bytes / 1048576 / self.seconds if self.seconds > 0 else 0.0


def remote_sha256(client: SshClient, path: str) -> str:
    """The sha256 (hex) of a remote file from ``sha256sum`` (read-only: not audited)."""
    result = client.run(
        ["sha256sum", "--", path], timeout=CHECKSUM_TIMEOUT, mutating=False, check=True
    )
    match = _SHA256_LINE.match(result.stdout_tail.strip())
    if match is None:
        raise RemoteError(
            f"ssh {client.host}: unexpected sha256sum output for {path!r}", host=client.host
        )
    return match.group(1)


def upload(client: SshClient, local_path: str | os.PathLike[str], remote_path: str) -> Transfer:
    """Copy a local file to ``remote_path`` (replacing it) and verify its sha256 remotely."""
    local = Path(local_path)
    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    tmp = _temp_name(remote_path)
    command = f"upload {local} -> {remote_path}"
    status: int | None = None
    digest = hashlib.sha256()
    size = 0
    try:
        with client.open_sftp() as sftp:
            try:
                with local.open("rb") as source, sftp.open(tmp, "wb") as target:
                    target.set_pipelined(True)
                    while chunk := source.read(CHUNK_BYTES):
                        digest.update(chunk)
                        size += len(chunk)
                        target.write(chunk)
                remote = remote_sha256(client, tmp)
                if remote != digest.hexdigest():
                    raise RemoteError(
                        f"ssh {client.host}: upload of {local} to {remote_path!r}: sha256 "
                        f"mismatch (local {digest.hexdigest()}, remote {remote}): removed",
                        host=client.host,
                    )
                sftp.posix_rename(tmp, remote_path)
            except BaseException:
                with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                    sftp.remove(tmp)
                raise
        status = 0
    except FileNotFoundError as exc:
        raise RemoteError(
            f"upload {local} -> {client.host}:{remote_path}: no such file or directory "
            f"({exc.filename or local})",
            host=client.host,
        ) from exc
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise RemoteError(
            f"upload {local} -> {client.host}:{remote_path}: {exc}", host=client.host
        ) from exc
    finally:
        client.audit_action(command, status, started_at, time.monotonic() - t0)
    return Transfer(size, digest.hexdigest(), time.monotonic() - t0)


def download(client: SshClient, remote_path: str, local_path: str | os.PathLike[str]) -> Transfer:
    """Copy ``remote_path`` to a local file (replacing it) and verify its sha256 remotely.

    Reads are pipelined in batches of :data:`READ_BATCH_REQUESTS` requests, so memory stays at
    about one batch (4 MiB). Downloading changes nothing remotely and is not audited.
    """
    local = Path(local_path)
    t0 = time.monotonic()
    tmp = local.with_name(f".{local.name}.{secrets.token_hex(6)}.part")
    digest = hashlib.sha256()
    size = 0
    try:
        with client.open_sftp() as sftp, sftp.open(remote_path, "rb") as source:
            total = source.stat().st_size or 0
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as target:
                batch = READ_REQUEST_BYTES * READ_BATCH_REQUESTS
                for offset in range(0, total, batch):
                    end = min(offset + batch, total)
                    spans = [
                        (o, min(READ_REQUEST_BYTES, end - o))
                        for o in range(offset, end, READ_REQUEST_BYTES)
                    ]
                    for chunk in source.readv(spans):
                        digest.update(chunk)
                        size += len(chunk)
                        target.write(chunk)
                target.flush()
                os.fsync(target.fileno())
        if size != total:
            raise RemoteError(
                f"download {client.host}:{remote_path}: got {size} of {total} bytes",
                host=client.host,
            )
        remote = remote_sha256(client, remote_path)
        if remote != digest.hexdigest():
            raise RemoteError(
                f"download {client.host}:{remote_path}: sha256 mismatch (local "
                f"{digest.hexdigest()}, remote {remote}): removed",
                host=client.host,
            )
        os.replace(tmp, local)
    except RemoteError:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, paramiko.SSHException, EOFError) as exc:
        tmp.unlink(missing_ok=True)
        raise RemoteError(
            f"download {client.host}:{remote_path} -> {local}: {exc}", host=client.host
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Transfer(size, digest.hexdigest(), time.monotonic() - t0)


def read_text(client: SshClient, path: str) -> str:
    """A small remote text file (UTF-8), or "" if it does not exist."""
    try:
        with client.open_sftp() as sftp, sftp.open(path, "rb") as source:
            size = source.stat().st_size or 0
            if size > MAX_TEXT_BYTES:
                raise RemoteError(
                    f"ssh {client.host}: {path!r} is {size} bytes, more than the "
                    f"{MAX_TEXT_BYTES} a text file may have",
                    host=client.host,
                )
            data = source.read(MAX_TEXT_BYTES + 1)
    except FileNotFoundError:
        return ""
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise RemoteError(
            f"ssh {client.host}: cannot read {path!r}: {exc}", host=client.host
        ) from exc
    return data.decode("utf-8", errors="replace")


def write_text(client: SshClient, path: str, text: str) -> None:
    """Replace a small remote text file atomically: write a temporary file in the same
    directory, keep the old file's mode, then rename it over the target (audited)."""
    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    tmp = _temp_name(path)
    status: int | None = None
    try:
        with client.open_sftp() as sftp:
            try:
                with sftp.open(tmp, "wb") as target:
                    target.write(text.encode())
                with contextlib.suppress(FileNotFoundError):
                    mode = sftp.stat(path).st_mode
                    if mode is not None:
                        sftp.chmod(tmp, stat.S_IMODE(mode))
                sftp.posix_rename(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                    sftp.remove(tmp)
                raise
        status = 0
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise RemoteError(
            f"ssh {client.host}: cannot write {path!r}: {exc}", host=client.host
        ) from exc
    finally:
        client.audit_action(f"write {path}", status, started_at, time.monotonic() - t0)


def _temp_name(remote_path: str) -> str:
    """A hidden, unique name next to ``remote_path`` (same directory: rename is atomic)."""
    head, tail = posixpath.split(remote_path)
    return posixpath.join(head, f".{tail}.{secrets.token_hex(6)}.part")
