"""Azure Blob Storage as an object store, through azure-storage-blob.

Objects are block blobs written as staged blocks (``stage_block``, fixed-length base64 block ids)
and published by ``commit_block_list`` at commit: nothing is visible before. Blocks start at
8 MiB and double every 5,000 blocks (capped at Azure's 4000 MiB), so 50,000 blocks reach the
largest object we accept with flat memory. An abort simply does not commit: Azure discards
uncommitted blocks after 7 days, and nothing is listed meanwhile. An object smaller than one
block is sent whole at commit.

The API version is pinned (:data:`API_VERSION`) so that a newer SDK does not send a version the
server (or the Azurite emulator) does not know. azure-storage-blob is an optional extra
(``siprec-backup[azure]``), imported only when a store is built.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from siprec_backup.errors import (
    ConfigurationError,
    NotFoundError,
    PermanentStorageError,
    TransientStorageError,
)
from siprec_backup.storage.base import (
    MiB,
    ObjectInfo,
    ObjectStore,
    ObjectWriter,
    PartedWriter,
    StoreLimits,
    StoreReader,
    TiB,
    schedule_capacity,
)

API_VERSION = "2025-11-05"
FIRST_BLOCK = 8 * MiB
GROW_EVERY = 5000
MAX_BLOCKS = 50_000
MAX_BLOCK = 4000 * MiB
MAX_OBJECT = 5 * TiB

_CREDENTIAL_CODES = {
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "InsufficientAccountPermissions",
}


def _blob_module() -> Any:
    try:
        import azure.storage.blob as blob
    except ImportError as exc:
        raise ConfigurationError(
            "the Azure store needs azure-storage-blob: install siprec-backup[azure]"
        ) from exc
    return blob


def block_id(number: int) -> str:
    """The base64 id of block `number`: every id of a blob must have the same length."""
    return base64.b64encode(f"{number:010d}".encode()).decode()


def map_error(exc: BaseException, *, container: str, key: str | None = None) -> Exception:
    """Our error for an azure-core exception (no secrets: the SDK's message is not used)."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    where = f"Azure container {container!r}"
    what = f" (blob {key!r})" if key else ""
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return TransientStorageError(f"{where} unreachable{what}: {type(exc).__name__}")
    if isinstance(exc, HttpResponseError):
        raw = getattr(exc, "error_code", None) or ""
        code = str(getattr(raw, "value", raw))  # the SDK may give a StorageErrorCode enum
        status = int(exc.status_code or 0)
        if code == "ContainerNotFound":
            return PermanentStorageError(f"{where} does not exist")
        if code == "BlobNotFound" or (status == 404 and key):
            return NotFoundError(f"no blob {key!r} in {where}")
        if code in _CREDENTIAL_CODES or status == 403 or isinstance(exc, ClientAuthenticationError):
            return PermanentStorageError(f"credentials refused by {where} ({code or status})")
        if status in (408, 429) or status >= 500 or code in ("ServerBusy", "OperationTimedOut"):
            return TransientStorageError(f"{where} failed{what}, retry later ({code or status})")
        return PermanentStorageError(f"{where} refused the request{what} ({code or status})")
    return TransientStorageError(f"{where} failed{what}: {type(exc).__name__}")


def _sdk_errors() -> tuple[type[BaseException], ...]:
    from azure.core.exceptions import AzureError

    return (AzureError,)


class _AzureWriter(PartedWriter):
    def __init__(self, store: AzureBlobStore, key: str) -> None:
        super().__init__(
            key,
            store=store.describe(),
            first_part=store.first_block,
            grow_every=GROW_EVERY,
            limits=store.limits,
        )
        self._az = store
        self._blob = store.container_client.get_blob_client(key)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _sdk_errors() as exc:
            raise map_error(exc, container=self._az.container, key=self.key) from exc

    def _start_upload(self) -> None:
        """Nothing to start: blocks are staged against the blob name directly."""

    def _upload_part(self, number: int, data: bytes) -> str:
        ident = block_id(number)
        self._call(self._blob.stage_block, ident, data, length=len(data))
        return ident

    def _complete_upload(self, tokens: list[Any]) -> None:
        blocks = [self._az.blob_module.BlobBlock(block_id=t) for t in tokens]
        self._call(self._blob.commit_block_list, blocks)

    def _put_whole(self, data: bytes) -> None:
        self._call(self._blob.upload_blob, data, length=len(data), overwrite=True)

    def _cancel_upload(self) -> None:
        """Uncommitted blocks are invisible and expire after 7 days: nothing to do."""


class AzureBlobStore(ObjectStore):
    """Block blobs in one Azure container.

    Credentials: a `connection_string`, or an `account_url` with an `account_key` (else the
    container must allow the SDK's default anonymous access). `api_version` defaults to a pinned
    version both Azure and Azurite accept.
    """

    def __init__(
        self,
        container: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        account_key: str | None = None,
        api_version: str | None = API_VERSION,
        max_object_size: int = MAX_OBJECT,
        first_block: int = FIRST_BLOCK,
        retry_total: int = 5,
        retry_backoff: float = 15.0,
        connection_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        if not container:
            raise ConfigurationError("Azure store: the container name is empty")
        if not connection_string and not account_url:
            raise ConfigurationError(
                "Azure store: give a connection string, or an account URL with an account key"
            )
        capacity = schedule_capacity(
            MAX_BLOCKS, first=first_block, grow_every=GROW_EVERY, max_part=MAX_BLOCK
        )
        if not 0 < max_object_size <= capacity:
            raise ConfigurationError(f"Azure store: max_object_size must be 1..{capacity} bytes")
        self.blob_module = _blob_module()
        self.container = container
        self.first_block = first_block
        self.limits = StoreLimits(
            max_part_size=MAX_BLOCK, max_parts=MAX_BLOCKS, max_object_size=max_object_size
        )
        options: dict[str, Any] = {
            "retry_policy": self.blob_module.ExponentialRetry(
                initial_backoff=retry_backoff, retry_total=retry_total
            ),
            "connection_timeout": connection_timeout,
            "read_timeout": read_timeout,
        }
        if api_version:
            options["api_version"] = api_version
        service_cls = self.blob_module.BlobServiceClient
        try:
            if connection_string:
                service = service_cls.from_connection_string(connection_string, **options)
            else:
                service = service_cls(account_url, credential=account_key, **options)
        except ValueError as exc:
            raise ConfigurationError(
                f"Azure store: unusable connection settings ({type(exc).__name__})"
            ) from None
        self.account_url = str(service.url).split("?")[0].rstrip("/")
        self.container_client = service.get_container_client(container)

    def __repr__(self) -> str:
        return f"AzureBlobStore({self.describe()!r})"

    def describe(self) -> str:
        return f"Azure container {self.container!r} at {self.account_url}"

    def _fail(self, exc: BaseException, key: str | None = None) -> Exception:
        return map_error(exc, container=self.container, key=key)

    def open_writer(self, key: str) -> ObjectWriter:
        if not key:
            raise ConfigurationError("Azure store: empty blob name")
        return _AzureWriter(self, key)

    def open_reader(self, key: str) -> BinaryIO:
        try:
            downloader = self.container_client.get_blob_client(key).download_blob()
        except _sdk_errors() as exc:
            raise self._fail(exc, key) from exc

        def read_some(size: int) -> bytes:
            try:
                return bytes(downloader.read(size))
            except _sdk_errors() as exc:
                raise self._fail(exc, key) from exc

        return cast(BinaryIO, StoreReader(read_some, lambda: None))

    def exists(self, key: str) -> bool:
        try:
            return bool(self.container_client.get_blob_client(key).exists())
        except _sdk_errors() as exc:
            raise self._fail(exc, key) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        try:
            for blob in self.container_client.list_blobs(name_starts_with=prefix or None):
                yield ObjectInfo(key=blob.name, size=int(blob.size), modified=blob.last_modified)
        except _sdk_errors() as exc:
            raise self._fail(exc) from exc

    def delete(self, key: str) -> None:
        try:
            self.container_client.delete_blob(key)
        except _sdk_errors() as exc:
            error = self._fail(exc, key)
            if not isinstance(error, NotFoundError):
                raise error from exc
