"""The siprec-backup encrypted stream format, version 1 (specified byte by byte in docs/FORMAT.md).

What: master keys and keyrings, the stream header, and the two streaming primitives: an
:class:`EncryptingWriter` that turns payload bytes into a header plus chunked AES-256-GCM, and a
:class:`DecryptingReader` that releases payload bytes only after their chunk's tag verifies.

Why this shape: every object gets its own random data key (wrapped by a master key), so rotating a
master key rewrites the header only; the fixed header is bound to the key wrap, the chunk key and
every chunk, and each chunk nonce carries its index and a last-chunk flag, so tampering,
reordering, duplication and truncation are all detected (Tink streaming AEAD, age's STREAM).

Memory is bounded by about two chunks whatever the stream size: buffers are allocated once and
reused (``encrypt_into``/``decrypt_into``), nothing reads a whole stream.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import BinaryIO, NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from siprec_backup.errors import ConfigurationError, TamperedError, TruncatedError, WrongKeyError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "Compression",
    "DecryptingReader",
    "EncryptingWriter",
    "Header",
    "Keyring",
    "MasterKey",
    "read_header",
]

MAGIC = b"SIPRECBK"
FORMAT_VERSION = 1
CIPHER_AES_256_GCM = 1
KDF_HKDF_SHA256 = 1

DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 16 << 20

KEY_SIZE = 32
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
WRAP_NONCE_SIZE = 12
TAG_SIZE = 16
WRAPPED_DK_SIZE = KEY_SIZE + TAG_SIZE
MAX_CHUNKS = 1 << 32  # chunk indexes 0 .. 2**32 - 1

WRAP_AAD_LABEL = b"SIPRECBK wrap v1"
CHUNK_KEY_INFO_LABEL = b"SIPRECBK chunk key v1"

# magic, version, cipher_id, compression_id, kdf_id, chunk_size, salt, nonce_prefix
_FIXED = struct.Struct(f">8sBBBBI{SALT_SIZE}s{NONCE_PREFIX_SIZE}s")
FIXED_HEADER_SIZE = _FIXED.size  # 55
assert FIXED_HEADER_SIZE == 55


class Compression(enum.IntEnum):
    """How the payload inside the encrypted chunks is compressed (header byte 10)."""

    NONE = 0
    ZSTD = 1


# --------------------------------------------------------------------------------------------
# keys


@dataclass(frozen=True, eq=False)
class MasterKey:
    """A 32-byte master key and the id that names it in stream headers.

    The material never appears in ``repr``/``str``; equality compares in constant time.
    """

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str):
            raise ConfigurationError("master key id must be a string")
        try:
            encoded = self.key_id.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigurationError("master key id must be valid UTF-8 text") from None
        if not 1 <= len(encoded) <= 255:
            raise ConfigurationError(
                f"master key id must be 1 to 255 UTF-8 bytes, got {len(encoded)}"
            )
        material = self.material
        if isinstance(material, bytearray | memoryview):
            material = bytes(material)
            object.__setattr__(self, "material", material)
        if not isinstance(material, bytes):
            raise ConfigurationError(f"master key {self.key_id!r}: material must be bytes")
        if len(material) != KEY_SIZE:
            raise ConfigurationError(
                f"master key {self.key_id!r} must be {KEY_SIZE} bytes, got {len(material)}"
            )

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r}, material=<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return self.key_id == other.key_id and hmac.compare_digest(self.material, other.material)

    def __hash__(self) -> int:
        return hash(("MasterKey", self.key_id))

    @classmethod
    def from_text(cls, key_id: str, text: str) -> MasterKey:
        """Parse 64 hex characters or the base64 of 32 bytes; whitespace anywhere is ignored.

        The error message never repeats the text: it may be a (mistyped) secret.
        """
        compact = "".join(str(text).split())
        problem = ConfigurationError(
            f"master key {key_id!r}: expected 64 hex characters or the base64 of {KEY_SIZE} bytes"
        )
        material: bytes | None = None
        if len(compact) == 2 * KEY_SIZE and all(c in "0123456789abcdefABCDEF" for c in compact):
            material = bytes.fromhex(compact)
        else:
            padded = compact + "=" * (-len(compact) % 4)
            for altchars in (None, b"-_"):
                try:
                    decoded = base64.b64decode(padded, altchars=altchars, validate=True)
                except (binascii.Error, ValueError):
                    continue
                if len(decoded) == KEY_SIZE:
                    material = decoded
                    break
        if material is None:
            raise problem from None
        return cls(key_id, material)

    @classmethod
    def generate(cls, key_id: str) -> MasterKey:
        """A new random master key from the operating system's CSPRNG."""
        return cls(key_id, os.urandom(KEY_SIZE))


