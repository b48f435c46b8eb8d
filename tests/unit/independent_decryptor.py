"""An independent decryptor for stream format v1, written from docs/FORMAT.md alone.

It deliberately shares no code with ``siprec_backup.stream`` (only ``cryptography`` and
``zstandard``), works on whole byte strings and follows the numbered reading steps of FORMAT.md
section 8. If it opens what ``seal()`` writes and rejects what the vectors say to reject, the
specification is sufficient to build a compatible reader.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["StreamError", "decrypt", "decrypt_payload"]


class StreamError(Exception):
    """A rejected stream; ``kind`` is "truncated", "tampered" or "wrong_key" (FORMAT.md §1)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass(frozen=True)
class _Fields:
    h_fixed: bytes
    compression_id: int
    chunk_size: int
    salt: bytes
    nonce_prefix: bytes
    key_id: str
    key_id_bytes: bytes
    wrap_nonce: bytes
    wrapped_dk: bytes


def _take(data: bytes, pos: int, count: int) -> bytes:
    """Section 8: read ``count`` bytes; fewer available means the stream is truncated."""
    if pos + count > len(data):
        raise StreamError("truncated", f"stream ends inside the header at byte {len(data)}")
    return data[pos : pos + count]


def _header(stream: bytes) -> tuple[_Fields, int]:
    """Steps 1 - 4: parse the header; returns the fields and the offset of chunk 0."""
    magic = stream[:8]
    if magic != b"SIPRECBK"[: len(magic)]:
        raise StreamError("tampered", "bad magic")
    _take(stream, 0, 8)
    (version,) = _take(stream, 8, 1)
    if version != 1:
        raise StreamError("tampered", f"unsupported format version {version}")
    rest = _take(stream, 9, 46)
    cipher_id, compression_id, kdf_id = rest[0], rest[1], rest[2]
    (chunk_size,) = struct.unpack(">I", rest[3:7])
    salt, nonce_prefix = rest[7:39], rest[39:46]
    if cipher_id != 1 or compression_id not in (0, 1) or kdf_id != 1:
        raise StreamError("tampered", "unknown cipher, compression or kdf id")
    if not 1024 <= chunk_size <= 16777216:
        raise StreamError("tampered", "chunk size out of range")
    h_fixed = stream[:55]
    (key_id_len,) = _take(stream, 55, 1)
    if key_id_len < 1:
        raise StreamError("tampered", "empty key id")
    key_id_bytes = _take(stream, 56, key_id_len)
    try:
        key_id = key_id_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise StreamError("tampered", "key id is not UTF-8") from None
    wrap_nonce = _take(stream, 56 + key_id_len, 12)
    wrapped_dk = _take(stream, 68 + key_id_len, 48)
    fields = _Fields(
        h_fixed,
        compression_id,
        chunk_size,
        salt,
        nonce_prefix,
        key_id,
        key_id_bytes,
        wrap_nonce,
        wrapped_dk,
    )
    return fields, 116 + key_id_len


def _chunk_key(fields: _Fields, keys: dict[str, bytes]) -> bytes:
    """Steps 5 - 6: unwrap the data key (§4) and derive the chunk key (§5)."""
    if fields.key_id not in keys:
        raise StreamError("wrong_key", f"no master key {fields.key_id!r}")
    key_id_bytes = fields.key_id_bytes
    wrap_aad = b"SIPRECBK wrap v1" + fields.h_fixed + bytes([len(key_id_bytes)]) + key_id_bytes
    try:
        data_key = AESGCM(keys[fields.key_id]).decrypt(
            fields.wrap_nonce, fields.wrapped_dk, wrap_aad
        )
    except InvalidTag:
        raise StreamError(
            "wrong_key", f"master key {fields.key_id!r} does not open this object"
        ) from None
    return HKDF(
        algorithm=SHA256(),
        length=32,
        salt=fields.salt,
        info=b"SIPRECBK chunk key v1" + fields.h_fixed,
    ).derive(data_key)


def decrypt_payload(stream: bytes, keys: dict[str, bytes]) -> bytes:
    """The verified payload of ``stream`` (still compressed if the header says zstd).

    ``keys`` maps key ids to 32-byte master keys.
    """
    fields, pos = _header(stream)
    aead = AESGCM(_chunk_key(fields, keys))
    h_fixed = fields.h_fixed
    prefix = fields.nonce_prefix
    width = fields.chunk_size + 16
    payload = bytearray()
    index = 0
    while True:
        # step 7: up to W bytes, then peek one byte when W arrived
        piece = stream[pos : pos + width]
        count = len(piece)
        if count < 16:
            raise StreamError("truncated", f"stream ends inside chunk {index}")
        last = count < width or pos + width >= len(stream)
        # step 8
        if index > 2**32 - 1:
            raise StreamError("tampered", "too many chunks")

        # step 9
        def nonce(flag: int, i: int = index) -> bytes:
            return prefix + struct.pack(">I", i) + bytes([flag])

        try:
            plain = aead.decrypt(nonce(1 if last else 0), piece, h_fixed)
        except InvalidTag:
            if last and count == width:
                try:
                    aead.decrypt(nonce(0), piece, h_fixed)
                except InvalidTag:
                    pass
                else:
                    raise StreamError("truncated", "cut at a chunk boundary") from None
            raise StreamError("tampered", f"chunk {index} does not verify") from None
        # step 10
        if last and index > 0 and not plain:
            raise StreamError("tampered", "empty final chunk after data")
        # step 11
        payload += plain
        if last:
            return bytes(payload)
        pos += width
        index += 1


def decrypt(stream: bytes, keys: dict[str, bytes]) -> bytes:
    """The original data: the payload, decompressed when ``compression_id`` is 1 (§7)."""
    payload = decrypt_payload(stream, keys)
    fields, _ = _header(stream)
    if fields.compression_id == 0:
        return payload
    if payload[:4] != b"\x28\xb5\x2f\xfd":
        raise StreamError("tampered", "payload is not a zstd frame")
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        data = decompressor.decompress(payload)
    except zstandard.ZstdError as error:
        raise StreamError("tampered", f"zstd: {error}") from None
    if not decompressor.eof or decompressor.unused_data:
        raise StreamError("tampered", "payload is not exactly one complete zstd frame")
    return data
