"""Object storage emulators for the lab: moto (S3), gcp-storage-emulator (GCS), Azurite (Azure).

Each keeps its data in memory, listens on a free loopback port and gets a bucket (container)
called :data:`LAB_BUCKET` at every start, which the demo uses. The emulators accept any
credentials: moto the dummy keys below, the GCS emulator none at all, Azurite its well-known
development account (its key is published by Microsoft, so it is not a secret; it is still kept
out of lab.json's facts and logs out of habit).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx

from siprec_backup.errors import LabError
from siprec_backup.lab import _process
from siprec_backup.lab.service import LabContext, Service, ServiceRecord
from siprec_backup.storage import AzureBlobStore, GCSStore, S3Store

LOOPBACK = "127.0.0.1"
LAB_BUCKET = "siprec-backups"
GROUP = "objectstores"

#: moto accepts any keys; these are the conventional dummy ones.
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"  # noqa: S105 - a dummy key of the emulator
MOTO_REGION = "us-east-1"

AZURITE_ACCOUNT = "devstoreaccount1"
#: Azurite's built-in development key, published in Microsoft's documentation.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_connection_string(blob_endpoint: str, key: str = AZURITE_KEY) -> str:
    """The connection string of Azurite's development account at `blob_endpoint`."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={blob_endpoint};"
    )


def answers_http(url: str) -> bool:
    """Whether anything answers HTTP at `url` (any status: the server is up)."""
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def _venv_tool(name: str) -> Path:
    cand = Path(sys.executable).parent / name
    if cand.is_file():
        return cand
    found = shutil.which(name)
    if found:
        return Path(found)
    raise LabError(
        f"{name} was not found next to {sys.executable} nor on PATH: "
        "install the development dependencies (bash scripts/dev.sh test)"
    )


def azurite_executable() -> Path:
    """``azurite-blob`` from ``$SIPREC_AZURITE_DIR`` or ``~/.cache/siprec-backup/azurite``."""
    base = Path(
        os.environ.get("SIPREC_AZURITE_DIR") or Path.home() / ".cache/siprec-backup/azurite"
    )
    exe = base / "node_modules" / ".bin" / "azurite-blob"
    if not exe.is_file():
        raise LabError(
            f"azurite: {exe} is not installed: run `bash scripts/dev.sh test` (npm install azurite)"
        )
    if shutil.which("node") is None:
        raise LabError("azurite: node is not on PATH: install Node.js 20 (scripts/dev.sh)")
    return exe


class _Emulator(Service):
    """An emulator spawned from one command line, ready once it answers HTTP."""

    group = GROUP
    stop_timeout = 10.0

    def argv(self, port: int) -> list[str | os.PathLike[str]]:
        raise NotImplementedError

    def url(self, port: int) -> str:
        return f"http://{LOOPBACK}:{port}"

    def create_bucket(self, url: str) -> None:
        """Create :data:`LAB_BUCKET` (fresh emulators are empty)."""
        raise NotImplementedError

    def facts(self, url: str) -> dict[str, Any]:
        return {"endpoint": url, "bucket": LAB_BUCKET}

    def start(self, ctx: LabContext) -> ServiceRecord:
        """Spawn the emulator, wait until it answers and create the lab bucket."""
        port = ctx.port(self.name)
        if not _process.port_is_free(port):
            raise LabError(f"{self.name}: port {port} on 127.0.0.1 is already in use")
        argv = self.argv(port)
        env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
        proc = _process.spawn(argv, log=ctx.log(self.name), env=env, cwd=ctx.root)
        url = self.url(port)
        ticks = self.launch(ctx, proc, lambda: answers_http(url), timeout=30.0)
        record = ServiceRecord(
            name=self.name,
            pid=proc.pid,
            host=LOOPBACK,
            port=port,
            log=ctx.log(self.name),
            started_ticks=ticks,
            facts=self.facts(url),
        )
        try:
            self.create_bucket(url)
        except Exception as exc:
            self.stop(record)
            raise _process.failure(
                self.name, f"creating {LAB_BUCKET!r} failed: {exc}", ctx.log(self.name)
            ) from exc
        return record

    def is_ready(self, record: ServiceRecord) -> bool:
        """The emulator answers HTTP."""
        return answers_http(record.fact("endpoint"))


class MotoS3(_Emulator):
    """``moto_server``: S3 (and other AWS APIs) in memory, any credentials accepted."""

    name = "s3"

    def argv(self, port: int) -> list[str | os.PathLike[str]]:
        return [_venv_tool("moto_server"), "-H", LOOPBACK, "-p", str(port)]

    def create_bucket(self, url: str) -> None:
        lab_s3_store(url, LAB_BUCKET).client.create_bucket(Bucket=LAB_BUCKET)


class GCSEmulator(_Emulator):
    """``gcp-storage-emulator --in-memory``: the GCS JSON API without authentication."""

    name = "gcs"

    def argv(self, port: int) -> list[str | os.PathLike[str]]:
        return [
            _venv_tool("gcp-storage-emulator"),
            "start",
            "-H",
            LOOPBACK,
            "--port",
            str(port),
            "--in-memory",
        ]

    def create_bucket(self, url: str) -> None:
        GCSStore(LAB_BUCKET, endpoint=url).client.create_bucket(LAB_BUCKET)


class Azurite(_Emulator):
    """``azurite-blob --inMemoryPersistence --skipApiVersionCheck --loose`` (Node.js)."""

    name = "azurite"

    def argv(self, port: int) -> list[str | os.PathLike[str]]:
        return [
            azurite_executable(),
            "--blobHost",
            LOOPBACK,
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ]

    def url(self, port: int) -> str:
        return f"http://{LOOPBACK}:{port}/{AZURITE_ACCOUNT}"

    def facts(self, url: str) -> dict[str, Any]:
        return {"endpoint": url, "container": LAB_BUCKET, "account": AZURITE_ACCOUNT}

    def create_bucket(self, url: str) -> None:
        store = AzureBlobStore(LAB_BUCKET, connection_string=azurite_connection_string(url))
        store.container_client.create_container()


def lab_s3_store(endpoint: str, bucket: str = LAB_BUCKET, **options: Any) -> S3Store:
    """An :class:`~siprec_backup.storage.S3Store` on the lab's moto server."""
    return S3Store(
        bucket,
        endpoint_url=endpoint,
        region=MOTO_REGION,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
        **options,
    )