class Keyring:
    """The master keys a reader may use, looked up by the key id a header names."""

    def __init__(self, keys: Iterable[MasterKey]) -> None:
        self._keys: dict[str, MasterKey] = {}
        for key in keys:
            if not isinstance(key, MasterKey):
                raise ConfigurationError("a keyring holds MasterKey objects only")
            known = self._keys.get(key.key_id)
            if known is not None and known != key:
                raise ConfigurationError(
                    f"two different master keys share the key id {key.key_id!r}"
                )
            self._keys[key.key_id] = key

    def get(self, key_id: str) -> MasterKey:
        """The key named ``key_id``; :class:`WrongKeyError` naming it when absent."""
        key = self._keys.get(key_id)
        if key is None:
            available = ", ".join(repr(k) for k in sorted(self._keys)) or "none"
            raise WrongKeyError(
                f"this object is sealed with master key {key_id!r}, which is not in the "
                f"keyring (available: {available})"
            )
        return key

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={list(self._keys)!r})"


def _as_keyring(keys: Keyring | MasterKey) -> Keyring:
    if isinstance(keys, MasterKey):
        return Keyring([keys])
    if isinstance(keys, Keyring):
        return keys
    raise ConfigurationError("expected a Keyring or a MasterKey")


# --------------------------------------------------------------------------------------------
# header


@dataclass(frozen=True)
class Header:
    """A parsed stream header. ``fixed_bytes()`` is H_fixed, ``to_bytes()`` the whole header."""

    version: int
    cipher_id: int
    compression: Compression
    kdf_id: int
    chunk_size: int
    salt: bytes
    nonce_prefix: bytes
    key_id: str
    wrap_nonce: bytes
    wrapped_dk: bytes

    def __post_init__(self) -> None:
        for name, value, size in (
            ("salt", self.salt, SALT_SIZE),
            ("nonce_prefix", self.nonce_prefix, NONCE_PREFIX_SIZE),
            ("wrap_nonce", self.wrap_nonce, WRAP_NONCE_SIZE),
            ("wrapped_dk", self.wrapped_dk, WRAPPED_DK_SIZE),
        ):
            if not isinstance(value, bytes) or len(value) != size:
                raise ValueError(f"header {name} must be {size} bytes")
        if not 1 <= len(self.key_id.encode("utf-8")) <= 255:
            raise ValueError("header key id must be 1 to 255 UTF-8 bytes")
        if not 0 <= self.chunk_size < 1 << 32:
            raise ValueError("header chunk size must fit in 32 bits")

    def fixed_bytes(self) -> bytes:
        """H_fixed: the first 55 bytes, bound to the key wrap, the chunk key and every chunk."""
        return _FIXED.pack(
            MAGIC,
            self.version,
            self.cipher_id,
            int(self.compression),
            self.kdf_id,
            self.chunk_size,
            self.salt,
            self.nonce_prefix,
        )

    def key_id_bytes(self) -> bytes:
        """key_id_len || key_id, as on the wire."""
        encoded = self.key_id.encode("utf-8")
        return bytes((len(encoded),)) + encoded

    def to_bytes(self) -> bytes:
        """The whole header as written before the first chunk."""
        return self.fixed_bytes() + self.key_id_bytes() + self.wrap_nonce + self.wrapped_dk

    @property
    def size(self) -> int:
        """Header length in bytes: 116 + UTF-8 length of the key id."""
        return FIXED_HEADER_SIZE + 1 + len(self.key_id.encode("utf-8")) + 12 + WRAPPED_DK_SIZE


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _fill(source: BinaryIO | _Readable, view: memoryview) -> int:
    """Read into ``view`` until it is full or the source reports EOF; returns bytes read.

    Loops over short reads (pipes, sockets, raw files); uses ``readinto`` when the source has it.
    """
    total = 0
    wanted = len(view)
    readinto = getattr(source, "readinto", None)
    while total < wanted:
        if readinto is not None:
            got = readinto(view[total:])
            if got is None:
                raise BlockingIOError("non-blocking sources are not supported")
            if not got:
                break
            total += got
        else:
            data = source.read(wanted - total)
            if not data:
                break
            view[total : total + len(data)] = data
            total += len(data)
    return total


