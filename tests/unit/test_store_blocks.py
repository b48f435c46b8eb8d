"""The storage blocks: documented like the others, validated, secrets masked (no server)."""

from __future__ import annotations

import json

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from blocks.azure_storage import AzureBlobStorage
from blocks.gcs_storage import GCSStorage
from blocks.s3_storage import S3Storage
from blocks.storage import STORAGE_BLOCK_TYPES
from siprec_backup.errors import ConfigurationError
from siprec_backup.storage import AzureBlobStore, GCSStore, S3Store

DEV_CONN = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


class TestStorageBlocksFollowTheStandard(BlockStandardTestSuite):
    @pytest.fixture(params=[S3Storage, GCSStorage, AzureBlobStorage])
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        block_type: type[Block] = request.param
        return block_type

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        assert block._block_type_slug is not None
        assert block._block_type_slug.startswith("siprec-backup-")


def test_every_storage_type_is_loadable_by_name() -> None:
    slugs = {cls.get_block_type_slug() for cls in STORAGE_BLOCK_TYPES}
    assert slugs == {
        "siprec-backup-local-storage",
        "siprec-backup-s3-storage",
        "siprec-backup-gcs-storage",
        "siprec-backup-azure-blob-storage",
    }


def test_s3_block_builds_the_store_and_masks_secrets() -> None:
    block = S3Storage(
        bucket="backups",
        prefix="siprec",
        region="eu-west-1",
        endpoint_url="http://127.0.0.1:9000",
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key=SecretStr("s3-secret-value"),
        addressing_style="path",
    )
    store = block.store()
    assert isinstance(store, S3Store)
    assert (store.bucket, store.endpoint_url, block.prefix) == (
        "backups",
        "http://127.0.0.1:9000",
        "siprec",
    )
    for text in (repr(block), repr(store), store.describe()):
        assert "s3-secret-value" not in text


def test_s3_block_wants_both_keys_or_none() -> None:
    block = S3Storage(bucket="backups", aws_access_key_id="AKIAEXAMPLE")
    with pytest.raises(ConfigurationError, match="both"):
        block.store()


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"bucket": "x"}, "bucket"),
        ({"endpoint_url": "minio:9000"}, "endpoint_url"),
        ({"addressing_style": "sideways"}, "addressing_style"),
        ({"max_object_size": 6 << 40}, "max_object_size"),
        ({"aws_secret_access_key": SecretStr("")}, "aws_secret_access_key"),
    ],
)
def test_invalid_s3_fields_are_named(fields: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        S3Storage(**{"bucket": "backups", **fields})
    assert [e["loc"][0] for e in caught.value.errors()] == [field_name]


def test_gcs_block_checks_the_key_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        GCSStorage(bucket="backups", service_account_info=SecretStr("not-json-secret"))
    assert "not-json-secret" not in str(caught.value)
    with pytest.raises(ValidationError, match="not a JSON key file"):
        GCSStorage(bucket="backups", service_account_info=SecretStr(json.dumps({"a": 1})))
    store = GCSStorage(bucket="backups", endpoint="http://127.0.0.1:9023").store()
    assert isinstance(store, GCSStore) and store.bucket == "backups"


def test_azure_block_needs_exactly_one_way_to_connect() -> None:
    with pytest.raises(ValidationError, match="either a connection string or an account URL"):
        AzureBlobStorage(container="backups")
    with pytest.raises(ValidationError, match="either"):
        AzureBlobStorage(
            container="backups",
            connection_string=SecretStr(DEV_CONN),
            account_url="https://acct.blob.core.windows.net",
        )
    block = AzureBlobStorage(container="backups", connection_string=SecretStr(DEV_CONN))
    store = block.store()
    assert isinstance(store, AzureBlobStore)
    assert "Eby8" not in repr(block) and "Eby8" not in repr(store)
