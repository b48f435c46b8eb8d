"""A streaming scanner of Redis RDB files: counts the keys of every logical database while the
bytes pass by, without keeping values.

The RDB format (Redis ``rdb.h``/``rdb.c``, versions 1 to 11, i.e. up to Redis 7.2) is a header
``REDIS<4 digits>``, then opcodes (AUX fields, SELECTDB, RESIZEDB, expiry, LRU/LFU hints,
functions, module aux data) and key/value pairs, ended by EOF and an 8-byte checksum. Every value
is a sequence of length-prefixed strings, lengths and fixed-size fields, so a value is skipped by
reading its lengths and jumping over its strings: string payloads are never copied byte by byte.

:class:`RdbCounter` runs the scanner in a thread of its own: the producer hands it the chunks it
already has (``feed``), the thread pulls them from a small bounded queue, so memory stays at a
few chunks whatever the size of the file. The checksum is read but not verified (a CRC-64 in
Python would cost more than the whole backup); the restore's ``redis-server`` verifies it.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

from siprec_backup.errors import SourceError

log = logging.getLogger(__name__)

#: RDB format versions this scanner knows (Redis 2.x to 7.2).
MAX_RDB_VERSION = 11
MAGIC = b"REDIS"

# Opcodes (rdb.h).
OP_FUNCTION2 = 245
OP_FUNCTION_PRE_GA = 246
OP_MODULE_AUX = 247
OP_IDLE = 248
OP_FREQ = 249
OP_AUX = 250
OP_RESIZEDB = 251
OP_EXPIRETIME_MS = 252
OP_EXPIRETIME = 253
OP_SELECTDB = 254
OP_EOF = 255

# Value types (rdb.h).
T_STRING = 0
T_LIST = 1
T_SET = 2
T_ZSET = 3
T_HASH = 4
T_ZSET_2 = 5
T_MODULE = 6
T_MODULE_2 = 7
T_HASH_ZIPMAP = 9
T_LIST_ZIPLIST = 10
T_SET_INTSET = 11
T_ZSET_ZIPLIST = 12
T_HASH_ZIPLIST = 13
T_LIST_QUICKLIST = 14
T_STREAM_LISTPACKS = 15
T_HASH_LISTPACK = 16
T_ZSET_LISTPACK = 17
T_LIST_QUICKLIST_2 = 18
T_STREAM_LISTPACKS_2 = 19
T_SET_LISTPACK = 20
T_STREAM_LISTPACKS_3 = 21

#: Types whose whole value is one (encoded) string.
_BLOB_TYPES = frozenset(
    {
        T_STRING,
        T_HASH_ZIPMAP,
        T_LIST_ZIPLIST,
        T_SET_INTSET,
        T_ZSET_ZIPLIST,
        T_HASH_ZIPLIST,
        T_HASH_LISTPACK,
        T_ZSET_LISTPACK,
        T_SET_LISTPACK,
    }
)
#: Types that are a length N followed by N strings.
_STRING_LIST_TYPES = frozenset({T_LIST, T_SET, T_LIST_QUICKLIST})
_STREAM_TYPES = frozenset({T_STREAM_LISTPACKS, T_STREAM_LISTPACKS_2, T_STREAM_LISTPACKS_3})

#: AUX fields worth keeping in the manifest (short, informative).
_KEPT_AUX = frozenset({"redis-ver", "redis-bits", "ctime", "used-mem", "repl-id", "repl-offset"})

_ENC_LZF = 3
_MODULE_OPCODE_EOF, _SINT, _UINT, _FLOAT, _DOUBLE, _STRING = range(6)


class RdbFormatError(SourceError):
    """The bytes are not a valid RDB stream (bad magic, unknown version or type, truncated)."""


class _EndOfInputError(Exception):
    """Internal: the input ended before the scanner was done."""


@dataclass
class RdbSummary:
    """What a scan found: keys per logical database (``{"db0": n}``) and a few header facts."""

    rdb_version: int = 0
    keys: dict[str, int] = field(default_factory=dict)
    aux: dict[str, str] = field(default_factory=dict)
    module_keys: int = 0
    functions: int = 0
    bytes_scanned: int = 0


class _Input:
    """Pulls chunks from a queue and hands out exact byte counts across chunk borders."""

    def __init__(self, chunks: queue.Queue[bytes | None]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self.consumed = 0  # bytes of finished chunks
        self.ended = False  # the producer's end marker was taken from the queue

    def _next(self) -> None:
        self.consumed += len(self._buf)
        chunk = self._chunks.get()
        if chunk is None:
            self._buf, self._pos = b"", 0
            self.ended = True
            raise _EndOfInputError
        self._buf, self._pos = chunk, 0

    def read(self, n: int) -> bytes:
        pos, buf = self._pos, self._buf
        end = pos + n
        if end <= len(buf):
            self._pos = end
            return buf[pos:end]
        parts = [buf[pos:]]
        need = n - (len(buf) - pos)
        while need > 0:
            self._next()
            part = self._buf[:need]
            parts.append(part)
            self._pos = len(part)
            need -= len(part)
        return b"".join(parts)

    def byte(self) -> int:
        pos = self._pos
        if pos >= len(self._buf):
            self._next()
            while not self._buf:
                self._next()
            pos = 0
        self._pos = pos + 1
        return self._buf[pos]

    def skip(self, n: int) -> None:
        available = len(self._buf) - self._pos
        if n <= available:
            self._pos += n
            return
        n -= available
        self._pos = len(self._buf)
        while n > 0:
            self._next()
            step = min(n, len(self._buf))
            self._pos = step
            n -= step

    @property
    def offset(self) -> int:
        return self.consumed + self._pos


class RdbScanner:
    """Parses one RDB stream from an :class:`_Input`, skipping values (see the module doc)."""

    def __init__(self, source: _Input) -> None:
        self._in = source
        self.summary = RdbSummary()

    # --- primitives ---------------------------------------------------------------------------

    def _length(self) -> int:
        """A length; special (integer/LZF) encodings are an error where a length is expected."""
        value, special = self._length_or_encoding()
        if special:
            raise RdbFormatError(f"RDB: unexpected string encoding at byte {self._in.offset}")
        return value

    def _length_or_encoding(self) -> tuple[int, bool]:
        b = self._in.byte()
        kind = b >> 6
        if kind == 0:
            return b & 0x3F, False
        if kind == 1:
            return ((b & 0x3F) << 8) | self._in.byte(), False
        if kind == 3:
            return b & 0x3F, True
        if b == 0x80:
            return int.from_bytes(self._in.read(4), "big"), False
        if b == 0x81:
            return int.from_bytes(self._in.read(8), "big"), False
        raise RdbFormatError(f"RDB: bad length byte 0x{b:02x} at byte {self._in.offset - 1}")

    def _skip_string(self) -> None:
        n, special = self._length_or_encoding()
        if not special:
            self._in.skip(n)
        elif n == 0:
            self._in.skip(1)
        elif n == 1:
            self._in.skip(2)
        elif n == 2:
            self._in.skip(4)
        elif n == _ENC_LZF:
            compressed = self._length()
            self._length()  # uncompressed length
            self._in.skip(compressed)
        else:
            raise RdbFormatError(f"RDB: unknown string encoding {n} at byte {self._in.offset}")

    def _skip_strings(self, count: int) -> None:
        """Skip `count` strings: the hot path of the scan (hash fields, set members, keys).

        Short plain strings lying wholly in the current chunk are skipped with a few integer
        operations on local variables; anything else falls back to :meth:`_skip_string`.
        """
        inp = self._in
        buf, pos = inp._buf, inp._pos
        size = len(buf)
        while count:
            if pos + 1 < size:
                b = buf[pos]
                if b < 0x40:
                    end = pos + 1 + b
                elif b < 0x80:
                    end = pos + 2 + (((b & 0x3F) << 8) | buf[pos + 1])
                else:
                    end = size + 1
                if end <= size:
                    pos = end
                    count -= 1
                    continue
            inp._pos = pos
            self._skip_string()
            count -= 1
            buf, pos = inp._buf, inp._pos
            size = len(buf)
        inp._pos = pos

    def _string(self) -> bytes:
        """A small string's value (AUX fields); integers as their decimal text."""
        n, special = self._length_or_encoding()
        if not special:
            return self._in.read(n)
        if n in (0, 1, 2):
            size = 1 << n
            return str(int.from_bytes(self._in.read(size), "little", signed=True)).encode()
        if n == _ENC_LZF:
            compressed = self._length()
            self._length()
            self._in.skip(compressed)
            return b"<lzf>"
        raise RdbFormatError(f"RDB: unknown string encoding {n} at byte {self._in.offset}")

    # --- the file -----------------------------------------------------------------------------

    def run(self) -> RdbSummary:
        """Scan to the EOF opcode and its checksum; RdbFormatError on anything unexpected."""
        try:
            self._scan()
        except _EndOfInputError:
            raise RdbFormatError(
                f"RDB stream truncated after {self._in.offset} bytes (no EOF opcode)"
            ) from None
        return self.summary

    def _scan(self) -> None:
        header = self._in.read(9)
        if header[:5] != MAGIC or not header[5:].isdigit():
            raise RdbFormatError(f"not an RDB stream: bad magic {header[:9]!r}")
        version = int(header[5:])
        if not 1 <= version <= MAX_RDB_VERSION:
            raise RdbFormatError(
                f"RDB format version {version} is not supported (this scanner knows 1 to "
                f"{MAX_RDB_VERSION}, i.e. up to Redis 7.2)"
            )
        self.summary.rdb_version = version
        keys = self.summary.keys
        db = "db0"
        inp = self._in
        skip_string, skip_strings = self._skip_string, self._skip_strings
        while True:
            op = inp.byte()
            if op in _BLOB_TYPES:
                skip_strings(2)  # key, value
                keys[db] = keys.get(db, 0) + 1
            elif op < OP_FUNCTION2:
                skip_string()  # key
                self._skip_value(op)
                keys[db] = keys.get(db, 0) + 1
            elif op == OP_EXPIRETIME_MS:
                inp.skip(8)
            elif op == OP_SELECTDB:
                db = f"db{self._length()}"
            elif op == OP_RESIZEDB:
                self._length()
                self._length()
            elif op == OP_AUX:
                name = self._string().decode(errors="replace")
                value = self._string().decode(errors="replace")
                if name in _KEPT_AUX:
                    self.summary.aux[name] = value
            elif op == OP_EXPIRETIME:
                inp.skip(4)
            elif op == OP_IDLE:
                self._length()
            elif op == OP_FREQ:
                inp.skip(1)
            elif op == OP_FUNCTION2:
                skip_string()
                self.summary.functions += 1
            elif op == OP_MODULE_AUX:
                self._length()  # module id
                self._length()  # when opcode
                self._length()  # when
                self._skip_module_data()
            elif op == OP_EOF:
                if version >= 5:
                    inp.skip(8)
                self.summary.bytes_scanned = inp.offset
                return
            else:
                raise RdbFormatError(
                    f"RDB: unknown opcode {op} at byte {inp.offset - 1} (pre-release function "
                    "format or a newer Redis)"
                )

    def _skip_value(self, kind: int) -> None:
        skip_string = self._skip_string
        if kind in _STRING_LIST_TYPES:
            self._skip_strings(self._length())
        elif kind == T_HASH:
            self._skip_strings(2 * self._length())
        elif kind == T_LIST_QUICKLIST_2:
            for _ in range(self._length()):
                self._length()  # container: plain or packed
                skip_string()
        elif kind == T_ZSET_2:
            for _ in range(self._length()):
                skip_string()
                self._in.skip(8)
        elif kind == T_ZSET:
            for _ in range(self._length()):
                skip_string()
                size = self._in.byte()
                if size < 253:
                    self._in.skip(size)
        elif kind in _STREAM_TYPES:
            self._skip_stream(kind)
        elif kind == T_MODULE_2:
            self._length()  # module id
            self._skip_module_data()
            self.summary.module_keys += 1
        elif kind == T_MODULE:
            raise RdbFormatError(
                "RDB: a key of a module type in the old (pre Redis 5) format cannot be skipped"
            )
        else:
            raise RdbFormatError(f"RDB: unknown value type {kind} at byte {self._in.offset}")

    def _skip_stream(self, kind: int) -> None:
        length, skip, skip_string = self._length, self._in.skip, self._skip_string
        for _ in range(length()):
            skip_string()  # node key (master ID)
            skip_string()  # listpack
        for _ in range(3):  # items, last id ms, last id seq
            length()
        if kind >= T_STREAM_LISTPACKS_2:
            for _ in range(5):  # first id ms/seq, max deleted id ms/seq, entries added
                length()
        for _ in range(length()):  # consumer groups
            skip_string()
            length()
            length()
            if kind >= T_STREAM_LISTPACKS_2:
                length()  # entries read
            for _ in range(length()):  # group PEL: raw id, delivery time, delivery count
                skip(16 + 8)
                length()
            for _ in range(length()):  # consumers
                skip_string()
                skip(16 if kind >= T_STREAM_LISTPACKS_3 else 8)  # seen (+ active) time
                for _ in range(length()):
                    skip(16)

    def _skip_module_data(self) -> None:
        """Module values and aux data are self-describing opcode sequences (RDB_MODULE_OPCODE)."""
        while True:
            op = self._length()
            if op == _MODULE_OPCODE_EOF:
                return
            if op in (_SINT, _UINT):
                self._length()
            elif op == _FLOAT:
                self._in.skip(4)
            elif op == _DOUBLE:
                self._in.skip(8)
            elif op == _STRING:
                self._skip_string()
            else:
                raise RdbFormatError(f"RDB: unknown module opcode {op} at byte {self._in.offset}")


