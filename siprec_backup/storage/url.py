"""Open a store from one URL, for the break-glass CLI (no Prefect, no blocks).

Accepted forms (credentials always come from the environment, never from the URL):

* ``/abs/path`` or ``file:///abs/path``: a local directory.
* ``s3://bucket/prefix[?endpoint=http://host:port&region=eu-west-1&addressing_style=path]``:
  boto3's usual credentials (``AWS_ACCESS_KEY_ID``..., profiles, instance roles).
* ``gs://bucket/prefix[?endpoint=http://host:port&project=p]``: ``GOOGLE_APPLICATION_CREDENTIALS``
  or Application Default Credentials; ``STORAGE_EMULATOR_HOST`` also selects an emulator.
* ``azure://container/prefix[?account_url=https://acct.blob.core.windows.net]``:
  ``AZURE_STORAGE_CONNECTION_STRING``, or ``account_url`` with ``AZURE_STORAGE_KEY``.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit

from siprec_backup.errors import ConfigurationError
from siprec_backup.storage.base import ObjectStore
from siprec_backup.storage.local import LocalStore

_OPTIONS = {
    "s3": {"endpoint", "region", "addressing_style"},
    "gs": {"endpoint", "project"},
    "azure": {"account_url", "api_version"},
}


def _options(url: str, scheme: str, query: str) -> dict[str, str]:
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigurationError(f"store URL {url!r}: malformed query string") from None
    unknown = sorted(set(parsed) - _OPTIONS[scheme])
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[scheme]))
        raise ConfigurationError(
            f"store URL {url!r}: unknown option {unknown[0]!r} (allowed: {allowed})"
        )
    options = {}
    for name, values in parsed.items():
        if len(values) != 1 or not values[0]:
            raise ConfigurationError(f"store URL {url!r}: option {name!r} needs one value")
        options[name] = values[0]
    return options


def open_store_url(url: str) -> tuple[ObjectStore, str]:
    """The store a URL names and the key prefix inside it (without slashes at either end)."""
    if not url:
        raise ConfigurationError("empty store URL")
    if url.startswith("/"):
        return LocalStore(url), ""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise ConfigurationError(f"store URL {url!r}: use file:///absolute/path")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ConfigurationError(f"store URL {url!r}: the path must be absolute")
        return LocalStore(path), ""
    if scheme not in _OPTIONS:
        raise ConfigurationError(
            f"store URL {url!r}: unknown scheme; use an absolute path, file://, s3://, gs:// "
            "or azure://"
        )
    bucket = parts.netloc
    if not bucket or "@" in bucket:
        raise ConfigurationError(
            f"store URL {url!r}: name the bucket or container after {scheme}:// "
            "(credentials never go into the URL)"
        )
    prefix = unquote(parts.path).strip("/")
    options = _options(url, scheme, parts.query)
    if scheme == "s3":
        from siprec_backup.storage.s3 import S3Store

        return (
            S3Store(
                bucket,
                endpoint_url=options.get("endpoint"),
                region=options.get("region"),
                addressing_style=options.get("addressing_style", "auto"),
            ),
            prefix,
        )
    if scheme == "gs":
        from siprec_backup.storage.gcs import GCSStore

        endpoint = options.get("endpoint") or os.environ.get("STORAGE_EMULATOR_HOST") or None
        return GCSStore(bucket, project=options.get("project"), endpoint=endpoint), prefix
    from siprec_backup.storage.azure import API_VERSION, AzureBlobStore

    account_url = options.get("account_url")
    connection_string = None if account_url else os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    key = os.environ.get("AZURE_STORAGE_KEY") if account_url else None
    if not account_url and not connection_string:
        raise ConfigurationError(
            f"store URL {url!r}: set AZURE_STORAGE_CONNECTION_STRING, or give ?account_url= "
            "and set AZURE_STORAGE_KEY"
        )
    return (
        AzureBlobStore(
            bucket,
            connection_string=connection_string,
            account_url=account_url,
            account_key=key,
            api_version=options.get("api_version", API_VERSION),
        ),
        prefix,
    )
