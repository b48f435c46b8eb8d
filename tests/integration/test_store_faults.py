"""Store faults on the real emulators: a missing bucket, refused credentials, the network cut in
the middle of an upload (a TCP proxy in front of the emulator), a full local disk.

The GCS emulator has no authentication at all, so refused credentials are tested on S3 (a second
moto server enforcing IAM auth) and Azure (Azurite with a wrong account key) only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siprec_backup.backup import run_backup
from siprec_backup.errors import PermanentStorageError, TransientStorageError
from siprec_backup.lab import LabState
from siprec_backup.lab._process import free_ports
from siprec_backup.lab.object_stores import (
    AZURITE_KEY,
    answers_http,
    azurite_connection_string,
    lab_s3_store,
)
from siprec_backup.storage import AzureBlobStore, GCSStore, ObjectStore, S3Store
from siprec_backup.stream import MasterKey
from tests.integration.test_object_stores import BytesSource, keys, new_bucket

MiB = 1 << 20
WRONG_KEY = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc="


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_missing_bucket_is_named(lab: LabState, kind: str) -> None:
    store = lab.object_store(kind, "no-such-bucket-here")
    with pytest.raises(PermanentStorageError, match="'no-such-bucket-here' does not exist"):
        store.put_bytes("k", b"data")
    with pytest.raises(PermanentStorageError, match="'no-such-bucket-here' does not exist"):
        store.open_reader("k")
    with pytest.raises(PermanentStorageError, match="'no-such-bucket-here' does not exist"):
        run_backup(
            BytesSource(os.urandom(MiB)),
            store,
            MasterKey.generate("k"),
            cluster="c",
            source_name="s",
        )


@pytest.fixture
def moto_with_auth(tmp_path: Path) -> Iterator[str]:
    """A second moto server that enforces IAM authentication from the first request."""
    (port,) = free_ports(1)
    exe = Path(sys.executable).parent / "moto_server"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    with (tmp_path / "moto.log").open("wb") as log:
        proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not answers_http(url):
            assert proc.poll() is None, "moto_server exited"
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_s3_credentials_refused(moto_with_auth: str) -> None:
    store = S3Store(
        "siprec-backups",
        endpoint_url=moto_with_auth,
        region="us-east-1",
        aws_access_key_id="AKIAWRONGWRONGWRONG1",
        aws_secret_access_key="very-secret-value-123",
        max_attempts=1,
    )
    with pytest.raises(PermanentStorageError, match="credentials refused by S3") as caught:
        store.put_bytes("k", b"data")
    assert "very-secret-value-123" not in str(caught.value)
    with pytest.raises(PermanentStorageError, match="credentials refused"):
        list(store.list())


def test_azure_credentials_refused(lab: LabState) -> None:
    endpoint = lab.azure_connection_string.split("BlobEndpoint=")[1].rstrip(";")
    store = AzureBlobStore(
        "siprec-backups",
        connection_string=azurite_connection_string(endpoint, WRONG_KEY),
        retry_total=0,
    )
    with pytest.raises(PermanentStorageError, match="credentials refused by Azure") as caught:
        store.put_bytes("k", b"data")
    assert WRONG_KEY not in str(caught.value) and AZURITE_KEY not in str(caught.value)


# --- the network cut in the middle of an upload -------------------------------------------------


class CuttableProxy:
    """A TCP proxy to `upstream` whose `cut()` drops every connection and refuses new ones."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                if self._cut.is_set():  # cut while this connection was being set up
                    client.close()
                    server.close()
                    return
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with self._lock:
            self._cut.set()
            self._listener.close()
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()


def _through(store: ObjectStore, proxy_url: str) -> ObjectStore:
    """The same bucket as `store`, reached through the proxy, with short timeouts and retries."""
    if isinstance(store, S3Store):
        return lab_s3_store(
            proxy_url, store.bucket, max_attempts=2, connect_timeout=1, read_timeout=3
        )
    if isinstance(store, GCSStore):
        return GCSStore(store.bucket, endpoint=proxy_url, retry_deadline=2)
    assert isinstance(store, AzureBlobStore)
    path = store.account_url.split("/", 3)[3]
    conn = azurite_connection_string(f"{proxy_url}/{path}")
    return AzureBlobStore(
        store.container,
        connection_string=conn,
        retry_total=1,
        retry_backoff=0.1,
        connection_timeout=1,
        read_timeout=3,
    )


def _endpoint(lab: LabState, kind: str) -> tuple[str, int]:
    record = lab.services["azurite" if kind == "azure" else kind]
    assert record.host is not None and record.port is not None
    return record.host, record.port


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_network_cut_mid_upload(lab: LabState, kind: str) -> None:
    direct = new_bucket(lab, kind)
    proxy = CuttableProxy(_endpoint(lab, kind))
    try:
        store = _through(direct, f"http://127.0.0.1:{proxy.port}")
        source = BytesSource(os.urandom(40 * MiB), trigger_at=20 * MiB, trigger=proxy.cut)
        started = time.monotonic()
        with pytest.raises(TransientStorageError, match=r"unreachable|failed"):
            run_backup(source, store, MasterKey.generate("k"), cluster="c", source_name="s")
        assert time.monotonic() - started < 60
    finally:
        proxy.cut()
    # Nothing complete-looking is left: no data object, no manifest...
    assert keys(direct) == []
    # ...and the multipart upload the cut left behind is cleaned by the next backup's sweep.
    if isinstance(direct, S3Store):
        direct.abort_stale_uploads("", 0)
        assert list(direct.unfinished_uploads("")) == []


# --- a full local disk -----------------------------------------------------------------------

_DISK_FULL = textwrap.dedent(
    """
    import os, resource, signal, sys
    from siprec_backup.backup import run_backup
    from siprec_backup.errors import PermanentStorageError
    from siprec_backup.storage import LocalStore
    from siprec_backup.stream import MasterKey
    from tests.integration.test_object_stores import BytesSource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))
    try:
        run_backup(BytesSource(os.urandom(8 << 20)), LocalStore(sys.argv[1]),
                   MasterKey.generate("k"), cluster="c", source_name="s")
    except PermanentStorageError as exc:
        print(exc)
        sys.exit(3)
    """
)


def test_local_disk_full(tmp_path: Path) -> None:
    root = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("no space left on "), proc.stdout
    assert [p for p in root.rglob("*") if p.is_file()] == []  # the partial temp file is gone