class RdbCounter:
    """Scans an RDB stream in a background thread while the caller passes its chunks on.

    ``feed`` blocks only when the scanner is ``depth`` chunks behind, which bounds memory; once
    the scanner failed, ``feed`` drops chunks (the error is raised by :meth:`result`).
    """

    def __init__(self, depth: int = 8) -> None:
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._summary: RdbSummary | None = None
        self._error: SourceError | None = None
        self._failed = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="rdb-scanner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        source = _Input(self._chunks)
        scanner = RdbScanner(source)
        try:
            self._summary = scanner.run()
        except RdbFormatError as exc:
            self._error = exc
        except Exception as exc:  # a scanner bug must not hang the producer
            self._error = RdbFormatError(f"RDB scan failed: {exc!r}")
        if self._error is not None:
            self._failed.set()
        if not source.ended:
            self._drain()

    def _drain(self) -> None:
        """Empty the queue until the producer's end marker, so ``feed`` never blocks."""
        while self._chunks.get() is not None:
            pass

    def feed(self, chunk: bytes) -> None:
        """Pass one chunk (kept by reference: do not reuse its buffer)."""
        if chunk and not self._failed.is_set():
            self._chunks.put(chunk)

    def result(self) -> RdbSummary:
        """End the input and wait for the scan; RdbFormatError if the stream was not valid."""
        self.close()
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._summary is not None
        return self._summary

    def close(self) -> None:
        """End the input (idempotent); the thread then finishes on its own."""
        if not self._closed:
            self._closed = True
            self._chunks.put(None)


def scan_file(path: str, chunk_size: int = 1 << 20) -> RdbSummary:
    """Scan an RDB file (tests, the restore's expired-key accounting)."""
    counter = RdbCounter()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                counter.feed(chunk)
    finally:
        counter.close()
    return counter.result()