def _read_exact_or_truncated(source: BinaryIO, size: int, offset: int, total: str) -> bytes:
    buf = bytearray(size)
    got = _fill(source, memoryview(buf))
    if got < size:
        raise TruncatedError(
            f"stream ends inside the header (after {offset + got} bytes, header needs {total})"
        )
    return bytes(buf)


def read_header(source: BinaryIO) -> Header:
    """Read and check exactly one header from ``source``, leaving it at the first chunk.

    Raises :class:`TruncatedError` when the stream ends inside the header and
    :class:`TamperedError` for a bad magic, an unsupported version or an unknown id. The header's
    authenticity is only established when its data key unwraps (see :class:`DecryptingReader`).
    """
    magic_buf = bytearray(len(MAGIC))
    got = _fill(source, memoryview(magic_buf))
    if magic_buf[:got] != MAGIC[:got]:
        raise TamperedError("not a siprec-backup stream (bad magic)")
    if got < len(MAGIC):
        if got == 0:
            raise TruncatedError("stream is empty: no header")
        raise TruncatedError(f"stream ends inside the header (after {got} bytes)")
    (version,) = _read_exact_or_truncated(source, 1, 8, "more")
    if version != FORMAT_VERSION:
        raise TamperedError(
            f"unsupported format version {version} (this build reads version {FORMAT_VERSION})"
        )
    rest = _read_exact_or_truncated(source, FIXED_HEADER_SIZE - 9, 9, str(FIXED_HEADER_SIZE))
    fixed = MAGIC + bytes((version,)) + rest
    _, _, cipher_id, compression_id, kdf_id, chunk_size, salt, nonce_prefix = _FIXED.unpack(fixed)
    if cipher_id != CIPHER_AES_256_GCM:
        raise TamperedError(f"unknown cipher id {cipher_id}")
    try:
        compression = Compression(compression_id)
    except ValueError:
        raise TamperedError(f"unknown compression id {compression_id}") from None
    if kdf_id != KDF_HKDF_SHA256:
        raise TamperedError(f"unknown kdf id {kdf_id}")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise TamperedError(
            f"chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}"
        )
    (key_id_len,) = _read_exact_or_truncated(source, 1, FIXED_HEADER_SIZE, "more")
    if key_id_len == 0:
        raise TamperedError("header key id is empty")
    key_id_raw = _read_exact_or_truncated(source, key_id_len, FIXED_HEADER_SIZE + 1, "more")
    try:
        key_id = key_id_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TamperedError("header key id is not valid UTF-8") from None
    tail = _read_exact_or_truncated(
        source,
        WRAP_NONCE_SIZE + WRAPPED_DK_SIZE,
        FIXED_HEADER_SIZE + 1 + key_id_len,
        str(FIXED_HEADER_SIZE + 1 + key_id_len + WRAP_NONCE_SIZE + WRAPPED_DK_SIZE),
    )
    return Header(
        version=version,
        cipher_id=cipher_id,
        compression=compression,
        kdf_id=kdf_id,
        chunk_size=chunk_size,
        salt=salt,
        nonce_prefix=nonce_prefix,
        key_id=key_id,
        wrap_nonce=tail[:WRAP_NONCE_SIZE],
        wrapped_dk=tail[WRAP_NONCE_SIZE:],
    )


# --------------------------------------------------------------------------------------------
# key schedule


def _wrap_aad(header: Header) -> bytes:
    return WRAP_AAD_LABEL + header.fixed_bytes() + header.key_id_bytes()


def _wrap_data_key(header: Header, key: MasterKey, data_key: bytes) -> bytes:
    return AESGCM(key.material).encrypt(header.wrap_nonce, data_key, _wrap_aad(header))


