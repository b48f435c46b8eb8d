"""The encrypted stream format (docs/FORMAT.md): zstd, then chunked AES-256-GCM, envelope keys.

Import everything from here; ``format`` holds the primitives (keys, header, writer, reader) and
``pipeline`` the whole-stream operations (seal, unseal, rewrap).
"""

from __future__ import annotations

from .format import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    Compression,
    DecryptingReader,
    EncryptingWriter,
    Header,
    Keyring,
    MasterKey,
    read_header,
)
from .pipeline import (
    DEFAULT_ZSTD_LEVEL,
    DEFAULT_ZSTD_THREADS,
    StreamStats,
    rewrap,
    seal,
    unseal,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_ZSTD_LEVEL",
    "DEFAULT_ZSTD_THREADS",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "Compression",
    "DecryptingReader",
    "EncryptingWriter",
    "Header",
    "Keyring",
    "MasterKey",
    "StreamStats",
    "read_header",
    "rewrap",
    "seal",
    "unseal",
]
