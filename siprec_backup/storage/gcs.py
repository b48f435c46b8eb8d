"""Google Cloud Storage as an object store, through google-cloud-storage.

Objects are written with a resumable upload (``blob.open("wb")``, 8 MiB chunks): the object
exists only once the final chunk is sent at commit. An abort cancels the upload session and never
lets the file object's ``close()`` (which would finalize the upload) run, not even from the
garbage collector. Sessions a killed process left behind cannot be listed; Google discards them
after a week, so :meth:`GCSStore.abort_stale_uploads` has nothing to do.

google-cloud-storage is an optional extra (``siprec-backup[gcp]``), imported only when a store is
built.
"""

from __future__ import annotations

import contextlib
import json
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
    StoreLimits,
    StoreReader,
    TiB,
)

CHUNK_SIZE = 8 * MiB
MAX_OBJECT = 5 * TiB


def _storage_module() -> Any:
    try:
        import google.cloud.storage as storage  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigurationError(
            "the GCS store needs google-cloud-storage: install siprec-backup[gcp]"
        ) from exc
    return storage


def _status(exc: BaseException) -> int:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else 0


def map_error(
    exc: BaseException, *, bucket: str, key: str | None = None, object_missing: bool = False
) -> Exception:
    """Our error for a google-cloud-storage, resumable-media, requests or auth exception.

    A 404 does not say whether the bucket or the object is missing: `object_missing` tells
    (the caller checked that the bucket exists)."""
    import requests
    from google.auth.exceptions import DefaultCredentialsError, RefreshError, TransportError

    where = f"GCS bucket {bucket!r}"
    what = f" (object {key!r})" if key else ""
    if isinstance(exc, DefaultCredentialsError | RefreshError):
        return PermanentStorageError(f"credentials refused by {where}: {type(exc).__name__}")
    if isinstance(exc, requests.ConnectionError | requests.Timeout | TransportError):
        return TransientStorageError(f"{where} unreachable{what}: {type(exc).__name__}")
    status = _status(exc)
    if status == 404:
        if key and object_missing:
            return NotFoundError(f"no object {key!r} in {where}")
        return PermanentStorageError(f"{where} does not exist")
    if status in (401, 403):
        return PermanentStorageError(f"credentials refused by {where} ({status})")
    if status in (408, 429) or status >= 500:
        return TransientStorageError(f"{where} failed{what}, retry later ({status})")
    if status:
        return PermanentStorageError(f"{where} refused the request{what} ({status})")
    return TransientStorageError(f"{where} failed{what}: {type(exc).__name__}")


def _sdk_errors() -> tuple[type[BaseException], ...]:
    import requests
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError
    from google.resumable_media import common

    return (GoogleAPIError, GoogleAuthError, common.InvalidResponse, requests.RequestException)


def _safe_blob_writer(blob: Any, retry: Any) -> Any:
    """A BlobWriter whose garbage collection discards the upload instead of finalizing it.

    ``io.IOBase.__del__`` calls ``close()``, and BlobWriter's close sends the final chunk: a
    writer dropped without commit (an exception, a killed generator) would publish a truncated
    object. This subclass only forgets the buffered data when it is collected.
    """
    from google.cloud.storage.fileio import BlobWriter  # type: ignore[import-untyped]

    class _DiscardOnDelete(BlobWriter):  # type: ignore[misc]
        def __del__(self) -> None:
            with contextlib.suppress(Exception):
                self._buffer.close()

    return _DiscardOnDelete(blob, chunk_size=CHUNK_SIZE, retry=retry, ignore_flush=True)


class _GCSWriter(ObjectWriter):
    def __init__(self, store: GCSStore, key: str) -> None:
        super().__init__(key)
        self._store = store
        blob = store.bucket_handle.blob(key, chunk_size=CHUNK_SIZE)
        self._file = _safe_blob_writer(blob, store.retry)

    def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except _sdk_errors() as exc:
            raise map_error(exc, bucket=self._store.bucket, key=self.key) from exc

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        limit = self._store.limits.max_object_size or 0
        if self.bytes_written + len(data) > limit:
            raise PermanentStorageError(
                f"{self._store.describe()}: object {self.key!r} would exceed {limit} bytes"
            )
        self._run(self._file.write, data)

    def _commit(self) -> None:
        self._run(self._file.close)  # sends the last chunk: the object appears now

    def _abort(self) -> None:
        try:
            with contextlib.suppress(Exception):
                self._file.terminate()  # DELETE the resumable session, if one was started
        finally:
            # The buffer closed means close() (and IOBase.__del__) can never finalize it.
            self._file._buffer.close()


