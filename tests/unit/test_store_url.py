"""open_store_url: the break-glass CLI's way to name a store (no server contacted)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from siprec_backup.errors import ConfigurationError
from siprec_backup.storage import AzureBlobStore, GCSStore, LocalStore, S3Store, open_store_url

DEV_CONN = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


def test_local_paths(tmp_path: Path) -> None:
    for url in (str(tmp_path), f"file://{tmp_path}", f"file://{tmp_path}/"):
        store, prefix = open_store_url(url)
        assert isinstance(store, LocalStore) and store.root == tmp_path and prefix == ""


def test_s3_url_with_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store, prefix = open_store_url(
        "s3://backups/site-a/siprec/?endpoint=http://127.0.0.1:9000&region=eu-west-1"
        "&addressing_style=path"
    )
    assert isinstance(store, S3Store)
    assert (store.bucket, prefix, store.endpoint_url) == (
        "backups",
        "site-a/siprec",
        "http://127.0.0.1:9000",
    )
    assert store.client.meta.region_name == "eu-west-1"


def test_gs_url_honours_the_emulator_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023")
    store, prefix = open_store_url("gs://bucket-x/p")
    assert isinstance(store, GCSStore) and store.endpoint == "http://127.0.0.1:9023"
    assert (store.bucket, prefix) == ("bucket-x", "p")


def test_azure_url_reads_the_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", DEV_CONN)
    store, prefix = open_store_url("azure://container-1/a/b")
    assert isinstance(store, AzureBlobStore)
    assert (store.container, prefix) == ("container-1", "a/b")
    assert "AccountKey" not in repr(store) and "Eby8" not in store.describe()


def test_azure_url_without_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(ConfigurationError, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_store_url("azure://container-1/a")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty store URL"),
        ("relative/path", "unknown scheme"),
        ("ftp://host/x", "unknown scheme"),
        ("file://host/x", "file:///absolute/path"),
        ("s3:///prefix", "name the bucket"),
        ("s3://key:secret@bucket/p", "credentials never go into the URL"),
        ("s3://bucket/p?colour=red", "unknown option 'colour'"),
        ("s3://bucket/p?endpoint=", "needs one value"),
        ("gs://bucket/p?region=x", "unknown option 'region'"),
    ],
)
def test_bad_urls_name_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        open_store_url(url)
    assert "secret" not in str(caught.value) or "credentials never" in str(caught.value)


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigurationError, match=r"install siprec-backup\[aws\]"):
        S3Store("bucket")
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    with pytest.raises(ConfigurationError, match=r"install siprec-backup\[azure\]"):
        AzureBlobStore("container", connection_string=DEV_CONN)
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    with pytest.raises(ConfigurationError, match=r"install siprec-backup\[gcp\]"):
        GCSStore("bucket", endpoint="http://127.0.0.1:1")
