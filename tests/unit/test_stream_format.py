"""Stream format v1: round trips, every tampering case with its exact error, keys, rewrap.

Pure and fast: in-memory streams, small chunks (1024 bytes) so a few KB make many chunks.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import struct
from collections.abc import Callable

import pytest
import zstandard

from siprec_backup.errors import (
    ConfigurationError,
    IntegrityError,
    TamperedError,
    TruncatedError,
    WrongKeyError,
)
from siprec_backup.stream import (
    DEFAULT_CHUNK_SIZE,
    Compression,
    DecryptingReader,
    EncryptingWriter,
    Header,
    Keyring,
    MasterKey,
    StreamStats,
    read_header,
    rewrap,
    seal,
    unseal,
)
from siprec_backup.stream.format import _chunk_nonce, _Randomness
from siprec_backup.stream.pipeline import _ZstdFrameWalker

C = 1024
W = C + 16
KEY = MasterKey("k1", bytes(range(32)))
OTHER = MasterKey("k2", bytes(range(32, 64)))


def _data(size: int, seed: int = 0) -> bytes:
    """Half text-like (compressible), half random bytes."""
    rng = random.Random(seed)
    text = b"".join(
        b"call-%d,sip:agent%d@pbx.example,%ds\n" % (i, i % 9, rng.randint(1, 999))
        for i in range(size // 20 + 1)
    )
    noise = rng.randbytes(size)
    return bytes(text[: size // 2] + noise[: size - size // 2])


def _seal(data: bytes, compression: Compression = Compression.NONE, chunk_size: int = C) -> bytes:
    sink = io.BytesIO()
    seal(io.BytesIO(data), sink, KEY, compression=compression, chunk_size=chunk_size)
    return sink.getvalue()


def _unseal(stream: bytes, keys: Keyring | MasterKey = KEY, decompress: bool = True) -> bytes:
    sink = io.BytesIO()
    unseal(io.BytesIO(stream), sink, keys, decompress=decompress)
    return sink.getvalue()


def _header_size(stream: bytes) -> int:
    return read_header(io.BytesIO(stream)).size


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("size", [0, 1, C - 1, C, 3 * C, 3 * C + 1, 50_000])
def test_round_trip(compression: Compression, size: int) -> None:
    data = _data(size)
    sink = io.BytesIO()
    sealed = seal(io.BytesIO(data), sink, KEY, compression=compression, chunk_size=C)
    stream = sink.getvalue()
    out = io.BytesIO()
    opened = unseal(io.BytesIO(stream), out, KEY)
    assert out.getvalue() == data
    digest = hashlib.sha256(data).hexdigest()
    assert sealed.plaintext_bytes == opened.plaintext_bytes == size
    assert sealed.plaintext_sha256 == opened.plaintext_sha256 == digest
    assert sealed.ciphertext_bytes == opened.ciphertext_bytes == len(stream)
    assert (
        sealed.ciphertext_sha256 == opened.ciphertext_sha256 == hashlib.sha256(stream).hexdigest()
    )


@pytest.mark.parametrize("size", [0, 1, C - 1, C, C + 1, 2 * C, 3 * C, 3 * C + 1])
def test_chunk_framing_matches_the_spec(size: int) -> None:
    """Non-final chunks are full; the final chunk is empty only for an empty payload."""
    stream = _seal(bytes(size))
    count = max(1, -(-size // C))
    assert len(stream) == 116 + len(b"k1") + size + 16 * count
    header = read_header(io.BytesIO(stream))
    assert header.chunk_size == C
    final_plain = size - C * (count - 1)
    assert 0 <= final_plain <= C
    assert final_plain > 0 or size == 0


@pytest.mark.parametrize("compression", list(Compression))
def test_round_trip_few_megabytes_default_chunk(compression: Compression) -> None:
    data = _data(3_000_000, seed=7)
    stream = _seal(data, compression, DEFAULT_CHUNK_SIZE)
    assert _unseal(stream) == data
    assert read_header(io.BytesIO(stream)).compression is compression


def test_compression_shrinks_text() -> None:
    data = b"INVITE sip:alice@example.com SIP/2.0\r\n" * 10_000
    assert len(_seal(data, Compression.ZSTD)) < len(data) // 20


def test_decompress_false_returns_the_zstd_frame() -> None:
    data = _data(20_000)
    stream = _seal(data, Compression.ZSTD)
    sink = io.BytesIO()
    stats = unseal(io.BytesIO(stream), sink, KEY, decompress=False)
    frame = sink.getvalue()
    assert stats.plaintext_bytes == len(frame)
    assert stats.plaintext_sha256 == hashlib.sha256(frame).hexdigest()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == data


def test_seal_with_single_threaded_zstd() -> None:
    data = _data(40_000)
    sink = io.BytesIO()
    seal(io.BytesIO(data), sink, KEY, chunk_size=C, threads=0, level=1)
    assert _unseal(sink.getvalue()) == data


class _Trickle:
    """A source or sink that moves at most a few bytes per call and has no readinto."""

    def __init__(self, data: bytes = b"") -> None:
        self._data = memoryview(data)
        self.written = bytearray()

    def read(self, size: int = -1) -> bytes:
        step = random.randint(1, 7)
        out = bytes(self._data[: min(step, size if size >= 0 else step)])
        self._data = self._data[len(out) :]
        return out

    def write(self, data: bytes) -> int:
        self.written += data
        return len(data)


def test_short_reads_and_read_only_sources() -> None:
    data = _data(5 * C + 3)
    sealed = _Trickle()
    seal(_Trickle(data), sealed, KEY, compression=Compression.ZSTD, chunk_size=C)  # type: ignore[arg-type]
    out = _Trickle()
    unseal(_Trickle(bytes(sealed.written)), out, KEY)  # type: ignore[arg-type]
    assert bytes(out.written) == data


def test_encrypting_writer_any_write_pattern_gives_the_same_payload() -> None:
    data = _data(7 * C + 100)
    for sizes in ([1], [C], [C + 1], [3 * C], [len(data)], [5, 2000, 17]):
        sink = io.BytesIO()
        with EncryptingWriter(sink, KEY, compression=Compression.NONE, chunk_size=C) as writer:
            pos = 0
            i = 0
            while pos < len(data):
                step = sizes[i % len(sizes)]
                assert writer.write(memoryview(data)[pos : pos + step]) == len(
                    data[pos : pos + step]
                )
                pos += step
                i += 1
        assert writer.bytes_out == len(sink.getvalue()) == 118 + len(data) + 16 * 8
        assert _unseal(sink.getvalue()) == data


def test_writer_close_keeps_sink_open_and_is_idempotent() -> None:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, KEY, compression=Compression.NONE)
    assert len(sink.getvalue()) == writer.bytes_out == 118  # header written at once
    writer.write(b"abc")
    writer.close()
    writer.close()
    assert not sink.closed
    with pytest.raises(ValueError):
        writer.write(b"more")
    assert _unseal(sink.getvalue()) == b"abc"


def test_reader_read_sizes_and_readinto() -> None:
    data = _data(4 * C + 5)
    stream = _seal(data)
    reader = DecryptingReader(io.BytesIO(stream), Keyring([OTHER, KEY]))
    assert reader.header.key_id == "k1"
    parts = [reader.read(0), reader.read(1), reader.read(C + 3)]
    buf = bytearray(500)
    got = reader.readinto(buf)
    parts.append(bytes(buf[:got]))
    parts.append(reader.read())
    assert b"".join(parts) == data
    assert reader.read(10) == b""
    assert reader.read() == b""


# ---------------------------------------------------------------------------------------------
# tampering: each case its own test, with the exact error class


DATA = _data(3 * C + 428, seed=3)  # four chunks: 3 full, the final one with 428 bytes


@pytest.fixture
def stream() -> bytes:
    return _seal(DATA)


def _chunks(stream: bytes) -> tuple[bytes, list[bytes]]:
    size = _header_size(stream)
    body = stream[size:]
    return stream[:size], [body[i : i + W] for i in range(0, len(body), W)]


def _expect(error: type[IntegrityError], stream: bytes, match: str | None = None) -> None:
    with pytest.raises(error, match=match) as caught:
        _unseal(stream)
    assert type(caught.value) is error


def test_flipped_bit_in_middle_chunk(stream: bytes) -> None:
    tampered = bytearray(stream)
    tampered[_header_size(stream) + W + 100] ^= 0x10
    _expect(TamperedError, bytes(tampered), "chunk 1 does not verify")


def test_flipped_bit_in_tag(stream: bytes) -> None:
    tampered = bytearray(stream)
    tampered[_header_size(stream) + 2 * W - 1] ^= 0x01
    _expect(TamperedError, bytes(tampered))


def test_truncated_inside_a_chunk(stream: bytes) -> None:
    _expect(TamperedError, stream[: _header_size(stream) + 2 * W + 500])


def test_truncated_inside_a_chunk_before_the_tag_fits(stream: bytes) -> None:
    _expect(TruncatedError, stream[: _header_size(stream) + 2 * W + 10])


def test_truncated_exactly_at_a_chunk_boundary(stream: bytes) -> None:
    _expect(TruncatedError, stream[: _header_size(stream) + 2 * W], "chunk boundary")


def test_final_chunk_removed(stream: bytes) -> None:
    header, chunks = _chunks(stream)
    _expect(TruncatedError, header + b"".join(chunks[:-1]))


def test_final_chunk_removed_when_payload_is_a_multiple_of_chunk_size() -> None:
    header, chunks = _chunks(_seal(_data(3 * C)))
    assert len(chunks) == 3
    _expect(TruncatedError, header + b"".join(chunks[:-1]))


@pytest.mark.parametrize("cut", [1, 5, 8, 9, 30, 55, 56, 57, 70, 117])
def test_truncated_inside_the_header(stream: bytes, cut: int) -> None:
    _expect(TruncatedError, stream[:cut], "header")


def test_empty_stream() -> None:
    _expect(TruncatedError, b"")


def test_header_without_chunks(stream: bytes) -> None:
    _expect(TruncatedError, stream[: _header_size(stream)], "no chunks")


def test_chunks_swapped(stream: bytes) -> None:
    header, chunks = _chunks(stream)
    chunks[0], chunks[1] = chunks[1], chunks[0]
    _expect(TamperedError, header + b"".join(chunks), "chunk 0")


def test_chunk_duplicated(stream: bytes) -> None:
    header, chunks = _chunks(stream)
    _expect(TamperedError, header + b"".join([chunks[0], chunks[1], chunks[1], *chunks[2:]]))


def test_final_chunk_moved_earlier(stream: bytes) -> None:
    header, chunks = _chunks(stream)
    _expect(TamperedError, header + chunks[0] + chunks[3])


def test_bytes_appended_after_the_final_chunk(stream: bytes) -> None:
    _expect(TamperedError, stream + b"\x00")


def test_bytes_appended_after_a_full_final_chunk() -> None:
    _expect(TamperedError, _seal(_data(2 * C)) + b"extra", "after the final chunk")


def test_a_second_stream_appended() -> None:
    _expect(TamperedError, _seal(_data(2 * C)) + _seal(b"x"))


def test_chunks_from_another_object_are_rejected(stream: bytes) -> None:
    header, _ = _chunks(stream)
    _, foreign = _chunks(_seal(DATA))  # same key, same plaintext, another data key
    _expect(TamperedError, header + b"".join(foreign))


def test_empty_final_chunk_after_data_is_rejected() -> None:
    randomness = _Randomness(bytes(32), bytes(32), bytes(7), bytes(12))
    sink = io.BytesIO()
    writer = EncryptingWriter._with_randomness(
        sink, KEY, compression=Compression.NONE, chunk_size=C, randomness=randomness
    )
    header = writer.header
    aead = writer._aead
    forged = header.to_bytes()
    forged += aead.encrypt(
        _chunk_nonce(header.nonce_prefix, 0, False), bytes(C), header.fixed_bytes()
    )
    forged += aead.encrypt(_chunk_nonce(header.nonce_prefix, 1, True), b"", header.fixed_bytes())
    _expect(TamperedError, forged, "empty")


def _patch(stream: bytes, offset: int, value: bytes) -> bytes:
    return stream[:offset] + value + stream[offset + len(value) :]


def test_header_magic_altered(stream: bytes) -> None:
    _expect(TamperedError, _patch(stream, 0, b"X"), r"not a siprec-backup stream \(bad magic\)")


def test_header_version_altered(stream: bytes) -> None:
    _expect(TamperedError, _patch(stream, 8, b"\x07"), "unsupported format version 7")


def test_header_cipher_id_altered(stream: bytes) -> None:
    _expect(TamperedError, _patch(stream, 9, b"\x02"), "unknown cipher id 2")


def test_header_compression_id_altered_to_other_valid_id(stream: bytes) -> None:
    _expect(WrongKeyError, _patch(stream, 10, b"\x01"), "wrong key or tampered header")


def test_header_compression_id_altered_to_unknown_id(stream: bytes) -> None:
    _expect(TamperedError, _patch(stream, 10, b"\x09"), "unknown compression id 9")


def test_header_kdf_id_altered(stream: bytes) -> None:
    _expect(TamperedError, _patch(stream, 11, b"\x00"), "unknown kdf id 0")


def test_header_chunk_size_altered(stream: bytes) -> None:
    _expect(WrongKeyError, _patch(stream, 12, struct.pack(">I", 2048)))


def test_header_chunk_size_out_of_range(stream: bytes) -> None:
    _expect(TamperedError, _patch(stream, 12, struct.pack(">I", 512)), "chunk size 512")


def test_header_salt_altered(stream: bytes) -> None:
    _expect(WrongKeyError, _patch(stream, 16, bytes([stream[16] ^ 1])))


def test_header_nonce_prefix_altered(stream: bytes) -> None:
    _expect(WrongKeyError, _patch(stream, 50, bytes([stream[50] ^ 1])))


def test_header_key_id_altered_to_another_known_key(stream: bytes) -> None:
    with pytest.raises(WrongKeyError, match="'k2' does not open this object"):
        _unseal(_patch(stream, 56, b"k2"), Keyring([KEY, OTHER]))


def test_header_key_id_altered_to_unknown_key(stream: bytes) -> None:
    _expect(WrongKeyError, _patch(stream, 56, b"k9"), "'k9'")


def test_header_key_id_len_altered(stream: bytes) -> None:
    _expect(TamperedError, _patch(stream, 55, b"\x00"), "key id is empty")


def test_header_wrap_nonce_altered(stream: bytes) -> None:
    _expect(WrongKeyError, _patch(stream, 58, bytes([stream[58] ^ 1])))


def test_header_wrapped_key_altered(stream: bytes) -> None:
    _expect(WrongKeyError, _patch(stream, 100, bytes([stream[100] ^ 1])))


def test_wrong_master_key(stream: bytes) -> None:
    impostor = MasterKey("k1", os.urandom(32))
    with pytest.raises(
        WrongKeyError,
        match=r"master key 'k1' does not open this object: wrong key or tampered header",
    ):
        _unseal(stream, impostor)


def test_unknown_key_id(stream: bytes) -> None:
    with pytest.raises(WrongKeyError, match="'k1'") as caught:
        _unseal(stream, OTHER)
    assert "k2" in str(caught.value)  # lists what the keyring has


def test_not_a_stream() -> None:
    _expect(TamperedError, b"PK\x03\x04" + bytes(200), "bad magic")


# ---------------------------------------------------------------------------------------------
# no plaintext before verification


def test_corrupted_first_chunk_releases_nothing(stream: bytes) -> None:
    tampered = bytearray(stream)
    tampered[_header_size(stream) + W - 1] ^= 0x80  # last tag byte of chunk 0
    reader = DecryptingReader(io.BytesIO(bytes(tampered)), KEY)
    with pytest.raises(TamperedError):
        reader.read(1)
    with pytest.raises(TamperedError):  # an error is sticky: never a silent EOF
        reader.read(1)
    sink = io.BytesIO()
    with pytest.raises(TamperedError):
        unseal(io.BytesIO(bytes(tampered)), sink, KEY)
    assert sink.getvalue() == b""


def test_only_verified_chunks_reach_the_sink(stream: bytes) -> None:
    tampered = bytearray(stream)
    tampered[_header_size(stream) + 2 * W + 3] ^= 0x01  # chunk 2
    sink = io.BytesIO()
    with pytest.raises(TamperedError):
        unseal(io.BytesIO(bytes(tampered)), sink, KEY)
    assert sink.getvalue() == DATA[: 2 * C]


def test_truncated_stream_never_reads_as_eof(stream: bytes) -> None:
    reader = DecryptingReader(io.BytesIO(stream[: _header_size(stream) + 2 * W]), KEY)
    assert reader.read(C) == DATA[:C]
    with pytest.raises(TruncatedError):
        reader.read()
    with pytest.raises(TruncatedError):
        reader.read(1)


# ---------------------------------------------------------------------------------------------
# compressed payload checks


def _sealed_payload(payload: bytes) -> bytes:
    sink = io.BytesIO()
    with EncryptingWriter(sink, KEY, compression=Compression.ZSTD, chunk_size=C) as writer:
        writer.write(payload)
    return sink.getvalue()


def _frame(data: bytes, write_checksum: bool = False, write_content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(
        level=3, write_checksum=write_checksum, write_content_size=write_content_size
    ).compress(data)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not zstd at all",
        _frame(_data(5000))[:-3],
        _frame(b"one") + _frame(b"two"),
        _frame(b"one") + b"\x00",
    ],
    ids=["empty", "garbage", "cut-frame", "two-frames", "trailing-byte"],
)
def test_invalid_zstd_payloads_are_tampered(payload: bytes) -> None:
    stream = _sealed_payload(payload)
    _expect(TamperedError, stream, "compressed payload")
    assert _unseal(stream, decompress=False) == payload  # the encryption layer itself is fine


@pytest.mark.parametrize(
    "options",
    [{}, {"write_checksum": True}, {"write_content_size": False}, {"write_checksum": False}],
)
def test_any_single_zstd_frame_is_accepted(options: dict[str, bool]) -> None:
    data = _data(9000) + bytes(300_000)
    frame = _frame(data, **options)
    assert _unseal(_sealed_payload(frame)) == data


def test_frame_walker_finds_the_exact_end_byte_by_byte() -> None:
    for frame in (_frame(b""), _frame(_data(3000), write_checksum=True), _frame(bytes(10**6))):
        walker = _ZstdFrameWalker()
        for i in range(len(frame)):
            assert not walker.done
            assert walker.feed(memoryview(frame)[i : i + 1]) == 1
        assert walker.done
        assert walker.feed(memoryview(b"x")) == 0


def test_highly_compressible_payload_round_trips() -> None:
    data = bytes(20 << 20)
    stream = _seal(data, Compression.ZSTD, DEFAULT_CHUNK_SIZE)
    assert len(stream) < 10_000
    sink = io.BytesIO()
    stats = unseal(io.BytesIO(stream), sink, KEY)
    assert stats.plaintext_bytes == len(data) and sink.getvalue() == data


# ---------------------------------------------------------------------------------------------
# writer failures never produce a valid stream


def test_exception_inside_writer_block_leaves_a_truncated_stream() -> None:
    sink = io.BytesIO()
    with (
        pytest.raises(RuntimeError),
        EncryptingWriter(sink, KEY, compression=Compression.NONE, chunk_size=C) as writer,
    ):
        writer.write(_data(3 * C))
        raise RuntimeError("source died")
    _expect(TruncatedError, sink.getvalue())


class _FailingSource:
    def __init__(self, good: bytes) -> None:
        self._good = io.BytesIO(good)

    def read(self, size: int = -1) -> bytes:
        data = self._good.read(size)
        if not data:
            raise OSError("pg_dump died")
        return data


@pytest.mark.parametrize("compression", list(Compression))
def test_seal_failure_leaves_no_final_chunk(compression: Compression) -> None:
    sink = io.BytesIO()
    with pytest.raises(OSError, match="pg_dump died"):
        seal(_FailingSource(_data(5 * C)), sink, KEY, compression=compression, chunk_size=C)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        _unseal(sink.getvalue())


# ---------------------------------------------------------------------------------------------
# rewrap


@pytest.mark.parametrize("compression", list(Compression))
def test_rewrap_changes_only_the_envelope(compression: Compression) -> None:
    data = _data(5 * C + 11)
    old = _seal(data, compression)
    new_key = MasterKey("rotated-2025", os.urandom(32))
    sink = io.BytesIO()
    header = rewrap(io.BytesIO(old), sink, KEY, new_key)
    new = sink.getvalue()
    old_header = read_header(io.BytesIO(old))
    assert header == read_header(io.BytesIO(new))
    assert header.key_id == "rotated-2025"
    assert header.fixed_bytes() == old_header.fixed_bytes()
    assert header.wrap_nonce != old_header.wrap_nonce
    assert new[header.size :] == old[old_header.size :]  # chunks copied verbatim
    assert _unseal(new, new_key) == data
    with pytest.raises(WrongKeyError):
        _unseal(new, KEY)  # the old key alone no longer opens it
    with pytest.raises(WrongKeyError):
        _unseal(new, MasterKey("rotated-2025", KEY.material))
    assert _unseal(new, Keyring([KEY, new_key])) == data


def test_rewrap_with_the_wrong_key_writes_nothing(stream: bytes) -> None:
    sink = io.BytesIO()
    with pytest.raises(WrongKeyError):
        rewrap(io.BytesIO(stream), sink, MasterKey("k1", os.urandom(32)), OTHER)
    assert sink.getvalue() == b""


def test_rewrap_large_stream_in_blocks() -> None:
    data = _data(3_500_000)
    old = _seal(data, Compression.NONE, DEFAULT_CHUNK_SIZE)
    sink = io.BytesIO()
    rewrap(io.BytesIO(old), sink, KEY, OTHER)
    assert _unseal(sink.getvalue(), OTHER) == data


# ---------------------------------------------------------------------------------------------
# keys


def test_master_key_repr_never_shows_material() -> None:
    key = MasterKey.generate("prod-2025")
    for text in (repr(key), str(key), f"{key}", repr([key]), repr(Keyring([key]))):
        assert key.material.hex() not in text
        assert base64.b64encode(key.material).decode() not in text
        assert repr(key.material) not in text
    assert "prod-2025" in repr(key)


@pytest.mark.parametrize(
    "encode",
    [
        bytes.hex,
        lambda b: b.hex().upper(),
        lambda b: base64.b64encode(b).decode(),
        lambda b: base64.b64encode(b).decode().rstrip("="),
        lambda b: base64.urlsafe_b64encode(b).decode(),
        lambda b: "  " + b.hex()[:30] + "\n" + b.hex()[30:] + "\t\n",
    ],
    ids=["hex", "HEX", "base64", "base64-unpadded", "base64url", "hex-with-whitespace"],
)
def test_master_key_from_text(encode: Callable[[bytes], str]) -> None:
    material = os.urandom(32)
    assert MasterKey.from_text("k", encode(material)).material == material


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0" * 63,
        "g" * 64,
        "00" * 31,
        "00" * 33,
        base64.b64encode(b"s3cr3t-but-31-bytes-long-......").decode(),
        "correct horse battery staple",
    ],
)
def test_master_key_from_text_errors_never_echo_the_text(text: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MasterKey.from_text("k1", text)
    message = str(caught.value)
    assert "k1" in message
    compact = "".join(text.split())
    for i in range(0, max(0, len(compact) - 7)):
        assert compact[i : i + 8] not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("key_id", "material"),
    [("k", bytes(31)), ("k", bytes(33)), ("", bytes(32)), ("x" * 256, bytes(32))],
)
def test_master_key_validation(key_id: str, material: bytes) -> None:
    with pytest.raises(ConfigurationError):
        MasterKey(key_id, material)


def test_master_key_limits_and_equality() -> None:
    assert MasterKey("é" * 127, bytes(32)).key_id == "é" * 127  # 254 UTF-8 bytes
    with pytest.raises(ConfigurationError):
        MasterKey("é" * 128, bytes(32))
    assert MasterKey("a", bytearray(32)) == MasterKey("a", bytes(32))  # type: ignore[arg-type]
    assert MasterKey.generate("a") != MasterKey.generate("a")


def test_keyring() -> None:
    ring = Keyring([KEY, OTHER, KEY])
    assert ring.get("k2") is OTHER
    assert "k1" in ring and len(ring) == 2
    with pytest.raises(WrongKeyError, match="'nope'"):
        ring.get("nope")
    with pytest.raises(ConfigurationError, match="'k1'"):
        Keyring([KEY, MasterKey("k1", os.urandom(32))])


# ---------------------------------------------------------------------------------------------
# header and configuration


def test_read_header_leaves_source_at_first_chunk(stream: bytes) -> None:
    source = io.BytesIO(stream)
    header = read_header(source)
    assert isinstance(header, Header)
    assert source.tell() == header.size == 118
    assert header.to_bytes() == stream[:118]
    assert header.fixed_bytes() == stream[:55]
    assert (header.version, header.cipher_id, header.kdf_id) == (1, 1, 1)
    assert header.compression is Compression.NONE


@pytest.mark.parametrize("chunk_size", [1023, (16 << 20) + 1, 0, -1])
def test_chunk_size_limits(chunk_size: int) -> None:
    with pytest.raises(ConfigurationError):
        EncryptingWriter(io.BytesIO(), KEY, compression=Compression.NONE, chunk_size=chunk_size)


def test_chunk_size_bounds_are_accepted() -> None:
    for chunk_size in (1024, 16 << 20):
        assert _unseal(_seal(b"abc", chunk_size=chunk_size)) == b"abc"


@pytest.mark.parametrize("level", [0, 23, -5])
def test_bad_zstd_level(level: int) -> None:
    with pytest.raises(ConfigurationError):
        seal(io.BytesIO(b"x"), io.BytesIO(), KEY, level=level)


def test_stream_stats_is_frozen() -> None:
    stats = StreamStats(1, "a", 2, "b")
    with pytest.raises(AttributeError):
        stats.plaintext_bytes = 5  # type: ignore[misc]


class _BrokenSink(io.BytesIO):
    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self._left = fail_after

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._left -= 1
        if self._left < 0:
            raise OSError("disk full")
        return super().write(data)


def test_sink_failure_aborts_the_writer() -> None:
    sink = _BrokenSink(fail_after=2)  # the header and chunk 0 go through
    writer = EncryptingWriter(sink, KEY, compression=Compression.NONE, chunk_size=C)
    with pytest.raises(OSError, match="disk full"):
        writer.write(_data(4 * C))
    with pytest.raises(ValueError):
        writer.close()
    assert writer.closed
    _expect(TruncatedError, sink.getvalue())


def test_integrity_errors_cross_the_zstd_decoder_unchanged() -> None:
    stream = _seal(_data(6 * C), Compression.ZSTD)
    header, chunks = _chunks(stream)
    assert len(chunks) >= 3
    flipped = bytearray(stream)
    flipped[len(header) + W + 7] ^= 0x04
    _expect(TamperedError, bytes(flipped))
    _expect(TruncatedError, header + b"".join(chunks[:-1]))
    _expect(TamperedError, header + chunks[1] + chunks[0] + b"".join(chunks[2:]))