def _unwrap_data_key(header: Header, keyring: Keyring) -> bytes:
    """The object's data key; :class:`WrongKeyError` when no key in ``keyring`` opens it."""
    key = keyring.get(header.key_id)
    try:
        return AESGCM(key.material).decrypt(header.wrap_nonce, header.wrapped_dk, _wrap_aad(header))
    except InvalidTag:
        raise WrongKeyError(
            f"master key {header.key_id!r} does not open this object: wrong key or tampered header"
        ) from None


def _rewrapped_header(
    header: Header, keyring: Keyring, new_key: MasterKey, wrap_nonce: bytes | None = None
) -> Header:
    """``header`` with its data key re-wrapped under ``new_key``; H_fixed is unchanged, so the
    chunk key and every chunk stay valid."""
    if not isinstance(new_key, MasterKey):
        raise ConfigurationError("rewrap needs a MasterKey as the new key")
    data_key = _unwrap_data_key(header, keyring)
    fresh = replace(
        header,
        key_id=new_key.key_id,
        wrap_nonce=os.urandom(WRAP_NONCE_SIZE) if wrap_nonce is None else wrap_nonce,
        wrapped_dk=bytes(WRAPPED_DK_SIZE),
    )
    return replace(fresh, wrapped_dk=_wrap_data_key(fresh, new_key, data_key))


def _chunk_key(header: Header, data_key: bytes) -> bytes:
    return HKDF(
        algorithm=SHA256(),
        length=KEY_SIZE,
        salt=header.salt,
        info=CHUNK_KEY_INFO_LABEL + header.fixed_bytes(),
    ).derive(data_key)


def _chunk_nonce(nonce_prefix: bytes, index: int, last: bool) -> bytes:
    return nonce_prefix + struct.pack(">IB", index, 1 if last else 0)


class _Randomness(NamedTuple):
    """The random values of one stream; injected only by the test-vector hook."""

    data_key: bytes
    salt: bytes
    nonce_prefix: bytes
    wrap_nonce: bytes

    @classmethod
    def fresh(cls) -> _Randomness:
        return cls(
            os.urandom(KEY_SIZE),
            os.urandom(SALT_SIZE),
            os.urandom(NONCE_PREFIX_SIZE),
            os.urandom(WRAP_NONCE_SIZE),
        )


def _check_chunk_size(chunk_size: int) -> None:
    if (
        not isinstance(chunk_size, int)
        or isinstance(chunk_size, bool)
        or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
    ):
        raise ConfigurationError(
            f"chunk_size must be an integer in {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}, "
            f"got {chunk_size!r}"
        )


# --------------------------------------------------------------------------------------------
# writer


