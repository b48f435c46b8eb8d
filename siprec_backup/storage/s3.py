"""Amazon S3 (and S3-compatible servers: MinIO, moto) as an object store, through boto3.

Objects are written with a multipart upload whose parts grow (8 MiB, doubling every 1,000 parts,
see :func:`siprec_backup.storage.base.part_size`), so 10,000 parts reach S3's 5 TiB maximum while
an ordinary backup keeps about three 8 MiB parts in memory. Nothing is visible before
CompleteMultipartUpload; an abort calls AbortMultipartUpload, and uploads a killed process left
behind are found by :meth:`S3Store.abort_stale_uploads`. An object smaller than one part is sent
with a single PutObject at commit.

boto3 is an optional extra (``siprec-backup[aws]``) and is imported only when a store is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from siprec_backup.errors import (
    ConfigurationError,
    NotFoundError,
    PermanentStorageError,
    StorageError,
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

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FIRST_PART = 8 * MiB
GROW_EVERY = 1000
MAX_PARTS = 10_000
MAX_PART = 5 << 30
MAX_OBJECT = 5 * TiB

_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
    "403",
}


def _boto3() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise ConfigurationError("the S3 store needs boto3: install siprec-backup[aws]") from exc
    return boto3


def map_error(
    exc: Exception, *, bucket: str, key: str | None = None
) -> StorageError | NotFoundError:
    """Our error for a botocore exception: transient, permanent or not found (no secrets)."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    where = f"S3 bucket {bucket!r}"
    what = f" (object {key!r})" if key else ""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermanentStorageError(f"no usable credentials for {where}: {exc}")
    if isinstance(
        exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | HTTPClientError
    ):
        return TransientStorageError(f"{where} unreachable{what}: {type(exc).__name__}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return PermanentStorageError(f"{where} does not exist")
        if code in ("NoSuchKey", "NoSuchUpload") or (code == "404" and key):
            return NotFoundError(f"no object {key!r} in {where}")
        if code in _CREDENTIAL_CODES or status == 403:
            return PermanentStorageError(f"credentials refused by {where} ({code})")
        if code in _TRANSIENT_CODES or status in (429, 500, 502, 503, 504):
            return TransientStorageError(f"{where} failed{what}, retry later: {code} ({status})")
        return PermanentStorageError(f"{where} refused the request{what}: {code} ({status})")
    return TransientStorageError(f"{where} failed{what}: {type(exc).__name__}: {exc}")


def _sdk_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


class _S3Writer(PartedWriter):
    def __init__(self, store: S3Store, key: str) -> None:
        super().__init__(
            key,
            store=store.describe(),
            first_part=store.first_part,
            grow_every=GROW_EVERY,
            limits=store.limits,
        )
        self._s3 = store
        self._upload_id: str | None = None

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self._s3.bucket, Key=self.key, **kwargs)
        except _sdk_errors() as exc:
            raise map_error(exc, bucket=self._s3.bucket, key=self.key) from exc

    def _start_upload(self) -> None:
        answer = self._call(self._s3.client.create_multipart_upload)
        self._upload_id = str(answer["UploadId"])

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        answer = self._call(
            self._s3.client.upload_part, UploadId=self._upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _complete_upload(self, tokens: list[Any]) -> None:
        self._call(
            self._s3.client.complete_multipart_upload,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": tokens},
        )

    def _put_whole(self, data: bytes) -> None:
        self._call(self._s3.client.put_object, Body=data)

    def _cancel_upload(self) -> None:
        if self._upload_id is not None:
            with contextlib.suppress(StorageError, NotFoundError):
                self._call(self._s3.client.abort_multipart_upload, UploadId=self._upload_id)


class S3Store(ObjectStore):
    """Objects in one S3 bucket; keys are used as given.

    Pass a ready boto3 ``client``, or let the store build one from `endpoint_url` (S3-compatible
    servers), `region`, explicit keys (else boto3's usual environment, profile and instance
    credentials) and `addressing_style` ("path" for most S3-compatible servers).
    """

    def __init__(
        self,
        bucket: str,
        *,
        client: S3Client | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        addressing_style: str = "auto",
        max_object_size: int = MAX_OBJECT,
        first_part: int = FIRST_PART,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        if not bucket:
            raise ConfigurationError("S3 store: the bucket name is empty")
        if addressing_style not in ("auto", "path", "virtual"):
            raise ConfigurationError(
                f"S3 store: addressing_style {addressing_style!r} is not auto, path or virtual"
            )
        if first_part < 5 * MiB or first_part > MAX_PART:
            raise ConfigurationError("S3 store: the first part must be between 5 MiB and 5 GiB")
        capacity = schedule_capacity(
            MAX_PARTS, first=first_part, grow_every=GROW_EVERY, max_part=MAX_PART
        )
        if not 0 < max_object_size <= min(capacity, MAX_OBJECT):
            raise ConfigurationError(
                f"S3 store: max_object_size must be between 1 and {min(capacity, MAX_OBJECT)} bytes"
            )
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.first_part = first_part
        self.limits = StoreLimits(
            max_part_size=MAX_PART, max_parts=MAX_PARTS, max_object_size=max_object_size
        )
        if client is None:
            from botocore.config import Config

            config = Config(
                s3={"addressing_style": cast(Any, addressing_style)},
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_pool_connections=10,
            )
            client = cast(
                "S3Client",
                _boto3().client(
                    "s3",
                    endpoint_url=endpoint_url,
                    region_name=region,
                    aws_access_key_id=aws_access_key_id,
                    aws_secret_access_key=aws_secret_access_key,
                    aws_session_token=aws_session_token,
                    config=config,
                ),
            )
        self.client = client

    def __repr__(self) -> str:
        return f"S3Store({self.describe()!r})"

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3 bucket {self.bucket!r}{where}"

    def _fail(self, exc: Exception, key: str | None = None) -> StorageError | NotFoundError:
        return map_error(exc, bucket=self.bucket, key=key)

    def open_writer(self, key: str) -> ObjectWriter:
        if not key:
            raise ConfigurationError("S3 store: empty object key")
        return _S3Writer(self, key)

    def open_reader(self, key: str) -> BinaryIO:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except _sdk_errors() as exc:
            raise self._fail(exc, key) from exc

        def read_some(size: int) -> bytes:
            try:
                return bytes(body.read(size))
            except _sdk_errors() as exc:
                raise self._fail(exc, key) from exc
            except OSError as exc:  # urllib3 protocol errors surface as OSError subclasses
                raise TransientStorageError(
                    f"{self.describe()}: reading {key!r} failed: {type(exc).__name__}"
                ) from exc

        return cast(BinaryIO, StoreReader(read_some, body.close))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except _sdk_errors() as exc:
            error = self._fail(exc, key)
            if isinstance(error, NotFoundError):
                return False
            raise error from exc
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"], size=int(item["Size"]), modified=item["LastModified"]
                    )
        except _sdk_errors() as exc:
            raise self._fail(exc) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except _sdk_errors() as exc:
            error = self._fail(exc, key)
            if not isinstance(error, NotFoundError):
                raise error from exc

    def unfinished_uploads(self, prefix: str) -> Iterator[tuple[str, str, datetime]]:
        """(key, upload id, initiated) of every multipart upload in progress under `prefix`."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        try:
            for page in pages:
                for up in page.get("Uploads", []):
                    yield up["Key"], up["UploadId"], up["Initiated"]
        except _sdk_errors() as exc:
            raise self._fail(exc) from exc

    def abort_stale_uploads(self, prefix: str, older_than_seconds: float) -> tuple[str, ...]:
        """Abort multipart uploads under `prefix` started more than `older_than_seconds` ago
        (a killed backup's parts cost storage until aborted)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        aborted = []
        for key, upload_id, initiated in list(self.unfinished_uploads(prefix)):
            if initiated.astimezone(UTC) <= cutoff:
                try:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
                except _sdk_errors() as exc:
                    error = self._fail(exc, key)
                    if not isinstance(error, NotFoundError):
                        raise error from exc
                aborted.append(key)
        return tuple(aborted)