class GCSStore(ObjectStore):
    """Objects in one GCS bucket.

    Pass a ready ``google.cloud.storage.Client``, or `project` plus optional
    `service_account_info` (the JSON key as a dict or string; else Application Default
    Credentials) and `endpoint` (an emulator: anonymous credentials are used then).
    """

    def __init__(
        self,
        bucket: str,
        *,
        client: Any = None,
        project: str | None = None,
        service_account_info: dict[str, Any] | str | None = None,
        endpoint: str | None = None,
        max_object_size: int = MAX_OBJECT,
        retry_deadline: float = 120.0,
    ) -> None:
        if not bucket:
            raise ConfigurationError("GCS store: the bucket name is empty")
        if not 0 < max_object_size <= MAX_OBJECT:
            raise ConfigurationError(f"GCS store: max_object_size must be 1..{MAX_OBJECT} bytes")
        storage = _storage_module()
        self.bucket = bucket
        self.endpoint = endpoint
        self.limits = StoreLimits(max_object_size=max_object_size)
        from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]

        self.retry = DEFAULT_RETRY.with_deadline(retry_deadline)
        if client is None:
            client = _make_client(storage, project, service_account_info, endpoint)
        self.client = client
        self.bucket_handle = client.bucket(bucket)

    def __repr__(self) -> str:
        return f"GCSStore({self.describe()!r})"

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"GCS bucket {self.bucket!r}{where}"

    def _fail(self, exc: BaseException, key: str | None = None) -> Exception:
        """Map `exc`; a 404 on `key` is NotFoundError only if the bucket itself exists."""
        missing = False
        if key is not None and _status(exc) == 404:
            with contextlib.suppress(Exception):
                missing = bool(self.bucket_handle.exists(retry=None))
        return map_error(exc, bucket=self.bucket, key=key, object_missing=missing)

    def open_writer(self, key: str) -> ObjectWriter:
        if not key:
            raise ConfigurationError("GCS store: empty object key")
        try:
            return _GCSWriter(self, key)
        except _sdk_errors() as exc:
            raise self._fail(exc, key) from exc

    def open_reader(self, key: str) -> BinaryIO:
        blob = self.bucket_handle.blob(key, chunk_size=CHUNK_SIZE)
        try:
            blob.reload(retry=self.retry)  # NotFound surfaces here, not in the middle of a restore
            reader = blob.open("rb", chunk_size=CHUNK_SIZE, retry=self.retry)
        except _sdk_errors() as exc:
            raise self._fail(exc, key) from exc

        def read_some(size: int) -> bytes:
            try:
                return bytes(reader.read(size))
            except _sdk_errors() as exc:
                raise self._fail(exc, key) from exc

        return cast(BinaryIO, StoreReader(read_some, reader.close))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        try:
            for blob in self.client.list_blobs(self.bucket, prefix=prefix or None):
                yield ObjectInfo(key=blob.name, size=int(blob.size or 0), modified=blob.updated)
        except _sdk_errors() as exc:
            raise self._fail(exc) from exc

    def delete(self, key: str) -> None:
        try:
            self.bucket_handle.blob(key).delete(retry=self.retry)
        except _sdk_errors() as exc:
            error = self._fail(exc, key)
            if not isinstance(error, NotFoundError):
                raise error from exc


def _make_client(
    storage: Any,
    project: str | None,
    service_account_info: dict[str, Any] | str | None,
    endpoint: str | None,
) -> Any:
    options = {"api_endpoint": endpoint} if endpoint else None
    if service_account_info is not None:
        from google.oauth2 import service_account

        info = service_account_info
        if isinstance(info, str):
            try:
                info = json.loads(info)
            except ValueError:
                raise ConfigurationError(
                    "GCS store: the service account info is not valid JSON"
                ) from None
        try:
            credentials = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
        except (ValueError, KeyError) as exc:
            raise ConfigurationError(
                f"GCS store: the service account info is unusable ({type(exc).__name__})"
            ) from None
        return storage.Client(
            project=project or credentials.project_id,
            credentials=credentials,
            client_options=options,
        )
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=project or "emulator",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=options,
        )
    try:
        return storage.Client(project=project)
    except _sdk_errors() as exc:
        raise ConfigurationError(
            f"GCS store: no usable credentials ({type(exc).__name__}): set "
            "GOOGLE_APPLICATION_CREDENTIALS or configure Application Default Credentials"
        ) from exc