class EncryptingWriter:
    """A write-only file-like sink for payload bytes (already compressed when ``compression`` says
    so) that writes the header at once and then chunked AES-256-GCM to ``sink``.

    The writer holds back one full chunk until it knows whether more data follows, so the final
    chunk is always flagged as final. :meth:`close` emits it and does not close ``sink``. Leaving a
    ``with`` block by an exception does NOT emit the final chunk: the partial stream stays
    detectably truncated. ``sink.write`` must write everything it is given (file semantics) and
    must not keep a reference to the buffer after returning (buffers are reused).
    """

    bytes_out: int
    header: Header

    def __init__(
        self,
        sink: BinaryIO,
        key: MasterKey,
        *,
        compression: Compression,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self._setup(sink, key, compression, chunk_size, _Randomness.fresh())

    @classmethod
    def _with_randomness(
        cls,
        sink: BinaryIO,
        key: MasterKey,
        *,
        compression: Compression,
        chunk_size: int,
        randomness: _Randomness,
    ) -> EncryptingWriter:
        """Deterministic constructor for test vectors only: never reuse random values."""
        writer = cls.__new__(cls)
        writer._setup(sink, key, compression, chunk_size, randomness)
        return writer

    def _setup(
        self,
        sink: BinaryIO,
        key: MasterKey,
        compression: Compression,
        chunk_size: int,
        randomness: _Randomness,
    ) -> None:
        if not isinstance(key, MasterKey):
            raise ConfigurationError("EncryptingWriter needs a MasterKey")
        _check_chunk_size(chunk_size)
        try:
            compression = Compression(compression)
        except ValueError:
            raise ConfigurationError(f"unknown compression {compression!r}") from None
        if len(randomness.data_key) != KEY_SIZE:
            raise ValueError("data key must be 32 bytes")
        unwrapped = Header(
            version=FORMAT_VERSION,
            cipher_id=CIPHER_AES_256_GCM,
            compression=compression,
            kdf_id=KDF_HKDF_SHA256,
            chunk_size=chunk_size,
            salt=randomness.salt,
            nonce_prefix=randomness.nonce_prefix,
            key_id=key.key_id,
            wrap_nonce=randomness.wrap_nonce,
            wrapped_dk=bytes(WRAPPED_DK_SIZE),
        )
        wrapped = _wrap_data_key(unwrapped, key, randomness.data_key)
        self.header = replace(unwrapped, wrapped_dk=wrapped)
        self._sink = sink
        self._chunk_size = chunk_size
        self._aead = AESGCM(_chunk_key(self.header, randomness.data_key))
        self._aad = self.header.fixed_bytes()
        self._prefix = self.header.nonce_prefix
        self._index = 0
        self._buf = bytearray(chunk_size)
        self._buf_view = memoryview(self._buf)
        self._filled = 0
        self._out = bytearray(chunk_size + TAG_SIZE)
        self._out_view = memoryview(self._out)
        self._closed = False
        self._aborted = False
        header_bytes = self.header.to_bytes()
        sink.write(header_bytes)
        self.bytes_out = len(header_bytes)

    def _emit(self, plaintext: memoryview, last: bool) -> None:
        if self._index >= MAX_CHUNKS:
            self._aborted = True
            raise ConfigurationError(
                "stream too long: more than 2**32 chunks; use a larger chunk_size"
            )
        out = self._out_view[: len(plaintext) + TAG_SIZE]
        try:
            self._aead.encrypt_into(
                _chunk_nonce(self._prefix, self._index, last), plaintext, self._aad, out
            )
            self._sink.write(out)
        except BaseException:
            # the sink may hold part of a chunk: never let this stream end with a final chunk
            self._aborted = True
            raise
        self.bytes_out += len(out)
        self._index += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer and encrypt ``data``; returns ``len(data)``. Full chunks are written as soon
        as it is known that more data follows them."""
        if self._closed or self._aborted:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        size = len(view)
        pos = 0
        chunk = self._chunk_size
        while pos < size:
            if self._filled == chunk:
                # more data follows the buffered chunk: it is not the final one
                self._emit(self._buf_view, last=False)
                self._filled = 0
            if self._filled == 0:
                # fast path: encrypt straight from the caller's buffer while more data follows
                while size - pos > chunk:
                    self._emit(view[pos : pos + chunk], last=False)
                    pos += chunk
            take = min(chunk - self._filled, size - pos)
            self._buf_view[self._filled : self._filled + take] = view[pos : pos + take]
            self._filled += take
            pos += take
        return size

    def flush(self) -> None:
        """No-op: a chunk can only be written once it is full or final."""

    def close(self) -> None:
        """Emit the final chunk (empty only if nothing was written). Idempotent; keeps sink open."""
        if self._closed:
            return
        if self._aborted:
            raise ValueError("cannot close an aborted EncryptingWriter")
        self._emit(self._buf_view[: self._filled], last=True)
        self._filled = 0
        self._closed = True

    def abort(self) -> None:
        """Give up: no final chunk will ever be written, so readers see a truncated stream."""
        self._aborted = True

    @property
    def closed(self) -> bool:
        return self._closed or self._aborted

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def __enter__(self) -> EncryptingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# --------------------------------------------------------------------------------------------
# reader


class DecryptingReader:
    """A read-only file-like view of the verified payload of a stream.

    The constructor reads the header and unwraps the data key (:class:`WrongKeyError` early).
    ``read`` returns payload bytes (still zstd-compressed when ``header.compression`` is ZSTD),
    each chunk's bytes only after its tag verified, and raises :class:`TamperedError` or
    :class:`TruncatedError` where the stream goes wrong. EOF (``b""``) is returned only after a
    valid final chunk followed by the end of the source.
    """

    header: Header

    def __init__(self, source: BinaryIO, keyring: Keyring | MasterKey) -> None:
        self._source = source
        self.header = read_header(source)
        data_key = _unwrap_data_key(self.header, _as_keyring(keyring))
        self._aead = AESGCM(_chunk_key(self.header, data_key))
        self._aad = self.header.fixed_bytes()
        self._prefix = self.header.nonce_prefix
        chunk = self.header.chunk_size
        self._wire = chunk + TAG_SIZE
        # one wire chunk plus the one byte peeked to learn whether it is the final chunk
        self._in = bytearray(self._wire + 1)
        self._in_view = memoryview(self._in)
        self._carry = False
        self._out = bytearray(chunk)
        self._out_view = memoryview(self._out)
        self._index = 0
        self._done = False
        self._closed = False
        self._error: BaseException | None = None
        self._pending = memoryview(b"")
        self._chunks = self._verified_chunks()

    def _fail(self, error: TamperedError | TruncatedError) -> TamperedError | TruncatedError:
        self._error = error
        return error

    def _open(self, chunk: memoryview, index: int, last: bool) -> memoryview | None:
        out = self._out_view[: len(chunk) - TAG_SIZE]
        try:
            self._aead.decrypt_into(_chunk_nonce(self._prefix, index, last), chunk, self._aad, out)
        except InvalidTag:
            return None
        return out

    def _verified_chunks(self) -> Iterator[memoryview]:
        """Yield each chunk's verified plaintext as a view into a reused buffer (valid until the
        next iteration)."""
        wire = self._wire
        while not self._done:
            index = self._index
            start = 1 if self._carry else 0
            got = start + _fill(self._source, self._in_view[start:])
            if got < TAG_SIZE:
                if index == 0 and got == 0:
                    raise self._fail(TruncatedError("stream has a header but no chunks"))
                raise self._fail(
                    TruncatedError(f"stream ends inside chunk {index} ({got} bytes, tag is 16)")
                )
            if index >= MAX_CHUNKS:
                raise self._fail(TamperedError("stream has more than 2**32 chunks"))
            last = got <= wire
            chunk = self._in_view[: min(got, wire)]
            plain = self._open(chunk, index, last)
            if plain is None:
                raise self._fail(self._chunk_error(chunk, index, last, got))
            if last and index > 0 and len(plain) == 0:
                raise self._fail(
                    TamperedError(f"final chunk {index} is empty: not written by this format")
                )
            if last:
                self._done = True
            else:
                self._in[0] = self._in[wire]
                self._carry = True
            self._index = index + 1
            yield plain

    def _chunk_error(
        self, chunk: memoryview, index: int, last: bool, got: int
    ) -> TamperedError | TruncatedError:
        if last and got == self._wire and self._open(chunk, index, last=False) is not None:
            return TruncatedError(
                f"stream ends after chunk {index}, which is not the final chunk "
                "(cut at a chunk boundary)"
            )
        if not last and self._open(chunk, index, last=True) is not None:
            return TamperedError(f"unexpected data after the final chunk {index}")
        return TamperedError(
            f"chunk {index} does not verify (modified, reordered, duplicated or truncated)"
        )

    def _next_chunk(self) -> memoryview | None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ValueError("read from a closed DecryptingReader")
        try:
            return next(self._chunks, None)
        except BaseException as error:
            # a generator that raised is finished: remember why, so later reads cannot see EOF
            self._error = error
            raise

    def read(self, n: int | None = -1) -> bytes:
        """Up to ``n`` verified payload bytes (all remaining when ``n`` is -1 or None; that is
        unbounded, so stream with a positive ``n`` instead)."""
        if n is None or n < 0:
            parts = bytearray(self._pending)
            self._pending = memoryview(b"")
            while (plain := self._next_chunk()) is not None:
                parts += plain
            return bytes(parts)
        if n == 0:
            return b""
        while not self._pending:
            plain = self._next_chunk()
            if plain is None:
                return b""
            self._pending = plain
        out = bytes(self._pending[:n])
        self._pending = self._pending[len(out) :]
        return out

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Like :meth:`read`, into ``buffer``; returns the count (0 at EOF)."""
        view = memoryview(buffer).cast("B")
        while not self._pending:
            plain = self._next_chunk()
            if plain is None:
                return 0
            self._pending = plain
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        """Stop reading; does not close the source."""
        self._closed = True
        self._pending = memoryview(b"")

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
